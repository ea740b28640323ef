//! The bundle manifest (`dmoerm.json`), format version 1. Specified in `docs/bundle-format.md`.

use serde::{Deserialize, Serialize};

use super::keys::{adapter_config_path, adapter_weights_path, split_ref};
pub use crate::aggregator::Combine;
use crate::error::{Error, Result};
pub use crate::pooling::Pooling;
use crate::text::InputFormat;

/// The value of `format` in every manifest.
pub const FORMAT: &str = "dmoerm-bundle";
/// The manifest version this crate reads and writes.
pub const VERSION: u32 = 1;
/// The manifest's file name in a bundle directory.
pub const MANIFEST_FILE: &str = "dmoerm.json";

/// The shared transformer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// HF `config.json`.
    pub config: String,
    /// HF safetensors weights (one or several shards).
    pub weights: Vec<String>,
    /// HF `tokenizer.json`.
    pub tokenizer: String,
    /// HF `tokenizer_config.json`: the chat template and its special tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_config: Option<String>,
    /// `chat_template.jinja` (transformers 5), preferred to `tokenizer_config.json`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

/// The outer layer: a classifier of the user turns over the tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// A PEFT adapter directory for the router, or none (bare backbone).
    #[serde(default)]
    pub adapter: Option<String>,
    /// `file.safetensors` or `file.safetensors#prefix`: an `nn.Linear(H, tasks)`, rows in
    /// the order of `tasks`.
    pub head: String,
}

/// One capability expert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertSpec {
    /// The capability point, e.g. `empathy_ability`.
    pub name: String,
    /// A PEFT adapter directory, or none (bare backbone, e.g. a plain reward model).
    #[serde(default)]
    pub adapter: Option<String>,
    /// `file.safetensors[#prefix]`: the value head, an `nn.Linear(H, 1)`.
    pub head: String,
    /// With a head of several outputs (`nn.Linear(H, labels)`, a multi-label reward model):
    /// the row this expert reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_row: Option<usize>,
}

/// One task category (the inner layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Category name, e.g. `chat`.
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The capability experts, in the aggregator's input order.
    pub experts: Vec<ExpertSpec>,
    /// `file.safetensors[#prefix]`: the aggregator MLP (`nn.Sequential` names `0.`, `1.`, `2.`).
    /// Required when the task has more than one expert; with one expert the reward is the
    /// expert's value head.
    #[serde(default)]
    pub aggregator: Option<String>,
    /// Instead of an aggregator: how an ensemble combines its members' value heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine: Option<Combine>,
}

/// The manifest of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `"dmoerm-bundle"`.
    pub format: String,
    /// Format version, `1`.
    pub version: u32,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The shared transformer.
    pub backbone: BackboneSpec,
    /// Prompt template, truncation.
    pub input: InputFormat,
    /// Pooling of the final hidden states.
    pub pooling: Pooling,
    /// The router; required when there is more than one task.
    #[serde(default)]
    pub router: Option<RouterSpec>,
    /// The task categories.
    pub tasks: Vec<TaskSpec>,
}

impl Manifest {
    /// Parses and checks the structure (files are checked when the bundle loads).
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| Error::json(file, e))?;
        m.validate(file)?;
        Ok(m)
    }

    pub(crate) fn validate(&self, file: &str) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::bundle(file, format!("format is `{}`, expected `{FORMAT}`", self.format)));
        }
        if self.version != VERSION {
            return Err(Error::unsupported(
                file,
                format!("manifest version {} (this build reads {VERSION})", self.version),
            ));
        }
        if self.tasks.is_empty() {
            return Err(Error::bundle(file, "no tasks"));
        }
        if self.backbone.weights.is_empty() {
            return Err(Error::bundle(file, "backbone.weights is empty"));
        }
        if self.tasks.len() > 1 && self.router.is_none() {
            return Err(Error::bundle(file, "several tasks need a router"));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tasks {
            if !names.insert(t.name.as_str()) {
                return Err(Error::bundle(file, format!("task `{}` appears twice", t.name)));
            }
            if t.experts.is_empty() {
                return Err(Error::bundle(file, format!("task `{}` has no experts", t.name)));
            }
            if t.experts.len() > 1 && t.aggregator.is_none() && t.combine.is_none() {
                return Err(Error::bundle(
                    file,
                    format!(
                        "task `{}` has {} experts but no aggregator (or ensemble combine rule)",
                        t.name,
                        t.experts.len()
                    ),
                ));
            }
            if t.aggregator.is_some() && t.combine.is_some() {
                return Err(Error::bundle(
                    file,
                    format!("task `{}` has both an aggregator and a combine rule", t.name),
                ));
            }
            if let Some(Combine::Capability { index }) = t.combine {
                if index >= t.experts.len() {
                    return Err(Error::bundle(
                        file,
                        format!("task `{}`: combine reads capability {index} of {}", t.name, t.experts.len()),
                    ));
                }
            }
            let mut experts = std::collections::HashSet::new();
            for e in &t.experts {
                if !experts.insert(e.name.as_str()) {
                    return Err(Error::bundle(file, format!("task `{}`: expert `{}` appears twice", t.name, e.name)));
                }
            }
        }
        Ok(())
    }

    /// Every file the manifest refers to, text files first, in a stable order.
    pub fn files(&self) -> (Vec<String>, Vec<String>) {
        let mut text = vec![self.backbone.config.clone(), self.backbone.tokenizer.clone()];
        text.extend(self.backbone.tokenizer_config.iter().chain(&self.backbone.chat_template).cloned());
        let mut tensors = self.backbone.weights.clone();
        let adapter = |dir: &Option<String>, text: &mut Vec<String>, tensors: &mut Vec<String>| {
            if let Some(d) = dir {
                text.push(adapter_config_path(d));
                tensors.push(adapter_weights_path(d));
            }
        };
        if let Some(r) = &self.router {
            adapter(&r.adapter, &mut text, &mut tensors);
            tensors.push(split_ref(&r.head).0.to_string());
        }
        for t in &self.tasks {
            for e in &t.experts {
                adapter(&e.adapter, &mut text, &mut tensors);
                tensors.push(split_ref(&e.head).0.to_string());
            }
            if let Some(a) = &t.aggregator {
                tensors.push(split_ref(a).0.to_string());
            }
        }
        let mut seen = std::collections::HashSet::new();
        text.retain(|f| seen.insert(f.clone()));
        tensors.retain(|f| seen.insert(f.clone()));
        (text, tensors)
    }
}
