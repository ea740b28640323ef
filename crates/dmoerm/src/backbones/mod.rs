//! Transformer backbones, read straight from a Hugging Face `config.json` and safetensors
//! with the checkpoint's own tensor names. One file per family:
//! - [`llama`]: Llama 2/3, Mistral, SmolLM2, Qwen2, Qwen3 (decoder-only, causal);
//! - [`bert`]: BERT / MiniLM (encoder, bidirectional).
//!
//! A backbone maps token ids to the final hidden states; LoRA adapters plug into its
//! linear projections through [`AdapterGroup`].

pub mod bert;
pub mod llama;

use std::sync::Arc;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use serde::Deserialize;

use crate::bundle::keys;
use crate::device::quantized_resident;
use crate::error::{Error, Result};
use crate::kernels::Span;
pub use crate::kernels::{AttentionMask, Visibility};
use crate::lora::{AdapterGroup, Projections};
use crate::pooling::Pooling;
use crate::quant::{Int8Linear, QuantMatrix};
use crate::weights::{Scope, TensorFile};

/// A batch of token sequences: right-padded rows `[B, S]`, or (see [`packed`](Self::packed))
/// the sequences one after another in one row `[1, T]`, without padding.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[B, S]` token ids, padding filled with the pad id (packed: `[1, T]`).
    pub ids: Tensor<2, Int>,
    /// `[B, S]` token type ids (segments of text pairs), or `None`: all 0.
    pub type_ids: Option<Tensor<2, Int>>,
    /// `ids` and `type_ids` on the host: a quantised embedding table reads its rows there,
    /// without reading the ids back from a GPU.
    host_ids: Arc<[i64]>,
    host_type_ids: Option<Arc<[i64]>>,
    /// Number of real tokens of each sequence.
    pub lengths: Vec<usize>,
    /// Per sequence, the last position (from its first token) whose id is not the pad id (0
    /// when there is none): where transformers' `*ForSequenceClassification` reads the reward.
    pub last_non_pad: Vec<usize>,
    /// Packed: where each sequence's first token is in the one row; `None` for padded rows.
    starts: Option<Arc<[usize]>>,
}

impl TokenBatch {
    /// Pads `rows` on the right to the longest row.
    pub fn new(rows: &[Vec<u32>], pad_id: u32, device: &Device) -> Self {
        Self::padded_to(rows, pad_id, 1, usize::MAX, device)
    }

    /// Pads `rows` on the right to the longest row rounded up to a multiple of `step`, and no
    /// further than `limit` (the model's longest input) unless a row is longer. The padding is
    /// masked as a batch's is, so the sequences' states do not change: on a GPU, every shape
    /// a kernel then sees is a multiple of `step` and the kernels that compile per vector
    /// width compile once, whatever the lengths (see [`RewardModel`](crate::RewardModel)).
    pub fn padded_to(rows: &[Vec<u32>], pad_id: u32, step: usize, limit: usize, device: &Device) -> Self {
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let seq = longest.next_multiple_of(step.max(1)).min(limit.max(longest));
        let host_ids: Arc<[i64]> = pad(rows, pad_id, seq).into();
        let ids = Tensor::from_data(TensorData::new(host_ids.to_vec(), [rows.len(), seq]), device);
        let last_non_pad = rows.iter().map(|r| r.iter().rposition(|&t| t != pad_id).unwrap_or(0)).collect();
        Self {
            ids,
            type_ids: None,
            host_ids,
            host_type_ids: None,
            lengths: rows.iter().map(Vec::len).collect(),
            last_non_pad,
            starts: None,
        }
    }

    /// With the token type ids of each row (padded with 0); rows without any stay all 0.
    pub fn with_type_ids(mut self, types: &[Vec<u32>]) -> Self {
        if types.iter().any(|t| !t.is_empty()) {
            let [b, seq] = self.dims();
            let host: Arc<[i64]> = pad(types, 0, seq).into();
            self.type_ids = Some(Tensor::from_data(TensorData::new(host.to_vec(), [b, seq]), &self.ids.device()));
            self.host_type_ids = Some(host);
        }
        self
    }

    /// The same sequences one after another in one row `[1, T]` (`T` the sum of their
    /// lengths), where that saves work: on the CPU backend for inference, for a padded batch
    /// whose rows differ in length. A backbone then runs its projections on the `T` real
    /// tokens instead of `B x` the longest, and attention per sequence ([`spans`](Self::spans)),
    /// with each sequence's own positions ([`positions`](Self::positions)): the same states as
    /// the padded rows', so a batch costs the sum of its tokens. `None` where it does not apply.
    pub fn packed(&self) -> Option<Self> {
        let device = self.ids.device();
        let [b, s] = self.dims();
        let uneven = self.lengths.iter().any(|&len| len != s);
        if self.starts.is_some() || b < 2 || !uneven || device != Device::flex() || device.is_autodiff() {
            return None;
        }
        let lengths: Vec<usize> = self.lengths.iter().map(|&len| len.clamp(1, s)).collect();
        let starts: Arc<[usize]> =
            lengths.iter().scan(0, |next, &len| Some(std::mem::replace(next, *next + len))).collect();
        let take = |host: &[i64]| -> Arc<[i64]> {
            lengths.iter().enumerate().flat_map(|(r, &len)| host[r * s..r * s + len].iter().copied()).collect()
        };
        let total = lengths.iter().sum::<usize>();
        let tensor = |host: &Arc<[i64]>| Tensor::from_data(TensorData::new(host.to_vec(), [1, total]), &device);
        let host_ids = take(&self.host_ids);
        let host_type_ids = self.host_type_ids.as_deref().map(take);
        Some(Self {
            ids: tensor(&host_ids),
            type_ids: host_type_ids.as_ref().map(tensor),
            host_ids,
            host_type_ids,
            last_non_pad: self.last_non_pad.iter().zip(&lengths).map(|(&last, &len)| last.min(len - 1)).collect(),
            lengths,
            starts: Some(starts),
        })
    }

    /// `[B, S]` (packed: `[1, T]`)
    pub fn dims(&self) -> [usize; 2] {
        self.ids.dims()
    }

    /// Where each sequence lies in the rows of `[B, S, ...]` read as `[B * S, ...]` (for
    /// attention and pooling).
    pub fn spans(&self) -> Vec<Span> {
        match &self.starts {
            None => Span::padded(&self.lengths, self.dims()[1]),
            Some(starts) => {
                starts.iter().zip(&self.lengths).map(|(&start, &len)| Span { start, len, rows: len }).collect()
            }
        }
    }

    /// The position of each of a row's `S` tokens within its sequence: `0..S` for padded rows;
    /// packed, each sequence's tokens count from 0.
    pub fn positions(&self) -> Vec<usize> {
        match &self.starts {
            None => (0..self.dims()[1]).collect(),
            Some(_) => self.lengths.iter().flat_map(|&len| 0..len).collect(),
        }
    }

    /// `ids` on the host, row-major.
    pub fn host_ids(&self) -> &[i64] {
        &self.host_ids
    }

    /// `type_ids` on the host, row-major (`None` with `type_ids`).
    pub fn host_type_ids(&self) -> Option<&[i64]> {
        self.host_type_ids.as_deref()
    }

    /// Repeats every sequence `times` times, block after block (`[x; times]` expert-major):
    /// rows for padded rows, along the one row for packed ones.
    pub fn repeat(&self, times: usize) -> Self {
        let blocks = |v: &[usize]| (0..times).flat_map(|_| v.iter().copied()).collect();
        let host = |v: &[i64]| -> Arc<[i64]> { (0..times).flat_map(|_| v.iter().copied()).collect() };
        let (dim, total) = (usize::from(self.starts.is_some()), self.dims()[1]);
        Self {
            ids: self.ids.clone().repeat_dim(dim, times),
            type_ids: self.type_ids.clone().map(|t| t.repeat_dim(dim, times)),
            host_ids: host(&self.host_ids),
            host_type_ids: self.host_type_ids.as_deref().map(host),
            lengths: blocks(&self.lengths),
            last_non_pad: blocks(&self.last_non_pad),
            starts: self
                .starts
                .as_ref()
                .map(|starts| (0..times).flat_map(|t| starts.iter().map(move |&s| s + t * total)).collect()),
        }
    }

    /// The attention mask of `seen` for this batch (built only if burn's attention runs).
    pub fn attention_mask(&self, seen: Visibility) -> AttentionMask {
        AttentionMask::new(seen)
    }
}

/// `rows` padded on the right with `value` to `seq`, flattened (as i64 for burn's Int tensors).
fn pad(rows: &[Vec<u32>], value: u32, seq: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(rows.len() * seq);
    for row in rows {
        out.extend(row.iter().map(|&t| t as i64));
        out.extend(std::iter::repeat_n(value as i64, seq - row.len()));
    }
    out
}

/// A linear layer `y = x W^T + b` that knows its module path, so LoRA adapters find it.
#[derive(Debug, Clone)]
pub struct Projection {
    /// Canonical module path, e.g. `layers.0.self_attn.q_proj`.
    pub path: String,
    weight: Weight,
}

/// A projection's weight and bias: for burn's matmul (`weight` `[in, out]`, the transpose of
/// PyTorch's), f32 (f16 where the bundle stores it in 16 bits and the GPU holds f16:
/// [`crate::device::half_resident`]), or, from an int8 or q4 bundle on a GPU, burn's
/// quantised tensor (its codes and block scales, which the matmul reads packed:
/// [`crate::weights::burn_quantized`]); or,
/// from such a bundle on a CPU with the int8 kernel, quantised for that kernel ([`Int8Linear`],
/// `[out, in]`, with the bias).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per module, never moved in bulk
enum Weight {
    Burn {
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
    },
    /// The wasm builds' f32 on the CPU: on the host, `weight` `[in, out]` packed for
    /// [`crate::kernels::linear`].
    #[cfg(target_family = "wasm")]
    Host {
        weight: Arc<crate::kernels::PackedB>,
        bias: Option<Arc<[f32]>>,
    },
    Int8(Arc<Int8Linear>),
    /// An int8 or q4 weight on a GPU, its codes and scales read by
    /// [`crate::kernels::gpu::linear_quant`], and the bias.
    #[cfg(feature = "gpu")]
    GpuQuant {
        weight: crate::kernels::gpu::QuantWeight,
        bias: Option<Tensor<1>>,
    },
}

impl Projection {
    /// Loads the linear module at `w`: `weight` `[out, in]`, and `bias` `[out]` when `bias`.
    /// Its path is `w`'s canonical path. A quantised weight (int8, q4) stays so for inference
    /// ([`quantized_projections_stay`]): on the CPU (flex) where it has the int8 kernel
    /// ([`Int8Linear::available`]), and on a GPU as its codes for the kernel of our own
    /// ([`crate::kernels::gpu::linear_quant`]; other sizes than multiples of 4 as burn's
    /// quantised tensor where the rows split into its blocks); elsewhere it is expanded to f32.
    pub fn load(w: &Scope, dims: (usize, usize), bias: bool, device: &Device) -> Result<Self> {
        let (d_in, d_out) = dims;
        let path = w.path().to_string();
        if quantized_resident(device) && Int8Linear::available() {
            if let Some(weight) = w.quantized(d_out, d_in)? {
                let bias = if bias { Some(w.read_f32(keys::BIAS, Some(&[d_out]))?.0) } else { None };
                let linear = Int8Linear::new(&weight, bias.as_deref()).ok_or_else(|| Error::Shape {
                    file: w.file().file.clone(),
                    tensor: w.key(keys::BIAS),
                    expected: vec![d_out],
                    found: bias.as_ref().map_or(vec![], |b| vec![b.len()]),
                })?;
                return Ok(Self { path, weight: Weight::Int8(Arc::new(linear)) });
            }
        }
        #[cfg(target_family = "wasm")]
        if *device == Device::flex() {
            // PyTorch's [out, in] is the transpose of [in, out]: (c, j) at j * in + c
            let weight =
                crate::kernels::PackedB::new(d_in, d_out, &w.read_f32(keys::WEIGHT, Some(&[d_out, d_in]))?.0, 1, d_in);
            let bias = if bias { Some(w.read_f32(keys::BIAS, Some(&[d_out]))?.0.into()) } else { None };
            return Ok(Self { path, weight: Weight::Host { weight: weight.into(), bias } });
        }
        let quantized = match quantized_on_gpu(device) {
            true => w.quantized(d_out, d_in)?,
            false => None,
        };
        // on a GPU an int8 or q4 weight stays so for the kernel of our own (sizes that are
        // multiples of 4, as a model's are)
        #[cfg(feature = "gpu")]
        if let Some(weight) = quantized.as_ref().and_then(|m| crate::kernels::gpu::QuantWeight::new(m, device)) {
            let bias = if bias { Some(w.tensor(keys::BIAS, [d_out], device)?) } else { None };
            return Ok(Self { path, weight: Weight::GpuQuant { weight, bias } });
        }
        // else burn's quantised tensor where the rows split into its blocks; else f32
        let quantized = quantized.as_ref().and_then(crate::weights::burn_quantized);
        let weight = match quantized {
            Some(data) => Tensor::<2>::from_data(data, device).transpose(),
            None => w.linear_weight_as_stored(d_in, d_out, device)?,
        };
        let bias = if bias { Some(w.tensor(keys::BIAS, [d_out], device)?) } else { None };
        Ok(Self { path, weight: Weight::Burn { weight, bias } })
    }

    /// `(in, out)`
    pub fn dims(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Burn { weight, .. } => {
                let [i, o] = weight.dims();
                (i, o)
            }
            #[cfg(target_family = "wasm")]
            Weight::Host { weight, .. } => weight.dims(),
            Weight::Int8(weight) => {
                let (o, i) = weight.dims();
                (i, o)
            }
            #[cfg(feature = "gpu")]
            Weight::GpuQuant { weight, .. } => weight.dims(),
        }
    }

    /// # Shapes
    /// - x: `[B, S, in]`, output: `[B, S, out]`
    pub fn forward(&self, x: Tensor<3>, lora: Option<&AdapterGroup>) -> Tensor<3> {
        let delta = lora.and_then(|l| l.delta(&self.path, x.clone()));
        let y = match &self.weight {
            Weight::Burn { weight, bias } => crate::kernels::affine(x, weight, bias.as_ref(), None),
            #[cfg(target_family = "wasm")]
            Weight::Host { weight, bias } => crate::kernels::linear(&x, weight, bias.as_deref()).unwrap_or_else(|| {
                let (device, (d_in, d_out)) = (x.device(), weight.dims());
                let w = Tensor::from_data(TensorData::new(weight.to_row_major(), [d_in, d_out]), &device);
                let b = bias.as_ref().map(|b| Tensor::from_data(TensorData::new(b.to_vec(), [d_out]), &device));
                burn::tensor::module::linear(x, w, b)
            }),
            Weight::Int8(weight) => on_host(x, weight.dims().0, |x| weight.matmul(x)),
            #[cfg(feature = "gpu")]
            Weight::GpuQuant { weight, bias } => crate::kernels::gpu::linear_quant(x, weight, bias.as_ref(), None)
                .unwrap_or_else(|x| burn::tensor::module::linear(x, weight.dequantized(), bias.clone())),
        };
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }

    /// `residual + self.forward(x, lora)` (a layer's output added to its input): on a GPU, where
    /// `lora` does not adapt this projection, the residual is added as the product is written
    /// (one launch, not two); the same numbers either way.
    ///
    /// # Shapes
    /// - x: `[B, S, in]`, residual and output: `[B, S, out]`
    pub fn forward_add(&self, x: Tensor<3>, residual: Tensor<3>, lora: Option<&AdapterGroup>) -> Tensor<3> {
        let x = match &self.weight {
            _ if lora.is_some_and(|l| l.adapts(&self.path)) => x,
            Weight::Burn { weight, bias } => return crate::kernels::affine(x, weight, bias.as_ref(), Some(&residual)),
            #[cfg(feature = "gpu")]
            Weight::GpuQuant { weight, bias } => {
                match crate::kernels::gpu::linear_quant(x, weight, bias.as_ref(), Some(&residual)) {
                    Ok(y) => return y,
                    Err(x) => x,
                }
            }
            _ => x,
        };
        residual + self.forward(x, lora)
    }

    /// `silu(self.forward(x)) * up.forward(x)` (a gated MLP's activation, this its gate
    /// projection): on a GPU, where both weights are of one kind, without bias, and `lora`
    /// adapts neither, one launch for the two products and the activation; the same numbers
    /// either way.
    ///
    /// # Shapes
    /// - x: `[B, S, in]`, output: `[B, S, out]`
    pub fn forward_silu_mul(&self, up: &Projection, x: Tensor<3>, lora: Option<&AdapterGroup>) -> Tensor<3> {
        let x = match (&self.weight, &up.weight) {
            _ if lora.is_some_and(|l| l.adapts(&self.path) || l.adapts(&up.path)) => x,
            (Weight::Burn { weight: g, bias: None }, Weight::Burn { weight: u, bias: None }) => {
                return crate::kernels::gated(x, g, u);
            }
            #[cfg(feature = "gpu")]
            (Weight::GpuQuant { weight: g, bias: None }, Weight::GpuQuant { weight: u, bias: None }) => {
                match crate::kernels::gpu::gated_quant(x, g, u) {
                    Ok(y) => return y,
                    Err(x) => x,
                }
            }
            _ => x,
        };
        crate::kernels::silu_mul(self.forward(x.clone(), lora), up.forward(x, lora))
    }

    /// `[p.forward(x, lora) for p in projections]`; where all are int8 (attention's query, key
    /// and value projections), `x` is read once and each chunk of its rows quantised once for
    /// all of them. The same numbers either way.
    ///
    /// # Shapes
    /// - x: `[B, S, in]`, output: `[B, S, out]` each
    pub fn forward_each<const N: usize>(
        projections: [&Projection; N],
        x: Tensor<3>,
        lora: Option<&AdapterGroup>,
    ) -> [Tensor<3>; N] {
        let weights: Option<Vec<&Int8Linear>> = projections
            .iter()
            .map(|p| match &p.weight {
                Weight::Int8(w) => Some(w.as_ref()),
                _ => None,
            })
            .collect();
        let Some(weights) = weights.filter(|w| w.iter().all(|w| w.dims().1 == x.dims()[2])) else {
            return projections.map(|p| p.forward(x.clone(), lora));
        };
        let deltas = projections.map(|p| lora.and_then(|l| l.delta(&p.path, x.clone())));
        let ([b, s, _], device) = (x.dims(), x.device());
        let mut ys = Int8Linear::matmul_each(&weights, &crate::kernels::host_values(x)).into_iter();
        let mut deltas = deltas.into_iter();
        projections.map(|p| {
            let y = ys.next().unwrap_or_default();
            let y = Tensor::from_data(TensorData::new(y, [b, s, p.dims().1]), &device);
            match deltas.next().flatten() {
                Some(d) => y + d,
                None => y,
            }
        })
    }

    /// `next.forward(between(self.forward(x)))` (an MLP) in one pass over chunks of rows, where
    /// both are int8 and `lora` adapts neither: the `[B, S, out]` intermediate is never held
    /// whole. `None` elsewhere (the caller runs the steps); the same numbers where it applies.
    ///
    /// # Shapes
    /// - x: `[B, S, in]`, output: `[B, S, next's out]`
    pub fn forward_pair(
        &self,
        next: &Projection,
        x: &Tensor<3>,
        lora: Option<&AdapterGroup>,
        between: impl Fn(&mut [f32]) + Sync,
    ) -> Option<Tensor<3>> {
        let (Weight::Int8(first), Weight::Int8(second)) = (&self.weight, &next.weight) else {
            return None;
        };
        if lora.is_some_and(|l| l.adapts(&self.path) || l.adapts(&next.path)) {
            return None;
        }
        Some(on_host(x.clone(), second.dims().0, |x| first.matmul_pair(second, x, between)))
    }

    /// `down.forward(act(self.forward(x)) * up.forward(x))` (Llama's gated MLP, this the gate
    /// projection) in one pass over chunks of rows, where all three are int8 and `lora`
    /// adapts none; `None` elsewhere. The same numbers where it applies.
    ///
    /// # Shapes
    /// - x: `[B, S, in]`, output: `[B, S, down's out]`
    pub fn forward_gated(
        &self,
        up: &Projection,
        down: &Projection,
        x: &Tensor<3>,
        lora: Option<&AdapterGroup>,
        act: impl Fn(&mut [f32]) + Sync,
    ) -> Option<Tensor<3>> {
        let (Weight::Int8(gate), Weight::Int8(up_w), Weight::Int8(down_w)) = (&self.weight, &up.weight, &down.weight)
        else {
            return None;
        };
        if lora.is_some_and(|l| [self, up, down].iter().any(|p| l.adapts(&p.path))) {
            return None;
        }
        Some(on_host(x.clone(), down_w.dims().0, |x| gate.matmul_gated(up_w, down_w, x, act)))
    }

    pub(crate) fn num_params(&self) -> usize {
        match &self.weight {
            Weight::Burn { weight, bias } => count(weight) + bias.as_ref().map_or(0, count),
            #[cfg(target_family = "wasm")]
            Weight::Host { weight, bias } => {
                let (d_in, d_out) = weight.dims();
                d_in * d_out + bias.as_ref().map_or(0, |b| b.len())
            }
            Weight::Int8(weight) => weight.num_params(),
            #[cfg(feature = "gpu")]
            Weight::GpuQuant { weight, bias } => weight.dims().0 * weight.dims().1 + bias.as_ref().map_or(0, count),
        }
    }

    /// How many of the weights (not the bias) are held as `held` on the device.
    pub(crate) fn held_params(&self, held: Held) -> usize {
        match (&self.weight, held) {
            (Weight::Burn { weight, .. }, Held::Quantized) if matches!(weight.dtype(), DType::QFloat(_)) => {
                count(weight)
            }
            (Weight::Burn { weight, .. }, Held::F16) if weight.dtype() == DType::F16 => count(weight),
            (Weight::Int8(weight), Held::Quantized) => weight.dims().0 * weight.dims().1,
            #[cfg(feature = "gpu")]
            (Weight::GpuQuant { weight, .. }, Held::Quantized) => weight.dims().0 * weight.dims().1,
            _ => 0,
        }
    }
}

/// Whether a bundle's quantised projections (int8, q4) stay quantised on `device`, for
/// inference: on the CPU backend where the CPU has an int8 kernel ([`Int8Linear::available`]),
/// and on a GPU ([`crate::kernels::gpu::linear_quant`] for sizes that are multiples of 4;
/// burn's quantised matmul for others, unless the rows do not split into its blocks of 16). Elsewhere (training's autodiff) they are expanded to f32
/// when they load. (Embedding tables stay quantised on the CPU backend whatever the kernel.)
pub fn quantized_projections_stay(device: &Device) -> bool {
    (quantized_resident(device) && Int8Linear::available()) || quantized_on_gpu(device)
}

/// What a weight is held as on the device, besides f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// int8 or 4-bit codes with scales
    Quantized,
    F16,
}

/// Whether `device` is a GPU for inference (wgpu, not autodiff).
fn quantized_on_gpu(device: &Device) -> bool {
    *device != Device::flex() && !device.is_autodiff()
}

/// `f` of `x`'s values on the host (the int8 kernels), as `[B, S, out]` on `x`'s device.
///
/// # Shapes
/// - x: `[B, S, in]`, output: `[B, S, out]`
fn on_host(x: Tensor<3>, out: usize, f: impl FnOnce(&[f32]) -> Vec<f32>) -> Tensor<3> {
    let [b, s, _] = x.dims();
    let device = x.device();
    Tensor::from_data(TensorData::new(f(&crate::kernels::host_values(x)), [b, s, out]), &device)
}

/// An embedding table `[rows, dim]`: f32 on the device (f16 where the bundle stores it in 16
/// bits and the GPU holds f16: [`crate::device::half_resident`]), or, from an int8 or q4 bundle for
/// inference (on the CPU, and on a GPU, where the rows a lookup reads are sent to it), the
/// rows as packed on the host; a lookup expands only the rows it reads.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per table, never moved in bulk
pub enum Table {
    Dense(Tensor<2>),
    Quantized(Arc<QuantMatrix>),
}

impl Table {
    /// The module at `w`'s `weight`, `[rows, dim]`.
    pub fn load(w: &Scope, rows: usize, dim: usize, device: &Device) -> Result<Self> {
        if quantized_resident(device) || quantized_on_gpu(device) {
            if let Some(m) = w.quantized(rows, dim)? {
                return Ok(Table::Quantized(Arc::new(m)));
            }
        }
        Ok(Table::Dense(w.tensor_as_stored(keys::WEIGHT, [rows, dim], device)?))
    }

    /// The rows of `ids` (on the device, and `host`, the same ids on the host, row-major); an
    /// id past the table gives NaN (its score is then an error).
    ///
    /// # Shapes
    /// - ids: `[B, S]`, output: `[B, S, dim]`
    pub fn lookup(&self, ids: &Tensor<2, Int>, host: &[i64]) -> Tensor<3> {
        match self {
            Table::Dense(t) => match burn::tensor::module::embedding(t.clone(), ids.clone()) {
                rows if rows.dtype() == DType::F32 => rows,
                rows => rows.cast(DType::F32),
            },
            Table::Quantized(m) => {
                let [b, s] = ids.dims();
                let dim = m.dims().1;
                let mut out = Vec::with_capacity(b * s * dim);
                for &id in host {
                    if !usize::try_from(id).is_ok_and(|r| m.push_row(r, &mut out)) {
                        out.extend(std::iter::repeat_n(f32::NAN, dim));
                    }
                }
                Tensor::from_data(TensorData::new(out, [b, s, dim]), &ids.device())
            }
        }
    }

    pub(crate) fn num_params(&self) -> usize {
        match self {
            Table::Dense(t) => count(t),
            Table::Quantized(m) => m.dims().0 * m.dims().1,
        }
    }

    pub(crate) fn held_params(&self, held: Held) -> usize {
        match (self, held) {
            (Table::Dense(t), Held::F16) if t.dtype() == DType::F16 => count(t),
            (Table::Quantized(_), Held::Quantized) => self.num_params(),
            _ => 0,
        }
    }
}

/// RMSNorm as in HF Llama: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    /// Loads `weight` `[dim]` at `w`.
    pub fn load(w: &Scope, dim: usize, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self { weight: w.tensor(keys::WEIGHT, [dim], device)?, eps })
    }

    /// Normalises over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::kernels::rms_norm(x, &self.weight, self.eps)
    }
}

/// LayerNorm with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` (`[dim]` each) at `w`.
    pub fn load(w: &Scope, dim: usize, eps: f64, device: &Device) -> Result<Self> {
        Ok(Self { weight: w.tensor(keys::WEIGHT, [dim], device)?, bias: w.tensor(keys::BIAS, [dim], device)?, eps })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.clone(), Some(self.bias.clone()), self.eps)
    }

    /// `forward(a + b)` (a residual sum): one kernel on a GPU.
    pub fn forward_sum<const D: usize>(&self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        crate::kernels::layer_norm_sum(a, b, &self.weight, &self.bias, self.eps)
    }
}

/// The family of a backbone, from `model_type` in its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Decoder-only, Llama layout.
    Llama,
    /// Encoder-only, BERT layout.
    Bert,
}

#[derive(Deserialize)]
struct ModelType {
    model_type: Option<String>,
}

/// A loaded backbone.
#[derive(Debug, Clone)]
pub enum Backbone {
    /// Llama family.
    Llama(Box<llama::Llama>),
    /// BERT family.
    Bert(Box<bert::Bert>),
}

impl Backbone {
    /// The longest sequence the backbone of a parsed `config.json` supports, with its family's
    /// defaults (what [`max_positions`](Self::max_positions) of the loaded backbone gives).
    pub fn config_max_positions(config_file: &str, config: &serde_json::Value) -> Result<usize> {
        let ty = ModelType::deserialize(config).map_err(|e| Error::json(config_file, e))?;
        Ok(match family_of(config_file, ty.model_type.as_deref())? {
            Family::Llama => llama::LlamaConfig::from_value(config_file, config)?.max_position_embeddings,
            Family::Bert => bert::BertConfig::from_value(config_file, config)?.max_position_embeddings,
        })
    }

    /// Reads `config.json` (`config_file` names it in errors) and the weights.
    pub fn load(config_file: &str, config_json: &str, weights: &TensorFile, device: &Device) -> Result<Self> {
        // parsed once; the family's config reads its fields from the same value
        let config: serde_json::Value = serde_json::from_str(config_json).map_err(|e| Error::json(config_file, e))?;
        let ty = ModelType::deserialize(&config).map_err(|e| Error::json(config_file, e))?;
        match family_of(config_file, ty.model_type.as_deref())? {
            Family::Llama => {
                let cfg = llama::LlamaConfig::from_value(config_file, &config)?;
                Ok(Backbone::Llama(Box::new(llama::Llama::load(cfg, weights, device)?)))
            }
            Family::Bert => {
                let cfg = bert::BertConfig::from_value(config_file, &config)?;
                Ok(Backbone::Bert(Box::new(bert::Bert::load(cfg, weights, device)?)))
            }
        }
    }

    /// One pooled state per sequence of the final hidden states (see [`Pooling`]). Without
    /// adapters, on the CPU, rows of different lengths run packed ([`TokenBatch::packed`]):
    /// the batch costs the sum of its tokens.
    ///
    /// # Shapes
    /// - output: `[B, hidden]`
    pub fn pooled(&self, batch: &TokenBatch, lora: Option<&AdapterGroup>, pooling: Pooling) -> Tensor<2> {
        let packed = lora.is_none().then(|| batch.packed()).flatten();
        let batch = packed.as_ref().unwrap_or(batch);
        self.pool(self.forward(batch, lora), batch, pooling)
    }

    /// Pools final hidden states, with the pooler for [`Pooling::Pooler`] (a bundle that asks
    /// for it is refused at load unless [`has_pooler`](Self::has_pooler)).
    ///
    /// # Shapes
    /// - hidden: `[B, S, hidden]` (packed: `[1, T, hidden]`), output: `[sequences, hidden]`
    pub fn pool(&self, hidden: Tensor<3>, batch: &TokenBatch, pooling: Pooling) -> Tensor<2> {
        let pooled = pooling.pool(hidden, &batch.spans(), &batch.last_non_pad);
        match (pooling, self) {
            (Pooling::Pooler, Backbone::Bert(m)) => m.pooler(pooled.clone()).unwrap_or(pooled),
            _ => pooled,
        }
    }

    /// Whether the checkpoint has a pooler (BERT's `pooler.dense`).
    pub fn has_pooler(&self) -> bool {
        matches!(self, Backbone::Bert(m) if m.has_pooler())
    }

    /// Final hidden states.
    ///
    /// # Shapes
    /// - output: `[B, S, hidden]`
    pub fn forward(&self, batch: &TokenBatch, lora: Option<&AdapterGroup>) -> Tensor<3> {
        match self {
            Backbone::Llama(m) => m.forward(batch, lora),
            Backbone::Bert(m) => m.forward(batch, lora),
        }
    }

    /// The hidden states entering layer `layer` (`0` = the embeddings), with `lora` applied
    /// to the layers before it. With [`forward_from`](Self::forward_from) this splits a pass in
    /// two, so a trainer can compute the frozen lower layers once and cache them.
    ///
    /// # Shapes
    /// - output: `[B, S, hidden]`
    pub fn hidden_at(&self, batch: &TokenBatch, layer: usize, lora: Option<&AdapterGroup>) -> Tensor<3> {
        let layer = layer.min(self.num_layers());
        match self {
            Backbone::Llama(m) => m.layers(m.embed(batch), batch, 0..layer, lora),
            Backbone::Bert(m) => m.layers(m.embed(batch), batch, 0..layer, lora),
        }
    }

    /// Runs layers `layer..` on `hidden` (the states entering `layer`) and returns the final
    /// hidden states: `forward_from(hidden_at(b, l, lora), b, l, lora) == forward(b, lora)`.
    ///
    /// # Shapes
    /// - hidden: `[B, S, hidden]`, output: `[B, S, hidden]`
    pub fn forward_from(
        &self,
        hidden: Tensor<3>,
        batch: &TokenBatch,
        layer: usize,
        lora: Option<&AdapterGroup>,
    ) -> Tensor<3> {
        let n = self.num_layers();
        let layer = layer.min(n);
        match self {
            Backbone::Llama(m) => m.final_norm(m.layers(hidden, batch, layer..n, lora)),
            Backbone::Bert(m) => m.layers(hidden, batch, layer..n, lora),
        }
    }

    /// The first layer with a projection that `lora` adapts (`num_layers()` when there is
    /// none): the layers below it give every adapter of the group the same states.
    pub fn first_adapted_layer(&self, lora: &AdapterGroup) -> usize {
        let n = self.num_layers();
        (0..n).find(|&l| self.layer_projections(l).iter().any(|p| lora.adapts(p))).unwrap_or(n)
    }

    /// Canonical paths of the linear modules of layer `layer` that LoRA can adapt, e.g.
    /// `layers.3.self_attn.q_proj` or `encoder.layer.3.attention.self.query`.
    pub fn layer_projections(&self, layer: usize) -> Vec<String> {
        match self {
            Backbone::Llama(m) => m.layer_projections(layer),
            Backbone::Bert(m) => m.layer_projections(layer),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Backbone::Llama(_) => Family::Llama,
            Backbone::Bert(_) => Family::Bert,
        }
    }

    /// The `model_type` of the config.
    pub fn model_type(&self) -> &str {
        match self {
            Backbone::Llama(m) => &m.config.model_type,
            Backbone::Bert(m) => &m.config.model_type,
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Backbone::Llama(m) => m.config.hidden_size,
            Backbone::Bert(m) => m.config.hidden_size,
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Backbone::Llama(m) => m.config.num_hidden_layers,
            Backbone::Bert(m) => m.config.num_hidden_layers,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Backbone::Llama(m) => m.config.vocab_size,
            Backbone::Bert(m) => m.config.vocab_size,
        }
    }

    /// Longest sequence the position encoding supports.
    pub fn max_positions(&self) -> usize {
        match self {
            Backbone::Llama(m) => m.config.max_position_embeddings,
            Backbone::Bert(m) => m.config.max_position_embeddings,
        }
    }

    /// Number of weights.
    pub fn num_params(&self) -> usize {
        match self {
            Backbone::Llama(m) => m.num_params(),
            Backbone::Bert(m) => m.num_params(),
        }
    }

    /// How many of [`num_params`](Self::num_params) are held as int8 or 4-bit codes on this
    /// model's device (a packed int8 or q4 bundle's matrices, for inference; 0 otherwise).
    pub fn quantized_params(&self) -> usize {
        self.held_params(Held::Quantized)
    }

    /// How many of [`num_params`](Self::num_params) are held as f16 on this model's device
    /// (an f16 bundle's matrices on a GPU with f16 in shaders; 0 otherwise).
    pub fn half_params(&self) -> usize {
        self.held_params(Held::F16)
    }

    fn held_params(&self, held: Held) -> usize {
        match self {
            Backbone::Llama(m) => m.held_params(held),
            Backbone::Bert(m) => m.held_params(held),
        }
    }
}

impl Projections for Backbone {
    fn projection(&self, path: &str) -> Option<(usize, usize)> {
        match self {
            Backbone::Llama(m) => m.projection(path),
            Backbone::Bert(m) => m.projection(path),
        }
    }

    fn canonical_path<'a>(&self, path: &'a str) -> &'a str {
        let root = match self {
            Backbone::Llama(_) => llama::ROOT,
            Backbone::Bert(_) => bert::ROOT,
        };
        path.strip_prefix(root).unwrap_or(path)
    }

    fn unused_module(&self, path: &str) -> bool {
        matches!(self, Backbone::Bert(_)) && path == "pooler.dense"
    }
}

/// Which family a `model_type` belongs to.
pub fn family_of(file: &str, model_type: Option<&str>) -> Result<Family> {
    match model_type {
        Some("llama" | "mistral" | "qwen2" | "qwen3") => Ok(Family::Llama),
        Some("bert") => Ok(Family::Bert),
        Some(other) => Err(Error::unsupported(
            file,
            format!("model_type `{other}` (supported: llama, mistral, qwen2, qwen3, bert)"),
        )),
        None => Err(Error::bundle(file, "config.json has no model_type")),
    }
}

/// Adds the sizes of tensors.
pub(crate) fn count<const D: usize>(t: &Tensor<D>) -> usize {
    t.dims().iter().product()
}
