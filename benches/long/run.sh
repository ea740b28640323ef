#!/usr/bin/env bash
# Long inputs: a Qwen3-0.6B-shaped reward model (random weights of the exact shape, f32) scores
# one conversation of 1k, 4k and 16k tokens, dmoerm on the CPU (flex) beside transformers (f32,
# SDPA attention), one process per input and engine; prints time, tokens per second and peak
# memory, and the two rewards.
#
#     benches/long/run.sh                  # LENGTHS="1024 4096" to choose
#
# Builds the Rust side with the workspace's test build (optimised; examples/long_input.rs),
# uses the pinned reference venv (./scripts/reference-venv.sh, or $DMOERM_COMPARE_VENV), and
# writes the model (2.4 GB) and inputs under target/bench-long/.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
lengths="${LENGTHS:-1024 4096 16384}"
work="$target/bench-long"
RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc" cargo test --workspace --all-targets --all-features --locked --no-run --quiet
venv="${DMOERM_COMPARE_VENV:-benches/compare/.venv}"
./scripts/reference-venv.sh "$venv" benches/compare/requirements.txt >&2
mkdir -p "$work"
# shellcheck disable=SC2086
"$venv/bin/python" benches/long/model.py "$work" $lengths >&2
rows=()
for n in $lengths; do
  d=$("$target/debug/examples/long_input" "$work/model" "$work/conv-$n.jsonl")
  t=$("$venv/bin/python" benches/long/peer.py "$work/model" "$work/conv-$n.jsonl")
  echo "$n dmoerm $d" >&2
  echo "$n transformers $t" >&2
  rows+=("{\"dmoerm\": $d, \"transformers\": $t}")
done
printf '%s\n' "${rows[@]}" | "$venv/bin/python" -c '
import json, sys
print("| tokens | dmoerm s | transformers s | dmoerm / transformers time | dmoerm peak RSS MB (after load) | transformers peak RSS MB | |reward diff| |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for line in sys.stdin:
    r = json.loads(line); d, t = r["dmoerm"], r["transformers"]
    assert d["tokens"] == t["tokens"] and not d["truncated"], (d, t)
    print(f"| {d[\"tokens\"]} | {d[\"seconds\"]:.1f} | {t[\"seconds\"]:.1f} | {d[\"seconds\"] / t[\"seconds\"]:.2f} | "
          f"{d[\"peak_rss_mb\"]:.0f} ({d[\"rss_loaded_mb\"]:.0f}) | {t[\"peak_rss_mb\"]:.0f} | {abs(d[\"reward\"] - t[\"reward\"]):.1e} |")
'
