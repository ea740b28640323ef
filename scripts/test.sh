#!/usr/bin/env bash
# The project's test command (README "Quick start"): lints, then every test.
# The wgpu tests need a Vulkan/Metal/DX12 adapter; on Linux without a GPU install Mesa's
# lavapipe (apt-get install mesa-vulkan-drivers libvulkan1), or set DMOERM_SKIP_WGPU=1.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo clippy --workspace --all-targets --locked -- -D warnings
# the core must keep compiling for the browser (wasm32), warning-free
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
RUSTFLAGS="-D warnings" cargo check -p dmoerm --target wasm32-unknown-unknown --locked
cargo test --workspace --locked
