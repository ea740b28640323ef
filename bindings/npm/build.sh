#!/usr/bin/env bash
# Builds the npm package's wasm half: bindings/wasm -> bindings/npm/wasm (wasm-bindgen, web
# target: ESM that runs in pages, workers and Node), and the threaded build -> wasm-threads (and
# its relaxed-SIMD twin -> wasm-threads-relaxed).
# Needs the wasm32 target, the rust-src component and wasm-bindgen-cli of the version in
# Cargo.lock (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
# The single-thread build: WebGPU, and the CPU on one thread (.cargo/config.toml: simd128).
cargo build --manifest-path "$root/Cargo.toml" -p dmoerm-wasm --target wasm32-unknown-unknown --profile wasm-release --locked
# The threaded build, for the CPU on a cross-origin-isolated page (src/workers.js): shared
# memory and atomics, so std is built again with them (-Z build-std, which needs the rust-src
# component; RUSTC_BOOTSTRAP lets the stable toolchain take the -Z flag); bindings/wasm/build.rs
# links it with a shared memory. Its own target directory, since its flags differ from the
# other build's.
threaded() {
    RUSTC_BOOTSTRAP=1 RUSTFLAGS='-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals' \
        cargo build --manifest-path "$root/Cargo.toml" -p dmoerm-wasm --target wasm32-unknown-unknown --profile wasm-release --locked \
        -Z build-std=panic_abort,std --target-dir "$target/wasm-threads" "$@"
}
threaded
rm -rf wasm wasm-threads wasm-threads-relaxed
# no name section: -7.9 MB raw, -1.4 MB gzip (panic messages still reach JS). The single-thread
# build also runs in the calling thread, whose instance the package replaces after a trap: its
# glue gets `__wbg_reset_state` (a fresh instance of the module it compiled, src/core.js).
bindgen() {
    wasm-bindgen --target web --remove-name-section --remove-producers-section "${@:3}" --out-dir "$2" "$1"
    raw=$(stat -c %s "$2/dmoerm_wasm_bg.wasm")
    gz=$(gzip -9 -c "$2/dmoerm_wasm_bg.wasm" | wc -c)
    echo "$2: $raw bytes raw, $gz bytes gzip -9"
}
bindgen "$target/wasm32-unknown-unknown/wasm-release/dmoerm_wasm.wasm" wasm --experimental-reset-state-function
threaded_wasm="$target/wasm-threads/wasm32-unknown-unknown/wasm-release/dmoerm_wasm.wasm"
bindgen "$threaded_wasm" wasm-threads
# The threaded build again with relaxed SIMD (4-bit weights on `i32x4.relaxed_dot_i8x16_i7x16_add_s`,
# dmoerm-quant's wasm.rs), for the engines that have it (src/simd.js chooses): a feature of
# dmoerm-quant, so only it, the core and the bindings compile again; cargo writes its .wasm where
# the other's was, which wasm-bindgen read above.
threaded --features relaxed-simd
bindgen "$threaded_wasm" wasm-threads-relaxed
