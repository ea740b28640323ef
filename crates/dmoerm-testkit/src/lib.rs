//! # dmoerm-testkit
//!
//! What the workspace's tests share (a dev-dependency, never a dependency):
//! - [`fixtures`]: the parity fixture bundles of `tests/fixtures` and their reference outputs
//!   (computed with torch + transformers + peft by `tests/fixtures/generate.py`);
//! - [`edit`]: copies of fixture bundles with tensors changed, to break them;
//! - [`http`]: a minimal HTTP/1.1 client for the server's tests;
//! - [`layering`]: the check that no source file imports a file that imports it back.

pub mod edit;
pub mod fixtures;
pub mod http;
pub mod layering;

use std::path::PathBuf;

/// The repository's root: `DMOERM_REPO_ROOT` when set, else the checkout this crate was
/// compiled in. Test and bench binaries built on one machine and run on another
/// (scripts/gpu-check.sh) find the fixtures and the default model through it.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("DMOERM_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}
