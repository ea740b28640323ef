#!/usr/bin/env python3
"""The peers' side of the long-input benchmark: one process per engine and input.

    peer.py ENGINE MODEL_DIR CONV_JSONL

ENGINE is one of
- transformers: the model in f32 with SDPA attention;
- torch-int8: the same, with PyTorch's dynamic int8 quantisation of every Linear
  (`torch.ao.quantization.quantize_dynamic`: int8 weights, activations quantised per call);
- ort-int8: ONNX Runtime on MODEL_DIR/onnx/model.int8.onnx (ort_model.py: the same model
  exported with `torch.onnx.export`, quantised with `onnxruntime.quantization.quantize_dynamic`).
Every core; the conversation is scored twice and the faster call is timed, as dmoerm's side
does. Prints one JSON line: tokens, reward, seconds, peak RSS (MB).
"""
import json
import resource
import sys
import time

import torch
import transformers


def main():
    engine, model_dir, conv_file = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_grad_enabled(False)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    conv = json.loads(open(conv_file).readline())
    msgs = conv["messages"] + [{"role": "assistant", "content": conv["response"]}]
    ids = tok.apply_chat_template(msgs, tokenize=True)
    ids = torch.tensor([ids if isinstance(ids, list) else ids["input_ids"]])
    if engine == "ort-int8":
        import onnxruntime
        session = onnxruntime.InferenceSession(f"{model_dir}/onnx/model.int8.onnx",
                                               providers=["CPUExecutionProvider"])
        score = lambda: float(session.run(None, {"input_ids": ids.numpy()})[0][0, 0])
    else:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
        if engine == "torch-int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif engine != "transformers":
            sys.exit(f"unknown engine {engine}")
        score = lambda: model(input_ids=ids).logits[0, 0].item()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        reward = score()
        best = min(best, time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens": ids.shape[1], "reward": reward, "seconds": best, "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
