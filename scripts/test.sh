#!/usr/bin/env bash
# The project's test command (README "Quick start"): every test, lint-free.
# The wgpu tests need a Vulkan/Metal/DX12 adapter; on Linux without a GPU install Mesa's
# lavapipe (apt-get install mesa-vulkan-drivers libvulkan1), or set DMOERM_SKIP_WGPU=1.
# The npm tests need node >= 20, wasm-bindgen-cli (the version in Cargo.lock) and Chromium at
# /usr/bin/chromium (or $CHROMIUM); the Python tests python3 with venv (pytest comes from PyPI);
# the ARM64 tests qemu-user and gcc-aarch64-linux-gnu; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
# the README's first command stays a small build: the CLI's default features pull in neither
# burn's GPU stack nor autodiff (and the same pattern finds them in the full build)
heavy='^(wgpu|cubecl-wgpu|burn-cubecl|burn-autodiff) '
default_deps=$(cargo tree --locked -p dmoerm-cli -e normal --prefix none -f '{p}')
full_deps=$(cargo tree --locked -p dmoerm-cli --all-features -e normal --prefix none -f '{p}')
if grep -Eq "$heavy" <<<"$default_deps"; then echo "the default dmoerm-cli build depends on the GPU or training stack" >&2; exit 1; fi
grep -Eq "$heavy" <<<"$full_deps"
for target in wasm32-unknown-unknown aarch64-unknown-linux-gnu aarch64-apple-darwin x86_64-pc-windows-msvc; do
    rustup target list --installed | grep -q "^$target$" || rustup target add "$target"
done
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
# Lints ride on the builds: clippy-driver compiles the workspace's own crates with clippy's lints
# and -D warnings (scripts/clippy-rustc), so the dependencies are compiled once, for the tests.
export RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc"
# Every feature of every crate (GPU, training, ...) but the core's `vulkan`, CubeCL's SPIR-V
# compiler for the tensor cores: Debian 12's lavapipe crashes on SPIR-V, so scripts/cmma-check.sh
# (below) tests that build on a newer one.
features="$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
features = (p["name"] + "/" + f for p in json.load(sys.stdin)["packages"] for f in p["features"])
print(",".join(f for f in features if f != "dmoerm/vulkan"))')"
# every target of every crate (tests, examples, benches) with those features
cargo test --workspace --all-targets --features "$features" --locked --no-run
# the libraries as libraries too: the Python package's native module (a cdylib) from the same
# build of the core (seconds)
cargo build --workspace --features "$features" --locked --lib
cargo test --workspace --features "$features" --locked
# the kernels a GPU runs (the tiled products and attention; a software adapter's are the
# barrier-free ones), forced, through every wgpu parity fixture against PyTorch; their WGSL
# (CubeCL's compilation log) goes to the npm tests below, which compile it in Chromium
if [ "${DMOERM_SKIP_WGPU:-}" != 1 ]; then
    DMOERM_KERNELS_WGSL="$(mktemp -d)/kernels.log"
    export DMOERM_KERNELS_WGSL
    DMOERM_GPU_TILED=1 CUBECL_DEBUG_LOG="$DMOERM_KERNELS_WGSL" \
        cargo test --workspace --features "$features" --locked --test parity --test hf_models
fi
# the GPU machine's sizes step (scripts/gpu-check.sh), tiny, on this adapter: the examples it
# runs, from the build above, and its targets (dispatches per layer, no compilation after a
# length's first score)
if [ "${DMOERM_SKIP_WGPU:-}" != 1 ]; then
    scripts/gpu-check.sh dry-run "${CARGO_TARGET_DIR:-target}/debug/examples"
    # f16 products on cooperative matrices (tensor cores): the core's kernel and parity tests
    # built with `vulkan`, on a lavapipe that has them (Debian 13's backports), and they must
    # run there
    scripts/cmma-check.sh
fi
# the Python package (pytest), on that module
./bindings/python/test.sh
# the int8 kernels built for the browser (wasm simd128), against the portable kernel, in Node
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p dmoerm-quant --target wasm32-unknown-unknown --locked
# and with relaxed SIMD (the threaded build's twin: 4-bit weights on
# i32x4.relaxed_dot_i8x16_i7x16_add_s). Node 20 has relaxed SIMD behind a flag, and its baseline
# compiler (Liftoff, V8 11.3) computes that instruction wrongly (3 of these tests fail with
# --liftoff-only and pass with the optimising compiler alone; Chromium 156 is right with both,
# bindings/npm's browser test): the optimising one only
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner NODE_ARGS=--experimental-wasm-relaxed-simd,--no-liftoff \
    cargo test -p dmoerm-quant --features relaxed-simd --target wasm32-unknown-unknown --locked
# ARM64 Linux, cross-built (gcc-aarch64-linux-gnu links) and run under qemu (qemu-user): the int8
# kernels against the portable kernel, the core's own tests (its CPU kernels) and the parity
# fixtures against PyTorch (the CPU build: no GPU under qemu), on a CPU with the int8 matrix
# multiply (`-cpu max`: the smmla kernel), on one with only the dot-product extension
# (Neoverse N1: sdot) and on one with neither (Cortex-A53: int8 weights expanded to f32); each
# asserts the int8 kernel it expects
for cpu in max:neon-i8mm neoverse-n1:neon-dotprod cortex-a53:none; do
    (
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu ${cpu%%:*}"
        export DMOERM_EXPECT_INT8_KERNEL="${cpu#*:}" DMOERM_SKIP_WGPU=1
        cargo test -p dmoerm-quant --target aarch64-unknown-linux-gnu --locked
        cargo test -p dmoerm --no-default-features --features burn/autodiff --lib --test parity \
            --target aarch64-unknown-linux-gnu --locked
    )
done
# desktops: the CLI with every feature (the core with wgpu's Metal and DX12 backends, training,
# the server) compiles for macOS on Apple Silicon and for Windows, linted (nothing links there)
for target in aarch64-apple-darwin x86_64-pc-windows-msvc; do
    cargo check -p dmoerm-cli --all-features --target "$target" --locked
done
# the npm package: its wasm (the core and the bindings linted as the browser build compiles
# them), then Node (CPU) and headless Chromium (WebGPU and CPU) tests, and the tiled kernels'
# WGSL in Chromium
./bindings/npm/build.sh
(cd bindings/npm && npm ci --no-audit --no-fund --silent && node --test test/node.test.mjs test/browser.test.mjs test/kernels.test.mjs)
# the package as users install it (the tarball npm pack makes) in the apps they build: Vite,
# webpack, a page with no bundler (and one whose package is on another origin), Node ES modules
# and CommonJS, TypeScript; its contents, size, publint and arethetypeswrong. The tools are
# pinned in consumers/package-lock.json, installed without their install scripts.
(cd bindings/npm/consumers && npm ci --ignore-scripts --no-audit --no-fund --silent && node --test consumers.test.mjs)
