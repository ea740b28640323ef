#!/usr/bin/env python3
"""The long-input benchmark's tables, from run.sh's JSON lines on stdin
({"dmoerm": {...}, "transformers": {...}, "browser": {...} or null} per input)."""
import json
import sys

print("| tokens | dmoerm s | transformers s | time dmoerm / transformers "
      "| dmoerm RSS MB: loaded, loading peak, scoring peak | transformers peak RSS MB | reward difference |")
print("| --- | --- | --- | --- | --- | --- | --- |")
rows = [json.loads(line) for line in sys.stdin]
for r in rows:
    d, t = r["dmoerm"], r["transformers"]
    assert d["tokens"] == t["tokens"] and not d["truncated"] and d["scoring_peak_counted"], (d, t)
    print(f"| {d['tokens']} | {d['seconds']:.1f} | {t['seconds']:.1f} | {d['seconds'] / t['seconds']:.2f} "
          f"| {d['rss_loaded_mb']:.0f}, {d['load_peak_rss_mb']:.0f}, {d['peak_rss_mb']:.0f} "
          f"| {t['peak_rss_mb']:.0f} | {abs(d['reward'] - t['reward']):.1e} |")

browser = [r for r in rows if r["browser"]]
if browser:
    print()
    print("| tokens | Chromium wasm CPU s | load s | wasm memory MB: loaded, peak | native dmoerm s "
          "| time wasm / native | reward difference wasm - native |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in browser:
        d, b = r["dmoerm"], r["browser"]
        assert b["device"] == "cpu" and not b["truncated"], b
        print(f"| {d['tokens']} | {b['seconds']:.1f} | {b['load_seconds']:.1f} "
              f"| {b['wasm_loaded_mb']:.0f}, {b['wasm_peak_mb']:.0f} | {d['seconds']:.1f} "
              f"| {b['seconds'] / d['seconds']:.2f} | {abs(b['reward'] - d['reward']):.1e} |")
