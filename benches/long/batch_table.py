#!/usr/bin/env python3
"""batch.sh's table, from its JSON lines on stdin ({"engine", "result"} per engine)."""
import json
import sys

results = {row["engine"]: row["result"] for row in map(json.loads, sys.stdin.read().splitlines())}
t = results["transformers"]
# each dmoerm row's peer in the same dtype, and that peer's faster way: its padded batch or each alone
peers = {"dmoerm f32": "transformers", "dmoerm int8": "torch-int8"}
print(f"{sys.argv[1]}: {t['conversations']} conversations, {t['tokens']} tokens ({t['padded_tokens']} padded)")
print()
print("| engine | batch s | padded batch s | each alone, sum s | batch / padded | batch / alone "
      "| vs the peer's faster way | max reward difference vs transformers |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for engine in ["dmoerm f32", "dmoerm int8", "transformers", "torch-int8"]:
    x = results[engine]
    assert x["tokens"] == t["tokens"], (engine, x["tokens"], t["tokens"])
    padded = x.get("padded_seconds", x["seconds"])  # the peers' batch is the padded one
    diff = max(abs(a - b) for a, b in zip(x["rewards"], t["rewards"]))
    vs = "-"
    if engine in peers:
        peer = results[peers[engine]]
        vs = f"{min(peer['seconds'], peer['single_seconds']) / x['seconds']:.2f}x"
    print(f"| {engine} | {x['seconds']:.2f} | {padded:.2f} | {x['single_seconds']:.2f} | {padded / x['seconds']:.2f}x "
          f"| {x['single_seconds'] / x['seconds']:.2f}x | {vs} | {diff:.1e} |")
