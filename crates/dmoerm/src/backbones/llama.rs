//! Llama-family decoder: Llama 2/3, Mistral (GQA), SmolLM2, Qwen2 (q/k/v bias),
//! Qwen3 (per-head q/k RMSNorm). Mirrors HF `modeling_llama.py` / `modeling_qwen3.py`.
//!
//! ```text
//! h = embed_tokens(ids)
//! for each layer:
//!     a = self_attn(input_layernorm(h))              # RoPE, GQA, causal + padding mask
//!     h = h + a
//!     h = h + down_proj(silu(gate_proj(x)) * up_proj(x)),  x = post_attention_layernorm(h)
//! out = norm(h)
//! ```

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

use super::{AttentionMask, Held, Projection, RmsNorm, Table, TokenBatch, Visibility};
use crate::error::{Error, Result};
use crate::lora::AdapterGroup;
use crate::weights::{Scope, TensorFile};

/// HF `config.json` fields of the Llama family (`#[serde(default)]` where HF has defaults).
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    /// transformers < 5
    rope_scaling: Option<serde_json::Value>,
    /// transformers >= 5: `{rope_type, rope_theta, ...}`
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    /// Mistral: every layer's window; Qwen2/Qwen3: the window of the `sliding_attention`
    /// layers, when `use_sliding_window`.
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    /// Qwen2/Qwen3 without `layer_types`: layers `max_window_layers..` slide.
    max_window_layers: Option<usize>,
    /// Qwen2/Qwen3 (transformers >= 5 writes it): `full_attention` / `sliding_attention` per layer.
    layer_types: Option<Vec<String>>,
    /// Partial RoPE (a config field, or in `rope_parameters`): only 1 is supported.
    partial_rotary_factor: Option<f64>,
    /// Accepted as 1 (HF's default); any other value splits the projections in ways this
    /// crate does not model.
    pretraining_tp: Option<usize>,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1 style.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// A resolved Llama-family config.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// Bias on q, k, v projections (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3: RMSNorm of each head of q and k before RoPE.
    pub qk_norm: bool,
    /// Each layer's attention window (`None`: the whole causal prefix), as transformers applies
    /// it: a query at position `i` sees the keys `i - window < j <= i`.
    pub windows: Vec<Option<usize>>,
}

impl LlamaConfig {
    /// Parses and resolves a `config.json`.
    pub fn parse(file: &str, json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::json(file, e))?;
        Self::from_value(file, &value)
    }

    /// From the parsed `config.json` (`file` names it in errors).
    pub fn from_value(file: &str, value: &serde_json::Value) -> Result<Self> {
        let raw = RawConfig::deserialize(value).map_err(|e| Error::json(file, e))?;
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                return Err(Error::unsupported(file, format!("hidden_act `{act}` (only silu)")));
            }
        }
        if raw.num_attention_heads == 0 || raw.hidden_size == 0 {
            return Err(Error::bundle(file, "num_attention_heads and hidden_size must be positive"));
        }
        let kv = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if kv == 0 || !raw.num_attention_heads.is_multiple_of(kv) {
            return Err(Error::bundle(file, "num_attention_heads must be a multiple of num_key_value_heads"));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::bundle(file, "head_dim must be positive and even for RoPE"));
        }
        let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let theta = raw
            .rope_theta
            .or_else(|| params.and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()))
            .unwrap_or(10000.0);
        let rope_scaling = parse_rope_scaling(file, params)?;
        let qwen2 = raw.model_type == "qwen2";
        let attention_bias = raw.attention_bias.unwrap_or(false);
        if raw.pretraining_tp.is_some_and(|tp| tp != 1) {
            return Err(Error::unsupported(file, "`pretraining_tp` other than 1"));
        }
        let windows = layer_windows(file, &raw)?;
        let partial = raw.partial_rotary_factor.or_else(|| {
            [&raw.rope_parameters, &raw.rope_scaling]
                .into_iter()
                .flatten()
                .find_map(|p| p.get("partial_rotary_factor").and_then(|v| v.as_f64()))
        });
        if partial.is_some_and(|f| f != 1.0) {
            return Err(Error::unsupported(file, "`partial_rotary_factor` other than 1"));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: kv,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            qkv_bias: qwen2 || attention_bias,
            o_bias: attention_bias && !qwen2,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            qk_norm: raw.model_type == "qwen3",
            windows,
            model_type: raw.model_type,
        })
    }

    /// RoPE inverse frequencies, `[head_dim / 2]`, as HF computes them.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64)).collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Each layer's sliding window, as transformers 5 reads the config: Mistral slides every layer
/// by `sliding_window` (when set); Qwen2 and Qwen3 slide the `sliding_attention` layers of
/// `layer_types` (by default layers `max_window_layers..`) by `sliding_window`, only with
/// `use_sliding_window`; Llama has no window (transformers ignores the fields there too).
fn layer_windows(file: &str, raw: &RawConfig) -> Result<Vec<Option<usize>>> {
    let n = raw.num_hidden_layers;
    if raw.sliding_window == Some(0) {
        return Err(Error::bundle(file, "sliding_window must be positive"));
    }
    match raw.model_type.as_str() {
        "mistral" => Ok(vec![raw.sliding_window; n]),
        "qwen2" | "qwen3" => {
            let window = raw.sliding_window.filter(|_| raw.use_sliding_window.unwrap_or(false));
            let types = match &raw.layer_types {
                Some(types) if types.len() != n => {
                    return Err(Error::bundle(file, format!("layer_types has {} entries for {n} layers", types.len())))
                }
                Some(types) => types.clone(),
                None => {
                    let first = raw.max_window_layers.unwrap_or(28);
                    (0..n)
                        .map(|i| if window.is_some() && i >= first { "sliding_attention" } else { "full_attention" })
                        .map(str::to_string)
                        .collect()
                }
            };
            types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(None),
                    "sliding_attention" => Ok(window),
                    other => Err(Error::unsupported(file, format!("`layer_types` entry `{other}`"))),
                })
                .collect()
        }
        _ => Ok(vec![None; n]),
    }
}

fn parse_rope_scaling(file: &str, params: Option<&serde_json::Value>) -> Result<RopeScaling> {
    let Some(p) = params.filter(|p| !p.is_null()) else { return Ok(RopeScaling::None) };
    let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
    let num = |k: &str| {
        p.get(k).and_then(|v| v.as_f64()).ok_or_else(|| Error::bundle(file, format!("rope scaling needs `{k}`")))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(Error::unsupported(file, format!("rope scaling `{other}`"))),
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// The Llama-family backbone.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    embed_tokens: Table,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
}

/// The names `*ForCausalLM` / `*ForSequenceClassification` checkpoints put before the
/// decoder's (`model.layers...`).
pub const ROOT: &str = "model.";
/// The decoder layers' path: layer `i` is `layers.<i>`.
const LAYERS: &str = "layers";

impl Attention {
    /// Loads `self_attn` at `w`.
    fn load(w: &Scope, c: &LlamaConfig, device: &Device) -> Result<Self> {
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_dim, kv_dim) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let proj = |name: &str, dims, bias| Projection::load(&w.at(name), dims, bias, device);
        // Qwen3: an RMSNorm over each head of q and k
        let qk_norm =
            |name: &str| c.qk_norm.then(|| RmsNorm::load(&w.at(name), hd, c.rms_norm_eps, device)).transpose();
        Ok(Self {
            q_proj: proj("q_proj", (h, q_dim), c.qkv_bias)?,
            k_proj: proj("k_proj", (h, kv_dim), c.qkv_bias)?,
            v_proj: proj("v_proj", (h, kv_dim), c.qkv_bias)?,
            o_proj: proj("o_proj", (q_dim, h), c.o_bias)?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
        })
    }
}

impl Mlp {
    /// Loads `mlp` at `w`.
    fn load(w: &Scope, c: &LlamaConfig, device: &Device) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let proj = |name: &str, dims| Projection::load(&w.at(name), dims, c.mlp_bias, device);
        Ok(Self {
            gate_proj: proj("gate_proj", (h, i))?,
            up_proj: proj("up_proj", (h, i))?,
            down_proj: proj("down_proj", (i, h))?,
        })
    }
}

impl DecoderLayer {
    /// Loads layer `w` (`layers.<i>`).
    fn load(w: &Scope, c: &LlamaConfig, device: &Device) -> Result<Self> {
        let norm = |name: &str| RmsNorm::load(&w.at(name), c.hidden_size, c.rms_norm_eps, device);
        Ok(Self {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(&w.at("self_attn"), c, device)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            mlp: Mlp::load(&w.at("mlp"), c, device)?,
        })
    }
}

impl Llama {
    /// Loads the weights, with or without the [`ROOT`] prefix of `*For*` checkpoints.
    /// `lm_head` and other extra tensors are ignored.
    pub fn load(config: LlamaConfig, file: &TensorFile, device: &Device) -> Result<Self> {
        let c = &config;
        let w = Scope::detect_root(file, ROOT, "embed_tokens.weight")?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::load(&w.at(LAYERS).at(i), c, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: Table::load(&w.at("embed_tokens"), c.vocab_size, c.hidden_size, device)?,
            norm: RmsNorm::load(&w.at("norm"), c.hidden_size, c.rms_norm_eps, device)?,
            layers,
            config,
        })
    }

    /// Final (normed) hidden states.
    ///
    /// # Shapes
    /// - output: `[B, S, hidden]`
    pub fn forward(&self, batch: &TokenBatch, lora: Option<&AdapterGroup>) -> Tensor<3> {
        let h = self.embed(batch);
        let h = self.layers(h, batch, 0..self.layers.len(), lora);
        self.norm.forward(h)
    }

    /// Token embeddings, `[B, S, hidden]`.
    pub fn embed(&self, batch: &TokenBatch) -> Tensor<3> {
        self.embed_tokens.lookup(&batch.ids, batch.host_ids())
    }

    /// Runs the decoder layers `range` on the hidden states `h` (`[B, S, hidden]`).
    pub fn layers(
        &self,
        mut h: Tensor<3>,
        batch: &TokenBatch,
        range: Range<usize>,
        lora: Option<&AdapterGroup>,
    ) -> Tensor<3> {
        let c = &self.config;
        let device = h.device();
        let rope = self.rope_tables(&batch.positions(), &device);
        // one mask per distinct window (sliding-window layers and full ones)
        let mut masks: Vec<AttentionMask> = Vec::new();
        for (layer, &window) in self.layers[range.clone()].iter().zip(&c.windows[range]) {
            let seen = Visibility { causal: true, window };
            let mask = match masks.iter().position(|m| m.seen == seen) {
                Some(i) => i,
                None => {
                    masks.push(batch.attention_mask(seen));
                    masks.len() - 1
                }
            };
            let x = layer.input_layernorm.forward(h.clone());
            h = layer.self_attn.forward(x, h, &masks[mask], batch, &rope, c, lora);
            let x = layer.post_attention_layernorm.forward(h.clone());
            h = layer.mlp.forward(x, h, lora);
        }
        h
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, h: Tensor<3>) -> Tensor<3> {
        self.norm.forward(h)
    }

    /// `cos` and `sin` of the rotary angles (the half-dim angles repeated twice, as HF's
    /// `torch.cat((freqs, freqs), dim=-1)`) at each of a row's `positions`, for the heads of
    /// `[B, S, heads, hd]`.
    fn rope_tables(&self, positions: &[usize], device: &Device) -> Rope {
        let seq = positions.len();
        let inv = self.config.inv_freq();
        let d = self.config.head_dim;
        let mut cos = Vec::with_capacity(seq * d);
        let mut sin = Vec::with_capacity(seq * d);
        for &pos in positions {
            // HF computes inv_freq and the angles in float32.
            let angles: Vec<f32> = inv.iter().map(|&f| (f as f32) * pos as f32).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let t = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, seq, 1, d]), device);
        Rope { cos: t(&cos), sin: t(&sin), host: (cos, sin) }
    }
}

/// The rotary tables of one forward: `cos` and `sin` `[1, S, 1, head_dim]` for burn's ops, and
/// the same values `[S, head_dim]` on the host, for [`crate::kernels::rope`].
struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
    host: (Vec<f32>, Vec<f32>),
}

impl Rope {
    /// `x * cos + rotate_half(x) * sin` (HF's `apply_rotary_pos_emb`) of the query and the key
    /// heads, each head RMS-normalised first where `norms` gives the weights (`(q's, k's,
    /// eps)`: Qwen3's `q_norm` and `k_norm`).
    ///
    /// # Shapes
    /// - q: `[B, S, heads, hd]`, k: `[B, S, kv_heads, hd]`, outputs: the same
    fn apply(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        norms: Option<(&Tensor<1>, &Tensor<1>, f64)>,
    ) -> (Tensor<4>, Tensor<4>) {
        crate::kernels::qk_rope(q, k, norms, (&self.cos, &self.sin), (&self.host.0, &self.host.1))
    }
}

impl DecoderLayer {
    /// Its linear modules, in the order LoRA layouts list them.
    fn projections(&self) -> [&Projection; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj]
    }
}

impl Llama {
    /// Canonical paths of layer `layer`'s linear modules (`layers.<i>.self_attn.q_proj`, ...).
    pub(crate) fn layer_projections(&self, layer: usize) -> Vec<String> {
        self.layers.get(layer).map_or_else(Vec::new, |l| l.projections().iter().map(|p| p.path.clone()).collect())
    }

    /// `(in, out)` of the linear module at canonical `path`.
    pub(crate) fn projection(&self, path: &str) -> Option<(usize, usize)> {
        self.layers.iter().flat_map(DecoderLayer::projections).find(|p| p.path == path).map(Projection::dims)
    }

    pub(crate) fn num_params(&self) -> usize {
        let c = &self.config;
        let norms = c.hidden_size * (2 * c.num_hidden_layers + 1)
            + if c.qk_norm { 2 * c.head_dim * c.num_hidden_layers } else { 0 };
        let projections: usize =
            self.layers.iter().flat_map(DecoderLayer::projections).map(Projection::num_params).sum();
        self.embed_tokens.num_params() + norms + projections
    }

    pub(crate) fn held_params(&self, held: Held) -> usize {
        let projections: usize =
            self.layers.iter().flat_map(DecoderLayer::projections).map(|p| p.held_params(held)).sum();
        self.embed_tokens.held_params(held) + projections
    }
}

impl Attention {
    /// `residual + attention(x)` (the residual added as the output projection writes).
    #[allow(clippy::too_many_arguments)] // the layer's input, its residual, and the pass's tables
    fn forward(
        &self,
        x: Tensor<3>,
        residual: Tensor<3>,
        mask: &AttentionMask,
        batch: &TokenBatch,
        rope: &Rope,
        c: &LlamaConfig,
        lora: Option<&AdapterGroup>,
    ) -> Tensor<3> {
        let (heads, kv_heads, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        // the heads as the projections lay them out, [B, S, heads, hd] (a view, no copy)
        let by_head = |x: Tensor<3>, n: usize| {
            let [b, s, _] = x.dims();
            x.reshape([b, s, n, hd])
        };
        let [q, k, v] = Projection::forward_each([&self.q_proj, &self.k_proj, &self.v_proj], x, lora);
        let (q, k) = (by_head(q, heads), by_head(k, kv_heads)); // v stays [B, S, KV * hd]
        let norms = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => Some((&qn.weight, &kn.weight, qn.eps)),
            _ => None,
        };
        let (q, k) = rope.apply(q, k, norms);
        let merged = |x: Tensor<4>| x.flatten::<3>(2, 3);
        let (q, k) = (merged(q), merged(k));
        let out = crate::kernels::attention((q, k, v), (heads, kv_heads), mask, &batch.spans()); // [B, S, H * hd]
        self.o_proj.forward_add(out, residual, lora)
    }
}

impl Mlp {
    /// `residual + down(silu(gate(x)) * up(x))`.
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>, lora: Option<&AdapterGroup>) -> Tensor<3> {
        // int8 on the CPU: the three projections chunk by chunk of rows (the same numbers)
        let fused = self.gate_proj.forward_gated(&self.up_proj, &self.down_proj, &x, lora, crate::kernels::silu_values);
        if let Some(y) = fused {
            return residual + y;
        }
        // on a GPU: one launch for the gate and up products and the activation, one for the
        // down product and the residual
        let act = self.gate_proj.forward_silu_mul(&self.up_proj, x, lora);
        self.down_proj.forward_add(act, residual, lora)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(extra: &str) -> Vec<Option<usize>> {
        let json = format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 4,
                "num_attention_heads": 2, {extra}}}"#
        );
        LlamaConfig::parse("config.json", &json).expect("config parses").windows
    }

    #[test]
    fn sliding_windows_are_read_per_layer_as_transformers_reads_them() {
        // Mistral: every layer, when set
        assert_eq!(windows(r#""model_type": "mistral", "sliding_window": 8"#), [Some(8); 4]);
        assert_eq!(windows(r#""model_type": "mistral", "sliding_window": null"#), [None; 4]);
        // Qwen2 / Qwen3 (transformers < 5 configs): layers max_window_layers.., only with use_sliding_window
        for ty in ["qwen2", "qwen3"] {
            let on = format!(
                r#""model_type": "{ty}", "use_sliding_window": true, "sliding_window": 5, "max_window_layers": 1"#
            );
            assert_eq!(windows(&on), [None, Some(5), Some(5), Some(5)]);
            let off = format!(
                r#""model_type": "{ty}", "use_sliding_window": false, "sliding_window": 5, "max_window_layers": 1"#
            );
            assert_eq!(windows(&off), [None; 4]);
        }
        // transformers >= 5 writes layer_types, which wins over max_window_layers
        let typed = r#""model_type": "qwen2", "use_sliding_window": true, "sliding_window": 3, "max_window_layers": 0,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]"#;
        assert_eq!(windows(typed), [Some(3), None, Some(3), None]);
        // Llama ignores the field, as transformers does
        assert_eq!(windows(r#""model_type": "llama", "sliding_window": 8"#), [None; 4]);
        let bad = r#""model_type": "qwen2", "layer_types": ["full_attention"]"#;
        let json = format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, {bad}}}"#
        );
        assert!(matches!(LlamaConfig::parse("config.json", &json), Err(Error::Bundle { .. })));
    }
}
