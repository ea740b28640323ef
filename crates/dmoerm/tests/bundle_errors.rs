//! A broken bundle is answered with a typed error that names the file (and the tensor),
//! never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::fixture_dir;
use dmoerm::{Device, Error, PackDtype, RewardModel};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A fresh copy of a fixture bundle to break.
fn copy_fixture(name: &str, case: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("dmoerm-test-{}-{name}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&fixture_dir(name), &dst);
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
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

fn load(dir: &Path) -> Result<RewardModel, Error> {
    RewardModel::load_on(dir, Device::flex())
}

/// Rewrites a safetensors file through `edit(name, dtype, shape, bytes)`, which returns the
/// new entry or `None` to drop the tensor.
fn rewrite(path: &Path, edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>) {
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

#[test]
fn truncated_safetensors() {
    let dir = copy_fixture("llama", "truncated");
    let file = dir.join("backbone/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    match load(&dir) {
        Err(Error::Safetensors { file, .. }) => assert_eq!(file, "backbone/model.safetensors"),
        other => panic!("expected a Safetensors error, got {other:?}"),
    }
}

#[test]
fn header_garbage() {
    let dir = copy_fixture("llama", "garbage");
    std::fs::write(dir.join("heads.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    assert!(matches!(load(&dir), Err(Error::Safetensors { file, .. }) if file == "heads.safetensors"));
}

#[test]
fn wrong_shape() {
    let dir = copy_fixture("llama", "shape");
    rewrite(&dir.join("heads.safetensors"), |n, d, s, b| {
        if n == "router.weight" {
            // three tasks' rows for a bundle with two tasks
            let mut b3 = b.clone();
            b3.extend_from_slice(&b[..b.len() / 2]);
            Some((d, vec![3, s[1]], b3))
        } else {
            Some((d, s, b))
        }
    });
    match load(&dir) {
        Err(Error::Shape { file, tensor, expected, found }) => {
            assert_eq!((file.as_str(), tensor.as_str()), ("heads.safetensors", "router.weight"));
            assert_eq!((expected, found), (vec![2, 32], vec![3, 32]));
        }
        other => panic!("expected a Shape error, got {other:?}"),
    }
}

#[test]
fn missing_tensor() {
    let dir = copy_fixture("llama", "missing");
    rewrite(&dir.join("backbone/model.safetensors"), |n, d, s, b| {
        (n != "model.layers.1.mlp.up_proj.weight").then_some((d, s, b))
    });
    match load(&dir) {
        Err(Error::MissingTensor { file, tensor }) => {
            assert_eq!(
                (file.as_str(), tensor.as_str()),
                ("backbone/model.safetensors", "model.layers.1.mlp.up_proj.weight")
            )
        }
        other => panic!("expected a MissingTensor error, got {other:?}"),
    }
}

#[test]
fn integer_weights() {
    let dir = copy_fixture("bert", "dtype");
    rewrite(&dir.join("backbone/model.safetensors"), |n, d, s, b| {
        if n == "embeddings.LayerNorm.weight" {
            Some((Dtype::I16, s, b))
        } else {
            Some((d, s, b))
        }
    });
    assert!(matches!(load(&dir), Err(Error::Dtype { tensor, .. }) if tensor == "embeddings.LayerNorm.weight"));
}

#[test]
fn lora_for_a_module_the_backbone_lacks() {
    let dir = copy_fixture("llama", "lora");
    let file = dir.join("tasks/chat/conversational_sense/adapter_model.safetensors");
    // rename one module to a layer that does not exist
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, TensorView)> =
        st.tensors().into_iter().map(|(n, v)| (n.replace("layers.1.", "layers.7."), v)).collect();
    let out = safetensors::serialize(owned, None).unwrap();
    std::fs::write(&file, out).unwrap();
    match load(&dir) {
        Err(Error::UnexpectedTensor { file, tensor, .. }) => {
            assert_eq!(file, "tasks/chat/conversational_sense/adapter_model.safetensors");
            assert!(tensor.contains("layers.7."), "{tensor}");
        }
        other => panic!("expected an UnexpectedTensor error, got {other:?}"),
    }
}

/// A name, an edit of the manifest text, and the check of the error it must give.
type ManifestCase = (&'static str, fn(&str) -> String, fn(&Error) -> bool);

#[test]
fn bad_manifests() {
    let cases: [ManifestCase; 6] = [
        (
            "not-json",
            |_| "{ this is not json".into(),
            |e| matches!(e, Error::Json { file, .. } if file == "dmoerm.json"),
        ),
        (
            "unknown-field",
            |m| m.replacen("\"pooling\"", "\"poolin\": 1, \"pooling\"", 1),
            |e| matches!(e, Error::Json { .. }),
        ),
        ("version", |m| m.replacen("\"version\": 1", "\"version\": 2", 1), |e| matches!(e, Error::Unsupported { .. })),
        (
            "no-aggregator",
            |m| m.replacen("\"aggregator\": \"aggregator_chat.safetensors\"", "\"aggregator\": null", 1),
            |e| matches!(e, Error::Bundle { message, .. } if message.contains("no aggregator")),
        ),
        (
            "escape",
            |m| m.replacen("backbone/tokenizer.json", "../../etc/passwd", 1),
            |e| matches!(e, Error::Bundle { message, .. } if message.contains("inside the bundle")),
        ),
        (
            "missing-file",
            |m| m.replacen("aggregator_chat.safetensors", "nope.safetensors", 1),
            |e| matches!(e, Error::Io { path, .. } if path.ends_with("nope.safetensors")),
        ),
    ];
    for (case, edit, check) in cases {
        let dir = copy_fixture("llama", case);
        let path = dir.join("dmoerm.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = edit(&text);
        assert_ne!(edited, text, "{case}: the edit must change the manifest");
        std::fs::write(&path, edited).unwrap();
        match load(&dir) {
            Err(e) => assert!(check(&e), "{case}: unexpected error {e}"),
            Ok(_) => panic!("{case}: a broken manifest loaded"),
        }
    }
}

#[test]
fn truncated_packed_file() {
    let (bytes, _) = dmoerm::pack_bytes(&fixture_dir("bert"), PackDtype::Keep).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let r = RewardModel::from_packed_bytes("cut.safetensors", bytes[..cut].to_vec(), Device::flex());
        assert!(matches!(r, Err(Error::Safetensors { .. })), "cut at {cut}: {r:?}");
    }
}

#[test]
fn plain_safetensors_is_not_a_packed_bundle() {
    let bytes = std::fs::read(fixture_dir("bert").join("heads.safetensors")).unwrap();
    let r = RewardModel::from_packed_bytes("heads.safetensors", bytes, Device::flex());
    assert!(matches!(r, Err(Error::Bundle { message, .. }) if message.contains("not a packed")));
}

#[test]
fn malformed_tokenizer_is_an_error_not_a_panic() {
    // Found by the fuzzer: tokenizers 0.22 panics (`expect("Helper")`) on a JSON syntax error
    // inside the `decoder` section, where it returns an error everywhere else.
    let dir = copy_fixture("llama", "tokenizer");
    let path = dir.join("backbone/tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("\"decoder\"").expect("the fixture tokenizer has a decoder");
    let brace = at + text[at..].find('{').unwrap();
    let broken = format!("{}{{\"type\": ,{}", &text[..brace], &text[brace + 1..]);
    std::fs::write(&path, broken).unwrap();
    match load(&dir) {
        Err(Error::Tokenizer(message)) => assert!(message.contains("backbone/tokenizer.json"), "{message}"),
        other => panic!("expected a Tokenizer error, got {other:?}"),
    }
}
