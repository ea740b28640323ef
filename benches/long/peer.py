#!/usr/bin/env python3
"""The peers' side of the long-input benchmark: one process per engine and input.

    peer.py ENGINE MODEL_DIR CONV_JSONL

ENGINE is one of
- transformers: the model in f32 with SDPA attention;
- torch-int8: the same, with PyTorch's dynamic int8 quantisation of every Linear
  (`torch.ao.quantization.quantize_dynamic`: int8 weights, activations quantised per call);
- ort-int8: ONNX Runtime on MODEL_DIR/onnx/model.int8.onnx (ort_model.py: the same model
  exported with `torch.onnx.export`, quantised with `onnxruntime.quantization.quantize_dynamic`);
- cuda-f16: the model in f16 on the GPU (CUDA) with SDPA attention (scripts/gpu-check.sh's
  peer for `gpu_profile`, which writes the conversation it scores).
Every core; the conversation is scored twice and the faster call is timed, as dmoerm's side
does (cuda-f16: once to warm up, then the fastest of 5). Prints one JSON line: tokens, reward,
seconds, peak RSS (MB), and for cuda-f16 the GPU memory PyTorch held at most (MB).

With several conversations (a line each; batch.sh; transformers and torch-int8 only) they are
one batch padded on the right to the longest, with its attention mask, as a PyTorch user
batches: `seconds` is that batch, `single_seconds` the sum of scoring each alone, `rewards` the
batch's.
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
    convs = [json.loads(line) for line in open(conv_file) if line.strip()]

    def token_ids(conv):
        msgs = conv["messages"] + [{"role": "assistant", "content": conv["response"]}]
        ids = tok.apply_chat_template(msgs, tokenize=True)
        return ids if isinstance(ids, list) else ids["input_ids"]

    if len(convs) > 1:
        return batch(torch_model(engine, model_dir), [token_ids(c) for c in convs])
    ids = torch.tensor([token_ids(convs[0])])
    if engine == "ort-int8":
        import onnxruntime
        session = onnxruntime.InferenceSession(f"{model_dir}/onnx/model.int8.onnx",
                                               providers=["CPUExecutionProvider"])
        score = lambda: float(session.run(None, {"input_ids": ids.numpy()})[0][0, 0])
    else:
        model = torch_model(engine, model_dir)
        if engine == "cuda-f16":
            ids = ids.cuda()
        # .item() waits for the GPU: one read-back, as dmoerm's score has
        score = lambda: model(input_ids=ids).logits[0, 0].item()
    if engine == "cuda-f16":
        score()
        seconds, reward = best_of(score, 5)
    else:
        seconds, reward = best_of(score, 2)
    result = {"tokens": ids.shape[1], "reward": reward, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}
    if engine == "cuda-f16":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def torch_model(engine, model_dir):
    """transformers' model in f32 with SDPA, with PyTorch's dynamic int8 ("torch-int8"), or in f16
    on CUDA ("cuda-f16")."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    if engine == "cuda-f16":
        return model.to("cuda", torch.float16)
    if engine == "torch-int8":
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    if engine != "transformers":
        sys.exit(f"unknown engine {engine}")
    return model


def best_of(f, calls):
    """The fastest of `calls` calls of `f` (seconds) and the result."""
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch(model, rows):
    """`rows` (token ids) as one batch padded on the right, with its attention mask, and each alone."""
    longest, pad = max(map(len, rows)), model.config.pad_token_id
    ids = torch.tensor([r + [pad] * (longest - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
    seconds, logits = best_of(lambda: model(input_ids=ids, attention_mask=mask).logits, 2)
    single_seconds, _ = best_of(lambda: [model(input_ids=torch.tensor([r])).logits for r in rows], 2)
    print(json.dumps({"conversations": len(rows), "tokens": sum(map(len, rows)), "padded_tokens": len(rows) * longest,
                      "rewards": logits[:, 0].tolist(), "seconds": seconds, "single_seconds": single_seconds,
                      "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
