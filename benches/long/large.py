#!/usr/bin/env python3
"""A reward model over 2 GB for the browser's WebGPU path (benches/long/webgpu.sh).

    large.py OUT

Writes OUT/model: a Qwen3ForSequenceClassification of 1.27B parameters (hidden 2048, 24
layers, 16 query / 8 KV heads of 128, MLP 6144, a 32k vocabulary, tied embeddings) with
transformers' random initialisation, stored in bf16 as most Hugging Face reward models are
(2.5 GB), and the small ChatML tokenizer of the `hf_qwen3_multilabel` fixture (its ids fit the
vocabulary). Then OUT/conv.jsonl: one short conversation.
"""
import json
import sys
from pathlib import Path

import torch
import transformers

from model import write_model


def main():
    out = Path(sys.argv[1])
    shape = dict(vocab_size=32000, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0,
                 max_position_embeddings=40960)
    write_model(out / "model", transformers.Qwen3Config, transformers.Qwen3ForSequenceClassification, shape,
                torch.bfloat16)
    conv = {"messages": [{"role": "user", "content": "what are your plans today?"}],
            "response": "i have plans to write a poem."}
    (out / "conv.jsonl").write_text(json.dumps(conv) + "\n")


if __name__ == "__main__":
    main()
