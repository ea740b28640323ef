#!/usr/bin/env python3
"""The long-input benchmark's model and inputs.

    model.py OUT LENGTH...

Writes OUT/model: a Qwen3ForSequenceClassification of Qwen3-0.6B's exact shape (hidden 1024,
28 layers, 16 query / 8 KV heads of 128, MLP 3072, vocabulary 151,936, tied embeddings) with
transformers' random initialisation, f32 safetensors, and the small ChatML tokenizer of the
`hf_qwen3_multilabel` fixture (its ids fit the vocabulary; real checkpoints cannot be
downloaded here, and speed and memory do not depend on the values). Then OUT/conv-<n>.jsonl:
one conversation whose chat-templated text is n tokens (a long user prompt, a response of
about a quarter), the same input for dmoerm and transformers.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers

FIXTURE = Path(__file__).resolve().parents[2] / "tests/fixtures/hf_qwen3_multilabel"
WORDS = "the sea is wide and the fox is quick while reward models read every token of it".split()


def main():
    out, lengths = Path(sys.argv[1]), [int(n) for n in sys.argv[2:]]
    model_dir = out / "model"
    write_model(model_dir, vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)

    def tokens(prompt_words, response_words):
        conv = conversation(prompt_words, response_words)
        msgs = conv["messages"] + [{"role": "assistant", "content": conv["response"]}]
        ids = tok.apply_chat_template(msgs, tokenize=True)
        return len(ids if isinstance(ids, list) else ids["input_ids"]), conv

    for n in lengths:
        # words -> tokens is roughly linear: scale to the target, then step to it exactly
        w = max(4, n // 2)
        for _ in range(40):
            got, conv = tokens(w - w // 4, w // 4)
            if got == n:
                break
            w = max(4, w + (n - got) * w // max(got, 1) // 2 or (1 if n > got else -1))
        got, conv = tokens(w - w // 4, w // 4)
        (out / f"conv-{n}.jsonl").write_text(json.dumps(conv) + "\n")
        print(f"conv-{n}.jsonl: {got} tokens")


def write_model(model_dir, dtype=torch.float32, **shape):
    """A Qwen3ForSequenceClassification of `shape` (Qwen3's heads: 16 query / 8 KV of 128,
    tied embeddings) with transformers' random initialisation, in `dtype`, and the fixture's
    tokenizer, at `model_dir` unless it is there."""
    if (model_dir / "config.json").exists():
        return
    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(FIXTURE)
    cfg = transformers.Qwen3Config(
        **shape, num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, num_labels=1,
        pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model = transformers.Qwen3ForSequenceClassification(cfg).eval().to(dtype)
    model.save_pretrained(model_dir, safe_serialization=True, max_shard_size="20GB")
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(FIXTURE / f, model_dir / f)


def conversation(prompt_words, response_words):
    text = lambda k, start: " ".join(WORDS[(start + i) % len(WORDS)] for i in range(k))
    return {"messages": [{"role": "user", "content": text(prompt_words, 0)}], "response": text(response_words, 3)}


if __name__ == "__main__":
    main()
