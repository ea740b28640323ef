"""The two bundles of the side-by-side benchmark, as dmoerm bundle directories (f32 weights).

- `minilm`: the default model (`models/default/model.dmoerm`, all-MiniLM-L6-v2, 4 tasks x 5
  LoRA experts), unpacked: int8 matrices dequantised exactly as the Rust reader does
  (codes * per-row scale, in f32), f16 tensors widened; `input.max_length` raised from 128 to
  512 (MiniLM's position limit) so the 512-token case is not cut.
- `llama135m`: a random model of SmolLM2-135M's shape (Llama: hidden 576, 30 layers, 9 heads,
  3 KV heads, MLP 1536, vocabulary 49,152, tied embeddings), 2 tasks x 5 experts (PEFT LoRA
  r = 8 on q_proj and v_proj of every layer) + a router LoRA, value heads and aggregators.
  It uses MiniLM's tokenizer (ids < 30,522 fit the vocabulary), so both bundles see the
  same token counts. Random weights: speed does not depend on the values.
"""
import json
import shutil
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def unpack(packed: Path, out: Path, max_length: int) -> Path:
    """Writes the packed bundle `packed` as a bundle directory `out` with f32 weights."""
    if (out / "dmoerm.json").exists():
        return out
    with safe_open(str(packed), "np") as f:
        meta = f.metadata()
        keys = set(f.keys())
        files: dict[str, dict[str, np.ndarray]] = {}
        for key in sorted(keys):
            if key.endswith("::scale") and key[: -len("::scale")] in keys:
                continue
            path, name = key.split("::", 1)
            t = f.get_tensor(key)
            if t.dtype == np.int8:
                t = t.astype(np.float32) * f.get_tensor(key + "::scale").astype(np.float32)[:, None]
            files.setdefault(path, {})[name] = np.ascontiguousarray(t.astype(np.float32))
    for path, tensors in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out / path))
    for path, text in json.loads(meta["dmoerm.files"]).items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
    manifest = json.loads(meta["dmoerm.manifest"])
    manifest["input"]["max_length"] = max_length
    (out / "dmoerm.json").write_text(json.dumps(manifest, indent=1))
    return out


def make_llama135m(out: Path, tokenizer_json: Path, input_format: dict) -> Path:
    """A random SmolLM2-135M-shaped DMoERM bundle (see the module doc)."""
    if (out / "dmoerm.json").exists():
        return out
    import torch
    import peft
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    base = transformers.LlamaModel(cfg).eval()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "backbone").mkdir(parents=True)
    base.save_pretrained(tmp / "backbone", safe_serialization=True)
    shutil.copy(tokenizer_json, tmp / "backbone" / "tokenizer.json")
    H = cfg.hidden_size
    g = torch.Generator().manual_seed(1)

    def adapter(path: str):
        lcfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        pm = peft.get_peft_model(base, lcfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
        pm.save_pretrained(tmp / path)
        (tmp / path / "README.md").unlink(missing_ok=True)
        pm.unload()

    tasks = {"chat": ["tone", "relevance", "conciseness", "readability", "completeness"],
             "obj_qa": ["correctness", "relevance", "completeness", "readability", "conciseness"]}
    heads = {"router.weight": 0.05 * torch.randn(len(tasks), H, generator=g),
             "router.bias": torch.tensor([0.5, -0.5])}
    adapter("router")
    manifest = {"format": "dmoerm-bundle", "version": 1, "name": "bench-llama135m-random",
                "backbone": {"config": "backbone/config.json", "weights": ["backbone/model.safetensors"],
                             "tokenizer": "backbone/tokenizer.json"},
                "input": input_format, "pooling": "last",
                "router": {"adapter": "router", "head": "heads.safetensors#router"}, "tasks": []}
    for task, caps in tasks.items():
        entry = {"name": task, "experts": [], "aggregator": f"aggregator_{task}.safetensors"}
        for cap in caps:
            adapter(f"tasks/{task}/{cap}")
            heads[f"{task}.{cap}.weight"] = 0.05 * torch.randn(1, H, generator=g)
            heads[f"{task}.{cap}.bias"] = torch.zeros(1)
            entry["experts"].append({"name": cap, "adapter": f"tasks/{task}/{cap}",
                                     "head": f"heads.safetensors#{task}.{cap}"})
        k = len(caps)
        agg = {"0.weight": 0.02 * torch.randn(H, k * H, generator=g), "0.bias": torch.zeros(H),
               "1.weight": torch.tensor([0.25]), "2.weight": 0.05 * torch.randn(1, H, generator=g),
               "2.bias": torch.zeros(1)}
        save_file({n: t.numpy() for n, t in agg.items()}, str(tmp / entry["aggregator"]))
        manifest["tasks"].append(entry)
    save_file({n: t.contiguous().numpy() for n, t in heads.items()}, str(tmp / "heads.safetensors"))
    (tmp / "dmoerm.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
