#!/usr/bin/env bash
# Side-by-side benchmark: dmoerm on flex vs PyTorch + transformers + peft vs ONNX Runtime, on
# this machine's CPU, same weights and inputs; prints the tables that BENCHMARKS.md records.
#
#     benches/compare/run.sh [--only minilm|llama135m] [--runs N]
#
# Builds the Rust side (`bench` profile = release), creates benches/compare/.venv with the
# pinned Python peers (or uses $DMOERM_COMPARE_VENV), writes its bundles, ONNX exports and
# report.json under target/bench-compare/. Needs python3 with venv (Debian: python3-venv).
# Takes ~15-25 min here (2 cores) after the builds, most of it the 135M Llama.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --profile bench --locked -p dmoerm --example bench_compare
venv="${DMOERM_COMPARE_VENV:-benches/compare/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-deps torch==2.15.0
    "$venv/bin/pip" install --quiet -r benches/compare/requirements.txt
fi
exec "$venv/bin/python" benches/compare/compare.py --rust "$target/release/examples/bench_compare" "$@"
