//! Editing copies of fixture bundles, to break them.

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Copies the directory `src` to `dst`, recursively.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// Rewrites a safetensors file through `edit(name, dtype, shape, bytes)`, which returns the
/// new entry or `None` to drop the tensor.
pub fn rewrite(path: &Path, edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| edit(&n, v.dtype(), v.shape().to_vec(), v.data().to_vec()).map(|(d, s, b)| (n, d, s, b)))
        .collect();
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Sets every float of the tensors `select` picks in `file` of the bundle to `value`.
pub fn fill(dir: &Path, file: &str, select: fn(&str) -> bool, value: f32) {
    rewrite(&dir.join(file), |n, d, s, b| {
        if !select(n) {
            return Some((d, s, b));
        }
        assert_eq!(d, Dtype::F32, "{file}::{n}: the fixtures are f32");
        Some((d, s, value.to_le_bytes().repeat(b.len() / 4)))
    });
}
