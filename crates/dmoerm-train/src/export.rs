//! Trained parameters -> the model's modules -> a bundle directory, written by
//! [`dmoerm::bundle::write`] (which owns every file and key name of the format).

use std::path::Path;

use dmoerm::aggregator::Combine;
use dmoerm::bundle::write::{self, BackboneFiles, BundleOut, ExpertOut, TaskOut};
use dmoerm::text::InputFormat;
use dmoerm::Pooling;

use crate::error::Result;
use crate::features::Frozen;
use crate::objectives::{value_heads, AggregatorObjective, LoraLayout, RouterObjective};
use crate::params::Params;

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
    /// The aggregator's parameters, for a task with several experts.
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
    /// The router head's parameters, for several tasks.
    pub router: Option<&'a Params>,
    pub tasks: Vec<ExportTask<'a>>,
}

/// Writes the bundle into `out` (replacing an earlier bundle there; refusing to overwrite a
/// directory that is not a bundle).
pub fn write_bundle(out: &Path, e: &Export) -> Result<()> {
    let hidden = e.frozen.hidden_size();
    let router = e.router.map(RouterObjective::router);
    let adapters: Vec<Vec<_>> =
        e.tasks.iter().map(|t| t.experts.iter().map(|x| e.layout.adapter(x.params)).collect()).collect();
    let heads: Vec<_> =
        e.tasks.iter().map(|t| value_heads(&t.experts.iter().map(|x| x.params).collect::<Vec<_>>(), hidden)).collect();
    let aggregators: Vec<_> = e.tasks.iter().map(|t| t.aggregator.map(AggregatorObjective::aggregator)).collect();
    let tasks = e
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| TaskOut {
            name: t.name.clone(),
            description: t.description.clone(),
            experts: t
                .experts
                .iter()
                .zip(&adapters[i])
                .map(|(x, a)| ExpertOut { name: x.name.clone(), adapter: Some(a) })
                .collect(),
            heads: &heads[i],
            aggregator: aggregators[i].as_ref(),
            combine: t.combine,
        })
        .collect();
    let backbone = BackboneFiles { dir: e.frozen.dir.clone(), spec: e.frozen.spec.clone() };
    let bundle = BundleOut {
        name: e.name.clone(),
        description: e.description.clone(),
        backbone: &backbone,
        input: e.input.clone(),
        pooling: e.pooling,
        router: router.as_ref(),
        tasks,
    };
    write::write_bundle(out, &bundle)?;
    Ok(())
}
