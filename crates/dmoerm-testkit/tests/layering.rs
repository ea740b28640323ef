//! No source file of the workspace imports a file that imports it back (ARCHITECTURE.md).

use std::path::Path;

use dmoerm_testkit::layering::{cycles, graph};

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut crates: Vec<_> = std::fs::read_dir(root.join("crates")).unwrap().flatten().map(|e| e.path()).collect();
    crates.push(root.join("bindings/wasm"));
    crates.push(root.join("bindings/python"));
    crates.sort();
    let mut checked = 0;
    for dir in crates {
        let g = graph(&dir.join("src"));
        checked += g.len();
        let found = cycles(&g);
        assert!(found.is_empty(), "{}: modules that import each other: {found:?}", dir.display());
    }
    // the walk saw the workspace (54 source files when this was written; a broken walk would
    // pass vacuously)
    assert!(checked >= 50, "only {checked} source files");
}
