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
./scripts/reference-venv.sh "$venv" benches/compare/requirements.txt
exec "$venv/bin/python" benches/compare/compare.py --rust "$target/release/examples/bench_compare" "$@"
