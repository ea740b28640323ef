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
