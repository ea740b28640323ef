//! The bundle manifest (`dmoerm.json`), format version 1. Specified in `docs/bundle-format.md`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::text::InputFormat;

/// The value of `format` in every manifest.
pub const FORMAT: &str = "dmoerm-bundle";
/// The manifest version this crate reads and writes.
pub const VERSION: u32 = 1;
/// The manifest's file name in a bundle directory.
pub const MANIFEST_FILE: &str = "dmoerm.json";

/// Which hidden state stands for the whole sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The last non-padding token (the DMoERM reference; decoder backbones).
    Last,
    /// The first token (`[CLS]` of BERT).
    Cls,
    /// The mean over the non-padding tokens.
    Mean,
}

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

/// How an ensemble of reward models (a task whose experts are ensemble members and which has
/// no aggregator) turns the members' scores `s_1..s_M` into one reward.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Combine {
    /// `mean(s)`.
    Mean,
    /// Worst case: `min(s)`.
    Min,
    /// Uncertainty-weighted: `mean(s) - lambda * var(s)` (population variance).
    Uncertainty {
        /// Weight of the variance penalty.
        lambda: f64,
    },
}

impl Combine {
    /// The combined reward of member scores `scores` (not empty).
    pub fn apply(&self, scores: &[f32]) -> f32 {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
        match *self {
            Combine::Mean => mean as f32,
            Combine::Min => scores.iter().copied().fold(f32::INFINITY, f32::min),
            Combine::Uncertainty { lambda } => {
                let var = scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / n;
                (mean - lambda * var) as f32
            }
        }
    }
}

impl std::str::FromStr for Combine {
    type Err = String;

    /// `mean`, `min`, `uncertainty` (lambda 0.5) or `uncertainty:LAMBDA`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "mean" => Ok(Combine::Mean),
            None if s == "min" => Ok(Combine::Min),
            None if s == "uncertainty" => Ok(Combine::Uncertainty { lambda: 0.5 }),
            Some(("uncertainty", l)) => l
                .parse::<f64>()
                .ok()
                .filter(|l| l.is_finite() && *l >= 0.0)
                .map(|lambda| Combine::Uncertainty { lambda })
                .ok_or_else(|| format!("bad lambda `{l}` (a number >= 0)")),
            _ => Err(format!("unknown rule `{s}` (mean, min, uncertainty[:LAMBDA])")),
        }
    }
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

    fn validate(&self, file: &str) -> Result<()> {
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

/// `"file#name"` -> (`"file"`, `"name."`); `"file"` -> (`"file"`, `""`).
pub fn split_ref(reference: &str) -> (&str, String) {
    match reference.split_once('#') {
        Some((file, name)) if !name.is_empty() => (file, format!("{name}.")),
        Some((file, _)) => (file, String::new()),
        None => (reference, String::new()),
    }
}

/// `<dir>/adapter_config.json`
pub fn adapter_config_path(dir: &str) -> String {
    format!("{}/adapter_config.json", dir.trim_end_matches('/'))
}

/// `<dir>/adapter_model.safetensors`
pub fn adapter_weights_path(dir: &str) -> String {
    format!("{}/adapter_model.safetensors", dir.trim_end_matches('/'))
}
