//! BERT-family encoder: BERT, MiniLM (e.g. all-MiniLM-L6-v2). Mirrors HF `modeling_bert.py`:
//! absolute position embeddings, token types, post-LayerNorm residual blocks, GELU.
//!
//! ```text
//! h = LayerNorm(word_embeddings(ids) + position_embeddings(pos) + token_type_embeddings(0))
//! for each layer:
//!     h = LayerNorm(h + attention.output.dense(self_attention(h)))     # padding mask only
//!     h = LayerNorm(h + output.dense(gelu(intermediate.dense(h))))
//! ```
//! Pooling is the bundle's choice (CLS, mean, last token); the pooler (`tanh(dense(h_cls))`,
//! what `BertForSequenceClassification` reads) is loaded when the checkpoint has it, for the
//! `pooler` pooling.

use std::ops::Range;

use burn::tensor::activation::gelu_approximate;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

use super::{Held, LayerNorm, Projection, Table, TokenBatch, Visibility};
use crate::bundle::keys;
use crate::error::{Error, Result};
// exact GELU: a vectorised (natively parallel) CPU path on flex (see `kernels`)
use crate::kernels::gelu;
use crate::lora::AdapterGroup;
use crate::weights::{Scope, TensorFile};

#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
    /// A causal BERT (not supported).
    #[serde(default)]
    is_decoder: bool,
    /// Cross-attention layers (not supported; transformers needs `is_decoder` for them).
    #[serde(default)]
    add_cross_attention: bool,
    /// Heads removed per layer (not supported).
    #[serde(default)]
    pruned_heads: serde_json::Map<String, serde_json::Value>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// GELU variant of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    /// `gelu`: the erf form.
    Exact,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    Tanh,
}

/// A resolved BERT config.
#[derive(Debug, Clone)]
pub struct BertConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Gelu,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// Parses and resolves a `config.json`.
    pub fn parse(file: &str, json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::json(file, e))?;
        Self::from_value(file, &value)
    }

    /// From the parsed `config.json` (`file` names it in errors).
    pub fn from_value(file: &str, value: &serde_json::Value) -> Result<Self> {
        let raw = RawConfig::deserialize(value).map_err(|e| Error::json(file, e))?;
        let hidden_act = match raw.hidden_act.as_str() {
            "gelu" => Gelu::Exact,
            "gelu_new" | "gelu_pytorch_tanh" => Gelu::Tanh,
            other => return Err(Error::unsupported(file, format!("hidden_act `{other}`"))),
        };
        if let Some(p) = raw.position_embedding_type.as_deref() {
            if p != "absolute" {
                return Err(Error::unsupported(file, format!("position_embedding_type `{p}`")));
            }
        }
        for (field, set) in [
            ("is_decoder", raw.is_decoder),
            ("add_cross_attention", raw.add_cross_attention),
            ("pruned_heads", !raw.pruned_heads.is_empty()),
        ] {
            if set {
                return Err(Error::unsupported(file, format!("`{field}` (only plain encoders)")));
            }
        }
        if raw.num_attention_heads == 0
            || raw.hidden_size == 0
            || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(Error::bundle(file, "hidden_size must be a positive multiple of num_attention_heads"));
        }
        Ok(Self {
            model_type: raw.model_type,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
        })
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Projection,
    key: Projection,
    value: Projection,
    attention_output: Projection,
    attention_norm: LayerNorm,
    intermediate: Projection,
    output: Projection,
    output_norm: LayerNorm,
}

/// The BERT backbone.
#[derive(Debug, Clone)]
pub struct Bert {
    pub config: BertConfig,
    word_embeddings: Table,
    position_embeddings: Table,
    token_type_embeddings: Table,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    /// `pooler.dense`, when the checkpoint has it.
    pooler: Option<Projection>,
}

/// The names `BertFor*` checkpoints put before the encoder's (`bert.embeddings...`).
pub const ROOT: &str = "bert.";
/// The encoder layers' path: layer `i` is `encoder.layer.<i>`.
const LAYERS: &str = "encoder.layer";

impl Layer {
    /// Loads layer `w` (`encoder.layer.<i>`).
    fn load(w: &Scope, c: &BertConfig, device: &Device) -> Result<Self> {
        let (h, i_dim) = (c.hidden_size, c.intermediate_size);
        let proj = |name: &str, dims| Projection::load(&w.at(name), dims, true, device);
        let norm = |name: &str| LayerNorm::load(&w.at(name), h, c.layer_norm_eps, device);
        Ok(Self {
            query: proj("attention.self.query", (h, h))?,
            key: proj("attention.self.key", (h, h))?,
            value: proj("attention.self.value", (h, h))?,
            attention_output: proj("attention.output.dense", (h, h))?,
            attention_norm: norm("attention.output.LayerNorm")?,
            intermediate: proj("intermediate.dense", (h, i_dim))?,
            output: proj("output.dense", (i_dim, h))?,
            output_norm: norm("output.LayerNorm")?,
        })
    }
}

impl Bert {
    /// Loads the weights, with or without the [`ROOT`] prefix of `BertFor*` checkpoints.
    pub fn load(config: BertConfig, file: &TensorFile, device: &Device) -> Result<Self> {
        let c = &config;
        let w = Scope::detect_root(file, ROOT, "embeddings.word_embeddings.weight")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(&w.at(LAYERS).at(i), c, device))
            .collect::<Result<Vec<_>>>()?;
        let pooler = w.at("pooler.dense");
        let pooler = match pooler.contains(keys::WEIGHT) {
            true => Some(Projection::load(&pooler, (c.hidden_size, c.hidden_size), true, device)?),
            false => None,
        };
        let e = w.at("embeddings");
        let table = |name: &str, rows| Table::load(&e.at(name), rows, c.hidden_size, device);
        Ok(Self {
            word_embeddings: table("word_embeddings", c.vocab_size)?,
            position_embeddings: table("position_embeddings", c.max_position_embeddings)?,
            token_type_embeddings: table("token_type_embeddings", c.type_vocab_size)?,
            embeddings_norm: LayerNorm::load(&e.at("LayerNorm"), c.hidden_size, c.layer_norm_eps, device)?,
            layers,
            pooler,
            config,
        })
    }

    /// Last layer's hidden states.
    ///
    /// # Shapes
    /// - output: `[B, S, hidden]`
    pub fn forward(&self, batch: &TokenBatch, lora: Option<&AdapterGroup>) -> Tensor<3> {
        let h = self.embed(batch);
        self.layers(h, batch, 0..self.layers.len(), lora)
    }

    pub(crate) fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// The pooler on pooled `[CLS]` states, `tanh(dense(x))`, or `None` without a pooler.
    /// LoRA adapters do not reach it (see `Projections::unused_module`).
    ///
    /// # Shapes
    /// - cls: `[B, hidden]`, output: `[B, hidden]`
    pub fn pooler(&self, cls: Tensor<2>) -> Option<Tensor<2>> {
        let dense = self.pooler.as_ref()?;
        let [b, h] = cls.dims();
        Some(burn::tensor::activation::tanh(dense.forward(cls.reshape([b, 1, h]), None)).reshape([b, h]))
    }

    /// The normed sum of word, position and token-type embeddings, `[B, S, hidden]`.
    pub fn embed(&self, batch: &TokenBatch) -> Tensor<3> {
        let device = batch.ids.device();
        let [b, seq] = batch.dims();
        let host_positions: Vec<i64> = batch.positions().into_iter().map(|p| p as i64).collect();
        let positions = Tensor::<2, Int>::from_data(TensorData::new(host_positions.clone(), [1, seq]), &device);
        let types = match (&batch.type_ids, batch.host_type_ids()) {
            (Some(types), Some(host)) => self.token_type_embeddings.lookup(types, host),
            _ => self.token_type_embeddings.lookup(&Tensor::zeros([b, seq], &device), &vec![0; b * seq]),
        };
        let x = self.word_embeddings.lookup(&batch.ids, batch.host_ids())
            + self.position_embeddings.lookup(&positions, &host_positions);
        self.embeddings_norm.forward_sum(x, types)
    }

    /// Runs the encoder layers `range` on the hidden states `h` (`[B, S, hidden]`).
    pub fn layers(
        &self,
        mut h: Tensor<3>,
        batch: &TokenBatch,
        range: Range<usize>,
        lora: Option<&AdapterGroup>,
    ) -> Tensor<3> {
        let c = &self.config;
        let heads = c.num_attention_heads;
        let mask = batch.attention_mask(Visibility::BIDIRECTIONAL);
        for l in &self.layers[range] {
            let [q, k, v] = Projection::forward_each([&l.query, &l.key, &l.value], h.clone(), lora);
            let a = crate::kernels::attention((q, k, v), (heads, heads), &mask, &batch.spans());
            h = l.attention_norm.forward_sum(h, l.attention_output.forward(a, lora));
            // int8 on the CPU: up, GELU and down chunk by chunk of rows (the same numbers)
            let fused = match c.hidden_act {
                Gelu::Exact => l.intermediate.forward_pair(&l.output, &h, lora, crate::kernels::gelu_values),
                Gelu::Tanh => None,
            };
            let o = fused.unwrap_or_else(|| {
                let i = l.intermediate.forward(h.clone(), lora);
                let i = match c.hidden_act {
                    Gelu::Exact => gelu(i),
                    Gelu::Tanh => gelu_approximate(i),
                };
                l.output.forward(i, lora)
            });
            h = l.output_norm.forward_sum(h, o);
        }
        h
    }
}

impl Layer {
    /// Its linear modules, in the order LoRA layouts list them.
    fn projections(&self) -> [&Projection; 6] {
        [&self.query, &self.key, &self.value, &self.attention_output, &self.intermediate, &self.output]
    }
}

impl Bert {
    /// Canonical paths of layer `layer`'s linear modules (`encoder.layer.<i>.attention.self.query`, ...).
    pub(crate) fn layer_projections(&self, layer: usize) -> Vec<String> {
        self.layers.get(layer).map_or_else(Vec::new, |l| l.projections().iter().map(|p| p.path.clone()).collect())
    }

    /// `(in, out)` of the linear module at canonical `path`.
    pub(crate) fn projection(&self, path: &str) -> Option<(usize, usize)> {
        self.layers.iter().flat_map(Layer::projections).find(|p| p.path == path).map(Projection::dims)
    }

    pub(crate) fn num_params(&self) -> usize {
        let h = self.config.hidden_size;
        let layers: usize = self.layers.iter().flat_map(Layer::projections).map(Projection::num_params).sum::<usize>()
            + 4 * h * self.layers.len();
        self.pooler.as_ref().map_or(0, Projection::num_params)
            + self.word_embeddings.num_params()
            + self.position_embeddings.num_params()
            + self.token_type_embeddings.num_params()
            + 2 * h
            + layers
    }

    pub(crate) fn held_params(&self, held: Held) -> usize {
        let layers: usize = self.layers.iter().flat_map(Layer::projections).map(|p| p.held_params(held)).sum();
        let tables = [&self.word_embeddings, &self.position_embeddings, &self.token_type_embeddings];
        self.pooler.as_ref().map_or(0, |p| p.held_params(held))
            + tables.iter().map(|t| t.held_params(held)).sum::<usize>()
            + layers
    }
}
