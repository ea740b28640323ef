//! The int8 kernels of wasm: the pairs kernel with `simd128` (`i32x4.dot_i16x8_s`), and for
//! 4-bit weights, where the browser has relaxed SIMD, `i32x4.relaxed_dot_i8x16_i7x16_add_s`.

use crate::portable::{Activations, Code};
use crate::{Int8Linear, Kernel, BK, NR};
use core::arch::wasm32::*;

/// Outputs per quarter panel: 8, in 2 vectors of 4 i32 lanes.
const QUARTER: usize = NR / 4;

/// An activation code type the `simd128` quantiser writes: i16 (the pairs kernel) or u8 (the
/// relaxed one).
pub(super) trait Store: Code {
    /// Writes the 8 codes of two vectors of 4 i32 (each in `1..=255`) to `q`.
    ///
    /// # Safety
    /// `q` has room for 8 codes.
    unsafe fn store8(q: *mut Self, lo: v128, hi: v128);
}

impl Store for i16 {
    unsafe fn store8(q: *mut i16, lo: v128, hi: v128) {
        // SAFETY: 16 bytes, by the contract
        unsafe { v128_store(q.cast(), i16x8_narrow_i32x4(lo, hi)) }
    }
}

impl Store for u8 {
    unsafe fn store8(q: *mut u8, lo: v128, hi: v128) {
        let v = i16x8_narrow_i32x4(lo, hi);
        // SAFETY: 8 bytes, by the contract
        unsafe { v128_store64_lane::<0>(u8x16_narrow_i16x8(v, v), q.cast()) }
    }
}

/// [`crate::portable::quantize_row`] with `simd128`: the same codes (`f32x4.nearest` rounds half to
/// even) and the same scale.
pub(super) fn quantize_row<T: Store>(x: &[f32], q: &mut [T]) -> f32 {
    let (body, tail) = x.split_at(x.len() / 4 * 4);
    // f32x4.max gives NaN where either lane is NaN
    let mut max = f32x4_splat(0.0);
    for v in body.chunks_exact(4) {
        // SAFETY: 4 values
        max = f32x4_max(max, f32x4_abs(unsafe { v128_load(v.as_ptr().cast()) }));
    }
    let lanes = [
        f32x4_extract_lane::<0>(max),
        f32x4_extract_lane::<1>(max),
        f32x4_extract_lane::<2>(max),
        f32x4_extract_lane::<3>(max),
    ];
    // a compare and a select: `f32::max` is a call to libm's `fmaxf` in wasm
    let max = lanes.iter().chain(tail).fold(0f32, |m, v| match m.is_nan() || v.is_nan() {
        true => f32::NAN,
        false if v.abs() > m => v.abs(),
        false => m,
    });
    if !max.is_finite() {
        return f32::NAN;
    }
    if max == 0.0 {
        return 0.0;
    }
    let inv = 127.0 / max;
    let (inv4, offset) = (f32x4_splat(inv), i32x4_splat(128));
    for (v, q) in body.chunks_exact(8).zip(q.chunks_exact_mut(8)) {
        // SAFETY: 8 values in, 8 codes out
        unsafe {
            let code = |at: usize| {
                let v = f32x4_nearest(f32x4_mul(v128_load(v[at..].as_ptr().cast()), inv4));
                i32x4_add(i32x4_trunc_sat_f32x4(v), offset)
            };
            T::store8(q.as_mut_ptr(), code(0), code(4));
        }
    }
    let done = body.len() / 8 * 8;
    for (q, &v) in q[done..].iter_mut().zip(&x[done..]) {
        *q = T::from(((v * inv).round_ties_even() as i32 + 128) as u8);
    }
    max / 127.0
}

/// Activation rows per call of [`block`] (PAD_ROWS is a multiple). 4 rows of 8 outputs
/// (8 accumulators, a weight pair, a broadcast code and a product in x86's 16 vector
/// registers once V8 compiles it) run 1.27x faster than 3 rows of 16 outputs (12
/// accumulators, which spill): 39.5 against 31.2 GMAC/s for `[96, 384] x [384, 1536]` in
/// Node 20 on Zen 4.
pub(super) const ROWS: usize = 4;
const _: () = assert!(super::PAD_ROWS.is_multiple_of(ROWS), "the activations are padded to whole tiles");

/// The integer sums of ROWS activation rows (at `a`, rows `stride` codes apart) with 8
/// outputs of a panel (at `panel`, groups NR * 2 bytes apart) over the groups `groups`: per
/// group, 16 weight bytes widened to 2 x 8 i16 (4 outputs x 2 `k` each), and per row one
/// broadcast pair of codes and 2 `i32x4.dot_i16x8_s`.
///
/// # Safety
/// `panel` holds the groups' NR * 2 bytes each (from its quarter's start: 16 bytes each),
/// `a` ROWS rows of at least `groups.end * 2` codes.
unsafe fn block(panel: *const i8, a: *const i16, stride: usize, groups: std::ops::Range<usize>) -> [[v128; 2]; ROWS] {
    let mut c = [[i32x4_splat(0); 2]; ROWS];
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let l = v128_load(panel.add(g * NR * 2).cast());
            let (w0, w1) = (i16x8_extend_low_i8x16(l), i16x8_extend_high_i8x16(l));
            for (r, c) in c.iter_mut().enumerate() {
                let x = v128_load32_splat(a.add(r * stride + g * 2).cast());
                c[0] = i32x4_add(c[0], i32x4_dot_i16x8(x, w0));
                c[1] = i32x4_add(c[1], i32x4_dot_i16x8(x, w1));
            }
        }
    }
    c
}

/// The pairs kernel: `y = x W^T + b` for the rows of `acts`.
pub(super) fn rows_pairs(w: &Int8Linear, acts: &Activations<i16>, y: &mut [f32]) {
    let (stride, n_pad, blocks, rows) = w.checked_dims(Kernel::Pairs, acts, y);
    rows_with(w, (stride, n_pad, blocks, rows), &acts.scales, y, 0, |panel, tile, b, first| {
        let a = acts.codes[tile * ROWS * stride..].as_ptr();
        // SAFETY: the panel holds stride / 2 groups of NR * 2 bytes; the activations are padded
        // to PAD_ROWS rows, a multiple of ROWS (checked above)
        let acc = unsafe { block(panel, a, stride, b * BK / 2..(b + 1) * BK / 2) };
        // less `128 * sum q[o, k]` of the block (the codes are `qx + 128`)
        let off = &w.offsets[b * n_pad + first..][..QUARTER];
        // SAFETY: 4 values of `off`, which holds 8
        let off = unsafe { [v128_load(off.as_ptr().cast()), v128_load(off[4..].as_ptr().cast())] };
        acc.map(|acc| [i32x4_sub(acc[0], off[0]), i32x4_sub(acc[1], off[1])])
    });
}

/// The integer sums of ROWS signed activation rows (at `a`, rows `stride` codes apart) with
/// 8 outputs of a 4-bit panel whose codes are `q + 8` (at `panel`, groups NR * KG bytes
/// apart) over the groups `groups`: per group, 2 x 16 weight bytes (4 outputs x 4 `k` each),
/// and per row one broadcast of 4 codes and 2 `i32x4.relaxed_dot_i8x16_i7x16_add_s` (16
/// products each, added to the sums). Exact: the instruction's result differs between CPUs only
/// where its second operand has the top bit set, and `q + 8` is in `0..=15`.
///
/// # Safety
/// `panel` holds the groups' NR * KG bytes each (from its quarter's start: 32 bytes each), `a`
/// ROWS rows of at least `groups.end * KG` codes.
#[cfg(feature = "relaxed-simd")]
#[target_feature(enable = "relaxed-simd")]
unsafe fn block_relaxed(
    panel: *const i8,
    a: *const i8,
    stride: usize,
    groups: std::ops::Range<usize>,
) -> [[v128; 2]; ROWS] {
    const KG: usize = Kernel::Relaxed.kg();
    let mut c = [[i32x4_splat(0); 2]; ROWS];
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let w = panel.add(g * NR * KG);
            let (w0, w1) = (v128_load(w.cast()), v128_load(w.add(16).cast()));
            for (r, c) in c.iter_mut().enumerate() {
                let x = v128_load32_splat(a.add(r * stride + g * KG).cast());
                c[0] = i32x4_relaxed_dot_i8x16_i7x16_add(x, w0, c[0]);
                c[1] = i32x4_relaxed_dot_i8x16_i7x16_add(x, w1, c[1]);
            }
        }
    }
    c
}

/// The relaxed-SIMD kernel (4-bit weights): `y = x W^T + b` for the rows of `acts`. The
/// activations are read as signed codes `qx` (the instruction's 8-bit operand) and the weights
/// as `q + 8`, so a block's sum is `sum qx q + 8 sum qx`: less `8 sum qx`, it is the integer
/// the other kernels compute.
#[cfg(feature = "relaxed-simd")]
pub(super) fn rows_relaxed(w: &Int8Linear, acts: &Activations<u8>, y: &mut [f32]) {
    let (stride, n_pad, blocks, rows) = w.checked_dims(Kernel::Relaxed, acts, y);
    let (signed, sums) = acts.signed_with_sums();
    rows_with(w, (stride, n_pad, blocks, rows), &acts.scales, y, 8, |panel, tile, b, _| {
        let a = signed[tile * ROWS * stride..].as_ptr();
        // SAFETY: the panel holds stride / KG groups of NR * KG bytes; the activations are
        // padded to PAD_ROWS rows, a multiple of ROWS (checked above)
        let acc = unsafe { block_relaxed(panel, a, stride, b * BK / 4..(b + 1) * BK / 4) };
        std::array::from_fn(|r| {
            let sum = i32x4_splat(sums[(tile * ROWS + r) * blocks + b]);
            [i32x4_sub(acc[r][0], sum), i32x4_sub(acc[r][1], sum)]
        })
    });
}

/// What the wasm kernels share: for each quarter panel of 8 outputs, ROWS activation rows at
/// a time, per block of BK inputs the integer sums `sums(panel, tile, block, first output)`
/// (`sum qx q` over the block: the quarter's codes at `panel`, `plus` added to a 4-bit
/// weight's) scaled into f32 accumulators as the portable kernel does, then the row scale and
/// the bias.
fn rows_with(
    w: &Int8Linear,
    (stride, n_pad, blocks, rows): (usize, usize, usize, usize),
    act_scales: &[f32],
    y: &mut [f32],
    plus: i8,
    sums: impl Fn(*const i8, usize, usize, usize) -> [[v128; 2]; ROWS],
) {
    let kg = w.kernel.kg();
    let tiles = rows.div_ceil(ROWS);
    let (q4, mut scratch) = (!w.block_scales.is_empty(), Vec::new());
    for nb in 0..n_pad / NR {
        let codes = w.panel_plus(nb, stride, &mut scratch, plus);
        for quarter in 0..NR / QUARTER {
            let first = nb * NR + quarter * QUARTER;
            if first >= w.out {
                break;
            }
            let panel = codes[quarter * QUARTER * kg..].as_ptr();
            for tile in 0..tiles {
                let mut accf = [[f32x4_splat(0.0); 2]; ROWS];
                for b in 0..blocks {
                    let acc = sums(panel, tile, b, first);
                    let bs = if q4 { &w.block_scales[b * n_pad + first..][..QUARTER] } else { &[][..] };
                    for (r, (accf, acc)) in accf.iter_mut().zip(&acc).enumerate() {
                        let a_scale = f32x4_splat(act_scales[(tile * ROWS + r) * blocks + b]);
                        for h in 0..2 {
                            let scale = match q4 {
                                // SAFETY: 4 values of `bs`, which holds 8
                                true => f32x4_mul(a_scale, unsafe { v128_load(bs[4 * h..].as_ptr().cast()) }),
                                false => a_scale,
                            };
                            let v = f32x4_convert_i32x4(acc[h]);
                            accf[h] = f32x4_add(accf[h], f32x4_mul(v, scale));
                        }
                    }
                }
                // epilogue: acc * s[o] + b[o], as the portable kernel rounds it
                for (r, accf) in accf.iter().enumerate().take(rows - tile * ROWS) {
                    let row = tile * ROWS + r;
                    for (h, &v) in accf.iter().enumerate() {
                        let o = first + 4 * h;
                        if o >= w.out {
                            break;
                        }
                        // SAFETY: scales and bias are padded to whole NR blocks
                        let (s, b) = unsafe {
                            (v128_load(w.scales[o..].as_ptr().cast()), v128_load(w.bias[o..].as_ptr().cast()))
                        };
                        let v = f32x4_add(f32x4_mul(v, s), b);
                        let out = &mut y[row * w.out + o..(row + 1) * w.out];
                        if out.len() >= 4 {
                            // SAFETY: 4 lanes into `out`, which holds at least 4
                            unsafe { v128_store(out.as_mut_ptr().cast(), v) };
                        } else {
                            let lanes =
                                [f32x4_extract_lane::<0>(v), f32x4_extract_lane::<1>(v), f32x4_extract_lane::<2>(v)];
                            out.copy_from_slice(&lanes[..out.len()]);
                        }
                    }
                }
            }
        }
    }
}
