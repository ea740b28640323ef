//! The activations as every kernel reads them (`qx + 128` per block of BK inputs, with its
//! scale), and the portable kernel: the integers and the f32 operations of the SIMD kernels,
//! in the same order, in plain Rust.

use crate::{Int8Linear, BK, NR, PAD_ROWS};

/// An activation code, `qx + 128`: u8 for VNNI, i16 for the pair kernels.
pub(crate) trait Code: Copy + Into<i32> + From<u8> {}
impl Code for u8 {}
impl Code for i16 {}

/// Activation rows quantised for one of the kernels: u8 codes for VNNI, i16 for the pairs.
pub(crate) enum Quantized {
    U8(Activations<u8>),
    I16(Activations<i16>),
}

/// Activation rows quantised to `qx + 128`, each block of BK values with its own scale, rows
/// padded to whole blocks and to PAD_ROWS rows with 128 (zero).
pub(crate) struct Activations<T> {
    /// `[rows rounded up to PAD_ROWS, in rounded up to BK]`.
    pub(crate) codes: Vec<T>,
    /// `[rows rounded up to PAD_ROWS, blocks]` (0 for the padding).
    pub(crate) scales: Vec<f32>,
}

impl<T: Code> Activations<T> {
    /// `x` `[t, cols]`, each block by `quantize` ([`quantize_row`] or a SIMD copy of it).
    pub(crate) fn quantize(x: &[f32], cols: usize, quantize: impl Fn(&[f32], &mut [T]) -> f32) -> Self {
        let stride = cols.next_multiple_of(BK);
        let blocks = stride / BK;
        let rows = (x.len() / cols).next_multiple_of(PAD_ROWS);
        let mut codes = vec![T::from(128); rows * stride];
        let mut scales = vec![0f32; rows * blocks];
        for ((q, a), x) in codes.chunks_mut(stride).zip(scales.chunks_mut(blocks)).zip(x.chunks(cols)) {
            for ((q, a), x) in q.chunks_mut(BK).zip(a.iter_mut()).zip(x.chunks(BK)) {
                *a = quantize(x, q);
            }
        }
        Self { codes, scales }
    }
}

impl Activations<u8> {
    /// The codes as signed `qx` (`qx + 128` with its top bit flipped) and `8 sum qx` of each
    /// block of BK: what a kernel needs that takes the activations as the signed operand of
    /// its 8-bit products against 4-bit codes stored `q + 8`, whose sums are
    /// `sum qx (q + 8) = sum qx q + 8 sum qx`.
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128", feature = "relaxed-simd")
    ))]
    pub(crate) fn signed_with_sums(&self) -> (Vec<i8>, Vec<i32>) {
        let signed: Vec<i8> = self.codes.iter().map(|&c| (c ^ 0x80) as i8).collect();
        let sums = signed.chunks_exact(BK).map(|b| 8 * b.iter().map(|&q| i32::from(q)).sum::<i32>()).collect();
        (signed, sums)
    }
}

/// Quantises `x` into `q` (`qx + 128`, rounding half to even) and returns its scale; NaN when
/// `x` has a NaN or an infinity (the output rows become NaN: a non-finite score is an error).
pub(crate) fn quantize_row<T: Code>(x: &[f32], q: &mut [T]) -> f32 {
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
        *q = T::from(((v * inv).round_ties_even() as i32 + 128) as u8);
    }
    max / 127.0
}

impl Int8Linear {
    /// The integers and the f32 operations of the kernels, in the same order, in plain Rust.
    pub(crate) fn rows_portable<T: Code>(&self, acts: &Activations<T>, y: &mut [f32]) {
        let (stride, n_pad, kg) = (self.inp.next_multiple_of(BK), self.scales.len(), self.kernel.kg());
        let (blocks, rows) = (stride / BK, y.len() / self.out);
        let mut scratch = Vec::new();
        for nb in 0..n_pad / NR {
            let panel = self.panel(nb, stride, &mut scratch);
            for r in 0..rows {
                let a = &acts.codes[r * stride..(r + 1) * stride];
                for o in nb * NR..((nb + 1) * NR).min(self.out) {
                    let lane = o % NR;
                    let mut acc = 0f32;
                    for b in 0..blocks {
                        let mut sum = 0i32;
                        for g in b * BK / kg..(b + 1) * BK / kg {
                            let w = &panel[(g * NR + lane) * kg..][..kg];
                            sum += (0..kg).map(|j| a[g * kg + j].into() * i32::from(w[j])).sum::<i32>();
                        }
                        let scale = self.block_scale(acts.scales[r * blocks + b], b, n_pad, o);
                        acc += (sum - self.offsets[b * n_pad + o]) as f32 * scale;
                    }
                    y[r * self.out + o] = acc * self.scales[o] + self.bias[o];
                }
            }
        }
    }
}
