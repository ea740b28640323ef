#!/usr/bin/env python3
"""The long-input benchmark's models and inputs.

    model.py OUT SHAPE LENGTH...

Writes OUT/SHAPE/model, a reward model of a real one's exact shape with transformers' random
initialisation, f32 safetensors, and the small ChatML tokenizer of the `hf_qwen3_multilabel`
fixture (its ids fit both vocabularies; real checkpoints cannot be downloaded here, and speed
and memory do not depend on the values). SHAPE is one of
- qwen3-0.6b: Qwen3ForSequenceClassification, hidden 1024, 28 layers, 16 query / 8 KV heads
  of 128, MLP 3072, vocabulary 151,936, tied embeddings (Skywork-Reward-V2-Qwen3-0.6B);
- llama-3.2-1b: LlamaForSequenceClassification, hidden 2048, 16 layers, 32 query / 8 KV heads
  of 64, MLP 8192, vocabulary 128,256, tied embeddings (Skywork-Reward-V2-Llama-3.2-1B; its
  "llama3" RoPE scaling left out: it changes the rotation angles, not the work).
Then OUT/conv-<n>.jsonl: one conversation whose chat-templated text is n tokens (a long user
prompt, a response of about a quarter), the same input for every engine and shape.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers

FIXTURE = Path(__file__).resolve().parents[2] / "tests/fixtures/hf_qwen3_multilabel"
WORDS = "the sea is wide and the fox is quick while reward models read every token of it".split()


SHAPES = {
    "qwen3-0.6b": (transformers.Qwen3Config, transformers.Qwen3ForSequenceClassification, dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0,
        max_position_embeddings=40960)),
    "llama-3.2-1b": (transformers.LlamaConfig, transformers.LlamaForSequenceClassification, dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
        max_position_embeddings=131072, rms_norm_eps=1e-5)),
}


def main():
    out, shape, lengths = Path(sys.argv[1]), sys.argv[2], [int(n) for n in sys.argv[3:]]
    model_dir = out / shape / "model"
    write_model(model_dir, *SHAPES[shape])
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)

    def tokens(prompt_words, response_words):
        conv = conversation(prompt_words, response_words)
        msgs = conv["messages"] + [{"role": "assistant", "content": conv["response"]}]
        ids = tok.apply_chat_template(msgs, tokenize=True)
        return len(ids if isinstance(ids, list) else ids["input_ids"]), conv

    for n in lengths:
        if (out / f"conv-{n}.jsonl").exists():
            continue
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


def write_model(model_dir, config, model_class, shape, dtype=torch.float32):
    """A `model_class` of `config(**shape)` (tied embeddings, one label) with transformers'
    random initialisation, in `dtype`, and the fixture's tokenizer, at `model_dir` unless it is
    there."""
    if (model_dir / "config.json").exists():
        return
    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(FIXTURE)
    cfg = config(**{"rms_norm_eps": 1e-6, **shape}, tie_word_embeddings=True, num_labels=1,
                 pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model = model_class(cfg).eval().to(dtype)
    model.save_pretrained(model_dir, safe_serialization=True, max_shard_size="20GB")
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        shutil.copy(FIXTURE / f, model_dir / f)


def conversation(prompt_words, response_words):
    text = lambda k, start: " ".join(WORDS[(start + i) % len(WORDS)] for i in range(k))
    return {"messages": [{"role": "user", "content": text(prompt_words, 0)}], "response": text(response_words, 3)}


if __name__ == "__main__":
    main()
