#!/usr/bin/env python3
"""The long-input benchmark's table, from run.sh's JSON lines on stdin
({"dmoerm": {...}, "transformers": {...}} per input)."""
import json
import sys

print("| tokens | dmoerm s | transformers s | time dmoerm / transformers "
      "| dmoerm RSS MB: loaded, loading peak, scoring peak | transformers peak RSS MB | reward difference |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for line in sys.stdin:
    r = json.loads(line)
    d, t = r["dmoerm"], r["transformers"]
    assert d["tokens"] == t["tokens"] and not d["truncated"] and d["scoring_peak_counted"], (d, t)
    print(f"| {d['tokens']} | {d['seconds']:.1f} | {t['seconds']:.1f} | {d['seconds'] / t['seconds']:.2f} "
          f"| {d['rss_loaded_mb']:.0f}, {d['load_peak_rss_mb']:.0f}, {d['peak_rss_mb']:.0f} "
          f"| {t['peak_rss_mb']:.0f} | {abs(d['reward'] - t['reward']):.1e} |")
