#!/usr/bin/env bash
# Long inputs: a Qwen3-0.6B-shaped reward model (random weights of the exact shape, f32) scores
# one conversation of 1k, 4k and 16k tokens, dmoerm on the CPU (flex) beside transformers (f32,
# SDPA attention), one process per input and engine; prints the time of one score, the peak
# memory (dmoerm's loading and scoring apart) and how far the two rewards are.
#
#     benches/long/run.sh                  # LENGTHS="1024 4096" to choose
#
# Then the same model, packed (`dmoerm pack`, f32), scores the BROWSER_LENGTHS inputs (default
# "1024 4096"; "" to skip) in headless Chromium on the wasm CPU backend (browser.mjs: Debian's
# chromium, the npm package's wasm build), with its time and wasm memory.
#
# Builds the Rust side with the workspace build of every target (optimised dependencies;
# crates/dmoerm/examples/long_input.rs), uses the pinned reference venv
# (./scripts/reference-venv.sh, or $DMOERM_COMPARE_VENV), and writes the model (2.4 GB) and
# the inputs under target/bench-long/. About 45 min on 2 cores, most of it dmoerm at 16k and the
# browser at 4k.
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
browser_lengths="${BROWSER_LENGTHS-1024 4096}"
if [ -n "$browser_lengths" ]; then
  "$target/debug/dmoerm" pack --model "$work/model" --out "$work/model.dmoerm" >&2
  bindings/npm/build.sh >&2
  [ -d bindings/npm/node_modules/playwright-core ] || (cd bindings/npm && npm ci --ignore-scripts >&2)
fi
rows=()
for n in $lengths; do
  d=$("$target/debug/examples/long_input" "$work/model" "$work/conv-$n.jsonl")
  t=$("$venv/bin/python" benches/long/peer.py "$work/model" "$work/conv-$n.jsonl")
  echo "$n dmoerm $d" >&2
  echo "$n transformers $t" >&2
  b=null
  if [[ " $browser_lengths " == *" $n "* ]]; then
    b=$(node benches/long/browser.mjs "$work/model.dmoerm" "$work/conv-$n.jsonl")
    echo "$n browser $b" >&2
  fi
  rows+=("{\"dmoerm\": $d, \"transformers\": $t, \"browser\": $b}")
done
printf '%s\n' "${rows[@]}" | "$venv/bin/python" benches/long/table.py
