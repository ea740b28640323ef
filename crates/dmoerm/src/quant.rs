//! Int8 matrices that stay int8 in memory, and their matmul on the CPU.
//!
//! A packed int8 bundle stores a matrix as PyTorch lays it out, `[rows, cols]` (a linear
//! weight is `[out, in]`), one i8 code per value and one f32 scale per row:
//! `W[o, k] = q[o, k] * s[o]`. [`Int8Matrix`] keeps exactly that, a quarter of the f32 bytes;
//! an embedding table reads its rows from it. [`Int8Linear`] is the same weight rearranged for
//! the matmul kernel.
//!
//! [`Int8Linear::matmul`] computes `x W^T + b` with dynamic quantization of the activations,
//! as ONNX Runtime's does, but finer: each block of 64 inputs of an activation row `t` is
//! quantised on the fly to 8 bits with its own scale `a[t, b] = max|x[t, block b]| / 127`, the
//! products of a block are summed exactly in i32, and the blocks are summed in f32:
//!
//! ```text
//! y[t, o] = s[o] * sum_b a[t, b] * sum_{k in b} qx[t, k] * q[o, k] + b[o]
//! ```
//!
//! One scale per row was measured first: on the default model's test responses it moved the
//! reward by 0.033 of its standard deviation on average (a few large LayerNorm features set
//! the row's scale); with blocks of 64, by 0.013, for a 3% slower matmul (BENCHMARKS.md).
//!
//! The kernel uses AVX-512 VNNI (`vpdpbusd`: 64 u8 x i8 products summed into 16 i32 lanes per
//! instruction). It multiplies unsigned by signed bytes, so activations are stored as
//! `qx + 128` (u8) and each block's sum is corrected by `128 * sum_{k in b} q[o, k]`, kept
//! per block and output. The weight is laid out so that one 64-byte load holds 4 consecutive
//! `k` of 16 outputs, and the 4 bytes of one activation row are broadcast against it: no
//! horizontal sums. A portable kernel computes the same integers and the same f32 operations
//! in the same order (tests check them bit for bit); it is the reference, and where VNNI is
//! missing int8 projections are, for now, expanded to f32 when they load (see
//! [`Int8Linear::available`]).

/// Consecutive `k` per 32-bit lane (`vpdpbusd` sums 4 byte products).
const KG: usize = 4;
/// Inputs per activation scale: each block of 64 values of an activation row has its own
/// scale, so that a few large features (LayerNorm outputs, GELU tails) do not flatten the
/// rest of the row to a handful of codes.
const BK: usize = 64;
/// Output columns per kernel tile: two 512-bit registers of 16 i32 lanes.
const NR: usize = 32;
/// Activation rows per kernel tile (6 x 2 integer and 6 x 2 f32 accumulators; the kernel's
/// `block` is written out for 6).
const MR: usize = 6;
/// Row tiles per task at most (96 rows: with 1024 inputs, 96 KB of activation codes).
const MAX_TILES: usize = 16;

/// A `[rows, cols]` matrix of i8 codes with one f32 scale per row, resident as int8.
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Matrix {
    /// From codes `[rows, cols]` (row-major) and one scale per row; `None` when the lengths do
    /// not match.
    pub fn new(rows: usize, cols: usize, codes: Vec<i8>, scales: Vec<f32>) -> Option<Self> {
        if codes.len() != rows.checked_mul(cols)? || scales.len() != rows {
            return None;
        }
        Some(Self { rows, cols, codes, scales })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Row `r` as f32 (an embedding lookup), or `None` past the last row.
    pub fn row(&self, r: usize) -> Option<impl Iterator<Item = f32> + '_> {
        let s = *self.scales.get(r)?;
        Some(self.codes[r * self.cols..(r + 1) * self.cols].iter().map(move |&q| f32::from(q) * s))
    }
}

/// A linear weight `[out, in]` as int8, laid out for the matmul kernel, with its bias.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    out: usize,
    inp: usize,
    /// `[out / NR][in / KG][NR][KG]` (`out` rounded up to NR, `in` to BK, zero padded): the 64
    /// bytes at `((nb * k_groups + g) * NR + 16 h) * KG` are `k = 4g..4g+4` of outputs
    /// `nb*NR + 16h ..+16`.
    packed: Vec<i8>,
    /// Per output, rounded up to NR: the row scale and the bias.
    scales: Vec<f32>,
    /// `[in / BK][out rounded up to NR]`: `128 * sum q[o, k]` over the block's `k`.
    offsets: Vec<i32>,
    bias: Vec<f32>,
    has_bias: bool,
}

impl Int8Linear {
    /// Whether this CPU has the kernel (AVX-512 VNNI); elsewhere int8 weights are expanded to
    /// f32 when they load.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512bw")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The weight `[out, in]` and its bias (`out` values).
    pub fn new(weight: &Int8Matrix, bias: Option<&[f32]>) -> Option<Self> {
        let (out, inp) = weight.dims();
        if bias.is_some_and(|b| b.len() != out) {
            return None;
        }
        let (n_pad, groups) = (out.next_multiple_of(NR), inp.next_multiple_of(BK) / KG);
        let mut packed = vec![0i8; n_pad * groups * KG];
        let mut offsets = vec![0i32; inp.div_ceil(BK) * n_pad];
        for (o, row) in weight.codes.chunks_exact(inp.max(1)).take(out).enumerate() {
            let (nb, lane) = (o / NR, o % NR);
            for (k, &q) in row.iter().enumerate() {
                packed[((nb * groups + k / KG) * NR + lane) * KG + k % KG] = q;
                offsets[k / BK * n_pad + o] += 128 * i32::from(q);
            }
        }
        let pad = |v: Vec<f32>| {
            let mut v = v;
            v.resize(n_pad, 0.0);
            v
        };
        Some(Self {
            out,
            inp,
            packed,
            scales: pad(weight.scales.clone()),
            offsets,
            bias: pad(bias.map_or_else(|| vec![0.0; out], <[f32]>::to_vec)),
            has_bias: bias.is_some(),
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Number of parameters (weights and bias).
    pub fn num_params(&self) -> usize {
        self.out * self.inp + if self.has_bias { self.out } else { 0 }
    }

    /// `x W^T + b`: `x` is `[t, in]` row-major, the result `[t, out]`.
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `in`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        assert!(self.inp > 0 && x.len().is_multiple_of(self.inp), "x is not [t, {}]", self.inp);
        let t = x.len() / self.inp;
        let mut y = vec![0f32; t * self.out];
        let vnni = Self::available();
        // One task per chunk of rows: it quantises them and writes their output rows, one
        // weight panel at a time over all its row tiles, so that each panel is read from memory
        // once per chunk, not once per tile. Chunks of at most MAX_TILES tiles, small enough to
        // give every thread two.
        #[cfg(not(target_family = "wasm"))]
        let threads = rayon::current_num_threads();
        #[cfg(target_family = "wasm")]
        let threads = 1;
        let chunk = t.div_ceil(2 * threads).next_multiple_of(MR).clamp(MR, MAX_TILES * MR);
        let task = |(x, y): (&[f32], &mut [f32])| {
            let acts = Activations::quantize(x, self.inp, vnni);
            #[cfg(target_arch = "x86_64")]
            if vnni {
                // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked by `available`)
                return unsafe { x86::rows_vnni(self, &acts, y) };
            }
            let _ = vnni;
            self.rows_portable(&acts, y);
        };
        let rows = x.chunks(chunk * self.inp).zip(y.chunks_mut(chunk * self.out));
        #[cfg(not(target_family = "wasm"))]
        {
            use rayon::iter::{IntoParallelIterator, ParallelIterator};
            let rows: Vec<_> = rows.collect();
            rows.into_par_iter().for_each(task);
        }
        #[cfg(target_family = "wasm")]
        rows.for_each(task);
        y
    }

    /// The integers and the f32 operations of the kernel, in the same order, in plain Rust.
    fn rows_portable(&self, acts: &Activations, y: &mut [f32]) {
        let (stride, n_pad) = (self.inp.next_multiple_of(BK), self.scales.len());
        let blocks = stride / BK;
        for (r, yr) in y.chunks_exact_mut(self.out).enumerate() {
            let a = &acts.codes[r * stride..(r + 1) * stride];
            for (o, yo) in yr.iter_mut().enumerate() {
                let (nb, lane) = (o / NR, o % NR);
                let mut acc = 0f32;
                for b in 0..blocks {
                    let mut sum = 0i32;
                    for g in b * BK / KG..(b + 1) * BK / KG {
                        let w = &self.packed[((nb * stride / KG + g) * NR + lane) * KG..][..KG];
                        sum += (0..KG).map(|j| i32::from(a[g * KG + j]) * i32::from(w[j])).sum::<i32>();
                    }
                    acc += (sum - self.offsets[b * n_pad + o]) as f32 * acts.scales[r * blocks + b];
                }
                *yo = acc * self.scales[o] + self.bias[o];
            }
        }
    }
}

/// Activation rows quantised to `qx + 128` (u8), each block of BK values with its own scale,
/// rows padded to whole blocks and to whole tiles of MR rows with 128 (zero).
struct Activations {
    /// `[rows rounded up to MR, in rounded up to BK]`.
    codes: Vec<u8>,
    /// `[rows rounded up to MR, blocks]` (0 for the padding).
    scales: Vec<f32>,
}

impl Activations {
    fn quantize(x: &[f32], cols: usize, vnni: bool) -> Self {
        let stride = cols.next_multiple_of(BK);
        let blocks = stride / BK;
        let rows = (x.len() / cols).next_multiple_of(MR);
        let mut codes = vec![128u8; rows * stride];
        let mut scales = vec![0f32; rows * blocks];
        for ((q, a), x) in codes.chunks_mut(stride).zip(scales.chunks_mut(blocks)).zip(x.chunks(cols)) {
            for ((q, a), x) in q.chunks_mut(BK).zip(a.iter_mut()).zip(x.chunks(BK)) {
                #[cfg(target_arch = "x86_64")]
                if vnni {
                    // SAFETY: the CPU has AVX-512 F and BW (the caller checked `available`)
                    *a = unsafe { x86::quantize_row(x, q) };
                    continue;
                }
                *a = quantize_row(x, q);
            }
        }
        let _ = vnni;
        Self { codes, scales }
    }
}

/// Quantises `x` into `q` (`qx + 128`, rounding half to even) and returns its scale; NaN when
/// `x` has a NaN or an infinity (the output rows become NaN: a non-finite score is an error).
fn quantize_row(x: &[f32], q: &mut [u8]) -> f32 {
    // f32::max skips NaN, which must be seen, not rounded to 0
    let max = x.iter().fold(0f32, |m, v| if m.is_nan() || v.is_nan() { f32::NAN } else { m.max(v.abs()) });
    if !max.is_finite() {
        return f32::NAN;
    }
    if max == 0.0 {
        return 0.0;
    }
    let inv = 127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * inv).round_ties_even() as i32 + 128) as u8;
    }
    max / 127.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Activations, Int8Linear, BK, KG, MR, NR};
    use std::arch::x86_64::*;

    /// [`super::quantize_row`] with AVX-512: the same codes (`vcvtps2dq` rounds half to even)
    /// and the same scale.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn quantize_row(x: &[f32], q: &mut [u8]) -> f32 {
        let lanes = |n: usize| (1u32 << n.min(16)).wrapping_sub(1) as u16;
        let mut max = _mm512_setzero_ps();
        let mut nan = 0u16;
        for at in (0..x.len()).step_by(16) {
            // SAFETY: the mask reads the lanes inside `x`
            let v = unsafe { _mm512_maskz_loadu_ps(lanes(x.len() - at), x.as_ptr().add(at)) };
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            max = _mm512_max_ps(max, _mm512_abs_ps(v));
        }
        let max = _mm512_reduce_max_ps(max);
        if nan != 0 || !max.is_finite() {
            return f32::NAN;
        }
        if max == 0.0 {
            return 0.0;
        }
        let inv = _mm512_set1_ps(127.0 / max);
        let offset = _mm512_set1_epi32(128);
        for at in (0..x.len()).step_by(16) {
            let m = lanes(x.len() - at);
            // SAFETY: the masks read and write the lanes inside `x` and `q` (q is at least as long)
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(at));
                let c = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), offset);
                _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(at).cast(), m, c);
            }
        }
        max / 127.0
    }

    /// The integer sums of one tile of MR activation rows (at `a`, rows `stride` bytes apart)
    /// with one panel of NR outputs over the groups `groups`, in 12 registers (written out:
    /// an array indexed in a loop stays in memory).
    ///
    /// # Safety
    /// The CPU has AVX-512 F and VNNI; `panel` holds the groups' 128 bytes each, `a` MR rows
    /// of at least `groups.end * KG` bytes.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn block(
        panel: *const i8,
        a: *const u8,
        stride: usize,
        groups: std::ops::Range<usize>,
    ) -> [[__m512i; 2]; MR] {
        let z = _mm512_setzero_si512();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        for g in groups {
            // SAFETY: in bounds by the function's contract
            unsafe {
                let wp = panel.add(g * NR * KG);
                let (w0, w1) = (_mm512_loadu_si512(wp.cast()), _mm512_loadu_si512(wp.add(64).cast()));
                // row r's 4 bytes broadcast against both halves of the panel (a macro, not a
                // closure: closures do not inherit the target features)
                macro_rules! row {
                    ($r:expr, $c0:ident, $c1:ident) => {
                        let x = _mm512_set1_epi32(a.add($r * stride + g * KG).cast::<i32>().read_unaligned());
                        $c0 = _mm512_dpbusd_epi32($c0, x, w0);
                        $c1 = _mm512_dpbusd_epi32($c1, x, w1);
                    };
                }
                row!(0, c00, c01);
                row!(1, c10, c11);
                row!(2, c20, c21);
                row!(3, c30, c31);
                row!(4, c40, c41);
                row!(5, c50, c51);
            }
        }
        [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]]
    }

    /// The output rows of the activation rows, NR columns at a time, and for each weight panel
    /// of NR columns every tile of MR rows: per group of KG inputs, two 64-byte weight loads,
    /// and per row one 4-byte broadcast and two `vpdpbusd`; per block of BK inputs, the
    /// integer sums scaled into f32 accumulators.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn rows_vnni(w: &Int8Linear, acts: &Activations, y: &mut [f32]) {
        let (stride, n_pad) = (w.inp.next_multiple_of(BK), w.scales.len());
        let blocks = stride / BK;
        let rows = y.len() / w.out;
        let tiles = rows.div_ceil(MR);
        assert!(y.len() == rows * w.out && acts.codes.len() == tiles * MR * stride);
        assert!(
            w.packed.len() == n_pad * stride
                && w.offsets.len() == blocks * n_pad
                && acts.scales.len() == tiles * MR * blocks
        );
        for nb in 0..n_pad / NR {
            let panel = w.packed[nb * stride * NR..].as_ptr();
            for tile in 0..tiles {
                let a = acts.codes[tile * MR * stride..].as_ptr();
                let a_scales = &acts.scales[tile * MR * blocks..(tile + 1) * MR * blocks];
                let mut accf = [[_mm512_setzero_ps(); 2]; MR];
                for b in 0..blocks {
                    // SAFETY: the panel holds stride / KG groups of NR * KG = 128 bytes; the tile
                    // MR rows of `stride` bytes (checked above)
                    let acc = unsafe { block(panel, a, stride, b * BK / KG..(b + 1) * BK / KG) };
                    for (r, (accf, acc)) in accf.iter_mut().zip(&acc).enumerate() {
                        let scale = _mm512_set1_ps(a_scales[r * blocks + b]);
                        for h in 0..2 {
                            // SAFETY: offsets hold blocks rows of n_pad
                            let off = unsafe {
                                _mm512_loadu_si512(w.offsets.as_ptr().add(b * n_pad + nb * NR + 16 * h).cast())
                            };
                            let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[h], off));
                            accf[h] = _mm512_add_ps(accf[h], _mm512_mul_ps(v, scale));
                        }
                    }
                }
                // epilogue: acc * s[o] + b[o], as the portable kernel rounds it
                for (r, accf) in accf.iter().enumerate().take(rows - tile * MR) {
                    let row = tile * MR + r;
                    for (h, &v) in accf.iter().enumerate() {
                        let o = nb * NR + 16 * h;
                        if o >= w.out {
                            break;
                        }
                        // SAFETY: scales and bias are padded to whole NR blocks
                        let (s, b) = unsafe {
                            (_mm512_loadu_ps(w.scales.as_ptr().add(o)), _mm512_loadu_ps(w.bias.as_ptr().add(o)))
                        };
                        let v = _mm512_add_ps(_mm512_mul_ps(v, s), b);
                        let n = (w.out - o).min(16);
                        let out = &mut y[row * w.out + o..row * w.out + o + n];
                        // SAFETY: the mask writes the first n lanes, inside `out`
                        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), (1u32 << n).wrapping_sub(1) as u16, v) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::quantize_rows;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn linear(rows: usize, cols: usize, seed: u64) -> (Int8Linear, Vec<f32>, Vec<f32>) {
        let w = random(rows * cols, seed);
        let bias = random(rows, seed + 1);
        let (codes, scales) = quantize_rows(&w, rows);
        let m = Int8Matrix::new(rows, cols, codes, scales).unwrap();
        let dequantized = (0..rows).flat_map(|r| m.row(r).unwrap()).collect();
        (Int8Linear::new(&m, Some(&bias)).unwrap(), dequantized, bias)
    }

    const SHAPES: [(usize, usize, usize); 6] =
        [(1, 1, 1), (3, 5, 7), (9, 70, 130), (17, 64, 384), (20, 33, 65), (200, 37, 70)];

    /// The kernel this CPU runs gives the portable kernel's numbers bit for bit.
    #[test]
    fn kernel_matches_the_portable_one_bit_for_bit() {
        for (t, rows, cols) in SHAPES {
            let (m, _, _) = linear(rows, cols, 1);
            // extreme codes: rows at full scale with ties, zero rows
            let mut x = random(t * cols, 2);
            x[..cols].iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { 1.0 } else { -0.5 });
            let got = m.matmul(&x);
            let mut want = vec![0f32; t * rows];
            for (x, y) in x.chunks(MR * cols).zip(want.chunks_mut(MR * rows)) {
                m.rows_portable(&Activations::quantize(x, cols, false), y);
            }
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "({t},{rows},{cols})");
        }
    }

    /// The int8 matmul against the f32 product of the dequantised weights: the error is the
    /// activations' rounding, at most half a step (`max|x| / 254`) per value.
    #[test]
    fn matmul_matches_the_dequantised_product() {
        for (t, rows, cols) in SHAPES {
            let (m, wd, bias) = linear(rows, cols, 1);
            let x = random(t * cols, 2);
            let y = m.matmul(&x);
            assert_eq!(y.len(), t * rows);
            for r in 0..t {
                let xr = &x[r * cols..(r + 1) * cols];
                let step = xr.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                for o in 0..rows {
                    let wr = &wd[o * cols..(o + 1) * cols];
                    let exact: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>() + bias[o];
                    let bound = step / 2.0 * wr.iter().map(|v| v.abs()).sum::<f32>() + 1e-5;
                    let got = y[r * rows + o];
                    assert!(
                        (got - exact).abs() <= bound,
                        "({t},{rows},{cols}) [{r},{o}]: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn activation_codes_match_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if Int8Linear::available() {
            for n in [1, 15, 16, 17, 100] {
                let mut x = random(n, 7);
                x[0] = 0.5; // ties at every scale: 0.5 * 127 / max
                x[n / 2] = -1.0;
                for x in [
                    x.clone(),
                    vec![0.0; n],
                    {
                        let mut y = x.clone();
                        y[n - 1] = f32::NAN;
                        y
                    },
                    {
                        let mut y = x;
                        y[n - 1] = f32::INFINITY;
                        y
                    },
                ] {
                    let (mut a, mut b) = (vec![128u8; n], vec![128u8; n]);
                    // SAFETY: the CPU has AVX-512 (checked above)
                    let sa = unsafe { x86::quantize_row(&x, &mut a) };
                    let sb = quantize_row(&x, &mut b);
                    assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "{x:?}");
                }
            }
        }
    }

    #[test]
    fn zero_and_non_finite_rows() {
        let (codes, scales) = quantize_rows(&[1.0, -2.0, 0.5, 3.0], 2);
        let m = Int8Matrix::new(2, 2, codes.clone(), scales).unwrap();
        let l = Int8Linear::new(&m, None).unwrap();
        assert_eq!(l.matmul(&[0.0, 0.0]), vec![0.0, 0.0]);
        assert!(l.matmul(&[f32::NAN, 1.0]).iter().all(|v| v.is_nan()));
        assert!(l.matmul(&[1.0, f32::INFINITY]).iter().all(|v| v.is_nan()));
        assert!(Int8Matrix::new(2, 2, codes[..3].to_vec(), vec![1.0, 1.0]).is_none());
        assert!(Int8Linear::new(&m, Some(&[1.0])).is_none());
        for r in 0..2 {
            let want: Vec<f32> = codes[2 * r..2 * r + 2].iter().map(|&q| f32::from(q) * m.scales[r]).collect();
            assert_eq!(m.row(r).unwrap().collect::<Vec<_>>(), want);
        }
        assert!(m.row(2).is_none());
    }
}
