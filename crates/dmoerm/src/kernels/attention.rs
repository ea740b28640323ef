//! Attention: which keys each query sees ([`Visibility`], [`Span`], [`AttentionMask`]), and
//! [`attention`], the one entry point: a GPU kernel (`gpu.rs`), the CPU's blocks of queries
//! (below: each sequence and KV head a task, its keys transposed once, `gemm` natively and
//! [`PackedB`](super::PackedB) in wasm), or burn's masked attention.

use super::cpu::softmax_in_place;
use super::{for_each_task, host_values, on_host};
#[cfg(target_family = "wasm")]
use super::{Output, PackedB};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor, TensorData};
#[cfg(not(target_family = "wasm"))]
use gemm::{gemm, Parallelism};
use std::cell::OnceCell;
use std::ops::Range;

/// Which keys a query sees: the real tokens of its row; with `causal` none after it; with a
/// `window` (sliding-window attention, as transformers applies it) only the last `window` up
/// to and including it. A padding query sees every real key: its output is never read, and a
/// query that sees nothing would turn its row into NaN, which the next layer's values carry
/// into real rows (`0 * NaN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    pub causal: bool,
    pub window: Option<usize>,
}

impl Visibility {
    /// Every real token (encoders).
    pub const BIDIRECTIONAL: Self = Self { causal: false, window: None };
    /// The real tokens up to the query (decoders).
    pub const CAUSAL: Self = Self { causal: true, window: None };

    /// Whether query `q` sees key `k` in a row of `len` real tokens.
    pub fn sees(self, q: usize, k: usize, len: usize) -> bool {
        k < len && (q >= len || (!(self.causal && k > q) && self.window.is_none_or(|w| k + w > q)))
    }
}

/// The keys each query of a batch sees: the rule, and burn's boolean mask made from it once
/// when burn's attention runs a sequence in one piece (the flex kernel needs only the rule and
/// the row lengths; a long sequence builds the mask rows of each query chunk).
#[derive(Debug, Clone)]
pub struct AttentionMask {
    /// The rule.
    pub seen: Visibility,
    /// `[B, heads, S, S]`, `true` where a query may NOT look.
    full: OnceCell<Tensor<4, Bool>>,
}

impl AttentionMask {
    /// The rule `seen`, its mask not built yet.
    pub fn new(seen: Visibility) -> Self {
        Self { seen, full: OnceCell::new() }
    }
}

/// Where one sequence's tokens lie in attention's `[B, S, ...]` inputs read as `[B * S, ...]`
/// rows: its first row `start`, its `len` real tokens, and the `rows` from `start` that
/// attention computes. A padded batch's row `b` is `{ start: b * S, len, rows: S }` (its
/// padding queries see the real keys, as in [`Visibility::sees`]); sequences
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

/// The mask rows of the queries `rows` of a `[batch, seq]` batch whose sequences lie at
/// `spans`: `[batch, heads, rows.len(), seq]`, `true` where a query may NOT look (packed: nor
/// at another sequence's keys).
pub fn mask_rows(
    spans: &[Span],
    [batch, seq]: [usize; 2],
    heads: usize,
    seen: Visibility,
    rows: Range<usize>,
    device: &Device,
) -> Tensor<4, Bool> {
    let n = rows.len();
    let mut mask = Vec::with_capacity(batch * n * seq);
    for r in 0..batch {
        for q in rows.clone().map(|q| r * seq + q) {
            // the sequence whose rows hold query q (each row's, or one of the packed row's)
            let i = spans.partition_point(|span| span.start + span.rows <= q).min(spans.len().saturating_sub(1));
            let sees = |k: usize| {
                spans.get(i).is_some_and(|&Span { start, len, rows }| {
                    (start..start + rows).contains(&k) && seen.sees(q - start, k - start, len)
                })
            };
            mask.extend((r * seq..(r + 1) * seq).map(|k| !sees(k)));
        }
    }
    Tensor::<4, Bool>::from_data(TensorData::new(mask, [batch, 1, n, seq]), device).expand([batch, heads, n, seq])
}

/// Scaled dot-product attention, softmax over the keys each query may see (`mask`'s rule,
/// [`Visibility`]) of its sequence ([`Span`]). `q` is `[B, S, H * hd]` and `k`, `v` are
/// `[B, S, KV * hd]` with KV dividing H (query head `h` reads KV head `h / (H / KV)`): the
/// projections' own layout. Returns the heads merged, `[B, S, H * hd]`: one kernel on a GPU
/// (padded batches), on the CPU the heads read in place (no head split copies) in blocks of
/// queries, and elsewhere (training) burn's attention on the split heads, in pieces of at most
/// [`QUERY_CHUNK`] queries.
pub fn attention((q, k, v): QKV, (heads, kv_heads): (usize, usize), mask: &AttentionMask, spans: &[Span]) -> Tensor<3> {
    let Visibility { causal, window } = mask.seen;
    #[cfg(feature = "gpu")]
    let (q, k, v) = {
        let [b, s, _] = q.dims();
        match Span::are_padded(spans, [b, s]) {
            true => {
                let lengths: Vec<usize> = spans.iter().map(|span| span.len).collect();
                match super::gpu::attention((q, k, v), (heads, kv_heads), &lengths, causal, window) {
                    Ok(out) => return out,
                    Err(qkv) => qkv,
                }
            }
            false => (q, k, v),
        }
    };
    let (q, k, v) = match attention_in_blocks(q, k, v, (heads, kv_heads), spans, causal, window, QUERY_BLOCK) {
        Ok(out) => return out,
        Err(qkv) => qkv,
    };
    let hd = q.dims()[2] / heads.max(1);
    let (q, k, v) = (split_heads(q, heads, hd), split_heads(k, kv_heads, hd), split_heads(v, kv_heads, hd));
    burn_attention(q, k, v, mask, spans, QUERY_CHUNK)
}

thread_local! {
    /// Attention's scores, `[block rows, keys]`, and a head's keys transposed, `[hd, keys]`:
    /// one pair of buffers per thread, reused by each (sequence, KV head) task the thread runs.
    static SCORES: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Query rows per block of [`attention`]: a block's scores are `[QUERY_BLOCK, keys]`, so one
/// task never holds an `S x S` matrix (at 16k tokens a block is 8 MB).
pub(super) const QUERY_BLOCK: usize = 128;

/// [`attention`] with `block` query rows per block. A task is one sequence and one KV head:
/// it transposes the head's keys once, and each block of queries runs the query heads that
/// share them one after another while the block's keys are in cache. Each block computes the
/// scores of the keys its rows see (a causal block stops at its last row; a sliding window
/// starts at its first row's window), then softmax per row and the product with V.
#[allow(clippy::too_many_arguments)] // attention's arguments and the block size
pub(super) fn attention_in_blocks(
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

/// Attention's inputs, `q`, `k` and `v`, given back where a fast path does not apply.
pub type QKV = (Tensor<3>, Tensor<3>, Tensor<3>);

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

/// Splits `[B, S, heads * head_dim]` into heads: `[B, heads, S, head_dim]`.
pub(super) fn split_heads(x: Tensor<3>, heads: usize, head_dim: usize) -> Tensor<4> {
    let [b, s, _] = x.dims();
    x.reshape([b, s, heads, head_dim]).swap_dims(1, 2)
}

/// Queries per piece of burn's attention on a long sequence: a piece's scores are
/// `[B, H, QUERY_CHUNK, S]`, never `[B, H, S, S]`.
const QUERY_CHUNK: usize = 512;

/// burn's attention on the split heads (`[B, H, S, hd]`, K/V `[B, KV, S, hd]`) in pieces of at
/// most `chunk` queries, each with its rows of the mask.
pub(super) fn burn_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: &AttentionMask,
    spans: &[Span],
    chunk: usize,
) -> Tensor<3> {
    let seen = mask.seen;
    let [b, heads, s, _] = q.dims();
    let device = q.device();
    let n_rep = heads / k.dims()[1];
    let (k, v) = (repeat_kv(k, n_rep), repeat_kv(v, n_rep));
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
    let run = |q, m| burn::tensor::module::attention(q, k.clone(), v.clone(), Some(m), None, options);
    if s <= chunk {
        let m = mask.full.get_or_init(|| mask_rows(spans, [b, s], heads, seen, 0..s, &device));
        return merge_heads(run(q, m.clone()));
    }
    let pieces = (0..s)
        .step_by(chunk.max(1))
        .map(|i0| {
            let rows = i0..(i0 + chunk).min(s);
            run(q.clone().narrow(2, i0, rows.len()), mask_rows(spans, [b, s], heads, seen, rows, &device))
        })
        .collect();
    merge_heads(Tensor::cat(pieces, 2))
}

/// Repeats each KV head `n_rep` times: `[B, KV, S, d]` -> `[B, KV * n_rep, S, d]`.
pub(super) fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, n_rep, s, d]).reshape([b, kv * n_rep, s, d])
}

/// Merges heads back: `[B, heads, S, head_dim]` -> `[B, S, heads * head_dim]`.
pub(super) fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, s, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}
