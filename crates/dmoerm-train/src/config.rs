//! The training config (`train.toml`): one file drives `dmoerm train all` and each phase.
//!
//! ```toml
//! backbone = "models/minilm"          # a Hugging Face checkpoint directory
//! out = "runs/minilm"                 # the run directory (config, logs, metrics, bundle)
//! pooling = "cls"                     # last (reference) | cls | mean
//! seed = 0
//!
//! [input]                             # the bundle's input format (docs/bundle-format.md)
//! template = "{query} [SEP] {response}"
//! max_length = 128
//!
//! [data]
//! train = "train.jsonl"               # ranked or pairwise preferences
//! valid = "valid.jsonl"
//! capabilities_train = "caps_train.jsonl"   # capability pairs (phase 2)
//! capabilities_valid = "caps_valid.jsonl"
//!
//! [[tasks]]
//! name = "chat"
//! capabilities = ["relevance", "empathy"]
//!
//! [lora]                              # reference: r = 32, alpha = 32, q and v projections
//! r = 8
//! alpha = 16
//! layers = 2                          # LoRA on the top 2 layers only (lower ones are cached)
//!
//! aggregator_init = "experts"         # experts (start at the mean expert score) | random
//!
//! [phase1]                            # also: [router], [phase2], [phase3], [baseline]
//! lr = 1e-3
//! ```
//!
//! Relative paths are relative to the config file. Every section but `[input]`, `[data]` and
//! `[[tasks]]` has defaults; the learning rates default to the DMoERM reference values
//! (phase 1: 1e-7, phase 2: 5e-5, phase 3: 1e-6), which were tuned for full fine-tuning of a
//! 1.8B model: LoRA on a small backbone wants larger ones (see `tests/fixtures/train/`).

use std::path::{Path, PathBuf};

use dmoerm::bundle::Pooling;
use dmoerm::text::InputFormat;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The whole config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The Hugging Face checkpoint directory of the backbone.
    pub backbone: PathBuf,
    /// The run directory.
    pub out: PathBuf,
    /// Pooling of the final hidden states.
    #[serde(default = "default_pooling")]
    pub pooling: Pooling,
    /// Seed of initialisation and data order.
    #[serde(default)]
    pub seed: u64,
    /// Bundle name.
    #[serde(default)]
    pub name: Option<String>,
    /// The input format.
    pub input: InputFormat,
    /// Data files.
    pub data: DataConfig,
    /// Task categories and their capability points, in bundle order.
    pub tasks: Vec<TaskConfig>,
    /// LoRA settings of every adapter.
    #[serde(default)]
    pub lora: LoraSettings,
    /// The router (a linear head on the frozen backbone's pooled user turns).
    #[serde(default = "PhaseSettings::router")]
    pub router: PhaseSettings,
    /// Phase 1: per task, a LoRA + value head on the overall preference.
    #[serde(default = "PhaseSettings::phase1")]
    pub phase1: PhaseSettings,
    /// Phase 2: per capability point, a LoRA expert + value head from phase 1.
    #[serde(default = "PhaseSettings::phase2")]
    pub phase2: PhaseSettings,
    /// Phase 3: the aggregator MLP.
    #[serde(default = "PhaseSettings::phase3")]
    pub phase3: PhaseSettings,
    /// How the aggregator starts.
    #[serde(default)]
    pub aggregator_init: AggregatorInit,
    /// The single-RM and ensemble baselines (their training uses `[phase1]`).
    #[serde(default)]
    pub baseline: BaselineSettings,
}

/// The aggregator's starting point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregatorInit {
    /// The mean of the experts' own scores (their phase-2 value heads): training starts from
    /// a sensible reward and has less to learn from the noisy overall labels.
    #[default]
    Experts,
    /// PyTorch's default initialisation, as the reference.
    Random,
}

fn default_pooling() -> Pooling {
    Pooling::Last
}

/// Data files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Preferences for training (ranked or pairwise JSONL), with categories.
    pub train: PathBuf,
    /// Preferences for validation (early stopping).
    pub valid: PathBuf,
    /// Capability pairs for phase 2.
    #[serde(default)]
    pub capabilities_train: Option<PathBuf>,
    /// Capability pairs for phase 2's validation.
    #[serde(default)]
    pub capabilities_valid: Option<PathBuf>,
}

/// One task category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Category name, as in the data's `label` / `category`.
    pub name: String,
    /// Capability points, as in the capability pairs' `point`.
    pub capabilities: Vec<String>,
    /// Free text for the manifest.
    #[serde(default)]
    pub description: Option<String>,
}

/// LoRA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSettings {
    /// Rank (reference 32).
    #[serde(default = "LoraSettings::default_r")]
    pub r: usize,
    /// Alpha (reference 32); the scale is `alpha / r`.
    #[serde(default = "LoraSettings::default_alpha")]
    pub alpha: f64,
    /// Module names, PEFT style (a path matches when it ends with `.<name>`). Default: the
    /// query and value projections (`q_proj`, `v_proj` / BERT `query`, `value`), as the reference.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// LoRA only on the top `layers` layers (default: all). The layers below are frozen and
    /// their output is computed once per text and cached, which makes CPU training practical.
    #[serde(default)]
    pub layers: Option<usize>,
}

impl LoraSettings {
    fn default_r() -> usize {
        32
    }
    fn default_alpha() -> f64 {
        32.0
    }
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self { r: Self::default_r(), alpha: Self::default_alpha(), targets: None, layers: None }
    }
}

/// Optimisation settings of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSettings {
    /// Adam learning rate.
    pub lr: f64,
    /// Examples per step: prompts (all their responses), pairs (phase 2) or queries (router).
    #[serde(default = "PhaseSettings::default_batch")]
    pub batch_size: usize,
    /// Most optimisation steps.
    #[serde(default = "PhaseSettings::default_steps")]
    pub max_steps: usize,
    /// Validate (and checkpoint) every this many steps.
    #[serde(default = "PhaseSettings::default_eval_every")]
    pub eval_every: usize,
    /// Stop after this many validations without a better accuracy.
    #[serde(default = "PhaseSettings::default_patience")]
    pub patience: usize,
}

impl PhaseSettings {
    fn default_batch() -> usize {
        8
    }
    fn default_steps() -> usize {
        1000
    }
    fn default_eval_every() -> usize {
        50
    }
    fn default_patience() -> usize {
        5
    }
    fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            batch_size: Self::default_batch(),
            max_steps: Self::default_steps(),
            eval_every: Self::default_eval_every(),
            patience: Self::default_patience(),
        }
    }
    /// Router default (ours: the reference does not give one): 1e-3.
    pub fn router() -> Self {
        Self::with_lr(1e-3)
    }
    /// Phase 1 reference: 1e-7.
    pub fn phase1() -> Self {
        Self::with_lr(1e-7)
    }
    /// Phase 2 reference: 5e-5.
    pub fn phase2() -> Self {
        Self::with_lr(5e-5)
    }
    /// Phase 3 reference: 1e-6.
    pub fn phase3() -> Self {
        Self::with_lr(1e-6)
    }
}

/// Baseline settings. The ensemble's combination rule (mean, worst case, uncertainty-weighted)
/// is chosen when it scores (`dmoerm eval --combine`); its bundle says `mean`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSettings {
    /// Ensemble members (seeds `seed + 1 ..= seed + members`).
    #[serde(default = "BaselineSettings::default_members")]
    pub members: usize,
}

impl BaselineSettings {
    fn default_members() -> usize {
        3
    }
}

impl Default for BaselineSettings {
    fn default() -> Self {
        Self { members: Self::default_members() }
    }
}

impl TrainConfig {
    /// Reads and checks a config; relative paths become relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
        let file = path.display().to_string();
        let mut cfg: TrainConfig =
            toml::from_str(&text).map_err(|e| Error::Config { file: file.clone(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.backbone);
        fix(&mut cfg.out);
        fix(&mut cfg.data.train);
        fix(&mut cfg.data.valid);
        if let Some(p) = cfg.data.capabilities_train.as_mut() {
            fix(p);
        }
        if let Some(p) = cfg.data.capabilities_valid.as_mut() {
            fix(p);
        }
        cfg.validate(&file)?;
        Ok(cfg)
    }

    /// Checks what serde cannot.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |message: String| Err(Error::Config { file: file.to_string(), message });
        if self.tasks.is_empty() {
            return bad("no [[tasks]]".into());
        }
        // Task and capability names become directory and tensor names in the bundle.
        let safe = |n: &str| {
            !n.is_empty() && !n.starts_with('.') && n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        let mut names = std::collections::HashSet::new();
        for t in &self.tasks {
            if let Some(bad_name) = std::iter::once(&t.name).chain(&t.capabilities).find(|n| !safe(n)) {
                return bad(format!("`{bad_name}`: task and capability names may use letters, digits, _ - . only"));
            }
            if !names.insert(&t.name) {
                return bad(format!("task `{}` appears twice", t.name));
            }
            if t.capabilities.is_empty() {
                return bad(format!("task `{}` has no capabilities", t.name));
            }
            let mut caps = std::collections::HashSet::new();
            if let Some(c) = t.capabilities.iter().find(|c| !caps.insert(*c)) {
                return bad(format!("task `{}`: capability `{c}` appears twice", t.name));
            }
        }
        if self.lora.r == 0 || !self.lora.alpha.is_finite() || self.lora.alpha <= 0.0 {
            return bad("lora.r and lora.alpha must be positive".into());
        }
        if self.lora.layers == Some(0) {
            return bad("lora.layers must be at least 1".into());
        }
        for (name, p) in
            [("router", &self.router), ("phase1", &self.phase1), ("phase2", &self.phase2), ("phase3", &self.phase3)]
        {
            if !(p.lr > 0.0 && p.lr.is_finite()) || p.batch_size == 0 || p.eval_every == 0 || p.patience == 0 {
                return bad(format!("[{name}]: lr, batch_size, eval_every and patience must be positive"));
            }
        }
        if self.baseline.members == 0 {
            return bad("[baseline]: members must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
backbone = "bb"
out = "run"
[input]
max_length = 64
[data]
train = "t.jsonl"
valid = "v.jsonl"
[[tasks]]
name = "chat"
capabilities = ["a", "b"]
"#;

    fn load(text: &str) -> Result<TrainConfig> {
        let dir = std::env::temp_dir().join(format!("dmoerm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("c{}.toml", text.len()));
        std::fs::write(&p, text).unwrap();
        TrainConfig::load(&p)
    }

    #[test]
    fn defaults_are_the_reference_values_and_paths_are_relative_to_the_file() {
        let c = load(MIN).unwrap();
        assert_eq!((c.lora.r, c.lora.alpha), (32, 32.0));
        assert_eq!((c.phase1.lr, c.phase2.lr, c.phase3.lr), (1e-7, 5e-5, 1e-6));
        assert_eq!(c.pooling, Pooling::Last);
        assert!(c.data.train.ends_with("t.jsonl") && c.data.train.is_absolute() == c.out.is_absolute());
        assert_eq!(c.data.train.parent(), c.out.parent());
    }

    #[test]
    fn mistakes_are_errors_that_name_the_file() {
        for (extra, want) in [
            ("\n[lora]\nrank = 4\n", "unknown field `rank`"),
            ("\n[[tasks]]\nname = \"chat\"\ncapabilities = [\"x\"]\n", "appears twice"),
            ("\n[phase1]\nlr = 0.0\n", "[phase1]"),
        ] {
            let err = load(&format!("{MIN}{extra}")).unwrap_err().to_string();
            assert!(err.contains(".toml: ") && err.contains(want), "{err}");
        }
    }
}
