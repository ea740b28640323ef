#!/usr/bin/env python3
"""The long-input benchmark's tables, from run.sh's JSON lines on stdin
({"shape", "length", "engine", "result"} per engine, shape and input)."""
import json
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip()]
results = {(r["shape"], r["length"], r["engine"]): r["result"] for r in rows}
cases = list(dict.fromkeys((r["shape"], r["length"]) for r in rows if r["engine"] == "transformers"))


def ratio(a, b):
    """How many times faster `a` is than `b` ('a / b' in speed)."""
    return f"{b['seconds'] / a['seconds']:.2f}x"


print("Time of one score (s; the faster of two calls) and speed ratios (higher: dmoerm faster)")
print()
print("| shape | tokens | transformers f32 | dmoerm f32 | PyTorch int8 | ONNX Runtime int8 | dmoerm int8 "
      "| dmoerm q4 | f32: dmoerm / transformers | int8: dmoerm / PyTorch | int8: dmoerm / ORT | q4 / int8 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for shape, n in cases:
    t, f32, ti8, ort, i8, q4 = (results[(shape, n, e)] for e in [
        "transformers", "dmoerm f32", "torch-int8", "ort-int8", "dmoerm int8", "dmoerm q4"])
    for d in (f32, i8, q4):
        assert d["tokens"] == t["tokens"] and not d["truncated"] and d["scoring_peak_counted"], (d, t)
    print(f"| {shape} | {t['tokens']} | {t['seconds']:.2f} | {f32['seconds']:.2f} | {ti8['seconds']:.2f} "
          f"| {ort['seconds']:.2f} | {i8['seconds']:.2f} | {q4['seconds']:.2f} | {ratio(f32, t)} | {ratio(i8, ti8)} "
          f"| {ratio(i8, ort)} | {ratio(q4, i8)} |")

print()
print("Peak memory (MB; dmoerm: loaded, then the scoring's peak) and |reward - transformers f32's|")
print()
print("| shape | tokens | engine | memory MB | reward difference |")
print("| --- | --- | --- | --- | --- |")
for shape, n in cases:
    t = results[(shape, n, "transformers")]
    for engine in ["dmoerm f32", "dmoerm int8", "dmoerm q4", "transformers", "torch-int8", "ort-int8"]:
        r = results[(shape, n, engine)]
        memory = (f"{r['rss_loaded_mb']:.0f}, {r['peak_rss_mb']:.0f}" if engine.startswith("dmoerm")
                  else f"{r['peak_rss_mb']:.0f}")
        print(f"| {shape} | {r['tokens']} | {engine} | {memory} | {abs(r['reward'] - t['reward']):.1e} |")

solo = [(k, v) for k, v in results.items() if k[2] == "dmoerm int8" and (k[0], k[1]) not in cases]
if solo:
    print()
    print("dmoerm alone (int8, one call)")
    print()
    print("| shape | tokens | s | RSS MB: loaded, loading peak, scoring peak |")
    print("| --- | --- | --- | --- |")
    for (shape, _, _), d in solo:
        assert not d["truncated"] and d["scoring_peak_counted"], d
        print(f"| {shape} | {d['tokens']} | {d['seconds']:.1f} "
              f"| {d['rss_loaded_mb']:.0f}, {d['load_peak_rss_mb']:.0f}, {d['peak_rss_mb']:.0f} |")

browser = [r for r in rows if r["engine"].startswith("chromium")]
if browser:
    print()
    print("Headless Chromium, wasm CPU (one call)")
    print()
    print("| shape | tokens | bundle | threads | wasm build | s | load s | wasm memory MB: loaded, peak "
          "| native dmoerm s (same bundle) | reward - native |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in browser:
        b, dtype = r["result"], r["engine"].split()[1]
        # the browser's lengths are side-by-side lengths too (run.sh's defaults)
        native = results[(r["shape"], r["length"], f"dmoerm {dtype}")]
        assert b["device"] == "cpu" and not b["truncated"], b
        # which of the npm package's builds ran, from the .wasm the page fetched
        wasm = " ".join(b["wasm"])
        build = ("threaded, relaxed SIMD" if "wasm-threads-relaxed/" in wasm
                 else "threaded, simd128" if "wasm-threads/" in wasm else "single-thread, simd128")
        print(f"| {r['shape']} | {native['tokens']} | {dtype} | {b['threads']} | {build} | {b['seconds']:.1f} "
              f"| {b['load_seconds']:.1f} | {b['wasm_loaded_mb']:.0f}, {b['wasm_peak_mb']:.0f} "
              f"| {native['seconds']:.2f} | {b['reward'] - native['reward']:+.1e} |")
