#!/usr/bin/env bash
# A reward model over 2 GB in the browser on WebGPU: a 1.27B-parameter Qwen3-shaped model in
# bf16 (large.py, 2.5 GB packed) loads in headless Chromium on WebGPU (SwiftShader here) and
# scores one short conversation; prints the load and score seconds, the wasm memory (the
# weights go to the GPU as they load) and the reward beside the native CPU's on the same file.
#
#     benches/long/webgpu.sh               # about 4 min on 2 cores once built
#
# Uses the pinned reference venv (./scripts/reference-venv.sh, or $DMOERM_COMPARE_VENV) to
# write the model under target/bench-large/.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
work="$target/bench-large"
RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc" cargo build --workspace --all-targets --all-features --locked --quiet
bindings/npm/build.sh >&2
[ -d bindings/npm/node_modules/playwright-core ] || (cd bindings/npm && npm ci --ignore-scripts --no-audit --no-fund >&2)
venv="${DMOERM_COMPARE_VENV:-benches/compare/.venv}"
./scripts/reference-venv.sh "$venv" benches/compare/requirements.txt >&2
mkdir -p "$work"
"$venv/bin/python" benches/long/large.py "$work" >&2
[ -f "$work/model.dmoerm" ] || "$target/debug/dmoerm" pack --model "$work/model" --out "$work/model.dmoerm" >&2
"$target/debug/dmoerm" score --model "$work/model.dmoerm" --device cpu --input "$work/conv.jsonl" --output "$work/native.jsonl" 2>/dev/null
echo "native CPU: $(cat "$work/native.jsonl")"
DEVICE=webgpu node benches/long/browser.mjs "$work/model.dmoerm" "$work/conv.jsonl"
