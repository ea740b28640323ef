#!/usr/bin/env bash
# Builds the npm package's wasm half: bindings/wasm -> bindings/npm/wasm (wasm-bindgen, web
# target: ESM that runs in pages, workers and Node). Needs the wasm32 target and
# wasm-bindgen-cli of the version in Cargo.lock (.ci/run installs both).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --manifest-path "$root/Cargo.toml" -p dmoerm-wasm --target wasm32-unknown-unknown --profile wasm-release --locked
rm -rf wasm
# no name section: -7.9 MB raw, -1.4 MB gzip (panic messages still reach JS)
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir wasm "$target/wasm32-unknown-unknown/wasm-release/dmoerm_wasm.wasm"
raw=$(stat -c %s wasm/dmoerm_wasm_bg.wasm)
gz=$(gzip -9 -c wasm/dmoerm_wasm_bg.wasm | wc -c)
echo "wasm: $raw bytes raw, $gz bytes gzip -9"
