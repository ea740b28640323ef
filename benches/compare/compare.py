#!/usr/bin/env python3
"""Side-by-side benchmark: dmoerm (flex CPU; f32, int8, q4) vs PyTorch + transformers + peft
(f32) vs ONNX Runtime (f32, dynamic int8), same bundle weights, same inputs, same machine, one run. Run it with `benches/compare/run.sh`
(it builds the Rust side and the Python environment first).

Cases, per bundle (see bundles.py): a single score of a prompt + response of ~128 and ~512
tokens (latency), a batch of conversations of ~128 tokens (throughput, tokens per second), and
best-of-16 (route once, 16 candidates). Each engine's call is the whole scoring call:
tokenizing, the router pass, the batched pass of the routed task's k experts, heads and the
aggregator. Every engine's rewards must agree (printed); the times are medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from bundles import make_llama135m, unpack  # noqa: E402
from peers import Bundle, OrtPeer, TorchPeer  # noqa: E402

DTYPES = ("f32", "int8", "q4")  # dmoerm's bundles: the f32 directory and its `dmoerm pack` variants
WORDS = ("the river keeps its promise to a quiet town and every morning brings boats light and "
         "the sound of water while children count the birds along an old stone bridge").split()


def text_of(b: Bundle, tokens: int, seed: int, prefix: str) -> str:
    """Words appended until the text is `tokens` tokens long (no special tokens)."""
    out = prefix
    i = seed
    while len(b.tok.encode(out, add_special_tokens=False).ids) < tokens:
        out += " " + WORDS[(i * 7 + seed) % len(WORDS)]
        i += 1
    return out


def conversation(b: Bundle, total: int, seed: int):
    """A prompt of ~1/4 and a response of ~3/4 of `total` tokens."""
    return text_of(b, total // 4, seed, "Tell me about"), text_of(b, total - total // 4 - 3, seed + 1, "Sure.")


def cases(b: Bundle, batch: int):
    p128, r128 = conversation(b, 128, 0)
    p512, r512 = conversation(b, 512, 0)
    convs = [conversation(b, 128, s) for s in range(batch)]
    cands = [conversation(b, 128, s)[1] for s in range(16)]
    return [
        {"name": "single_128", "kind": "score", "convs": [(p128, r128)]},
        {"name": "single_512", "kind": "score", "convs": [(p512, r512)]},
        {"name": f"batch_{batch}x128", "kind": "score", "convs": convs},
        {"name": "best_of_16", "kind": "rank", "prompt": p128, "candidates": cands},
    ]


def as_spec(bundle_dir, cs, warmup, runs):
    def conv(p, r):
        return {"messages": [{"role": "user", "content": p}], "response": r}
    out = []
    for c in cs:
        if c["kind"] == "score":
            out.append({"name": c["name"], "kind": "score", "conversations": [conv(p, r) for p, r in c["convs"]]})
        else:
            out.append({"name": c["name"], "kind": "rank", "prompt": c["prompt"], "candidates": c["candidates"]})
    return {"bundle": str(bundle_dir), "warmup": warmup, "runs": runs, "cases": out}


def time_peer(peer, cs, warmup, runs):
    results = []
    for c in cs:
        call = (lambda c=c: peer.score_batch(c["convs"])) if c["kind"] == "score" else \
            (lambda c=c: peer.rank(c["prompt"], c["candidates"]))
        for _ in range(warmup):
            call()
        times, rewards = [], None
        for _ in range(runs):
            t = time.perf_counter()
            rewards = call()
            times.append(time.perf_counter() - t)
        results.append({"name": c["name"], "times_s": times, "rewards": [float(x) for x in rewards]})
    return results


def linear_params(b: Bundle) -> int:
    """Parameters of the backbone's matmuls per token (2-D weights except embeddings and pooler)."""
    from safetensors import safe_open
    n = 0
    for w in b.manifest["backbone"]["weights"]:
        with safe_open(str(b.root / w), "np") as f:
            for k in f.keys():
                shape = f.get_slice(k).get_shape()
                if len(shape) == 2 and "embed" not in k and "pooler" not in k:
                    n += shape[0] * shape[1]
    return n


def peak_gflops(threads: int) -> tuple[float, str]:
    """fp32 peak of `threads` Zen 4 cores: 2 FMA pipes x 8 lanes (AVX-512 runs as 2 x 256 bit)
    x 2 flops per FMA = 32 flops per cycle per core, at the clock /proc/cpuinfo reports."""
    mhz = 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            mhz = float(line.split(":")[1])
            break
    return threads * 32 * mhz / 1e3, f"{threads} cores x 32 flop/cycle x {mhz / 1e3:.2f} GHz"


def sgemm_rate(threads: int) -> float:
    """GFLOP/s of a 4096^3 f32 matmul in torch (MKL/oneDNN) on `threads` threads, best of 3:
    the practical peak (the cores boost above the nominal clock /proc/cpuinfo shows)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 4096 ** 3 / best / 1e9


def packed(rust: str, root: Path, dtype: str) -> Path:
    """`root` packed as `dmoerm pack --dtype DTYPE` does (cached beside it)."""
    out = root.with_name(f"{root.name}.{dtype}.dmoerm")
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        subprocess.run([rust, "--pack", dtype, str(root), str(tmp)], check=True)
        tmp.rename(out)
    return out


def run_ours(rust: str, work: Path, name: str, bundle: Path, cs, warmup, runs):
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(as_spec(bundle, cs, warmup, runs)))
    timed = json.loads(subprocess.run([rust, str(spec_path)], check=True, capture_output=True, text=True).stdout)
    memory = json.loads(subprocess.run([rust, "--memory", str(bundle)], check=True, capture_output=True,
                                       text=True).stdout)
    return timed, memory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust", required=True, help="the bench_compare binary")
    ap.add_argument("--work", default=str(REPO / "target" / "bench-compare"))
    ap.add_argument("--only", choices=["minilm", "llama135m"], action="append")
    ap.add_argument("--runs", type=int, default=0, help="timed runs per case (default: 10 MiniLM, 2 Llama)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    minilm = unpack(REPO / "models/default/model.dmoerm", work / "minilm", max_length=512)
    bundles = {"minilm": (minilm, 16, args.runs or 10, 2)}
    if not args.only or "llama135m" in args.only:
        fmt = json.loads((minilm / "dmoerm.json").read_text())["input"]
        llama = make_llama135m(work / "llama135m", minilm / "backbone" / "tokenizer.json", fmt)
        bundles["llama135m"] = (llama, 8, args.runs or 2, 1)
    if args.only:
        bundles = {k: v for k, v in bundles.items() if k in args.only}

    nominal, nominal_how = peak_gflops(threads)
    peak = sgemm_rate(threads)
    report = {"machine": {"threads": threads, "nominal_peak_gflops": nominal, "nominal_peak": nominal_how,
                          "sgemm_gflops": peak, "torch": torch.__version__}, "bundles": {}}
    print(f"# {threads} threads each; fp32 nominal peak {nominal:.0f} GFLOP/s ({nominal_how}); "
          f"measured 4096^3 sgemm (torch): {peak:.0f} GFLOP/s, the % columns' reference", flush=True)
    for name, (root, batch, runs, warmup) in bundles.items():
        b = Bundle(root)
        cs = cases(b, batch)
        r = {"linear_params": linear_params(b)}
        for dtype in DTYPES:
            print(f"## {name}: dmoerm {dtype} ...", flush=True)
            bundle = root if dtype == "f32" else packed(args.rust, root, dtype)
            r[f"dmoerm_{dtype}"], r[f"memory_{dtype}"] = run_ours(args.rust, work, f"{name}.{dtype}", bundle, cs,
                                                                  warmup, runs)
            r[f"memory_{dtype}"]["file_bytes"] = sum(f.stat().st_size for f in bundle.rglob("*")) \
                if bundle.is_dir() else bundle.stat().st_size
        print(f"## {name}: PyTorch ...", flush=True)
        tp = TorchPeer(root)
        r["torch"] = time_peer(tp, cs, warmup, runs)
        del tp
        (work / f"{name}.onnx").mkdir(exist_ok=True)
        for int8 in (False, True):
            print(f"## {name}: ONNX Runtime {'int8' if int8 else 'f32'} (export + run) ...", flush=True)
            peer = OrtPeer(root, work / f"{name}.onnx", threads, int8=int8)
            r["ort_int8" if int8 else "ort"] = time_peer(peer, cs, warmup, runs)
            del peer
        report["bundles"][name] = r
        (work / "report.json").write_text(json.dumps(report, indent=1))
        print_table(name, r, peak)
        print_quantized_table(name, r)
    print(f"\nraw times: {work / 'report.json'}")


def print_table(name, r, peak):
    ours = {c["name"]: c for c in r["dmoerm_f32"]}
    torch_ = {c["name"]: c for c in r["torch"]}
    ort = {c["name"]: c for c in r["ort"]}
    P = r["linear_params"]
    print(f"\n### {name} ({P / 1e6:.1f} M matmul params per token)")
    print("| case | tokens per call | dmoerm | PyTorch | ORT | speed vs PyTorch | speed vs ORT "
          "| dmoerm GFLOP/s (% of sgemm) | PyTorch GFLOP/s | ORT GFLOP/s | max reward diff (torch, ort) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case, c in ours.items():
        med = {k: statistics.median(v[case]["times_s"]) for k, v in
               (("ours", ours), ("torch", torch_), ("ort", ort))}
        pass_tokens = sum(c["router_tokens"]) + c["experts"] * sum(c["expert_tokens"])
        flops = 2 * P * pass_tokens
        unit = "tok/s" if case.startswith("batch") else "ms"

        def show(t):
            if unit == "ms":
                return f"{t * 1e3:.1f} ms"
            return f"{sum(c['expert_tokens']) / t:.0f} tok/s"
        diff_t = max(abs(a - b) for a, b in zip(c["rewards"], torch_[case]["rewards"]))
        diff_o = max(abs(a - b) for a, b in zip(c["rewards"], ort[case]["rewards"]))
        print(f"| {case} | {sum(c['expert_tokens'])} x {c['experts']} experts + {sum(c['router_tokens'])} router "
              f"| {show(med['ours'])} | {show(med['torch'])} | {show(med['ort'])} "
              f"| {med['torch'] / med['ours']:.2f}x | {med['ort'] / med['ours']:.2f}x "
              f"| {flops / med['ours'] / 1e9:.0f} ({100 * flops / med['ours'] / 1e9 / peak:.0f}%) "
              f"| {flops / med['torch'] / 1e9:.0f} | {flops / med['ort'] / 1e9:.0f} | {diff_t:.1e}, {diff_o:.1e} |",
              flush=True)



def print_quantized_table(name, r):
    """dmoerm f32 / int8 / q4 against PyTorch f32 and ONNX Runtime f32 / int8, the quantised
    engines' reward drift from dmoerm f32 (on these synthetic texts; the drift on the default
    model's test split is in BENCHMARKS.md), and dmoerm's memory per bundle variant."""
    by = {k: {c["name"]: c for c in r[k]} for k in ("dmoerm_f32", "dmoerm_int8", "dmoerm_q4", "torch", "ort",
                                                    "ort_int8")}
    print(f"\n### {name}: quantised (drift: the largest |reward - dmoerm f32's| in the case)")
    print("| case | dmoerm f32 | dmoerm int8 | dmoerm q4 | PyTorch f32 | ORT f32 | ORT int8 "
          "| int8 vs PyTorch f32 | int8 vs ORT int8 | q4 vs ORT int8 | f32 vs ORT f32 | drift int8, q4, ORT int8 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case, c in by["dmoerm_f32"].items():
        med = {k: statistics.median(v[case]["times_s"]) for k, v in by.items()}
        batch = case.startswith("batch")

        def show(t):
            return f"{sum(c['expert_tokens']) / t:.0f} tok/s" if batch else f"{t * 1e3:.1f} ms"

        def drift(k):
            return max(abs(a - b) for a, b in zip(c["rewards"], by[k][case]["rewards"]))
        print(f"| {case} | " + " | ".join(show(med[k]) for k in by) +
              f" | {med['torch'] / med['dmoerm_int8']:.2f}x | {med['ort_int8'] / med['dmoerm_int8']:.2f}x "
              f"| {med['ort_int8'] / med['dmoerm_q4']:.2f}x | {med['ort'] / med['dmoerm_f32']:.2f}x "
              f"| {drift('dmoerm_int8'):.4f}, {drift('dmoerm_q4'):.4f}, {drift('ort_int8'):.4f} |", flush=True)
    print("\n| dmoerm bundle | file | RSS after load (above the process before it) | peak after a rank of 16 |")
    print("|---|---|---|---|")
    for dtype in DTYPES:
        m = r[f"memory_{dtype}"]
        base = m["rss_before_load"]
        print(f"| {dtype} | {m['file_bytes'] / 1e6:.1f} MB | {m['rss_after_load'] / 1e6:.1f} MB "
              f"(+{(m['rss_after_load'] - base) / 1e6:.1f}) | {m['peak_after_rank16'] / 1e6:.1f} MB "
              f"(+{(m['peak_after_rank16'] - base) / 1e6:.1f}) |", flush=True)


if __name__ == "__main__":
    main()
