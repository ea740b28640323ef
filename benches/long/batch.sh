#!/usr/bin/env bash
# A batch of conversations of mixed lengths, side by side on the CPU: dmoerm's score_batch (the
# sequences packed one after another, issue 35 item 6) against the same batch padded to its
# longest row (what dmoerm ran before) and against scoring each alone; transformers f32 and
# PyTorch dynamic int8 on the batch padded with its attention mask (as a PyTorch user batches),
# and each alone. Each time is the faster of two calls; prints the times and the ratios.
#
#     benches/long/batch.sh
#
# SHAPE (default qwen3-0.6b: model.py), BATCH_LENGTHS (default "128 256 512 1024 128 256 512
# 1024": the conversations' token counts). Uses run.sh's models under target/bench-long/ (writes
# them where missing) and the reference venv ($DMOERM_COMPARE_VENV).
set -euo pipefail
cd "$(dirname "$0")/../.."
shape="${SHAPE:-qwen3-0.6b}"
lengths="${BATCH_LENGTHS:-128 256 512 1024 128 256 512 1024}"
# shellcheck source=benches/long/setup.sh
. benches/long/setup.sh
dir="$work/$shape"
# shellcheck disable=SC2086
"$venv/bin/python" benches/long/model.py "$work" "$shape" $(echo $lengths | tr ' ' '\n' | sort -un) >&2
[ -f "$dir/model.int8.dmoerm" ] || "$dmoerm" pack --model "$dir/model" --out "$dir/model.int8.dmoerm" --dtype int8 >&2
batch="$work/batch-$(echo $lengths | tr ' ' '-').jsonl"
for n in $lengths; do cat "$work/conv-$n.jsonl"; done > "$batch"
rows=$(
  for engine in "dmoerm f32:$dir/model" "dmoerm int8:$dir/model.int8.dmoerm"; do
    result=$("$long_input" "${engine#*:}" "$batch")
    echo "${engine%%:*} $result" >&2
    echo "{\"engine\": \"${engine%%:*}\", \"result\": $result}"
  done
  for engine in transformers torch-int8; do
    result=$("$venv/bin/python" benches/long/peer.py "$engine" "$dir/model" "$batch")
    echo "$engine $result" >&2
    echo "{\"engine\": \"$engine\", \"result\": $result}"
  done
)
echo "$rows" | "$venv/bin/python" benches/long/batch_table.py "$shape"
