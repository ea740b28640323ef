//! A broken bundle is answered with a typed error that names the file (and the tensor),
//! never a panic.

use std::path::{Path, PathBuf};

use dmoerm::{Device, Error, PackDtype, Quantize, RewardModel, Stage};
use dmoerm_testkit::edit::{copy_dir, fill, rewrite};
use dmoerm_testkit::fixtures::fixture_dir;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A fresh copy of a fixture bundle to break.
fn copy_fixture(name: &str, case: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("dmoerm-test-{}-{name}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&fixture_dir(name), &dst);
    dst
}

fn load(dir: &Path) -> Result<RewardModel, Error> {
    RewardModel::load_on(dir, Device::flex())
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

/// A `config.json` field that changes the maths is applied or refused by name, never ignored.
#[test]
fn config_fields_this_crate_does_not_implement_are_refused_by_name() {
    let cases: [(&str, &str, &str, &str); 8] = [
        ("llama", "\"pretraining_tp\": 1", "\"pretraining_tp\": 2", "pretraining_tp"),
        (
            "llama",
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"default\", \"partial_rotary_factor\": 0.5",
            "partial_rotary_factor",
        ),
        ("llama", "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\", \"factor\": 2.0", "yarn"),
        ("llama", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act"),
        ("qwen2_window", "\"sliding_attention\"", "\"chunked_attention\"", "layer_types"),
        ("bert", "\"is_decoder\": false", "\"is_decoder\": true", "is_decoder"),
        ("bert", "\"hidden_size\"", "\"pruned_heads\": {\"0\": [1]}, \"hidden_size\"", "pruned_heads"),
        ("bert", "\"hidden_size\"", "\"position_embedding_type\": \"relative_key\", \"hidden_size\"", "relative_key"),
    ];
    for (i, (fixture, find, replace, field)) in cases.into_iter().enumerate() {
        let dir = copy_fixture(fixture, &format!("config-{i}"));
        let path = dir.join("backbone/config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen(find, replace, 1);
        assert_ne!(edited, text, "{field}: the edit must change the config");
        std::fs::write(&path, edited).unwrap();
        match load(&dir) {
            Err(Error::Unsupported { file, message }) => {
                assert_eq!(file, "backbone/config.json");
                assert!(message.contains(field), "{field}: the message `{message}` does not name it");
            }
            other => panic!("{field}: expected Unsupported, got {other:?}"),
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
fn safetensors_headers_are_checked() {
    use dmoerm::weights::SafetensorsBuffer;
    let file = |header: &str, data: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data]);
        SafetensorsBuffer::parse("t.safetensors", bytes)
    };
    let ok = file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}}"#,
        11,
    );
    let ok = ok.unwrap();
    assert_eq!(ok.loaded_bytes(false, None), (12, 20));
    assert_eq!(ok.loaded_bytes(true, None), (8, 11));
    assert_eq!(ok.quantized_bytes(), 3);
    // a q4 matrix [2, 64]: u8 codes [2, 32] with f16 scales [2, 1]; a u8 tensor without
    // scales is not quantised
    let q4 = file(
        r#"{"q":{"dtype":"U8","shape":[2,32],"data_offsets":[0,64]},"q::scale":{"dtype":"F16","shape":[2,1],"data_offsets":[64,68]},"u":{"dtype":"U8","shape":[4],"data_offsets":[68,72]}}"#,
        72,
    )
    .unwrap();
    assert_eq!(q4.loaded_bytes(false, None), (512, 512 + 8 + 16));
    assert_eq!(q4.loaded_bytes(true, None), (64, 64 + 8 + 16));
    assert_eq!(q4.quantized_bytes(), 64);
    // quantised as they load: a bf16 matrix [128, 128] (16,384 values, the smallest that is)
    // holds a byte a value as int8, half a byte as q4 (rows of whole blocks), and passes through
    // f32 (the largest while loading); a [3, 64] one, and a bf16 vector, stay f32
    let bf16 = file(
        r#"{"m":{"dtype":"BF16","shape":[128,128],"data_offsets":[0,32768]},"s":{"dtype":"BF16","shape":[3,64],"data_offsets":[32768,33152]},"v":{"dtype":"BF16","shape":[16384],"data_offsets":[33152,65920]}}"#,
        65920,
    )
    .unwrap();
    let (m, rest) = (16384, 4 * (3 * 64 + 16384));
    assert_eq!(bf16.loaded_bytes(true, None), (4 * m, 4 * m + rest));
    assert_eq!(bf16.loaded_bytes(true, Some(Quantize::Int8)), (4 * m, m + rest));
    assert_eq!(bf16.loaded_bytes(true, Some(Quantize::Q4)), (4 * m, m / 2 + rest));
    // where quantised matrices do not stay quantised (a GPU without them), all is f32
    assert_eq!(bf16.loaded_bytes(false, Some(Quantize::Int8)), (4 * m, 4 * m + rest));
    for (header, data, says) in [
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 4, "do not hold"),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "offsets"),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, "end at byte"),
        (r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, 4, "do not hold"),
        (r#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, 4, "tensor `a`"),
        (r#"{"__metadata__":{"k":1}}"#, 0, "__metadata__"),
        ("{", 0, "header"),
    ] {
        match file(header, data) {
            Err(Error::Safetensors { message, .. }) => assert!(message.contains(says), "{header}: {message}"),
            other => panic!("{header}: expected a safetensors error, got {other:?}"),
        }
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

#[test]
fn bpe_merge_shorter_than_the_subword_prefix_is_an_error_not_a_panic() {
    // Found by the npm package's tokenizer.json mutation test: tokenizers 0.22 slices each
    // merge's second token by the prefix length without a check; in wasm that panic is a trap.
    let dir = copy_fixture("llama", "subword-prefix");
    let path = dir.join("backbone/tokenizer.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["model"]["continuing_subword_prefix"] = "##x".into();
    std::fs::write(&path, doc.to_string()).unwrap();
    match load(&dir) {
        Err(Error::Tokenizer(message)) => {
            assert!(message.starts_with("backbone/tokenizer.json: BPE merge token"), "{message}");
            assert!(message.contains("shorter than the continuing_subword_prefix `##x`"), "{message}");
        }
        other => panic!("expected a Tokenizer error, got {other:?}"),
    }
    // the older "a b" form of the merges is checked the same way
    let merges: Vec<serde_json::Value> = doc["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()).into())
        .collect();
    doc["model"]["merges"] = merges.into();
    std::fs::write(&path, doc.to_string()).unwrap();
    assert!(matches!(load(&dir), Err(Error::Tokenizer(m)) if m.contains("shorter than the continuing_subword_prefix")));
}

/// A fresh directory outside every bundle, holding a copy of `file`.
fn outside_copy(case: &str, file: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dmoerm-test-{}-outside-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(file, dir.join(file.file_name().unwrap())).unwrap();
    dir
}

#[cfg(unix)]
#[test]
fn symlink_to_a_file_outside_the_bundle_is_refused() {
    let dir = copy_fixture("llama", "symlink-file");
    let config = dir.join("backbone/config.json");
    let outside = outside_copy("file", &config);
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(outside.join("config.json"), &config).unwrap();
    match load(&dir) {
        Err(Error::Bundle { file, message }) => {
            assert_eq!(file, "backbone/config.json");
            assert!(message.contains("outside the bundle"), "{message}");
        }
        other => panic!("expected a Bundle error, got {other:?}"),
    }
    // the same link pointing inside the bundle loads
    std::fs::copy(outside.join("config.json"), dir.join("config-copy.json")).unwrap();
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("../config-copy.json", &config).unwrap();
    load(&dir).expect("a symlink to a file inside the bundle loads");
}

#[cfg(unix)]
#[test]
fn symlink_to_a_directory_outside_the_bundle_is_refused() {
    let dir = copy_fixture("llama", "symlink-dir");
    let backbone = dir.join("backbone");
    let outside = std::env::temp_dir().join(format!("dmoerm-test-{}-outside-dir", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    copy_dir(&backbone, &outside);
    std::fs::remove_dir_all(&backbone).unwrap();
    std::os::unix::fs::symlink(&outside, &backbone).unwrap();
    match load(&dir) {
        Err(Error::Bundle { file, message }) => {
            assert!(file.starts_with("backbone/"), "{file}");
            assert!(message.contains("outside the bundle"), "{message}");
        }
        other => panic!("expected a Bundle error, got {other:?}"),
    }
    // packing reads through the same rule
    assert!(matches!(dmoerm::pack_bytes(&dir, PackDtype::Keep), Err(Error::Bundle { .. })));
}

#[cfg(unix)]
#[test]
fn a_bundle_reached_through_a_symlink_loads() {
    // the bundle directory itself may be a link: containment is checked against its real path
    let dir = copy_fixture("llama", "linked-root");
    let link = std::env::temp_dir().join(format!("dmoerm-test-{}-link-to-bundle", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    load(&link).expect("a bundle opened through a symlinked path loads");
}

/// Weights with a NaN or an infinity packed as int8 or q4 stay non-finite: `inspect --check`
/// names the tensor, and scoring fails (a NaN used to become code 0: a finite, wrong model).
#[test]
fn non_finite_weights_stay_non_finite_when_quantised() {
    let dir = copy_fixture("llama", "quantised-nan");
    let target = "model.layers.0.mlp.down_proj.weight"; // [32, 64]: q4 in whole blocks
    rewrite(&dir.join("backbone/model.safetensors"), |n, d, s, b| {
        let mut b = b;
        if n == target {
            b[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        Some((d, s, b))
    });
    for (format, dtype) in [("int8", PackDtype::Int8 { min_elements: 0 }), ("q4", PackDtype::Q4 { min_elements: 0 })] {
        let (bytes, _) = dmoerm::pack_bytes(&dir, dtype).unwrap();
        let file = dir.with_extension(format!("{format}.dmoerm"));
        std::fs::write(&file, &bytes).unwrap();
        let (found, scanned) = dmoerm::bundle::non_finite_tensors(&file).unwrap();
        let names: Vec<_> = found.iter().map(|t| (t.tensor.as_str(), t.count)).collect();
        // the whole first row of the matrix: its scale is NaN
        assert_eq!(names, [(target, 64)], "{format}: {found:?} of {scanned}");
        let model = RewardModel::from_packed_bytes(format, bytes, Device::flex()).unwrap();
        let r = model.score(&dmoerm::Conversation::new("What is the capital of France?", "Paris."));
        assert!(matches!(r, Err(Error::NonFinite { .. })), "{format}: {r:?}");
    }
}

#[test]
fn non_finite_outputs_are_errors_naming_the_first_stage() {
    type Case = (&'static str, &'static [(&'static str, fn(&str) -> bool)], f32, Stage);
    let cases: [Case; 5] = [
        ("backbone-nan", &[("backbone/model.safetensors", |_| true)], f32::NAN, Stage::Router),
        ("router-nan", &[("heads.safetensors", |n| n.starts_with("router."))], f32::NAN, Stage::Router),
        ("heads-nan", &[("heads.safetensors", |n| !n.starts_with("router."))], f32::NAN, Stage::Expert),
        (
            "heads-inf",
            &[("heads.safetensors", |n| n.ends_with(".bias") && !n.starts_with("router."))],
            f32::INFINITY,
            Stage::Expert,
        ),
        (
            "aggregator-nan",
            &[("aggregator_chat.safetensors", |_| true), ("aggregator_obj_qa.safetensors", |_| true)],
            f32::NAN,
            Stage::Aggregator,
        ),
    ];
    let conversation = dmoerm::Conversation::new("What is the capital of France?", "Paris.");
    for (case, edits, value, stage) in cases {
        let dir = copy_fixture("llama", case);
        for (file, select) in edits {
            fill(&dir, file, *select, value);
        }
        let model = load(&dir).unwrap_or_else(|e| panic!("{case}: the bundle is well-formed and loads: {e}"));
        let check = |r: Result<_, Error>, call: &str| match r {
            Err(Error::NonFinite { bundle, stage: s, value: v, what }) => {
                assert_eq!(s, stage, "{case} {call}: {what}");
                assert!(!v.is_finite(), "{case} {call}");
                assert!(bundle.ends_with(&format!("llama-{case}")), "{case} {call}: names the bundle: {bundle}");
            }
            other => panic!("{case} {call}: expected a NonFinite error, got {other:?}"),
        };
        check(model.score(&conversation).map(|_| ()), "score");
        check(model.rank("What is the capital of France?", &["Paris.".into(), "Rome.".into()]).map(|_| ()), "rank");
    }
}
