//! Reading a bundle into the model's parts: the backbone, the input encoder, the router and
//! every task's experts and aggregator, each loaded under the prefix the manifest names.

use burn::tensor::Device;

use super::keys::{adapter_config_path, adapter_weights_path, split_ref};
use super::manifest::{Manifest, MANIFEST_FILE};
use super::Source;
use crate::aggregator::AggregatorConfig;
use crate::backbones::Backbone;
use crate::error::{Error, Result};
use crate::expert::ExpertGroupConfig;
use crate::lora::{AdapterGroup, LoraConfig, PeftAdapter};
use crate::pooling::Pooling;
use crate::router::{Router, RouterConfig};
use crate::task::Task;
use crate::text::InputEncoder;
use crate::weights::{LoadOptions, Scope};

/// A bundle's parts, ready to run.
#[derive(Debug)]
pub(crate) struct Parts {
    /// Where the bundle came from (its path, or a packed bundle's name): named in errors.
    pub origin: String,
    pub manifest: Manifest,
    pub encoder: InputEncoder,
    pub backbone: Backbone,
    /// `None` with a single task (or a manifest without a router).
    pub router: Option<Router>,
    pub tasks: Vec<Task>,
}

fn load_adapter(source: &mut Source, dir: &Option<String>, backbone: &Backbone) -> Result<Option<PeftAdapter>> {
    let Some(dir) = dir else { return Ok(None) };
    let cfg_path = adapter_config_path(dir);
    let cfg = LoraConfig::parse(&cfg_path, &source.text(&cfg_path)?)?;
    let weights = source.tensors(&adapter_weights_path(dir))?;
    Ok(Some(PeftAdapter::load(&cfg, &weights, backbone)?))
}

/// Reads every part of the bundle `source` (whose checked manifest is `manifest`) onto `device`,
/// the backbone's large float matrices quantised as they load where `options` says so.
pub(crate) fn read(mut source: Source, manifest: Manifest, device: &Device, options: LoadOptions) -> Result<Parts> {
    let origin = source.name();
    let (backbone, tokenizer) = source.backbone(&manifest.backbone, device, options.quantize)?;
    if manifest.input.max_length > backbone.max_positions() {
        return Err(Error::bundle(
            MANIFEST_FILE,
            format!(
                "input.max_length {} exceeds the backbone's max_position_embeddings {}",
                manifest.input.max_length,
                backbone.max_positions()
            ),
        ));
    }
    if manifest.pooling == Pooling::Pooler && !backbone.has_pooler() {
        return Err(Error::bundle(
            MANIFEST_FILE,
            "pooling `pooler` needs a backbone with a pooler (BERT's pooler.dense)",
        ));
    }
    let chat = source.chat_template(&manifest.backbone)?;
    let encoder = InputEncoder::new(MANIFEST_FILE, manifest.input.clone(), tokenizer, backbone.vocab_size(), chat)?;
    let hidden = backbone.hidden_size();

    let router = match &manifest.router {
        Some(r) if manifest.tasks.len() > 1 => {
            let adapter = load_adapter(&mut source, &r.adapter, &backbone)?;
            let adapter = AdapterGroup::stack(&[adapter.as_ref()], &backbone, device);
            let (file, name) = split_ref(&r.head);
            let config = RouterConfig::new(hidden, manifest.tasks.len());
            Some(config.load(adapter, &Scope::new(&source.tensors(file)?).at(name), device)?)
        }
        _ => None,
    };

    let mut tasks = Vec::with_capacity(manifest.tasks.len());
    for t in &manifest.tasks {
        let adapters =
            t.experts.iter().map(|e| load_adapter(&mut source, &e.adapter, &backbone)).collect::<Result<Vec<_>>>()?;
        let adapter_refs: Vec<_> = adapters.iter().map(Option::as_ref).collect();
        let adapter = AdapterGroup::stack(&adapter_refs, &backbone, device);
        let head_files = t
            .experts
            .iter()
            .map(|e| {
                let (file, name) = split_ref(&e.head);
                Ok((source.tensors(file)?, name, e.head_row))
            })
            .collect::<Result<Vec<_>>>()?;
        let heads: Vec<_> = head_files.iter().map(|(file, name, row)| (Scope::new(file).at(name), *row)).collect();
        let experts = ExpertGroupConfig::new(hidden, t.experts.len()).load(adapter, &heads, device)?;
        let aggregator = match &t.aggregator {
            Some(a) => {
                let (file, name) = split_ref(a);
                let config = AggregatorConfig::new(t.experts.len(), hidden);
                Some(config.load(&Scope::new(&source.tensors(file)?).at(name), device)?)
            }
            None => None,
        };
        tasks.push(Task {
            name: t.name.clone(),
            capabilities: t.experts.iter().map(|e| e.name.clone()).collect(),
            experts,
            aggregator,
            combine: t.combine,
        });
    }
    Ok(Parts { origin, manifest, encoder, backbone, router, tasks })
}
