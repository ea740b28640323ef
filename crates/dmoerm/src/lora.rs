//! LoRA adapters with PEFT semantics, and many of them batched on one frozen backbone.
//!
//! PEFT adds to a frozen linear layer `y = x W^T + b` the low-rank term
//! `scale * (x A^T) B^T`, with `A: [r, in]` (`lora_A.weight`), `B: [out, r]`
//! (`lora_B.weight`) and `scale = lora_alpha / r` (`lora_alpha / sqrt(r)` with rsLoRA).
//!
//! The experts of a task all run in ONE forward pass: the batch is laid out expert-major
//! (rows `e*m .. (e+1)*m` belong to expert `e`), the base weights are shared by every row,
//! and each adapted projection adds a batched low-rank product
//! `[E, m*S, in] x [E, in, r] x [E, r, out]` ([`AdapterGroup::delta`]).
//! Experts with smaller ranks or fewer target modules are zero-padded, which adds nothing.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::weights::TensorFile;

/// The fields of PEFT's `adapter_config.json` that change the math.
#[derive(Debug, Clone, Deserialize)]
pub struct LoraConfig {
    /// Must be `"LORA"` when present.
    #[serde(default)]
    pub peft_type: Option<String>,
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha; the scale is `alpha / r`.
    pub lora_alpha: f64,
    /// Module names the adapter targets (informational: the weights say which modules).
    #[serde(default)]
    pub target_modules: Option<serde_json::Value>,
    /// rsLoRA: scale `alpha / sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA is not supported.
    #[serde(default)]
    pub use_dora: bool,
    /// Only `"none"` is supported.
    #[serde(default)]
    pub bias: Option<String>,
    /// Per-module rank overrides (the ranks are read from the weights' shapes).
    #[serde(default)]
    pub rank_pattern: HashMap<String, serde_json::Value>,
    /// Per-module alpha overrides (not supported).
    #[serde(default)]
    pub alpha_pattern: HashMap<String, serde_json::Value>,
    /// Transposed (Conv1D-style) base weights are not supported.
    #[serde(default)]
    pub fan_in_fan_out: bool,
}

impl LoraConfig {
    /// Parses and checks an `adapter_config.json`.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let cfg: LoraConfig = serde_json::from_str(text).map_err(|e| Error::json(file, e))?;
        if let Some(t) = &cfg.peft_type {
            if t != "LORA" {
                return Err(Error::unsupported(file, format!("peft_type {t}: only LORA adapters")));
            }
        }
        if cfg.use_dora {
            return Err(Error::unsupported(file, "DoRA adapters (use_dora = true)"));
        }
        if !matches!(cfg.bias.as_deref(), None | Some("none")) {
            return Err(Error::unsupported(file, "LoRA bias other than \"none\""));
        }
        if !cfg.alpha_pattern.is_empty() {
            return Err(Error::unsupported(file, "alpha_pattern"));
        }
        if cfg.fan_in_fan_out {
            return Err(Error::unsupported(file, "fan_in_fan_out = true"));
        }
        if cfg.r == 0 {
            return Err(Error::bundle(file, "r must be positive"));
        }
        Ok(cfg)
    }

    /// The PEFT scale for a module of rank `r`.
    pub fn scale(&self, r: usize) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (r as f64).sqrt()
        } else {
            self.lora_alpha / r as f64
        }
    }
}

/// One adapted module of one adapter, in host memory.
#[derive(Debug, Clone)]
struct LoraModule {
    /// `A^T`, `[in, r]`.
    a_t: Vec<f32>,
    /// `scale * B^T`, `[r, out]`.
    b_t: Vec<f32>,
    rank: usize,
}

/// A PEFT LoRA adapter, read and checked against the backbone's projections.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    modules: BTreeMap<String, LoraModule>,
}

/// What an adapter needs to know about the backbone: its adaptable projections.
pub trait Projections {
    /// `(d_in, d_out)` of the projection at canonical module path `path`, if it exists.
    fn projection(&self, path: &str) -> Option<(usize, usize)>;
    /// Maps a checkpoint module path (with or without the family's `model.` / `bert.`
    /// prefix) to the canonical path.
    fn canonical_path<'a>(&self, path: &'a str) -> &'a str;
    /// Whether `path` is a linear module of the checkpoint that the reward model never runs
    /// (BERT's pooler: PEFT's `dense` target adapts it too). Its LoRA weights are ignored.
    fn unused_module(&self, _path: &str) -> bool {
        false
    }
}

impl PeftAdapter {
    /// Reads `adapter_model.safetensors` (`weights`) with its parsed `adapter_config.json`.
    pub fn load(config: &LoraConfig, weights: &TensorFile, backbone: &dyn Projections) -> Result<Self> {
        // Group lora_A / lora_B by module path.
        let mut pairs: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for name in weights.names() {
            let unexpected = |reason: &str| Error::UnexpectedTensor {
                file: weights.file.clone(),
                tensor: name.clone(),
                reason: reason.to_string(),
            };
            let stripped = name.strip_prefix("base_model.model.").unwrap_or(&name);
            let (module, which) = if let Some(m) =
                stripped.strip_suffix(".lora_A.weight").or_else(|| stripped.strip_suffix(".lora_A.default.weight"))
            {
                (m, 'A')
            } else if let Some(m) =
                stripped.strip_suffix(".lora_B.weight").or_else(|| stripped.strip_suffix(".lora_B.default.weight"))
            {
                (m, 'B')
            } else {
                return Err(unexpected("not a lora_A / lora_B weight of a linear layer"));
            };
            let module = backbone.canonical_path(module).to_string();
            if backbone.unused_module(&module) {
                continue;
            }
            if backbone.projection(&module).is_none() {
                return Err(unexpected(&format!("the backbone has no linear module `{module}`")));
            }
            let slot = pairs.entry(module).or_default();
            if which == 'A' {
                slot.0 = Some(name.clone());
            } else {
                slot.1 = Some(name.clone());
            }
        }
        if pairs.is_empty() {
            return Err(Error::bundle(&weights.file, "the adapter has no LoRA weights"));
        }
        let mut modules = BTreeMap::new();
        for (module, (a_name, b_name)) in pairs {
            let (a_name, b_name) = match (a_name, b_name) {
                (Some(a), Some(b)) => (a, b),
                (a, _) => {
                    let have = if a.is_some() { "lora_A" } else { "lora_B" };
                    let lack = if a.is_some() { "lora_B" } else { "lora_A" };
                    return Err(Error::MissingTensor {
                        file: weights.file.clone(),
                        tensor: format!("{module}.{lack}.weight (the file has its {have})"),
                    });
                }
            };
            let (d_in, d_out) = backbone.projection(&module).unwrap_or_default();
            let rank = *weights.shape(&a_name)?.first().unwrap_or(&0);
            if rank == 0 {
                return Err(Error::bundle(&weights.file, format!("`{a_name}` has rank 0")));
            }
            let (a, _) = weights.read_f32(&a_name, Some(&[rank, d_in]))?;
            let (b, _) = weights.read_f32(&b_name, Some(&[d_out, rank]))?;
            let scale = config.scale(rank) as f32;
            let a_t = crate::weights::transpose(&a, rank, d_in);
            let b_t: Vec<f32> = crate::weights::transpose(&b, d_out, rank).into_iter().map(|v| v * scale).collect();
            modules.insert(module, LoraModule { a_t, b_t, rank });
        }
        Ok(Self { modules })
    }

    /// Canonical paths of the modules this adapter changes.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }
}

/// The stacked low-rank weights of one projection for `E` adapters.
#[derive(Debug, Clone)]
struct StackedLora {
    /// `[E, in, r_max]`.
    a: Tensor<3>,
    /// `[E, r_max, out]`, scale folded in.
    b: Tensor<3>,
}

/// `E` adapters stacked so that they run side by side in one batched forward pass.
#[derive(Debug, Clone)]
pub struct AdapterGroup {
    experts: usize,
    modules: HashMap<String, StackedLora>,
}

impl AdapterGroup {
    /// Stacks adapters; `adapters[e] = None` is an expert that uses the bare backbone.
    pub fn stack(adapters: &[Option<&PeftAdapter>], backbone: &dyn Projections, device: &Device) -> Option<Self> {
        let experts = adapters.len();
        let mut paths: Vec<&str> = adapters.iter().flatten().flat_map(|a| a.modules()).collect();
        paths.sort_unstable();
        paths.dedup();
        if paths.is_empty() {
            return None;
        }
        let mut modules = HashMap::new();
        for path in paths {
            let (d_in, d_out) = backbone.projection(path).unwrap_or_default();
            let r_max =
                adapters.iter().flatten().filter_map(|a| a.modules.get(path).map(|m| m.rank)).max().unwrap_or(1);
            let mut a = vec![0.0f32; experts * d_in * r_max];
            let mut b = vec![0.0f32; experts * r_max * d_out];
            for (e, adapter) in adapters.iter().enumerate() {
                let Some(m) = adapter.and_then(|ad| ad.modules.get(path)) else { continue };
                // A^T is [in, r]: row i -> a[e, i, 0..r]
                for i in 0..d_in {
                    let dst = e * d_in * r_max + i * r_max;
                    a[dst..dst + m.rank].copy_from_slice(&m.a_t[i * m.rank..(i + 1) * m.rank]);
                }
                // scale * B^T is [r, out]: rows 0..r of b[e]
                let dst = e * r_max * d_out;
                b[dst..dst + m.rank * d_out].copy_from_slice(&m.b_t);
            }
            let a = Tensor::from_data(TensorData::new(a, [experts, d_in, r_max]), device);
            let b = Tensor::from_data(TensorData::new(b, [experts, r_max, d_out]), device);
            modules.insert(path.to_string(), StackedLora { a, b });
        }
        Some(Self { experts, modules })
    }

    /// From tensors already stacked, e.g. trainable ones: `modules[path] = (a, b)` with
    /// `a = [A_e^T]` `[E, in, r]` and `b = [scale_e * B_e^T]` `[E, r, out]`.
    pub fn from_stacked(experts: usize, modules: impl IntoIterator<Item = (String, (Tensor<3>, Tensor<3>))>) -> Self {
        let modules = modules.into_iter().map(|(path, (a, b))| (path, StackedLora { a, b })).collect();
        Self { experts, modules }
    }

    /// Number of stacked adapters.
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// The LoRA term of projection `path` for an expert-major batch, or `None` when no
    /// adapter of the group touches that projection.
    ///
    /// # Shapes
    /// - x: `[E * m, S, in]`
    /// - output: `[E * m, S, out]`
    pub fn delta(&self, path: &str, x: Tensor<3>) -> Option<Tensor<3>> {
        let lora = self.modules.get(path)?;
        let [batch, seq, d_in] = x.dims();
        let rows = batch / self.experts;
        let d_out = lora.b.dims()[2];
        let x = x.reshape([self.experts, rows * seq, d_in]); // [E, m*S, in]
        let delta = x.matmul(lora.a.clone()).matmul(lora.b.clone()); // [E, m*S, out]
        Some(delta.reshape([batch, seq, d_out]))
    }
}
