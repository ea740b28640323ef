#!/usr/bin/env python3
"""transformers' side of the long-input benchmark: one process per input.

    peer.py MODEL_DIR CONV_JSONL

Loads the model (f32, SDPA attention, every core), scores the conversation once to warm up and
once timed, and prints one JSON line: tokens, reward, seconds, peak RSS (MB).
"""
import json
import resource
import sys
import time

import torch
import transformers


def main():
    model_dir, conv_file = sys.argv[1], sys.argv[2]
    torch.set_grad_enabled(False)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    conv = json.loads(open(conv_file).readline())
    msgs = conv["messages"] + [{"role": "assistant", "content": conv["response"]}]
    ids = tok.apply_chat_template(msgs, tokenize=True)
    ids = torch.tensor([ids if isinstance(ids, list) else ids["input_ids"]])
    start = time.perf_counter()
    reward = model(input_ids=ids).logits[0, 0].item()
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens": ids.shape[1], "reward": reward, "seconds": seconds, "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
