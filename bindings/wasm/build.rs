//! The threaded build (`-C target-feature=+atomics`, bindings/npm/build.sh) links with a shared
//! memory that JavaScript creates and hands to every thread, and exports what wasm-bindgen needs
//! to give each thread its own thread-locals. Rust no longer implies a shared memory from
//! `+atomics`; without these the module links with a private one and no Worker can share it.
//! Memory may grow to 4 GiB, as in the single-thread build (wasm-ld's default maximum for a
//! shared memory is lower).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    let atomics = std::env::var("CARGO_CFG_TARGET_FEATURE").is_ok_and(|f| f.split(',').any(|f| f == "atomics"));
    if wasm && atomics {
        for arg in [
            "--shared-memory",
            "--import-memory",
            "--max-memory=4294967296",
            "--export=__wasm_init_tls",
            "--export=__tls_size",
            "--export=__tls_align",
            "--export=__tls_base",
        ] {
            println!("cargo::rustc-link-arg={arg}");
        }
    }
}
