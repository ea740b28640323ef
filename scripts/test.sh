#!/usr/bin/env bash
# The project's test command (README "Quick start"): lints, then every test.
# The wgpu tests need a Vulkan/Metal/DX12 adapter; on Linux without a GPU install Mesa's
# lavapipe (apt-get install mesa-vulkan-drivers libvulkan1), or set DMOERM_SKIP_WGPU=1.
# The npm tests need node >= 20, wasm-bindgen-cli (the version in Cargo.lock) and Chromium at
# /usr/bin/chromium (or $CHROMIUM); .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo clippy --workspace --all-targets --locked -- -D warnings
# the core and the wasm bindings, as the browser build compiles them, lint-free
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo clippy -p dmoerm-wasm --target wasm32-unknown-unknown --locked -- -D warnings
cargo test --workspace --locked
# the npm package: its wasm, then Node (CPU) and headless Chromium (WebGPU and CPU) tests
./bindings/npm/build.sh
(cd bindings/npm && npm ci --no-audit --no-fund --silent && node --test test/node.test.mjs test/browser.test.mjs)
