//! Writes trained parameters as a bundle directory (`docs/bundle-format.md`): the backbone's
//! HF files, one PEFT adapter directory per expert, the heads and aggregators as PyTorch
//! state dicts, and the manifest.

use std::collections::BTreeMap;
use std::path::Path;

use dmoerm::bundle::{BackboneSpec, Combine, ExpertSpec, Manifest, RouterSpec, TaskSpec};
use dmoerm::text::InputFormat;
use dmoerm::Pooling;

use crate::error::{Error, Result};
use crate::features::Frozen;
use crate::objectives::LoraLayout;
use crate::params::{save_safetensors, HostParams, Params};

/// One expert: a LoRA adapter (`lora.*`) and a value head (`head.*`).
pub struct ExportExpert<'a> {
    pub name: String,
    pub params: &'a Params,
}

/// One task of the bundle.
pub struct ExportTask<'a> {
    pub name: String,
    pub description: Option<String>,
    pub experts: Vec<ExportExpert<'a>>,
    /// The aggregator (`0.weight` ... `2.bias`), for a task with several experts.
    pub aggregator: Option<&'a Params>,
    /// For an ensemble instead of an aggregator.
    pub combine: Option<Combine>,
}

/// What goes into a bundle.
pub struct Export<'a> {
    pub frozen: &'a Frozen,
    pub layout: &'a LoraLayout,
    pub input: InputFormat,
    pub pooling: Pooling,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The router head (`weight` `[H, tasks]`, `bias`), for several tasks.
    pub router: Option<&'a Params>,
    pub tasks: Vec<ExportTask<'a>>,
}

/// `[rows, cols]` -> `[cols, rows]`.
fn transpose((v, s): &(Vec<f32>, Vec<usize>)) -> (Vec<f32>, Vec<usize>) {
    let (rows, cols) = (s[0], s[1]);
    (dmoerm::weights::transpose(v, rows, cols), vec![cols, rows])
}

/// Takes parameter `name` out of a host copy.
fn take(all: &mut HostParams, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    all.remove(name).ok_or_else(|| Error::Run { path: "export".into(), message: format!("no parameter `{name}`") })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    std::fs::write(path, text).map_err(Error::io("write", path))
}

/// Writes the bundle into `out` (replacing an earlier bundle there; refusing to overwrite a
/// directory that is not a bundle).
pub fn write_bundle(out: &Path, e: &Export) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(Error::io("read", out))?.next().is_none();
        if !empty && !out.join(dmoerm::bundle::manifest::MANIFEST_FILE).exists() {
            return Err(Error::run(out, "exists and is not a bundle; not overwriting it"));
        }
        std::fs::remove_dir_all(out).map_err(Error::io("remove", out))?;
    }
    // The backbone: hard links where possible (the files can be large), else copies.
    let spec = &e.frozen.spec;
    let mut files = vec![spec.config.clone(), spec.tokenizer.clone()];
    files.extend(spec.weights.iter().cloned());
    let bb = out.join("backbone");
    std::fs::create_dir_all(&bb).map_err(Error::io("create", &bb))?;
    for f in &files {
        let (from, to) = (e.frozen.dir.join(f), bb.join(f));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(Error::io("copy", &from))?;
        }
    }
    let backbone = BackboneSpec {
        config: format!("backbone/{}", spec.config),
        weights: spec.weights.iter().map(|w| format!("backbone/{w}")).collect(),
        tokenizer: format!("backbone/{}", spec.tokenizer),
    };

    let mut heads = HostParams::new();
    let router = match e.router {
        Some(p) => {
            let mut p = p.to_host()?;
            heads.insert("router.weight".into(), transpose(&take(&mut p, "weight")?));
            heads.insert("router.bias".into(), take(&mut p, "bias")?);
            Some(RouterSpec { adapter: None, head: "heads.safetensors#router".into() })
        }
        None => None,
    };
    let mut tasks = Vec::new();
    for t in &e.tasks {
        let mut experts = Vec::new();
        for x in &t.experts {
            let dir = format!("tasks/{}/{}", t.name, x.name);
            let mut params = x.params.to_host()?;
            write_adapter(&out.join(&dir), e.layout, &params)?;
            let (w, _) = take(&mut params, "head.weight")?;
            let n = w.len();
            heads.insert(format!("{}.{}.weight", t.name, x.name), (w, vec![1, n]));
            heads.insert(format!("{}.{}.bias", t.name, x.name), take(&mut params, "head.bias")?);
            experts.push(ExpertSpec {
                name: x.name.clone(),
                adapter: Some(dir),
                head: format!("heads.safetensors#{}.{}", t.name, x.name),
            });
        }
        let aggregator = match t.aggregator {
            Some(p) => {
                let file = format!("aggregator_{}.safetensors", t.name);
                let mut p = p.to_host()?;
                let mut a = HostParams::new();
                a.insert("0.weight".into(), transpose(&take(&mut p, "0.weight")?));
                a.insert("0.bias".into(), take(&mut p, "0.bias")?);
                a.insert("1.weight".into(), take(&mut p, "1.weight")?);
                a.insert("2.weight".into(), transpose(&take(&mut p, "2.weight")?));
                a.insert("2.bias".into(), take(&mut p, "2.bias")?);
                save_safetensors(&out.join(&file), &a, BTreeMap::new())?;
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
    save_safetensors(&out.join("heads.safetensors"), &heads, BTreeMap::new())?;
    let manifest = Manifest {
        format: dmoerm::bundle::manifest::FORMAT.into(),
        version: dmoerm::bundle::manifest::VERSION,
        name: e.name.clone(),
        description: e.description.clone(),
        backbone,
        input: e.input.clone(),
        pooling: e.pooling,
        router,
        tasks,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|err| Error::run(out, err.to_string()))?;
    write_text(&out.join(dmoerm::bundle::manifest::MANIFEST_FILE), &(json + "\n"))
}

/// A PEFT adapter directory: `adapter_config.json` and `adapter_model.safetensors` with
/// `base_model.model.<module>.lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]`.
fn write_adapter(dir: &Path, layout: &LoraLayout, all: &HostParams) -> Result<()> {
    let mut tensors = HostParams::new();
    for (path, _, _) in &layout.modules {
        let get = |s: &str| {
            all.get(&format!("lora.{path}.{s}"))
                .ok_or_else(|| Error::Run { path: "export".into(), message: format!("no LoRA weight for `{path}`") })
        };
        tensors.insert(format!("base_model.model.{path}.lora_A.weight"), transpose(get("a")?));
        tensors.insert(format!("base_model.model.{path}.lora_B.weight"), transpose(get("b")?));
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "r": layout.r,
        "lora_alpha": layout.alpha,
        "target_modules": layout.targets,
        "layers_to_transform": layout.layers,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": false,
        "use_dora": false,
    });
    write_text(&dir.join("adapter_config.json"), &(serde_json::to_string_pretty(&config).unwrap_or_default() + "\n"))?;
    save_safetensors(&dir.join("adapter_model.safetensors"), &tensors, BTreeMap::new())
}
