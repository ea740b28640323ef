#!/usr/bin/env bash
# Fuzzes bundle / manifest / config / tokenizer / packed-file parsing for a bounded time
# (default 60 s):
#   ./scripts/fuzz.sh [seconds]
# Needs cargo-fuzz (installed here if missing). libFuzzer's instrumentation uses unstable
# rustc flags, which RUSTC_BOOTSTRAP=1 allows on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.1
corpus=fuzz/corpus/bundle
mkdir -p "$corpus"
# seeds: real manifests, configs and packed bundles
for f in tests/fixtures/*/dmoerm.json tests/fixtures/*/backbone/config.json tests/fixtures/*/router/adapter_config.json \
    tests/fixtures/*/backbone/tokenizer.json; do
    cp "$f" "$corpus/$(echo "$f" | tr '/' '_')"
done
# the CLI of the README's first command, to pack seeds
cargo build -q --locked -p dmoerm-cli
dmoerm="${CARGO_TARGET_DIR:-target}/debug/dmoerm"
"$dmoerm" pack --model tests/fixtures/bert_mean --out "$corpus/bert_mean.packed" >/dev/null
"$dmoerm" pack --model tests/fixtures/bert_mean --out "$corpus/bert_mean.f16.packed" --dtype f16 >/dev/null
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run bundle --dev --sanitizer none "corpus/bundle" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=200000
