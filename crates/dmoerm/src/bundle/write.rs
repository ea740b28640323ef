//! Writing a bundle directory (`docs/bundle-format.md`) from the model's parts: the backbone's
//! HF files, one PEFT adapter directory per expert, the router and value heads in
//! `heads.safetensors`, one aggregator file per task, and the manifest. What a trainer exports
//! and what [`crate::RewardModel::load`] reads back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::keys::{layout, reference};
use super::manifest::{self, BackboneSpec, ExpertSpec, Manifest, RouterSpec, TaskSpec, MANIFEST_FILE};
use crate::aggregator::{Aggregator, Combine};
use crate::error::{Error, Result};
use crate::expert::ValueHeads;
use crate::lora::LoraAdapter;
use crate::pooling::Pooling;
use crate::router::Router;
use crate::text::InputFormat;
use crate::weights::{write_atomic, TensorWriter, WriteScope};

/// The backbone's HF checkpoint files, copied (hard-linked where possible) into the bundle.
#[derive(Debug, Clone)]
pub struct BackboneFiles {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its files, relative to `dir`.
    pub spec: BackboneSpec,
}

/// One expert to write.
#[derive(Debug)]
pub struct ExpertOut<'a> {
    /// The capability point.
    pub name: String,
    /// Its adapter (`None`: the bare backbone).
    pub adapter: Option<&'a LoraAdapter>,
}

/// One task to write.
#[derive(Debug)]
pub struct TaskOut<'a> {
    pub name: String,
    pub description: Option<String>,
    /// The experts, in the aggregator's input order.
    pub experts: Vec<ExpertOut<'a>>,
    /// Their value heads, stacked in the same order.
    pub heads: &'a ValueHeads,
    /// The aggregator, for a task with several experts.
    pub aggregator: Option<&'a Aggregator>,
    /// For an ensemble instead of an aggregator.
    pub combine: Option<Combine>,
}

/// A whole bundle to write.
#[derive(Debug)]
pub struct BundleOut<'a> {
    pub name: Option<String>,
    pub description: Option<String>,
    pub backbone: &'a BackboneFiles,
    pub input: InputFormat,
    pub pooling: Pooling,
    /// The router (a head on the bare backbone), for several tasks.
    pub router: Option<&'a Router>,
    pub tasks: Vec<TaskOut<'a>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |source| Error::Io { path, source }
}

/// Empties `out` for a new bundle: removes an earlier bundle there, refuses to touch a
/// directory that is not a bundle.
fn clear(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty && !out.join(MANIFEST_FILE).exists() {
            return Err(Error::bundle(&out.display().to_string(), "exists and is not a bundle; not overwriting it"));
        }
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    Ok(())
}

/// Writes the bundle into `out` (replacing an earlier bundle there; refusing to overwrite a
/// directory that is not a bundle).
pub fn write_bundle(out: &Path, b: &BundleOut) -> Result<()> {
    clear(out)?;
    let backbone = copy_backbone(out, b.backbone)?;

    let mut heads = TensorWriter::new();
    let router = match b.router {
        Some(r) => {
            r.save(&mut WriteScope::new(&mut heads).at(layout::ROUTER_HEAD))?;
            Some(RouterSpec { adapter: None, head: reference(layout::HEADS_FILE, layout::ROUTER_HEAD) })
        }
        None => None,
    };
    let mut tasks = Vec::new();
    for t in &b.tasks {
        let mut experts = Vec::new();
        for (e, x) in t.experts.iter().enumerate() {
            let adapter = match x.adapter {
                Some(a) => {
                    let dir = layout::expert_adapter(&t.name, &x.name);
                    write_adapter(&out.join(&dir), a)?;
                    Some(dir)
                }
                None => None,
            };
            let head = layout::expert_head(&t.name, &x.name);
            t.heads.save(e, &mut WriteScope::new(&mut heads).at(&head))?;
            let head = reference(layout::HEADS_FILE, &head);
            experts.push(ExpertSpec { name: x.name.clone(), adapter, head, head_row: None });
        }
        let aggregator = match t.aggregator {
            Some(a) => {
                let file = layout::aggregator_file(&t.name);
                let mut w = TensorWriter::new();
                a.save(&mut WriteScope::new(&mut w))?;
                w.save(&out.join(&file), BTreeMap::new())?;
                Some(file)
            }
            None => None,
        };
        tasks.push(TaskSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            experts,
            aggregator,
            combine: t.combine,
        });
    }
    heads.save(&out.join(layout::HEADS_FILE), BTreeMap::new())?;
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        name: b.name.clone(),
        description: b.description.clone(),
        backbone,
        input: b.input.clone(),
        pooling: b.pooling,
        router,
        tasks,
    };
    write_manifest(out, &manifest)
}

fn write_manifest(out: &Path, manifest: &Manifest) -> Result<()> {
    let json = serde_json::to_string_pretty(manifest).map_err(|e| Error::json(MANIFEST_FILE, e))?;
    write_atomic(&out.join(MANIFEST_FILE), (json + "\n").as_bytes())
}

/// Writes the Hugging Face reward model in `dir` as a bundle in `out` (`dmoerm import`): its
/// files under `backbone/` and the manifest its config implies ([`super::hf`]). With several
/// output labels, `reward` names the label whose score is the reward (default: label 0).
pub fn import(dir: &Path, out: &Path, reward: Option<&str>) -> Result<Manifest> {
    let mut manifest = super::hf::manifest(dir)?;
    if let Some(label) = reward {
        let task = &mut manifest.tasks[0];
        let index = task.experts.iter().position(|e| e.name == label).ok_or_else(|| {
            let labels: Vec<&str> = task.experts.iter().map(|e| e.name.as_str()).collect();
            Error::Input(format!("no label `{label}` (the model's labels: {})", labels.join(", ")))
        })?;
        if task.experts.len() > 1 {
            task.combine = Some(Combine::Capability { index });
        }
    }
    clear(out)?;
    let files = BackboneFiles { dir: dir.to_path_buf(), spec: manifest.backbone.clone() };
    manifest.backbone = copy_backbone(out, &files)?;
    for e in manifest.tasks.iter_mut().flat_map(|t| t.experts.iter_mut()) {
        e.head = format!("{}/{}", layout::BACKBONE_DIR, e.head);
    }
    write_manifest(out, &manifest)?;
    Ok(manifest)
}

/// The backbone's files under `<out>/backbone/`: hard links where possible (the files can be
/// large), else copies.
fn copy_backbone(out: &Path, files: &BackboneFiles) -> Result<BackboneSpec> {
    let spec = &files.spec;
    let bb = out.join(layout::BACKBONE_DIR);
    std::fs::create_dir_all(&bb).map_err(io(&bb))?;
    let mut names = vec![&spec.config, &spec.tokenizer];
    names.extend(&spec.weights);
    names.extend(spec.tokenizer_config.iter().chain(&spec.chat_template));
    for f in names {
        let (from, to) = (files.dir.join(f), bb.join(f));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(io(&from))?;
        }
    }
    let inside = |f: &String| format!("{}/{f}", layout::BACKBONE_DIR);
    Ok(BackboneSpec {
        config: inside(&spec.config),
        weights: spec.weights.iter().map(inside).collect(),
        tokenizer: inside(&spec.tokenizer),
        tokenizer_config: spec.tokenizer_config.as_ref().map(inside),
        chat_template: spec.chat_template.as_ref().map(inside),
    })
}

/// A PEFT adapter directory: `adapter_config.json` and `adapter_model.safetensors`.
fn write_adapter(dir: &Path, adapter: &LoraAdapter) -> Result<()> {
    let (config, weights) = adapter.to_peft()?;
    write_atomic(&dir.join(super::keys::peft::CONFIG), config.as_bytes())?;
    weights.save(&dir.join(super::keys::peft::WEIGHTS), BTreeMap::new())
}
