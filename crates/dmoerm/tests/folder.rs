//! A bundle directory given as its files (`bundle::Folder`, what a browser page has when the
//! user picks a folder or the page fetches a model's files): it loads and scores as the same
//! directory on disk, and a folder that cannot load is refused with the directory's message,
//! before a tensor is read.

use std::path::{Path, PathBuf};

use dmoerm::bundle::Folder;
use dmoerm::weights::ReadAt;
use dmoerm::{Conversation, Device, RewardModel};
use dmoerm_testkit::edit::copy_dir;
use dmoerm_testkit::fixtures::{expected, fixture_dir, HF_FIXTURES};

/// Every file under `dir`, by its `/`-separated path in it, in memory.
fn files_of(dir: &Path) -> Vec<(String, Box<dyn ReadAt>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Box<dyn ReadAt>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((name, Box::new(std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dmoerm-folder-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A copy of the fixture directory `from`, changed by `edit`; its canonical path (what
/// errors name).
fn edited(from: &str, case: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = tmp(case);
    copy_dir(&fixture_dir(from.split('/').next().unwrap()).join(from.split_once('/').map_or("", |(_, sub)| sub)), &dir);
    edit(&dir);
    dir.canonicalize().unwrap()
}

fn open(dir: &Path) -> dmoerm::Result<Folder> {
    Folder::new(&dir.display().to_string(), files_of(dir))
}

#[test]
fn a_folder_scores_as_its_directory() {
    // the Hugging Face reward models, and a dmoerm bundle (files in subdirectories)
    for name in HF_FIXTURES.iter().copied().chain(["llama", "qwen3"]) {
        let dir = fixture_dir(name);
        let convs: Vec<Conversation> = expected(name).inputs.iter().map(|i| i.conversation()).collect();
        let direct = RewardModel::load_on(&dir, Device::flex()).unwrap();
        let folder = Folder::new(name, files_of(&dir)).unwrap();
        assert_eq!(folder.manifest().tasks, direct.manifest().tasks, "{name}");
        let model = RewardModel::from_folder(folder, Device::flex(), Default::default()).unwrap();
        assert_eq!(model.score_batch(&convs).unwrap(), direct.score_batch(&convs).unwrap(), "{name}");
    }
}

#[test]
fn sharded_weights_load_from_a_folder() {
    // one shard named by an index, as transformers writes a large model
    let dir = edited("hf_qwen2", "shards", |dir| {
        let shard = "model-00001-of-00001.safetensors";
        std::fs::rename(dir.join("model.safetensors"), dir.join(shard)).unwrap();
        let bytes = std::fs::read(dir.join(shard)).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let map: serde_json::Map<String, serde_json::Value> =
            header.tensors().keys().map(|t| (t.clone(), shard.into())).collect();
        let index = serde_json::json!({ "metadata": {}, "weight_map": map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    });
    let convs: Vec<Conversation> = expected("hf_qwen2").inputs.iter().map(|i| i.conversation()).collect();
    let want = RewardModel::load_on(fixture_dir("hf_qwen2"), Device::flex()).unwrap().score_batch(&convs).unwrap();
    let folder = open(&dir).unwrap();
    assert_eq!(folder.manifest().backbone.weights, ["model-00001-of-00001.safetensors"]);
    let (largest, total) = folder.loaded_bytes(false, None);
    assert!(largest > 0 && total > largest, "{largest} {total}");
    assert_eq!(
        RewardModel::from_folder(folder, Device::flex(), Default::default()).unwrap().score_batch(&convs).unwrap(),
        want
    );
}

#[test]
fn a_folder_that_cannot_load_says_what_its_directory_says() {
    let index = |dir: &Path, shards: &[&str]| {
        let map: serde_json::Map<String, serde_json::Value> =
            shards.iter().enumerate().map(|(i, s)| (format!("t{i}"), (*s).into())).collect();
        let index = serde_json::json!({ "weight_map": map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    };
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "no config.json",
            edited("hf_llama3", "noconfig", |d| std::fs::remove_file(d.join("config.json")).unwrap()),
            "neither dmoerm.json (a dmoerm bundle) nor config.json",
        ),
        (
            "no tokenizer",
            edited("hf_llama3", "notokenizer", |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap()),
            "no tokenizer.json",
        ),
        (
            "not a reward model",
            // a causal LM (the llama fixture's backbone)
            edited("llama/backbone", "causal", |_| {}),
            "LlamaForCausalLM",
        ),
        (
            ".bin weights",
            edited("hf_llama3", "bin", |d| {
                std::fs::rename(d.join("model.safetensors"), d.join("pytorch_model.bin")).unwrap()
            }),
            "only PyTorch .bin weights",
        ),
        (
            "a shard the index names is missing",
            edited("hf_llama3", "noshard", |d| {
                std::fs::rename(d.join("model.safetensors"), d.join("model-00001-of-00002.safetensors")).unwrap();
                index(d, &["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
            }),
            "names the shard model-00002-of-00002.safetensors, which is not in the directory",
        ),
        (
            "the index names a file outside the folder",
            edited("hf_llama3", "outside", |d| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
                index(d, &["../hf_qwen2/model.safetensors"]);
            }),
            "must be relative and stay inside the bundle",
        ),
    ];
    for (case, dir, message) in cases {
        let on_disk = RewardModel::load_on(&dir, Device::flex()).expect_err(case).to_string();
        let given = open(&dir).expect_err(case).to_string();
        assert_eq!(given, on_disk, "{case}: the same message");
        assert!(given.contains(message), "{case}: {given}");
    }
    // a path that leaves the folder cannot even be given
    let outside: Vec<(String, Box<dyn ReadAt>)> = vec![("../config.json".into(), Box::new(Vec::new()))];
    let err = Folder::new("folder", outside).unwrap_err().to_string();
    assert!(err.contains("must be relative and stay inside the bundle"), "{err}");
}
