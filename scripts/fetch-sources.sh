#!/usr/bin/env bash
# Installs the real text `dmoerm data synth` is made from, and prints the flags to pass:
#   Debian wordnet-base (WordNet 3.0, Princeton WordNet license) -> /usr/share/wordnet
#   Debian fortunes (fortune-mod's sayings)                      -> /usr/share/games/fortunes
#   PyPI chitchat-dataset==0.9.0 (MIT, BYU PCC lab), sha256-checked -> $DMOERM_CACHE/chitchat/dataset.json
set -euo pipefail
CACHE="${DMOERM_CACHE:-$HOME/.cache/dmoerm}"
WHEEL_SHA=7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/games/fortunes/wisdom ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base fortunes >/dev/null
fi
if [ ! -f "$CACHE/chitchat/dataset.json" ]; then
  mkdir -p "$CACHE/chitchat"
  python3 -m pip download --no-deps --quiet chitchat-dataset==0.9.0 -d "$CACHE/chitchat"
  wheel="$CACHE/chitchat/chitchat_dataset-0.9.0-py3-none-any.whl"
  echo "$WHEEL_SHA  $wheel" | sha256sum -c --quiet
  python3 -m zipfile -e "$wheel" "$CACHE/chitchat/x"
  cp "$CACHE/chitchat/x/chitchat_dataset/dataset.json" "$CACHE/chitchat/dataset.json"
fi
echo "--wordnet /usr/share/wordnet --fortunes /usr/share/games/fortunes --chitchat $CACHE/chitchat/dataset.json"
