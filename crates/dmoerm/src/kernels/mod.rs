//! Fast paths for ops where burn's kernels are the bottleneck (found with `perf` and by
//! counting GPU launches; figures in BENCHMARKS.md): on the CPU (`flex`, below) and on a GPU
//! (`gpu.rs`: attention, LayerNorm of a residual sum, RMSNorm, RoPE, GELU and `silu(gate) *
//! up`, one CubeCL kernel each where burn launches 3 to 20; f32 products with the bias added
//! as they are written).
//!
//! - GELU: flex evaluates a scalar, single-threaded `libm::erff` per element (13.5% of the
//!   samples of a MiniLM batch). [`gelu`] uses a branch-free erf that vectorises, on rayon.
//!   [`silu`] and [`rms_norm`] (Llama family) get the same treatment, and [`rope`] does in
//!   one pass what flex does in six ops.
//! - Attention: flex runs short sequences one (batch, head) at a time with scalar loops over a
//!   materialised `[B, heads, S, S]` mask, after head split copies (~11% of samples).
//!   [`attention`] runs each (sequence, KV head) as gemm calls on rayon, masks from the
//!   sequences' spans, reads the heads in place in the projections' `[B, S, heads * hd]` layout
//!   (grouped K/V heads too) and writes the merged `[B, S, heads * hd]`.
//! - f32 matmul in wasm: the `gemm` crate's `simd128` kernel (burn's f32 matmul) runs at 14
//!   GMAC/s there, and at ~6 on attention's strided keys. `PackedB` (`packed.rs`, wasm only)
//!   packs the right-hand side in panels of 8 columns and computes tiles of 4 x 8 at ~20:
//!   attention's two products in wasm, and `linear`, the wasm builds' f32 projections (packed
//!   at load).
//!
//! Each op has one entry point here that returns a tensor, and tries in turn the GPU kernel,
//! the CPU pass and burn's own ops (training's tracked tensors, other devices). The fast paths
//! are taken only for f32 tensors on flex that autodiff does not track. The files:
//! - `attention.rs`: which keys each query sees ([`Visibility`], [`Span`]), [`attention`]
//!   (the GPU's kernel, the CPU's blocks of queries, burn's masked attention);
//! - `cpu.rs`: the element-wise passes (softmax, GELU, SiLU, RMSNorm), written once and
//!   compiled three times on x86-64 (the baseline, AVX2 + FMA, AVX-512; one picked at run
//!   time), instead of libm's scalar erf and exp (13% of a wasm score of the default model);
//! - `wasm.rs`: GELU and softmax's exponentials with `simd128`, the same operations in the same
//!   order (LLVM left those loops unvectorised for wasm: its `f32::min` is a call to `fminf`
//!   there and wasm has no vector `copysign`; GELU was 10% of a wasm score, then 3%);
//! - `packed.rs`: the wasm builds' f32 matmul; `gpu.rs`: the CubeCL kernels.

// A fast path that does not apply gives its input tensors back as `Err`, for burn's op; a
// `Tensor` is a large value (640 bytes), but the `Ok` is one too.
#![allow(clippy::result_large_err)]

use burn::tensor::{DType, Device, Tensor, TensorData};
#[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
use rayon::prelude::*;

mod attention;
mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
#[cfg(any(target_family = "wasm", test))]
mod packed;
#[cfg(test)]
mod tests;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;

pub use attention::{attention, mask_rows, AttentionMask, Span, Visibility, QKV};
pub use cpu::{erf, gelu_f32, silu_f32};
use cpu::{gelu_in_place, rms_norm_row, silu_in_place};
#[cfg(any(target_family = "wasm", test))]
pub use packed::{Output, PackedB};

/// `f` over `values` in chunks of `chunk`: on rayon natively and in the threaded wasm build
/// (`+atomics`), in order in the single-thread one.
fn for_each_chunk(values: &mut [f32], chunk: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    for_each_chunk_at(values, chunk, |_, c| f(c));
}

/// [`for_each_chunk`], `f` also given the chunk's index.
fn for_each_chunk_at(values: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
    values.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    values.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
}

/// The threads that [`for_each_chunk`] and [`for_each_task`] spread work over.
#[cfg(any(target_family = "wasm", test))]
fn threads() -> usize {
    #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
    return rayon::current_num_threads();
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    1
}

/// `f` for each of `0..n`: on rayon natively and in the threaded wasm build, in order in the
/// single-thread one.
fn for_each_task(n: usize, f: impl Fn(usize) + Sync + Send) {
    #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
    (0..n).into_par_iter().for_each(f);
    #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
    (0..n).for_each(f);
}

/// GELU, erf form: `x / 2 * (1 + erf(x / sqrt(2)))` (HF `"gelu"`).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let x = host_map(x, 1 << 14, gelu_in_place);
    #[cfg(feature = "gpu")]
    let x = x.or_else(gpu::gelu);
    x.unwrap_or_else(burn::tensor::activation::gelu)
}

/// `x W + b (+ residual)` (burn's `linear`, `W` `[in, out]`): one kernel on a GPU, the bias
/// and the residual added as the product is written; burn's `linear` elsewhere.
///
/// # Shapes
/// - x: `[B, S, in]`, weight: `[in, out]`, bias: `[out]`, residual and output: `[B, S, out]`
pub fn affine(x: Tensor<3>, weight: &Tensor<2>, bias: Option<&Tensor<1>>, residual: Option<&Tensor<3>>) -> Tensor<3> {
    #[cfg(feature = "gpu")]
    let x = match gpu::linear(x, weight, bias, residual) {
        Ok(y) => return y,
        Err(x) => x,
    };
    // an f16 weight where the kernel above does not apply (training's tracked activations, a
    // size that is not a multiple of 4): expanded for this product, which stays in f32
    let weight = match weight.dtype() {
        DType::F16 => weight.clone().cast(DType::F32),
        _ => weight.clone(),
    };
    let y = burn::tensor::module::linear(x, weight, bias.cloned());
    match residual {
        Some(r) => r.clone() + y,
        None => y,
    }
}

/// burn's `Linear` (a head: the router's, an expert's, the aggregator's layers) through
/// [`affine`]: on a GPU its product is one of our kernels, as every product of a score is
/// (burn's matmul multiplies f32 operands as f16 on a device with cooperative matrices);
/// elsewhere `Linear::forward`'s.
///
/// # Shapes
/// - x: `[N, in]`, output: `[N, out]`
pub fn linear_layer(layer: &burn::nn::Linear, x: Tensor<2>) -> Tensor<2> {
    let ([n, d_in], d_out) = (x.dims(), layer.weight.dims()[1]);
    let bias = layer.bias.as_ref().map(|b| b.val());
    affine(x.reshape([1, n, d_in]), &layer.weight.val(), bias.as_ref(), None).reshape([n, d_out])
}

/// `silu(x G) * (x U)` (the gated MLP's activation, `G` and `U` `[in, out]`): one kernel on a
/// GPU, the two products and [`silu_mul`] elsewhere.
///
/// # Shapes
/// - x: `[B, S, in]`, gate and up: `[in, out]`, output: `[B, S, out]`
pub fn gated(x: Tensor<3>, gate: &Tensor<2>, up: &Tensor<2>) -> Tensor<3> {
    #[cfg(feature = "gpu")]
    let x = match gpu::gated(x, gate, up) {
        Ok(y) => return y,
        Err(x) => x,
    };
    silu_mul(affine(x.clone(), gate, None, None), affine(x, up, None, None))
}

/// The batched product `a b`: one kernel on a GPU, burn's `matmul` elsewhere.
///
/// # Shapes
/// - a: `[Z, m, k]`, b: `[Z, k, n]`, output: `[Z, m, n]`
pub fn batched_matmul(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    #[cfg(feature = "gpu")]
    let (a, b) = match gpu::matmul(a, b) {
        Ok(y) => return y,
        Err(ab) => ab,
    };
    a.matmul(b)
}

/// [`gelu`] of host values in place, on this thread (a step inside a fused host pass).
pub(crate) fn gelu_values(values: &mut [f32]) {
    gelu_in_place(values);
}

/// [`silu`] of host values in place, on this thread (a step inside a fused host pass).
pub(crate) fn silu_values(values: &mut [f32]) {
    silu_in_place(values);
}

/// SiLU, `x * sigmoid(x)` (HF `"silu"`); flex evaluates a scalar `exp` per element.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    host_map(x, 1 << 14, silu_in_place).unwrap_or_else(burn::tensor::activation::silu)
}

/// `silu(gate) * up` (Llama's gated MLP): one kernel on a GPU, [`silu`] and a product
/// elsewhere.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "gpu")]
    let (gate, up) = match gpu::silu_mul(gate, up) {
        Ok(y) => return y,
        Err(gu) => gu,
    };
    silu(gate) * up
}

/// RMSNorm over the last dimension, `x / sqrt(mean(x^2) + eps) * weight` (HF Llama): one
/// kernel on a GPU, one parallel pass on the CPU (flex composes it of six single-threaded ops),
/// burn's ops elsewhere (training).
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Tensor<D> {
    #[cfg(feature = "gpu")]
    let x = match gpu::rms_norm(x, weight, eps) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = match rms_norm_host(x, weight, eps) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt();
    x.div(rms).mul(weight.clone().unsqueeze())
}

/// [`rms_norm`] on the CPU, or `x` back where it does not apply.
fn rms_norm_host<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Result<Tensor<D>, Tensor<D>> {
    let dim = x.dims()[D - 1];
    // the device first: reading a GPU tensor back is slow natively and cannot block in wasm
    if !on_host(&x) || weight.is_autodiff() || weight.dims()[0] != dim || dim == 0 {
        return Err(x);
    }
    let Ok(w) = weight.clone().into_data().try_into_vec::<f32>() else { return Err(x) };
    let rows_per_task = (1 << 14) / dim + 1;
    host_map(x, rows_per_task * dim, |rows| {
        for row in rows.chunks_exact_mut(w.len()) {
            rms_norm_row(row, &w, eps as f32);
        }
    })
}

/// `layer_norm(a + b)` with weight and bias over the last dimension (BERT's residual blocks):
/// one kernel on a GPU, burn's sum and `layer_norm` elsewhere.
pub fn layer_norm_sum<const D: usize>(
    a: Tensor<D>,
    b: Tensor<D>,
    weight: &Tensor<1>,
    bias: &Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    #[cfg(feature = "gpu")]
    let (a, b) = match gpu::layer_norm_sum(a, b, weight, bias, eps) {
        Ok(y) => return y,
        Err(ab) => ab,
    };
    burn::tensor::module::layer_norm(a + b, weight.clone(), Some(bias.clone()), eps)
}

/// Rotary position embedding, `x * cos + rotate_half(x) * sin` (HF's `apply_rotary_pos_emb`,
/// `rotate_half(x) = cat(-x2, x1)` over the head dimension), with the tables `cos` and `sin`
/// `[1, S, 1, hd]` on the device and `[S, hd]` on the host: one parallel pass on the CPU, one
/// kernel on a GPU, burn's ops elsewhere (training).
///
/// # Shapes
/// - x: `[B, S, heads, hd]`, output: the same
pub fn rope(x: Tensor<4>, (cos, sin): (&Tensor<4>, &Tensor<4>), (host_cos, host_sin): (&[f32], &[f32])) -> Tensor<4> {
    let x = match rope_host(x, host_cos, host_sin) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(feature = "gpu")]
    let x = match gpu::rope(x, cos, sin) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let d = x.dims()[3];
    let rotated = Tensor::cat(vec![x.clone().narrow(3, d / 2, d / 2).neg(), x.clone().narrow(3, 0, d / 2)], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// [`rope`] of the query and the key heads, each head [`rms_norm`]ed first where `norms` gives
/// the weights (`(q's, k's, eps)`: Qwen3's `q_norm` and `k_norm`): one kernel for both on a
/// GPU; elsewhere the norms and [`rope`] one by one.
///
/// # Shapes
/// - q: `[B, S, heads, hd]`, k: `[B, S, kv_heads, hd]`, outputs: the same
pub fn qk_rope(
    q: Tensor<4>,
    k: Tensor<4>,
    norms: Option<(&Tensor<1>, &Tensor<1>, f64)>,
    tables: (&Tensor<4>, &Tensor<4>),
    host_tables: (&[f32], &[f32]),
) -> (Tensor<4>, Tensor<4>) {
    #[cfg(feature = "gpu")]
    let (q, k) = match gpu::qk_rope(q, k, norms, tables) {
        Ok(qk) => return qk,
        Err(qk) => qk,
    };
    let (q, k) = match norms {
        Some((qw, kw, eps)) => (rms_norm(q, qw, eps), rms_norm(k, kw, eps)),
        None => (q, k),
    };
    (rope(q, tables, host_tables), rope(k, tables, host_tables))
}

/// [`rope`] on the CPU with the tables `cos` and `sin` `[S, hd]`: one parallel pass instead of
/// flex's six ops (two products, a negation, a concatenation, a sum), the same f32 operations
/// in the same order. `x` back where it does not apply.
fn rope_host(x: Tensor<4>, cos: &[f32], sin: &[f32]) -> Result<Tensor<4>, Tensor<4>> {
    let [_, s, heads, d] = x.dims();
    if d == 0 || !d.is_multiple_of(2) || cos.len() != s * d || sin.len() != s * d {
        return Err(x);
    }
    let (shape, device) = (x.shape(), x.device());
    let mut values = take_host(x)?;
    let half = d / 2;
    // a task per run of positions (all heads of each), ~16k values
    let positions = ((1 << 14) / (heads * d)).max(1);
    for_each_chunk_at(&mut values, positions * heads * d, |i, chunk| {
        for (j, row) in chunk.chunks_exact_mut(heads * d).enumerate() {
            let at = (i * positions + j) % s * d;
            let (cos, sin) = (&cos[at..at + d], &sin[at..at + d]);
            for x in row.chunks_exact_mut(d) {
                let (x1, x2) = x.split_at_mut(half);
                for k in 0..half {
                    let (a, b) = (x1[k], x2[k]);
                    x1[k] = a * cos[k] + -b * sin[k];
                    x2[k] = b * cos[half + k] + a * sin[half + k];
                }
            }
        }
    });
    Ok(Tensor::from_data(TensorData::new(values, shape), &device))
}

/// `x W + b` for `x` `[B, S, in]`, `w` `[in, out]` packed ([`PackedB`]) and `bias` `[out]`,
/// as one parallel pass over chunks of rows, one per thread, each a single-threaded
/// [`PackedB::matmul_into`]; or `None` where the fast path does not apply. The wasm builds'
/// f32 projections: burn's matmul (the `gemm` crate) runs slower there, and in the threaded
/// build it shares one product between the threads (a parallel pass per block of the inner
/// dimension), which made an f32 model slower on 2 threads than on 1 (BENCHMARKS.md).
///
/// # Shapes
/// - x: `[B, S, in]`, w: `[in, out]`, bias: `[out]`, output: `[B, S, out]`
#[cfg(any(target_family = "wasm", test))]
pub fn linear(x: &Tensor<3>, w: &PackedB, bias: Option<&[f32]>) -> Option<Tensor<3>> {
    let [b, s, d_in] = x.dims();
    let d_out = w.dims().1;
    if !on_host(x) || d_in == 0 || d_out == 0 || w.dims().0 != d_in || bias.is_some_and(|b| b.len() != d_out) {
        return None;
    }
    let xs = host_values(x.clone());
    let rows = b * s;
    let mut y = vec![0f32; rows * d_out];
    let chunk = rows.div_ceil(threads()).max(1);
    for_each_chunk_at(&mut y, chunk * d_out, |i, y| {
        let m = y.len() / d_out;
        if let Some(bias) = bias {
            y.chunks_exact_mut(d_out).for_each(|row| row.copy_from_slice(bias));
        }
        let out = if bias.is_some() { Output::Added } else { Output::Scaled(1.0) };
        w.matmul_into(m, &xs[i * chunk * d_in..], d_in, y, d_out, out);
    });
    Some(Tensor::from_data(TensorData::new(y, [b, s, d_out]), &x.device()))
}

/// Whether `x` is an f32 tensor on flex that autodiff does not track: the fast paths' inputs.
fn on_host<const D: usize>(x: &Tensor<D>) -> bool {
    !x.is_autodiff() && x.device() == Device::flex() && x.dtype() == DType::F32
}

/// `x`'s values, or `x` back unless [`on_host`].
fn take_host<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>, Tensor<D>> {
    match on_host(&x) {
        true => Ok(host_values(x)),
        false => Err(x),
    }
}

/// A tensor's f32 values on the host (a flex tensor's are already there), taken without a copy
/// where the tensor is contiguous and holds them alone (flex copies a shared or strided one).
pub(crate) fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    let data = x.into_data();
    match data.dtype() {
        DType::F32 => data.try_into_vec::<f32>().unwrap_or_default(),
        _ => data.iter::<f32>().collect(),
    }
}

/// Runs `pass` over the values of `x` in chunks of `chunk` on rayon, or gives `x` back unless
/// [`on_host`].
fn host_map<const D: usize>(
    x: Tensor<D>,
    chunk: usize,
    pass: impl Fn(&mut [f32]) + Sync + Send,
) -> Result<Tensor<D>, Tensor<D>> {
    let (shape, device) = (x.shape(), x.device());
    let mut values = take_host(x)?;
    for_each_chunk(&mut values, chunk, pass);
    Ok(Tensor::from_data(TensorData::new(values, shape), &device))
}
