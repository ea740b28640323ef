#!/usr/bin/env bash
# Long inputs: a Qwen3-0.6B-shaped reward model (random weights of the exact shape, f32) scores
# one conversation of 1k, 4k and 16k tokens, dmoerm on the CPU (flex) beside transformers (f32,
# SDPA attention), one process per input and engine; prints the time of one score, the peak
# memory (dmoerm's loading and scoring apart) and how far the two rewards are.
#
#     benches/long/run.sh                  # LENGTHS="1024 4096" to choose
#
# Builds the Rust side with the workspace build of every target (optimised dependencies;
# crates/dmoerm/examples/long_input.rs), uses the pinned reference venv
# (./scripts/reference-venv.sh, or $DMOERM_COMPARE_VENV), and writes the model (2.4 GB) and
# the inputs under target/bench-long/. About 25 min on 2 cores, most of it dmoerm at 16k.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
lengths="${LENGTHS:-1024 4096 16384}"
work="$target/bench-long"
# the workspace build with every target (the tests' dependencies and features: no rebuild of burn)
RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc" cargo build --workspace --all-targets --all-features --locked --quiet
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
printf '%s\n' "${rows[@]}" | "$venv/bin/python" benches/long/table.py
