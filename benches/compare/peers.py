"""The two peers of the side-by-side benchmark: the same DMoERM computation as dmoerm's
`RewardModel` (router pass -> top-1 task -> one batched pass of the task's k LoRA experts ->
value heads + aggregator), on the same bundle directory.

- `TorchPeer`: HF transformers + PEFT, every adapter loaded into one `PeftModel`; the k experts
  of a task run as ONE mixed-adapter batch (`adapter_names=`, PEFT's batched multi-LoRA), the
  router as a batch with the router adapter.
- `OrtPeer`: ONNX Runtime (f32, or `int8`: its dynamic quantization). Each pass (the router, the k experts of a task) is exported once to
  ONNX from PyTorch: the backbone with every LoRA-targeted linear layer replaced by a batched
  multi-LoRA layer (expert-major rows, `x @ A_e^T @ B_e^T * scale_e` added to the base output,
  the same math as dmoerm's `AdapterGroup`), plus pooling, heads and aggregator, with dynamic
  batch and sequence axes.
"""
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

torch.set_grad_enabled(False)


class Bundle:
    """Manifest, tokenizer, heads and input rendering of a bundle directory (single-turn)."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = json.loads((root / "dmoerm.json").read_text())
        self.fmt = self.manifest["input"]
        self.tok = Tokenizer.from_file(str(root / self.manifest["backbone"]["tokenizer"]))
        self.tok.no_padding()  # as dmoerm: the bundle's own truncation and batch padding only
        self.tok.no_truncation()
        self.tasks = [t["name"] for t in self.manifest["tasks"]]

    def tensor(self, ref: str) -> dict:
        file, _, prefix = ref.partition("#")
        tensors = load_file(str(self.root / file))
        if not prefix:
            return tensors
        return {n[len(prefix) + 1:]: t for n, t in tensors.items() if n.startswith(prefix + ".")}

    def ids(self, prompt: str, response: str | None) -> list[int]:
        fmt = self.fmt
        query = fmt["user_turn"].replace("{content}", prompt)
        if response is None:
            text = fmt["router_template"].replace("{query}", query).replace("{response}", "")
        else:
            text = fmt["template"].replace("{query}", query).replace("{response}", response)
        ids = self.tok.encode(text, add_special_tokens=fmt["add_special_tokens"]).ids
        if len(ids) > fmt["max_length"]:
            raise ValueError(f"input of {len(ids)} tokens > max_length {fmt['max_length']}: not benchmarked")
        return ids

    def pad(self, rows: list[list[int]]):
        s = max(len(r) for r in rows)
        pad = self.fmt["pad_token_id"]
        ids = torch.tensor([r + [pad] * (s - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (s - len(r)) for r in rows])
        return ids, mask

    def adapters(self) -> dict[str, str]:
        """Adapter name -> directory, for the router and every expert."""
        out = {}
        router = self.manifest.get("router") or {}
        if router.get("adapter"):
            out["router"] = router["adapter"]
        for t in self.manifest["tasks"]:
            for e in t["experts"]:
                if e.get("adapter"):
                    out[f"{t['name']}__{e['name']}"] = e["adapter"]
        return out


def pool(hidden, mask, how):
    if how == "last":
        return hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


class Heads(torch.nn.Module):
    """Router head, value heads and aggregators of a bundle."""

    def __init__(self, b: Bundle):
        super().__init__()
        H = None
        self.router = None
        if b.manifest.get("router") and len(b.tasks) > 1:
            r = b.tensor(b.manifest["router"]["head"])
            self.router = torch.nn.Linear(r["weight"].shape[1], r["weight"].shape[0])
            self.router.load_state_dict(r)
        self.values, self.aggs = torch.nn.ModuleDict(), torch.nn.ModuleDict()
        for t in b.manifest["tasks"]:
            w = [b.tensor(e["head"]) for e in t["experts"]]
            H = w[0]["weight"].shape[1]
            lin = torch.nn.Linear(H, len(w))
            lin.weight.copy_(torch.cat([x["weight"] for x in w], 0))
            lin.bias.copy_(torch.cat([x.get("bias", torch.zeros(1)) for x in w], 0))
            self.values[t["name"]] = lin
            if t.get("aggregator"):
                k = len(w)
                agg = torch.nn.Sequential(torch.nn.Linear(k * H, H), torch.nn.PReLU(), torch.nn.Linear(H, 1))
                agg.load_state_dict(b.tensor(t["aggregator"]))
                self.aggs[t["name"]] = agg

    def task_outputs(self, task: str, pooled: torch.Tensor, k: int):
        """pooled [k*n, H] expert-major -> (rewards [n], capabilities [n, k])."""
        n = pooled.shape[0] // k
        per = pooled.reshape(k, n, -1)
        w, bias = self.values[task].weight, self.values[task].bias
        caps = torch.einsum("knh,kh->nk", per, w) + bias
        reward = self.aggs[task](per.permute(1, 0, 2).reshape(n, -1))[:, 0]
        return reward, caps


class TorchPeer:
    name = "PyTorch+peft"

    def __init__(self, root: Path):
        import peft
        import transformers

        self.b = Bundle(root)
        bb = root / "backbone"
        base = transformers.AutoModel.from_pretrained(bb, dtype=torch.float32, attn_implementation="sdpa").eval()
        adapters = self.b.adapters()
        names = list(adapters)
        self.model = peft.PeftModel.from_pretrained(base, root / adapters[names[0]], adapter_name=names[0]).eval()
        for n in names[1:]:
            self.model.load_adapter(root / adapters[n], adapter_name=n)
        self.model.eval()
        self.heads = Heads(self.b).eval()
        self.has_router_adapter = "router" in adapters

    def _pooled(self, rows, adapter_names):
        ids, mask = self.b.pad(rows)
        out = self.model(input_ids=ids, attention_mask=mask, adapter_names=adapter_names)
        return pool(out.last_hidden_state, mask, self.b.manifest["pooling"])

    def route(self, prompts):
        if self.heads.router is None:
            return [0] * len(prompts)
        rows = [self.b.ids(p, None) for p in prompts]
        names = ["router" if self.has_router_adapter else "__base__"] * len(rows)
        probs = torch.softmax(self.heads.router(self._pooled(rows, names)), -1)
        return probs.argmax(-1).tolist()

    def run_task(self, t, convs):
        task = self.b.manifest["tasks"][t]
        experts = [f"{task['name']}__{e['name']}" if e.get("adapter") else "__base__" for e in task["experts"]]
        rows = [self.b.ids(p, r) for p, r in convs]
        k, n = len(experts), len(rows)
        pooled = self._pooled(rows * k, [e for e in experts for _ in range(n)])
        reward, _ = self.heads.task_outputs(task["name"], pooled, k)
        return reward.tolist()

    def score_batch(self, convs):
        routes = self.route([p for p, _ in convs])
        out = [0.0] * len(convs)
        for t in sorted(set(routes)):
            members = [i for i, r in enumerate(routes) if r == t]
            for i, r in zip(members, self.run_task(t, [convs[i] for i in members])):
                out[i] = r
        return out

    def rank(self, prompt, candidates):
        t = self.route([prompt])[0]
        return self.run_task(t, [(prompt, c) for c in candidates])


class MultiLoraLinear(torch.nn.Module):
    """A linear layer plus k LoRA deltas; rows are expert-major (`[k * n, ..., in]`)."""

    def __init__(self, base: torch.nn.Linear, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(a, requires_grad=False)  # [k, in, r]
        self.b = torch.nn.Parameter(b, requires_grad=False)  # [k, r, out] (scale folded in)

    def forward(self, x):
        y = self.base(x)
        k = self.a.shape[0]
        xs = x.reshape(k, -1, x.shape[-1])
        return y + torch.bmm(torch.bmm(xs, self.a), self.b).reshape(y.shape)


def lora_stack(root: Path, dirs: list[str | None], base_model) -> dict[str, tuple]:
    """module path -> (A [k, in, r], B [k, r, out] * scale) over the adapters `dirs`."""
    import re

    per_module: dict[str, dict[int, tuple]] = {}
    for e, d in enumerate(dirs):
        if d is None:
            continue
        cfg = json.loads((root / d / "adapter_config.json").read_text())
        r = cfg["r"]
        scale = cfg["lora_alpha"] / (r ** 0.5 if cfg.get("use_rslora") else r)
        w = load_file(str(root / d / "adapter_model.safetensors"))
        for name, a in w.items():
            if ".lora_A." not in name:
                continue
            module = re.sub(r"^base_model\.model\.", "", name.split(".lora_A.")[0])
            b = w[name.replace(".lora_A.", ".lora_B.")]
            per_module.setdefault(module, {})[e] = (a.T.contiguous(), (b.T * scale).contiguous())
    out = {}
    mods = dict(base_model.named_modules())
    for module, by_expert in per_module.items():
        lin = mods[module]
        r = max(a.shape[1] for a, _ in by_expert.values())
        A = torch.zeros(len(dirs), lin.in_features, r)
        B = torch.zeros(len(dirs), r, lin.out_features)
        for e, (a, b) in by_expert.items():
            A[e, :, : a.shape[1]] = a
            B[e, : b.shape[0], :] = b
        out[module] = (A, B)
    return out


class PassGraph(torch.nn.Module):
    """One exported pass: backbone with k stacked LoRAs, pooling, then the router head (k=1)
    or the task's value heads + aggregator."""

    def __init__(self, b: Bundle, dirs, heads: Heads, task: str | None):
        super().__init__()
        import copy
        import transformers

        bb = b.root / "backbone"
        self.model = transformers.AutoModel.from_pretrained(bb, dtype=torch.float32, attn_implementation="eager").eval()
        for module, (A, B) in lora_stack(b.root, dirs, self.model).items():
            parent_name, _, child = module.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            setattr(parent, child, MultiLoraLinear(getattr(parent, child), A, B))
        self.k, self.task, self.pooling = len(dirs), task, b.manifest["pooling"]
        self.heads = copy.deepcopy(heads)

    def forward(self, ids, mask):
        ids, mask = ids.repeat(self.k, 1), mask.repeat(self.k, 1)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = pool(hidden, mask, self.pooling)
        if self.task is None:
            return torch.softmax(self.heads.router(pooled), -1)
        reward, _ = self.heads.task_outputs(self.task, pooled, self.k)
        return reward


def quantize_int8(src: Path, dst: Path):
    """ONNX Runtime's dynamic quantization of `src`, as its docs run it for transformers on the
    CPU (after its pre-processing): int8 weights with one scale per output channel, activations quantised per call. Only
    MatMuls with a 2-D constant weight are quantised (the backbone's projections and the
    aggregator, the matrices dmoerm's int8 bundle quantises); the stacked 3-D LoRA factors stay
    f32, as in dmoerm."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_suffix(".pre.onnx")  # ONNX shape inference and ORT graph optimisation first, as ORT advises
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:  # it leaves temporary files in the working directory
        os.chdir(scratch)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # the symbolic pass fails on these graphs
        finally:
            os.chdir(cwd)
    model = onnx.load(str(pre))
    rank2 = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    nodes = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in rank2]
    quantize_dynamic(model, str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                     per_channel=True, weight_type=QuantType.QInt8)
    pre.unlink()


class OrtPeer:
    name = "ONNX Runtime"

    def __init__(self, root: Path, workdir: Path, threads: int, int8: bool = False):
        import onnxruntime as ort

        self.ort = ort
        self.b = Bundle(root)
        self.heads = Heads(self.b).eval()
        self.workdir, self.threads, self.int8 = workdir, threads, int8
        self.sessions = {}

    def _session(self, key, dirs, task):
        if key not in self.sessions:
            path = self.workdir / f"{key}.onnx"
            if not path.exists():
                graph = PassGraph(self.b, dirs, self.heads, task).eval()
                ids, mask = self.b.pad([self.b.ids("export me", "an example response")] * 2)
                torch.onnx.export(graph, (ids, mask), str(path), input_names=["ids", "mask"], output_names=["out"],
                                  dynamic_axes={"ids": {0: "n", 1: "s"}, "mask": {0: "n", 1: "s"}, "out": {0: "n"}},
                                  opset_version=17, dynamo=False)
            if self.int8:
                quantized = self.workdir / f"{key}.int8.onnx"
                if not quantized.exists():
                    quantize_int8(path, quantized)
                path = quantized
            opts = self.ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[key] = self.ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return self.sessions[key]

    def _run(self, session, rows):
        ids, mask = self.b.pad(rows)
        return session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})[0]

    def route(self, prompts):
        if self.heads.router is None:
            return [0] * len(prompts)
        router = self.b.manifest["router"]
        s = self._session("router", [router.get("adapter")], None)
        return np.argmax(self._run(s, [self.b.ids(p, None) for p in prompts]), -1).tolist()

    def run_task(self, t, convs):
        task = self.b.manifest["tasks"][t]
        s = self._session(f"task_{task['name']}", [e.get("adapter") for e in task["experts"]], task["name"])
        return self._run(s, [self.b.ids(p, r) for p, r in convs]).tolist()

    score_batch = TorchPeer.score_batch
    rank = TorchPeer.rank
