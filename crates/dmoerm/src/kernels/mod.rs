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
//!   [`attention`] runs each (batch, head) as two gemm calls on rayon, masks from the row
//!   lengths, reads the heads in place in the projections' `[B, S, heads * hd]` layout
//!   (grouped K/V heads too) and writes the merged `[B, S, heads * hd]`.
//! - f32 matmul in wasm: the `gemm` crate's `simd128` kernel (burn's f32 matmul) runs at 14
//!   GMAC/s there, and at ~6 on attention's strided keys. `PackedB` (`packed.rs`, wasm only)
//!   packs the right-hand side in panels of 8 columns and computes tiles of 4 x 8 at ~20:
//!   attention's two products in wasm, and `linear`, the wasm builds' f32 projections (packed
//!   at load).
//!
//! The element-wise passes (softmax, GELU, SiLU, RMSNorm) are compiled three times, for the
//! baseline, for AVX2 + FMA and for AVX-512, and pick one at run time; in the browser's wasm
//! (one thread) the same code runs in order (there libm's erf and exp were 13% of a score of
//! the default model).
//! LLVM left the scalar GELU loop unvectorised for `simd128` (its `f32::min` is a call to
//! `fminf` in wasm, and wasm has no vector `copysign`): GELU has a `simd128` version with the
//! same operations in the same order (10% of a wasm score of the default model, then 3%), so
//! have softmax's exponentials (5% of a wasm score), and the passes use compare-and-select
//! helpers instead of `f32::min` / `f32::max`. The fast paths are taken only for f32 tensors
//! on flex that autodiff does not track; everything else (wgpu, training) goes through burn's
//! own ops.

// A fast path that does not apply gives its input tensors back as `Err`, for burn's op; a
// `Tensor` is a large value (640 bytes), but the `Ok` is one too.
#![allow(clippy::result_large_err)]

use burn::tensor::{DType, Device, Tensor, TensorData};
#[cfg(not(target_family = "wasm"))]
use gemm::{gemm, Parallelism};
#[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
use rayon::prelude::*;

#[cfg(feature = "gpu")]
pub mod gpu;
#[cfg(any(target_family = "wasm", test))]
mod packed;
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

/// `x W + b` (burn's `linear`, `W` `[in, out]`): one kernel on a GPU, the bias added as the
/// product is written; burn's `linear` elsewhere.
///
/// # Shapes
/// - x: `[B, S, in]`, weight: `[in, out]`, bias: `[out]`, output: `[B, S, out]`
pub fn affine(x: Tensor<3>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> Tensor<3> {
    #[cfg(feature = "gpu")]
    let x = match gpu::linear(x, weight, bias) {
        Ok(y) => return y,
        Err(x) => x,
    };
    // an f16 weight where the kernel above does not apply (training's tracked activations, a
    // size that is not a multiple of 4): expanded for this product, which stays in f32
    let weight = match weight.dtype() {
        DType::F16 => weight.clone().cast(DType::F32),
        _ => weight.clone(),
    };
    burn::tensor::module::linear(x, weight, bias.cloned())
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

/// Where one sequence's tokens lie in attention's `[B, S, ...]` inputs read as `[B * S, ...]`
/// rows: its first row `start`, its `len` real tokens, and the `rows` from `start` that
/// attention computes. A padded batch's row `b` is `{ start: b * S, len, rows: S }` (its
/// padding queries see the real keys, as in [`crate::backbones::Visibility::sees`]); sequences
/// packed one after another in one row are `{ start, len, rows: len }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
    pub rows: usize,
}

impl Span {
    /// The spans of a padded `[B, S]` batch with rows of `lengths` real tokens.
    pub fn padded(lengths: &[usize], s: usize) -> Vec<Span> {
        lengths.iter().enumerate().map(|(b, &len)| Span { start: b * s, len, rows: s }).collect()
    }

    /// Whether `spans` are a padded `[B, S]` batch's: one per row, each the whole row.
    pub fn are_padded(spans: &[Span], [b, s]: [usize; 2]) -> bool {
        spans.len() == b && spans.iter().enumerate().all(|(i, span)| span.start == i * s && span.rows == s)
    }
}

/// Scaled dot-product attention, softmax over the keys each query may see: keys `j < len` of
/// its sequence ([`Span`]) and, with `causal`, `j <= i`, and with a `window`, `j > i - window`.
/// `q` is `[B, S, H * hd]` and `k`, `v` are `[B, S, KV * hd]` with KV dividing H (query head
/// `h` reads KV head `h / (H / KV)`): the projections' own layout, read in place (no head split
/// copies). Returns the heads merged, `[B, S, H * hd]`, or the inputs back where the fast path
/// does not apply. A GPU takes padded batches only.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    (heads, kv_heads): (usize, usize),
    spans: &[Span],
    causal: bool,
    window: Option<usize>,
) -> Result<Tensor<3>, QKV> {
    #[cfg(feature = "gpu")]
    let (q, k, v) = {
        let [b, s, _] = q.dims();
        match Span::are_padded(spans, [b, s]) {
            true => {
                let lengths: Vec<usize> = spans.iter().map(|span| span.len).collect();
                match gpu::attention((q, k, v), (heads, kv_heads), &lengths, causal, window) {
                    Ok(out) => return Ok(out),
                    Err(qkv) => qkv,
                }
            }
            false => (q, k, v),
        }
    };
    attention_in_blocks(q, k, v, (heads, kv_heads), spans, causal, window, QUERY_BLOCK)
}

thread_local! {
    /// Attention's scores, `[block rows, keys]`, and a head's keys transposed, `[hd, keys]`:
    /// one pair of buffers per thread, reused by each (sequence, KV head) task the thread runs.
    static SCORES: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Query rows per block of [`attention`]: a block's scores are `[QUERY_BLOCK, keys]`, so one
/// task never holds an `S x S` matrix (at 16k tokens a block is 8 MB).
const QUERY_BLOCK: usize = 128;

/// [`attention`] with `block` query rows per block. A task is one sequence and one KV head:
/// it transposes the head's keys once, and each block of queries runs the query heads that
/// share them one after another while the block's keys are in cache. Each block computes the
/// scores of the keys its rows see (a causal block stops at its last row; a sliding window
/// starts at its first row's window), then softmax per row and the product with V.
#[allow(clippy::too_many_arguments)] // attention's arguments and the block size
fn attention_in_blocks(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    (heads, kv_heads): (usize, usize),
    spans: &[Span],
    causal: bool,
    window: Option<usize>,
    block: usize,
) -> Result<Tensor<3>, QKV> {
    let [b, s, row] = q.dims(); // row: the query and output row stride, H * hd
    let (d, kv_row) = (row.checked_div(heads).unwrap_or(0), k.dims()[2]);
    let applies = on_host(&q)
        && on_host(&k)
        && on_host(&v)
        && block > 0
        && spans.iter().all(|span| span.rows >= 1 && span.len <= span.rows && span.start + span.rows <= b * s)
        // in order and disjoint: each task writes only its own rows
        && spans.windows(2).all(|w| w[0].start + w[0].rows <= w[1].start)
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && row == heads * d
        && kv_row == kv_heads * d
        && k.dims() == [b, s, kv_row]
        && v.dims() == k.dims();
    if !applies {
        return Err((q, k, v));
    }
    let device = q.device();
    // the projections' outputs, each held alone: taken without a copy
    let (q, k, v) = (host_values(q), host_values(k), host_values(v));
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; b * s * row];
    let dst = SharedOut(out.as_mut_ptr());
    for_each_task(spans.len() * kv_heads, |task| {
        let (span, kv) = (spans[task / kv_heads], task % kv_heads);
        let (start, rows, len) = (span.start, span.rows, span.len.clamp(1, span.rows));
        // KV head kv's columns of the sequence's rows: key j at kh[j * kv_row..]
        let kvo = start * kv_row + kv * d;
        let (kh, vh) = (&k[kvo..], &v[kvo..]);
        // the keys query i sees, first..end; a padding query (i >= len) sees every real key,
        // as in `Visibility::sees`
        let sees = |i: usize| match i < len {
            true => (window.map_or(0, |w| (i + 1).saturating_sub(w)), if causal { i + 1 } else { len }),
            false => (0, len),
        };
        SCORES.with_borrow_mut(|(p, kt)| {
            // the head's keys as [d, len], each dimension a contiguous row: the score
            // products read k^T, which the keys' own layout holds a column at a time
            transpose_keys(kh, kv_row, len, d, kt);
            for i0 in (0..rows).step_by(block) {
                let i1 = (i0 + block).min(rows);
                // the keys the block's rows see together
                let (lo, end) = (i0..i1).map(sees).fold((usize::MAX, 0), |(a, b), (f, e)| (a.min(f), b.max(e)));
                let (n, m) = (i1 - i0, end - lo);
                // the thread's scores buffer, grown when a block needs more: the product below
                // writes all of the block's part (no zeroing per task)
                if p.len() < n * m {
                    p.resize(n * m, 0.0);
                }
                let p = &mut p[..n * m];
                for hi in kv * group..(kv + 1) * group {
                    // p[r, j] = scale * q[i0 + r, :] . k[lo + j, :]: the block's [n, d] queries
                    // of head hi with row stride `row`, the keys it sees as k^T [d, m] with row
                    // stride `len` (lo + m <= len)
                    block_scores(p, &q[(start + i0) * row + hi * d..], row, &kt[lo..], len, (n, m, d), scale);
                    for (r, scores) in p.chunks_exact_mut(m).enumerate() {
                        let (first, end) = sees(i0 + r);
                        let (first, end) = (first - lo, end - lo);
                        scores[..first].fill(0.0);
                        softmax_in_place(&mut scores[first..end]);
                        scores[end..].fill(0.0);
                    }
                    // SAFETY: (sequence, kv) owns the columns of heads kv * group.. (kv + 1) *
                    // group of the sequence's rows start..start + rows in `out`, disjoint from
                    // every other task (spans do not overlap); this writes rows i0..i1 of head
                    // hi. `p` is [n, m] and the [m, d] values are at `vh[lo * kv_row..]` with
                    // row stride `kv_row`.
                    unsafe {
                        let o = dst.at((start + i0) * row + hi * d);
                        block_output(o, row, p, &vh[lo * kv_row..], kv_row, (n, m, d));
                    }
                }
            }
            // a long input's buffers (over 4 MB) are not kept after its call
            for buffer in [p, kt] {
                if buffer.len() > 1 << 20 {
                    *buffer = Vec::new();
                }
            }
            #[cfg(target_family = "wasm")]
            PACKED.with_borrow_mut(|(keys, values)| [keys, values].into_iter().for_each(|b| b.release_over(1 << 20)));
        });
    });
    Ok(Tensor::from_data(TensorData::new(out, [b, s, row]), &device))
}

#[cfg(target_family = "wasm")]
thread_local! {
    /// Attention's keys (transposed) and values of a block, packed for [`PackedB`]'s matmul:
    /// one pair of buffers per thread.
    static PACKED: std::cell::RefCell<(PackedB, PackedB)> = std::cell::RefCell::new(Default::default());
}

/// `kt[c * len + j] = k[j * kv_row + c]`: the first `len` keys of a head, `[len, d]` with rows
/// `kv_row` apart, as `[d, len]` in `kt` (resized), 8 keys at a time (8 rows read, 8 values of
/// each row of `kt` written).
fn transpose_keys(k: &[f32], kv_row: usize, len: usize, d: usize, kt: &mut Vec<f32>) {
    kt.resize(d * len, 0.0);
    for j0 in (0..len).step_by(8) {
        let keys = (j0..(j0 + 8).min(len)).map(|j| &k[j * kv_row..j * kv_row + d]);
        for (j, key) in (j0..).zip(keys) {
            for (c, &v) in key.iter().enumerate() {
                kt[c * len + j] = v;
            }
        }
    }
}

/// `p = scale * q k^T` for a block of queries: `p` `[n, m]`, `q` `[n, d]` (rows `row` apart),
/// `kt` the keys they see transposed, `[d, m]` (rows `kt_row` apart). In wasm with [`PackedB`]
/// (the keys packed once per block), natively with the `gemm` crate.
fn block_scores(
    p: &mut [f32],
    q: &[f32],
    row: usize,
    kt: &[f32],
    kt_row: usize,
    dims: (usize, usize, usize),
    scale: f32,
) {
    let (n, m, d) = dims;
    #[cfg(target_family = "wasm")]
    PACKED.with_borrow_mut(|(keys, _)| {
        keys.pack(d, m, kt, kt_row, 1);
        keys.matmul_into(n, q, row, p, m, Output::Scaled(scale));
    });
    #[cfg(not(target_family = "wasm"))]
    {
        assert!(p.len() >= n * m && q.len() >= (n - 1) * row + d && kt.len() >= (d - 1) * kt_row + m);
        // SAFETY: the lengths checked above hold the strided [n, d], [d, m] and [n, m]
        unsafe {
            gemm(
                n,
                m,
                d,
                p.as_mut_ptr(),
                1,
                m as isize,
                false,
                q.as_ptr(),
                1,
                row as isize,
                kt.as_ptr(),
                1,
                kt_row as isize,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

/// `o = p v` for a block of queries: `o` `[n, d]` (rows `row` apart), `p` `[n, m]`, `v` the
/// `[m, d]` values (rows `kv_row` apart). As [`block_scores`], in wasm with [`PackedB`].
///
/// # Safety
/// `o` is valid for writing the strided `[n, d]`, which no other thread accesses meanwhile.
unsafe fn block_output(o: *mut f32, row: usize, p: &[f32], v: &[f32], kv_row: usize, dims: (usize, usize, usize)) {
    let (n, m, d) = dims;
    #[cfg(target_family = "wasm")]
    PACKED.with_borrow_mut(|(_, values)| {
        values.pack(m, d, v, kv_row, 1);
        // SAFETY: the function's contract
        unsafe { values.matmul(n, p, m, o, row, Output::Scaled(1.0)) };
    });
    #[cfg(not(target_family = "wasm"))]
    {
        assert!(p.len() >= n * m && v.len() >= (m - 1) * kv_row + d);
        // SAFETY: `p` and `v` hold the [n, m] and strided [m, d] (checked above), `o` the [n, d]
        // (the function's contract)
        unsafe {
            gemm(
                n,
                d,
                m,
                o,
                1,
                row as isize,
                false,
                p.as_ptr(),
                1,
                m as isize,
                v.as_ptr(),
                1,
                kv_row as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

/// Attention's inputs, given back where [`attention`] does not apply.
pub type QKV = (Tensor<3>, Tensor<3>, Tensor<3>);

/// Whether the CPU has AVX2 and FMA (the crate's baseline target is SSE2: 4 lanes, no FMA).
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX-512 F besides AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2_fma() && std::is_x86_feature_detected!("avx512f")
}

/// Defines `$name(args)`: `$body` (an `#[inline(always)]` fn) compiled for AVX-512 or for
/// AVX2 and FMA when the CPU has them, else for the baseline. The operations are the same in
/// each (Rust does not contract or reorder float operations), so are the numbers: only the
/// vector width differs. AVX-512 measured 1.47x (GELU) and 1.3x (softmax) faster than AVX2 per value
/// on Zen 4, which runs a 512-bit operation as two 256-bit halves: the gain is in instructions.
macro_rules! simd_dispatch {
    ($name:ident, $body:ident, $($arg:ident: $ty:ty),*) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if has_avx512() {
                    // SAFETY: the CPU supports the features `avx512` is compiled with.
                    return unsafe { avx512($($arg),*) };
                }
                if has_avx2_fma() {
                    // SAFETY: as above, for `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

simd_dispatch!(softmax_in_place, softmax_passes, r: &mut [f32]);
simd_dispatch!(gelu_in_place, gelu_pass, values: &mut [f32]);
simd_dispatch!(silu_in_place, silu_pass, values: &mut [f32]);
simd_dispatch!(rms_norm_row, rms_norm_pass, row: &mut [f32], weight: &[f32], eps: f32);

#[inline(always)]
fn gelu_pass(values: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let values = wasm::gelu_x4(values);
    values.iter_mut().for_each(|v| *v = gelu_f32(*v));
}

#[inline(always)]
fn silu_pass(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = silu_f32(*v));
}

/// `x * sigmoid(x)`; sigmoid from e = e^-|x| without a branch: 1 / (1 + e) for x >= 0,
/// e / (1 + e) below.
#[inline(always)]
pub fn silu_f32(x: f32) -> f32 {
    let e = exp_neg(below(x.abs(), 87.0));
    let s = 1.0 / (1.0 + e);
    x * if x >= 0.0 { s } else { e * s }
}

#[inline(always)]
fn rms_norm_pass(row: &mut [f32], weight: &[f32], eps: f32) {
    const L: usize = 8;
    let mut sums = [0.0f32; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            sums[l] += c[l] * c[l];
        }
    }
    let ss = chunks.remainder().iter().map(|x| x * x).sum::<f32>() + sums.iter().sum::<f32>();
    let inv = 1.0 / (ss / row.len() as f32 + eps).sqrt();
    row.iter_mut().zip(weight).for_each(|(x, w)| *x = *x * inv * w);
}

/// Separate passes with 8 independent lanes, so that each pass vectorises (a scalar `max` or
/// sum chain does not).
#[inline(always)]
fn softmax_passes(r: &mut [f32]) {
    const L: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = r.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            lanes[l] = above(lanes[l], c[l]);
        }
    }
    let max = chunks.remainder().iter().chain(&lanes).copied().fold(f32::NEG_INFINITY, above);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let r_rest = wasm::exp_below_max_x4(r, max);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let r_rest = &mut *r;
    for x in r_rest.iter_mut() {
        *x = exp_neg(below(max - *x, 87.0));
    }
    let mut sums = [0.0f32; L];
    let mut chunks = r.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            sums[l] += c[l];
        }
    }
    let inv = 1.0 / (chunks.remainder().iter().sum::<f32>() + sums.iter().sum::<f32>());
    r.iter_mut().for_each(|x| *x *= inv);
}

/// The output buffer shared by the attention tasks, each writing its own disjoint block.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
impl SharedOut {
    /// # Safety
    /// `offset` is inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

// SAFETY: see the write in `attention`: every task writes a disjoint set of elements.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// GELU of one value; |error| < 1e-6 * max(|x|, 1) against the exact erf form.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    // the sign as a select, not `copysign`: wasm `simd128` has no vector copysign, and the
    // scalar one keeps the loop from vectorising there
    let e = erf_abs(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
    0.5 * x * (1.0 + if x < 0.0 { -e } else { e })
}

/// erf(x), absolute error below 1e-6 in f32 (measured 5.9e-7; Abramowitz & Stegun 7.1.26,
/// 1.5e-7 in exact arithmetic, with a polynomial exp).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_abs(x.abs()).copysign(x)
}

/// erf(a) for `a = |x|` (NaN gives 1).
#[inline(always)]
fn erf_abs(a: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];
    let a = below(a, 4.0); // erf(4) = 1 - 1.5e-8: 1 in f32
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    1.0 - poly * exp_neg(a * a)
}

/// `x.min(hi)` (`hi` where `x` is NaN) as a compare and a select. `f32::min` is the same
/// outside wasm, but in wasm it is a call to libm's `fminf` per value (wasm's `f32.min`
/// propagates NaN, Rust's does not), which keeps a loop from vectorising for `simd128`.
#[inline(always)]
fn below(x: f32, hi: f32) -> f32 {
    if x < hi {
        x
    } else {
        hi
    }
}

/// `max.max(x)` for a running `max` that is never NaN (a NaN `x` leaves it), as
/// [`below`] does it.
#[inline(always)]
fn above(max: f32, x: f32) -> f32 {
    if x > max {
        x
    } else {
        max
    }
}

/// e^-y for y in [0, 87]: 2^k * e^r with k = round(-y / ln 2), |r| <= ln 2 / 2, and a
/// degree-6 Taylor polynomial for e^r (relative error < 2e-7).
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // round to nearest by adding and removing 1.5 * 2^23 (vectorises; `round` is a libm call);
    // the integer k is then the low bits of `t` (no float -> int cast, which does not vectorise)
    const ROUND: f32 = 12_582_912.0;
    let t = -y * std::f32::consts::LOG2_E + ROUND;
    let k = t - ROUND;
    let k_int = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = (-y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k is in [-126, 0]: 2^k is a normal f32 built from its exponent bits
    p * f32::from_bits(((k_int + 127) as u32) << 23)
}

/// [`gelu_f32`] and softmax's exponentials four values at a time with wasm `simd128`, for the
/// browser: LLVM leaves the scalar loops unvectorised there. The same operations in the same order, so the same numbers.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use core::arch::wasm32::*;

    /// GELU of the whole groups of 4 of `values`, in place; returns the rest.
    pub(super) fn gelu_x4(values: &mut [f32]) -> &mut [f32] {
        let mut chunks = values.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: 4 values
            unsafe { v128_store(c.as_mut_ptr().cast(), gelu(v128_load(c.as_ptr().cast()))) };
        }
        chunks.into_remainder()
    }

    /// Softmax's exponentials, `x = e^-(max - x)` (the difference capped at 87 as
    /// [`super::below`] does) for the whole groups of 4 of `values`, in place; returns the rest.
    pub(super) fn exp_below_max_x4(values: &mut [f32], max: f32) -> &mut [f32] {
        let (max, cap) = (f32x4_splat(max), f32x4_splat(87.0));
        let mut chunks = values.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: 4 values
            unsafe {
                let d = f32x4_sub(max, v128_load(c.as_ptr().cast()));
                v128_store(c.as_mut_ptr().cast(), exp_neg(v128_bitselect(d, cap, f32x4_lt(d, cap))));
            }
        }
        chunks.into_remainder()
    }

    /// [`super::gelu_f32`].
    #[inline(always)]
    fn gelu(x: v128) -> v128 {
        let e = erf_abs(f32x4_mul(f32x4_abs(x), f32x4_splat(std::f32::consts::FRAC_1_SQRT_2)));
        let signed = v128_bitselect(f32x4_neg(e), e, f32x4_lt(x, f32x4_splat(0.0)));
        f32x4_mul(f32x4_mul(f32x4_splat(0.5), x), f32x4_add(f32x4_splat(1.0), signed))
    }

    /// [`super::erf_abs`].
    #[inline(always)]
    fn erf_abs(a: v128) -> v128 {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];
        let four = f32x4_splat(4.0);
        let a = v128_bitselect(a, four, f32x4_lt(a, four));
        let one = f32x4_splat(1.0);
        let t = f32x4_div(one, f32x4_add(one, f32x4_mul(f32x4_splat(P), a)));
        let mut poly = f32x4_splat(A[4]);
        for c in [A[3], A[2], A[1], A[0]] {
            poly = f32x4_add(f32x4_splat(c), f32x4_mul(t, poly));
        }
        f32x4_sub(one, f32x4_mul(f32x4_mul(t, poly), exp_neg(f32x4_mul(a, a))))
    }

    /// [`super::exp_neg`].
    #[inline(always)]
    fn exp_neg(y: v128) -> v128 {
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        const ROUND: f32 = 12_582_912.0;
        let round = f32x4_splat(ROUND);
        let minus_y = f32x4_neg(y);
        let t = f32x4_add(f32x4_mul(minus_y, f32x4_splat(std::f32::consts::LOG2_E)), round);
        let k = f32x4_sub(t, round);
        let k_int = i32x4_sub(t, i32x4_splat(ROUND.to_bits() as i32));
        let r = f32x4_sub(f32x4_sub(minus_y, f32x4_mul(k, f32x4_splat(LN2_HI))), f32x4_mul(k, f32x4_splat(LN2_LO)));
        let mut p = f32x4_splat(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = f32x4_add(f32x4_splat(c), f32x4_mul(r, p));
        }
        f32x4_mul(p, i32x4_shl(i32x4_add(k_int, i32x4_splat(127)), 23))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values spread over `-half_range .. half_range`, a different sequence per `seed`.
    fn pseudo_random(n: usize, seed: u32, half_range: f32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / (500.0 / half_range) - half_range)
            .collect()
    }

    #[test]
    fn erf_and_gelu_match_f64_references() {
        let mut worst_erf: f64 = 0.0;
        let mut worst_gelu: f64 = 0.0;
        for i in -200_000..=200_000 {
            let x = i as f32 * 6e-5; // -12 .. 12
            let xd = x as f64;
            let erf_ref = libm::erf(xd);
            worst_erf = worst_erf.max((erf(x) as f64 - erf_ref).abs());
            let gelu_ref = 0.5 * xd * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
            worst_gelu = worst_gelu.max((gelu_f32(x) as f64 - gelu_ref).abs() / xd.abs().max(1.0));
        }
        assert!(worst_erf < 1e-6, "erf: worst |error| {worst_erf:e}");
        assert!(worst_gelu < 1e-6, "gelu: worst error {worst_gelu:e} (relative to max(|x|, 1))");
        assert!(erf(0.0).abs() < 1e-6 && erf(-0.7) == -erf(0.7), "erf is odd and 0 at 0");
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(-30.0), -1.0);
    }

    #[test]
    fn linear_matches_burns_with_and_without_bias_over_uneven_row_chunks() {
        let device = Device::flex();
        let rand = |n, seed| pseudo_random(n, seed, 1.0);
        // 3 x 7 = 21 rows: the chunks of the threads (1 per thread) do not divide them evenly
        let (b, s, d_in, d_out) = (3, 7, 37, 19);
        let x = Tensor::<3>::from_data(TensorData::new(rand(b * s * d_in, 1), [b, s, d_in]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(rand(d_in * d_out, 2), [d_in, d_out]), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(rand(d_out, 3), [d_out]), &device);
        let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
        let (w_host, b_host) = (PackedB::new(d_in, d_out, &rand(d_in * d_out, 2), d_out, 1), rand(d_out, 3));
        for bias in [None, Some(bias)] {
            let reference = values(burn::tensor::module::linear(x.clone(), w.clone(), bias.clone()));
            let b = bias.as_ref().map(|_| b_host.as_slice());
            let got = values(linear(&x, &w_host, b).expect("flex f32 takes the fast path"));
            let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "bias {}: worst difference {worst:e}", bias.is_some());
        }
        // a shape that does not chain is not computed
        let w_short = PackedB::new(d_in - 1, d_out, &rand(d_in * d_out, 2), d_out, 1);
        assert!(linear(&x, &w_short, None).is_none());
        assert!(linear(&x, &w_host, Some(&b_host[1..])).is_none());
    }

    #[test]
    fn rope_is_burns_rotation_bit_for_bit() {
        let device = Device::flex();
        let (b, s, heads, d) = (2, 5, 3, 8);
        let rand = |n, seed| pseudo_random(n, seed, 2.0);
        let (cos, sin) = (rand(s * d, 7), rand(s * d, 8));
        let x = Tensor::<4>::from_data(TensorData::new(rand(b * s * heads * d, 9), [b, s, heads, d]), &device);
        let table = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, s, 1, d]), &device);
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let want = x.clone() * table(&cos) + rotated * table(&sin);
        let got = rope_host(x.clone(), &cos, &sin).expect("flex f32");
        let values = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().expect("f32");
        let (got, want) = (values(got), values(want));
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{got:?} != {want:?}");
        // tables of another length, an odd head dimension: not applied
        assert!(rope_host(x.clone(), &cos[1..], &sin).is_err());
        let odd = Tensor::<4>::from_data(TensorData::new(rand(s * 3, 1), [1, s, 1, 3]), &device);
        assert!(rope_host(odd, &rand(s * 3, 2), &rand(s * 3, 3)).is_err());
    }

    #[test]
    fn attention_in_blocks_and_chunks_matches_burns_masked_attention_with_padding_gqa_causality_and_windows() {
        use crate::backbones::{burn_attention, merge_heads, repeat_kv, TokenBatch, Visibility};
        let device = Device::flex();
        let (b, heads, kv, s, d) = (3, 4, 2, 7, 8);
        let rand = |n, seed| pseudo_random(n, seed, 2.0);
        let t = |v: Vec<f32>, h| Tensor::<4>::from_data(TensorData::new(v, [b, h, s, d]), &device);
        let (q, k, v) =
            (t(rand(b * heads * s * d, 1), heads), t(rand(b * kv * s * d, 2), kv), t(rand(b * kv * s * d, 3), kv));
        let rows: Vec<Vec<u32>> = [7, 3, 5].iter().map(|&n| vec![1; n]).collect();
        let batch = TokenBatch::new(&rows, 0, &device);
        let windows = [None, Some(1), Some(2), Some(3), Some(7)];
        let cases =
            [Visibility::BIDIRECTIONAL].into_iter().chain(windows.map(|window| Visibility { causal: true, window }));
        let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
        for seen in cases {
            // the reference: burn's attention on the whole [B, H, S, S] mask
            let options = burn::tensor::ops::AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
            let mask = batch.mask_rows(heads, seen, 0..s, &device);
            let (rk, rv) = (repeat_kv(k.clone(), heads / kv), repeat_kv(v.clone(), heads / kv));
            let reference =
                values(merge_heads(burn::tensor::module::attention(q.clone(), rk, rv, Some(mask), None, options)));
            // padding queries see real keys even past a window: nothing becomes NaN
            assert!(reference.iter().all(|x| x.is_finite()), "{seen:?}: non-finite reference");
            let check = |got: Vec<f32>, what: &str| {
                assert!(got.iter().all(|x| x.is_finite()), "{seen:?} {what}: non-finite output");
                let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{seen:?} {what}: worst difference {worst:e}");
            };
            // the flex kernel, in query blocks of every size (a block sees only its keys), on
            // the projections' layout [B, S, heads * d]
            for block in [1, 2, 3, QUERY_BLOCK] {
                let fast = attention_in_blocks(
                    merge_heads(q.clone()),
                    merge_heads(k.clone()),
                    merge_heads(v.clone()),
                    (heads, kv),
                    &batch.spans(),
                    seen.causal,
                    seen.window,
                    block,
                );
                check(values(fast.expect("flex f32")), &format!("kernel, blocks of {block}"));
            }
            // burn's attention in query chunks (wgpu, wasm, training), each with its mask rows
            for chunk in [1, 3, 7] {
                let mask = batch.attention_mask(seen);
                let out = burn_attention(q.clone(), k.clone(), v.clone(), &mask, &batch, chunk);
                check(values(out), &format!("burn, chunks of {chunk}"));
            }
        }
    }

    #[test]
    fn attention_on_sequences_packed_in_one_row_gives_each_sequence_its_padded_rows_output() {
        use crate::backbones::{burn_attention, TokenBatch, Visibility};
        let device = Device::flex();
        let (heads, kv, d, lengths) = (4, 2, 8, [7, 3, 5]);
        let (b, s, total) = (lengths.len(), 7, lengths.iter().sum::<usize>());
        let rand = |n, seed| pseudo_random(n, seed, 2.0);
        let (q, k, v) = (rand(b * s * heads * d, 1), rand(b * s * kv * d, 2), rand(b * s * kv * d, 3));
        let t = |v: Vec<f32>, rows: usize, width: usize| {
            Tensor::<3>::from_data(TensorData::new(v, [rows / s.min(rows), s.min(rows), width]), &device)
        };
        // the real rows of each padded row, one after another
        let pack = |x: &[f32], width: usize| -> Vec<f32> {
            lengths.iter().enumerate().flat_map(|(r, &len)| x[r * s * width..][..len * width].to_vec()).collect()
        };
        let padded_batch = TokenBatch::new(&lengths.map(|n| vec![1; n]), 0, &device);
        let packed_batch = padded_batch.packed().expect("uneven rows pack");
        assert_eq!(packed_batch.positions(), [(0..7).collect::<Vec<_>>(), (0..3).collect(), (0..5).collect()].concat());
        let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
        for seen in [Visibility::BIDIRECTIONAL, Visibility::CAUSAL, Visibility { causal: true, window: Some(2) }] {
            let padded = attention_in_blocks(
                t(q.clone(), b * s, heads * d),
                t(k.clone(), b * s, kv * d),
                t(v.clone(), b * s, kv * d),
                (heads, kv),
                &padded_batch.spans(),
                seen.causal,
                seen.window,
                QUERY_BLOCK,
            );
            let want = pack(&values(padded.expect("flex f32")), heads * d);
            let one_row = |x: Vec<f32>, width| {
                Tensor::<3>::from_data(TensorData::new(pack(&x, width), [1, total, width]), &device)
            };
            for block in [1, 2, QUERY_BLOCK] {
                let got = attention_in_blocks(
                    one_row(q.clone(), heads * d),
                    one_row(k.clone(), kv * d),
                    one_row(v.clone(), kv * d),
                    (heads, kv),
                    &packed_batch.spans(),
                    seen.causal,
                    seen.window,
                    block,
                );
                let got = values(got.expect("flex f32"));
                // each sequence's rows alone (blocks of other sizes round differently)
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-6, "{seen:?}, blocks of {block}: differs by {worst:e}");
            }
            // burn's attention with the packed mask (no key of another sequence)
            let split = |x: Vec<f32>, h: usize| {
                Tensor::<4>::from_data(TensorData::new(pack(&x, h * d), [1, total, h, d]), &device).swap_dims(1, 2)
            };
            let mask = packed_batch.attention_mask(seen);
            let out = burn_attention(
                split(q.clone(), heads),
                split(k.clone(), kv),
                split(v.clone(), kv),
                &mask,
                &packed_batch,
                4,
            );
            let worst = values(out).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{seen:?}: burn's packed attention differs by {worst:e}");
        }
        // overlapping spans are refused, not raced on
        let overlapping = [Span { start: 0, len: 3, rows: 3 }, Span { start: 2, len: 3, rows: 3 }];
        let one = |w: usize| Tensor::<3>::from_data(TensorData::new(vec![0.0; 5 * w], [1, 5, w]), &device);
        let refused =
            attention_in_blocks(one(heads * d), one(kv * d), one(kv * d), (heads, kv), &overlapping, false, None, 2);
        assert!(refused.is_err());
    }

    #[test]
    fn silu_and_rms_norm_agree_with_burns_ops() {
        let device = Device::flex();
        let values: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.02).collect();
        let x = Tensor::<2>::from_data(TensorData::new(values, [40, 100]), &device);
        let worst = |a: Tensor<2>, b: Tensor<2>| {
            let (a, b) =
                (a.into_data().try_into_vec::<f32>().expect("f32"), b.into_data().try_into_vec::<f32>().expect("f32"));
            a.iter().zip(&b).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0f32, f32::max)
        };
        let w = silu(x.clone()).sub(burn::tensor::activation::silu(x.clone()));
        assert!(worst(w, x.clone().zeros_like()) < 1e-6, "silu");
        let weight = Tensor::<1>::from_data(
            TensorData::new((0..100).map(|i| 0.5 + i as f32 * 0.01).collect::<Vec<_>>(), [100]),
            &device,
        );
        let fast = rms_norm_host(x.clone(), &weight, 1e-6).expect("flex f32");
        let rms = x.clone().square().mean_dim(1).add_scalar(1e-6).sqrt();
        let reference = x.div(rms).mul(weight.unsqueeze());
        assert!(worst(fast, reference) < 1e-6, "rms_norm");
    }

    #[test]
    fn the_fast_path_agrees_with_burns_gelu() {
        let device = Device::flex();
        let values: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.003).collect();
        let x = Tensor::<2>::from_data(TensorData::new(values, [40, 100]), &device);
        let fast = gelu(x.clone()).into_data().try_into_vec::<f32>().expect("f32");
        let burn = burn::tensor::activation::gelu(x).into_data().try_into_vec::<f32>().expect("f32");
        let worst = fast.iter().zip(&burn).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "worst difference {worst:e}");
    }
}
