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

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::batched_matmul;
use crate::weights::{derived, param, TensorFile};

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
#[derive(Module, Debug)]
pub struct StackedLora {
    /// `[E, in, r_max]`: `A_e^T`.
    pub a: Param<Tensor<3>>,
    /// `[E, r_max, out]`: `scale_e * B_e^T`.
    pub b: Param<Tensor<3>>,
}

/// `E` adapters stacked so that they run side by side in one batched forward pass: a burn
/// module whose parameters are the stacked `A` and `B` of every adapted projection.
#[derive(Module, Debug)]
pub struct AdapterGroup {
    /// One per adapted projection, in the order of `paths`.
    projections: Vec<StackedLora>,
    /// The canonical module path of each entry of `projections`.
    #[module(skip)]
    paths: Vec<String>,
    experts: usize,
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
        let mut projections = Vec::with_capacity(paths.len());
        for &path in &paths {
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
            projections.push(StackedLora { a: derived(a), b: derived(b) });
        }
        Some(Self { projections, paths: paths.into_iter().map(str::to_string).collect(), experts })
    }

    /// From tensors already stacked (they may be computed from trainable ones): `modules[path] = (a, b)` with
    /// `a = [A_e^T]` `[E, in, r]` and `b = [scale_e * B_e^T]` `[E, r, out]`.
    fn from_stacked(experts: usize, modules: impl IntoIterator<Item = (String, (Tensor<3>, Tensor<3>))>) -> Self {
        let (paths, projections) =
            modules.into_iter().map(|(path, (a, b))| (path, StackedLora { a: derived(a), b: derived(b) })).unzip();
        Self { projections, paths, experts }
    }

    /// Number of stacked adapters.
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Whether the projection at `path` has an adapter in this group.
    pub fn adapts(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// The LoRA term of projection `path` for an expert-major batch, or `None` when no
    /// adapter of the group touches that projection.
    ///
    /// # Shapes
    /// - x: `[E * m, S, in]`
    /// - output: `[E * m, S, out]`
    pub fn delta(&self, path: &str, x: Tensor<3>) -> Option<Tensor<3>> {
        let lora = &self.projections[self.paths.iter().position(|p| p == path)?];
        let [batch, seq, d_in] = x.dims();
        let rows = batch / self.experts;
        let b = lora.b.val();
        let d_out = b.dims()[2];
        let x = x.reshape([self.experts, rows * seq, d_in]); // [E, m*S, in]
        let delta = batched_matmul(batched_matmul(x, lora.a.val()), b); // [E, m*S, out]
        Some(delta.reshape([batch, seq, d_out]))
    }
}

/// What PEFT's `adapter_config.json` says about an adapter this crate writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterSettings {
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha; the scale is `alpha / r`.
    pub lora_alpha: f64,
    /// The projection names adapted (`q_proj`, `value`, ...).
    pub target_modules: Vec<String>,
    /// The adapted layers.
    pub layers_to_transform: Vec<usize>,
}

impl AdapterSettings {
    /// The scale `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// `adapter_config.json`.
    pub fn config_json(&self) -> String {
        let config = serde_json::json!({
            "peft_type": "LORA",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": self.target_modules,
            "layers_to_transform": self.layers_to_transform,
            "lora_dropout": 0.0,
            "bias": "none",
            "use_rslora": false,
            "use_dora": false,
        });
        serde_json::to_string_pretty(&config).unwrap_or_default() + "\n"
    }
}

/// The low-rank factors of one adapted projection, unscaled.
#[derive(Module, Debug)]
pub struct LoraProjection {
    /// `A^T`, `[in, r]` (PEFT's `lora_A.weight` transposed).
    pub a: Param<Tensor<2>>,
    /// `B^T`, `[r, out]` (PEFT's `lora_B.weight` transposed).
    pub b: Param<Tensor<2>>,
}

/// One LoRA adapter (one expert's, or the router's) as a module: what a trainer trains and
/// what is written as a PEFT adapter directory. [`AdapterGroup`] stacks several to run them.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    projections: Vec<LoraProjection>,
    /// The canonical module path of each entry of `projections`.
    #[module(skip)]
    paths: Vec<String>,
    #[module(skip)]
    settings: AdapterSettings,
}

impl LoraAdapter {
    /// From `(path, A^T [in, r], B^T [r, out])` per adapted projection.
    pub fn new(settings: AdapterSettings, projections: Vec<(String, Tensor<2>, Tensor<2>)>) -> Self {
        let (paths, projections) =
            projections.into_iter().map(|(path, a, b)| (path, LoraProjection { a: param(a), b: param(b) })).unzip();
        Self { projections, paths, settings }
    }

    /// `(path, A^T, scale * B^T)` of every projection, as [`AdapterGroup::stack_adapters`] stacks them.
    fn scaled(&self) -> impl Iterator<Item = (&str, Tensor<2>, Tensor<2>)> {
        let scale = self.settings.scale();
        self.paths.iter().zip(&self.projections).map(move |(p, m)| (p.as_str(), m.a.val(), m.b.val().mul_scalar(scale)))
    }

    /// The PEFT adapter directory's two files: `adapter_config.json` and the weights
    /// (`base_model.model.<path>.lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`).
    pub fn to_peft(&self) -> Result<(String, crate::weights::TensorWriter)> {
        use crate::bundle::keys::peft;
        let mut out = crate::weights::TensorWriter::new();
        for (path, m) in self.paths.iter().zip(&self.projections) {
            out.insert_tensor(peft::lora_a(path), m.a.val().transpose())?;
            out.insert_tensor(peft::lora_b(path), m.b.val().transpose())?;
        }
        Ok((self.settings.config_json(), out))
    }
}

impl AdapterGroup {
    /// Stacks adapter modules expert-major (all with the same projections and rank, as one
    /// trainer makes them), folding each one's scale into `B`; `None` when there are none.
    ///
    /// # Shapes
    /// - each projection: `a` `[E, in, r]`, `b` `[E, r, out]`
    pub fn stack_adapters(adapters: &[&LoraAdapter]) -> Option<Self> {
        let first = adapters.first()?;
        let mut per_path: Vec<(Vec<Tensor<3>>, Vec<Tensor<3>>)> =
            first.paths.iter().map(|_| Default::default()).collect();
        for adapter in adapters {
            for (slot, (_, a, b)) in per_path.iter_mut().zip(adapter.scaled()) {
                slot.0.push(a.unsqueeze::<3>());
                slot.1.push(b.unsqueeze::<3>());
            }
        }
        let modules =
            first.paths.iter().cloned().zip(per_path.into_iter().map(|(a, b)| (Tensor::cat(a, 0), Tensor::cat(b, 0))));
        Some(Self::from_stacked(adapters.len(), modules))
    }
}
