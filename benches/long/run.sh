#!/usr/bin/env bash
# Real reward-model shapes at long inputs, side by side on the CPU: dmoerm (release build; f32,
# int8 and q4) against transformers (f32, SDPA attention), PyTorch dynamic int8 and ONNX
# Runtime int8, one process per engine, shape and input, in the same run; prints per shape and
# length the time of one score (the faster of two calls), the ratios, the peak memory and how far
# each engine's reward is from transformers'.
#
#     benches/long/run.sh
#
# SHAPES (default "qwen3-0.6b llama-3.2-1b": model.py), LENGTHS (default "1024 4096"): the
# side-by-side inputs. SOLO_LENGTHS (default "16384"; "" to skip): dmoerm alone, int8, one call,
# for its memory. BROWSER_LENGTHS (default "1024"; "" to skip): the int8 and q4 bundles of each
# shape in headless Chromium on the wasm CPU backend (browser.mjs: Debian's chromium, the npm
# package's wasm builds), on 1 and on 2 threads.
#
# Builds the release CLI (to pack the bundles) and crates/dmoerm/examples/long_input.rs, uses the
# pinned reference venv (./scripts/reference-venv.sh, or $DMOERM_COMPARE_VENV), and writes the
# models (f32, their ONNX exports, int8 and q4 bundles: 19 GB for both shapes) and the inputs
# under target/bench-long/. About 40 min on 2 cores the first time (two release builds, the
# models and their exports), 25 min after.
set -euo pipefail
cd "$(dirname "$0")/../.."
shapes="${SHAPES:-qwen3-0.6b llama-3.2-1b}"
lengths="${LENGTHS:-1024 4096}"
solo="${SOLO_LENGTHS-16384}"
browser_lengths="${BROWSER_LENGTHS-1024}"
# shellcheck source=benches/long/setup.sh
. benches/long/setup.sh
if [ -n "$browser_lengths" ]; then
  bindings/npm/build.sh >&2
  [ -d bindings/npm/node_modules/playwright-core ] || (cd bindings/npm && npm ci --ignore-scripts >&2)
fi
for shape in $shapes; do
  dir="$work/$shape"
  # shellcheck disable=SC2086
  "$venv/bin/python" benches/long/model.py "$work" "$shape" $lengths $solo $browser_lengths >&2
  "$venv/bin/python" benches/long/ort_model.py "$dir/model" >&2
  for dtype in int8 q4; do
    [ -f "$dir/model.$dtype.dmoerm" ] || "$dmoerm" pack --model "$dir/model" --out "$dir/model.$dtype.dmoerm" --dtype "$dtype" >&2
  done
done

# one JSON object per line: {"shape", "tokens" (the input's length), "engine", ...the result}
row() {
  local shape=$1 n=$2 engine=$3 result=$4
  echo "$shape $n $engine $result" >&2
  echo "{\"shape\": \"$shape\", \"length\": $n, \"engine\": \"$engine\", \"result\": $result}"
}
rows=$(
  for shape in $shapes; do
    dir="$work/$shape"
    for n in $lengths; do
      conv="$work/conv-$n.jsonl"
      row "$shape" "$n" "dmoerm f32" "$("$long_input" "$dir/model" "$conv")"
      row "$shape" "$n" "dmoerm int8" "$("$long_input" "$dir/model.int8.dmoerm" "$conv")"
      row "$shape" "$n" "dmoerm q4" "$("$long_input" "$dir/model.q4.dmoerm" "$conv")"
      for engine in transformers torch-int8 ort-int8; do
        row "$shape" "$n" "$engine" "$("$venv/bin/python" benches/long/peer.py "$engine" "$dir/model" "$conv")"
      done
    done
    for n in $solo; do
      row "$shape" "$n" "dmoerm int8" "$("$long_input" "$dir/model.int8.dmoerm" "$work/conv-$n.jsonl" 1)"
    done
    for n in $browser_lengths; do
      for dtype in int8 q4; do
        # 2 threads twice: the threaded build's relaxed-SIMD twin (Chromium's default) and the
        # simd128 one
        for build in 1: 2: 2:simd128; do
          result=$(THREADS=${build%%:*} THREADED_BUILD=${build#*:} node benches/long/browser.mjs "$dir/model.$dtype.dmoerm" "$work/conv-$n.jsonl")
          row "$shape" "$n" "chromium $dtype" "$result"
        done
      done
    done
  done
)
echo "$rows" | "$venv/bin/python" benches/long/table.py
