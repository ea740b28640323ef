//! The int8 kernels of x86-64: AVX-512 VNNI, AVX-VNNI and the AVX2 pairs, each with its SIMD
//! activation quantiser.

use crate::portable::{Activations, Code};
use crate::{Int8Linear, Kernel, Packed, BK, MR, NR};
use std::arch::x86_64::*;

/// The VNNI layout's `k` per group.
const KG: usize = Kernel::Vnni.kg();

/// [`crate::portable::quantize_row`] with AVX-512: the same codes (`vcvtps2dq` rounds half to even)
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
/// an array indexed in a loop stays in memory). With `Q4` the panel is a 4-bit weight's as
/// stored ([`crate::q4::pack`]: 64 bytes a group, codes `q + 8`), widened in registers (the
/// low nibbles of a group's bytes are the codes of outputs 0-15, the high ones those of
/// 16-31) and taken as `vpdpbusd`'s unsigned operand, the activations as its signed one (`a`
/// holds `qx`, not `qx + 128`): each sum is `sum qx (q + 8)`, which less `8 sum qx` over the
/// block ([`Activations::signed_with_sums`]) is `sum qx q`, with no offsets to take off.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `panel` holds the groups' 128 bytes each (64 with
/// `Q4`), `a` MR rows of at least `groups.end * KG` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block<const Q4: bool>(
    panel: *const i8,
    a: *const u8,
    stride: usize,
    groups: std::ops::Range<usize>,
) -> [[__m512i; 2]; MR] {
    let z = _mm512_setzero_si512();
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
    let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
    let nibble = _mm512_set1_epi8(15);
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let (w0, w1) = if Q4 {
                let q = _mm512_loadu_si512(panel.add(g * NR * KG / 2).cast());
                (_mm512_and_si512(q, nibble), _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble))
            } else {
                let wp = panel.add(g * NR * KG);
                (_mm512_loadu_si512(wp.cast()), _mm512_loadu_si512(wp.add(64).cast()))
            };
            // row r's 4 bytes broadcast against both halves of the panel (a macro, not a
            // closure: closures do not inherit the target features)
            macro_rules! row {
                ($r:expr, $c0:ident, $c1:ident) => {
                    let x = _mm512_set1_epi32(a.add($r * stride + g * KG).cast::<i32>().read_unaligned());
                    if Q4 {
                        $c0 = _mm512_dpbusd_epi32($c0, w0, x);
                        $c1 = _mm512_dpbusd_epi32($c1, w1, x);
                    } else {
                        $c0 = _mm512_dpbusd_epi32($c0, x, w0);
                        $c1 = _mm512_dpbusd_epi32($c1, x, w1);
                    }
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
pub(super) fn rows_vnni(w: &Int8Linear, acts: &Activations<u8>, y: &mut [f32]) {
    match &w.packed {
        Packed::Int8(codes) => rows_vnni_with::<false>(w, codes.as_ptr(), acts, y),
        Packed::Q4(codes) => rows_vnni_with::<true>(w, codes.as_ptr().cast(), acts, y),
    }
}

/// [`rows_vnni`] for int8 codes at `codes` or (`Q4`) 4-bit ones as stored, read in place.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn rows_vnni_with<const Q4: bool>(w: &Int8Linear, codes: *const i8, acts: &Activations<u8>, y: &mut [f32]) {
    let (stride, n_pad, blocks, rows) = w.checked_dims(Kernel::Vnni, acts, y);
    let tiles = rows.div_ceil(MR);
    // 4-bit weights: the activations as signed codes `qx`, and `8 sum qx` of each block
    let (signed, sums) = if Q4 { acts.signed_with_sums() } else { (Vec::new(), Vec::new()) };
    for nb in 0..n_pad / NR {
        // SAFETY: the codes hold n_pad / NR panels of stride * NR codes (bytes, or halves)
        let panel = unsafe { codes.add(if Q4 { nb * stride * NR / 2 } else { nb * stride * NR }) };
        for tile in 0..tiles {
            let a = match Q4 {
                true => signed[tile * MR * stride..].as_ptr().cast::<u8>(),
                false => acts.codes[tile * MR * stride..].as_ptr(),
            };
            let a_scales = &acts.scales[tile * MR * blocks..(tile + 1) * MR * blocks];
            let mut accf = [[_mm512_setzero_ps(); 2]; MR];
            for b in 0..blocks {
                // SAFETY: the panel holds stride / KG groups of NR * KG = 128 bytes (64 for
                // 4-bit codes); the tile MR rows of `stride` bytes (checked above)
                let acc = unsafe { block::<Q4>(panel, a, stride, b * BK / KG..(b + 1) * BK / KG) };
                for (r, (accf, acc)) in accf.iter_mut().zip(&acc).enumerate() {
                    let a_scale = _mm512_set1_ps(a_scales[r * blocks + b]);
                    for h in 0..2 {
                        let at = b * n_pad + nb * NR + 16 * h;
                        // what the sums carry besides `sum qx q`: the offsets `128 sum q` of
                        // int8 weights, `8 sum qx` of the row for 4-bit ones
                        // SAFETY: offsets (and a 4-bit weight's block scales) hold blocks rows of n_pad
                        let (off, scale) = unsafe {
                            (
                                match Q4 {
                                    true => _mm512_set1_epi32(sums[(tile * MR + r) * blocks + b]),
                                    false => _mm512_loadu_si512(w.offsets.as_ptr().add(at).cast()),
                                },
                                if Q4 {
                                    _mm512_mul_ps(a_scale, _mm512_loadu_ps(w.block_scales.as_ptr().add(at)))
                                } else {
                                    a_scale
                                },
                            )
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
                    let (s, b) =
                        unsafe { (_mm512_loadu_ps(w.scales.as_ptr().add(o)), _mm512_loadu_ps(w.bias.as_ptr().add(o))) };
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

/// [`crate::portable::quantize_row`] with AVX2 (u8 codes for AVX-VNNI, i16 for the pairs): the same
/// codes (`vcvtps2dq` rounds half to even) and the same scale.
#[target_feature(enable = "avx2")]
pub(super) fn quantize_row_avx2<T: Code>(x: &[f32], q: &mut [T]) -> f32 {
    let body = x.len() / 8 * 8;
    let (sign, mut max, mut nan) = (_mm256_set1_ps(-0.0), _mm256_setzero_ps(), _mm256_setzero_ps());
    for at in (0..body).step_by(8) {
        // SAFETY: 8 values inside `x`
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(at)) };
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        max = _mm256_max_ps(max, _mm256_andnot_ps(sign, v));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 lanes into an array of 8
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
    let start = if _mm256_movemask_ps(nan) != 0 { f32::NAN } else { 0.0 };
    let max =
        lanes.iter().chain(&x[body..]).fold(
            start,
            |m, v| {
                if m.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    m.max(v.abs())
                }
            },
        );
    if !max.is_finite() {
        return f32::NAN;
    }
    if max == 0.0 {
        return 0.0;
    }
    let inv = 127.0 / max;
    let (inv8, offset) = (_mm256_set1_ps(inv), _mm256_set1_epi32(128));
    for at in (0..body).step_by(8) {
        let mut lanes = [0i32; 8];
        // SAFETY: 8 values inside `x`, 8 lanes into an array of 8
        unsafe {
            let c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(at)), inv8));
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), _mm256_add_epi32(c, offset));
        }
        // codes 1..=255
        q[at..at + 8].iter_mut().zip(lanes).for_each(|(q, c)| *q = T::from(c as u8));
    }
    for (q, &v) in q[body..].iter_mut().zip(&x[body..]) {
        *q = T::from(((v * inv).round_ties_even() as i32 + 128) as u8);
    }
    max / 127.0
}

/// The integer sums of 2 activation rows (at `a`, rows `stride` codes apart) with one panel
/// of NR outputs over the groups `groups` of the pairs layout: per group, 4 x 16 weight
/// bytes widened to i16 (8 outputs x 2 `k` each), and per row one broadcast pair of codes
/// and 4 `vpmaddwd`.
///
/// # Safety
/// The CPU has AVX2; `panel` holds the groups' 64 bytes each, `a` 2 rows of at least
/// `groups.end * 2` codes.
#[target_feature(enable = "avx2")]
unsafe fn block_pairs(
    panel: *const i8,
    a: *const i16,
    stride: usize,
    groups: std::ops::Range<usize>,
) -> [[__m256i; 4]; 2] {
    let z = _mm256_setzero_si256();
    let [mut c00, mut c01, mut c02, mut c03, mut c10, mut c11, mut c12, mut c13] = [z; 8];
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let wp = panel.add(g * NR * 2);
            // (written out: closures do not inherit the target features)
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.cast()));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(16).cast()));
            let w2 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(32).cast()));
            let w3 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(48).cast()));
            let x0 = _mm256_set1_epi32(a.add(g * 2).cast::<i32>().read_unaligned());
            let x1 = _mm256_set1_epi32(a.add(stride + g * 2).cast::<i32>().read_unaligned());
            c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x0, w0));
            c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x0, w1));
            c02 = _mm256_add_epi32(c02, _mm256_madd_epi16(x0, w2));
            c03 = _mm256_add_epi32(c03, _mm256_madd_epi16(x0, w3));
            c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(x1, w0));
            c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(x1, w1));
            c12 = _mm256_add_epi32(c12, _mm256_madd_epi16(x1, w2));
            c13 = _mm256_add_epi32(c13, _mm256_madd_epi16(x1, w3));
        }
    }
    [[c00, c01, c02, c03], [c10, c11, c12, c13]]
}

/// The integer sums of 2 activation rows (at `a`, rows `stride` bytes apart) with one panel
/// of NR outputs over the groups `groups` of the VNNI layout: per group, 4 x 32 weight
/// bytes (8 outputs x 4 `k` each), and per row one broadcast of 4 codes and 4 `vpdpbusd`.
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI; `panel` holds the groups' 128 bytes each, `a` 2 rows of
/// at least `groups.end * 4` bytes.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn block_avx_vnni(
    panel: *const i8,
    a: *const u8,
    stride: usize,
    groups: std::ops::Range<usize>,
) -> [[__m256i; 4]; 2] {
    let z = _mm256_setzero_si256();
    let [mut c00, mut c01, mut c02, mut c03, mut c10, mut c11, mut c12, mut c13] = [z; 8];
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let wp = panel.add(g * NR * KG);
            let w0 = _mm256_loadu_si256(wp.cast());
            let w1 = _mm256_loadu_si256(wp.add(32).cast());
            let w2 = _mm256_loadu_si256(wp.add(64).cast());
            let w3 = _mm256_loadu_si256(wp.add(96).cast());
            let x0 = _mm256_set1_epi32(a.add(g * KG).cast::<i32>().read_unaligned());
            let x1 = _mm256_set1_epi32(a.add(stride + g * KG).cast::<i32>().read_unaligned());
            c00 = _mm256_dpbusd_avx_epi32(c00, x0, w0);
            c01 = _mm256_dpbusd_avx_epi32(c01, x0, w1);
            c02 = _mm256_dpbusd_avx_epi32(c02, x0, w2);
            c03 = _mm256_dpbusd_avx_epi32(c03, x0, w3);
            c10 = _mm256_dpbusd_avx_epi32(c10, x1, w0);
            c11 = _mm256_dpbusd_avx_epi32(c11, x1, w1);
            c12 = _mm256_dpbusd_avx_epi32(c12, x1, w2);
            c13 = _mm256_dpbusd_avx_epi32(c13, x1, w3);
        }
    }
    [[c00, c01, c02, c03], [c10, c11, c12, c13]]
}

/// A 256-bit kernel's rows (the AVX2 pairs, AVX-VNNI): for each weight panel of NR outputs,
/// 2 activation rows at a time, each block of BK inputs summed by `$block` and scaled into
/// f32 accumulators as the portable kernel does, then `acc * s[o] + b[o]`. (A macro: one
/// body, compiled with each kernel's target features so that its block inlines.)
macro_rules! rows_256 {
    ($(#[$doc:meta])* $name:ident, $features:literal, $code:ty, $kernel:expr, $block:ident) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        pub(super) fn $name(w: &Int8Linear, acts: &Activations<$code>, y: &mut [f32]) {
            let kg = $kernel.kg();
            let (stride, n_pad, blocks, rows) = w.checked_dims($kernel, acts, y);
            let pairs = rows.div_ceil(2);
            let (q4, mut scratch) = (!w.block_scales.is_empty(), Vec::new());
            for nb in 0..n_pad / NR {
                let panel = w.panel(nb, stride, &mut scratch).as_ptr();
                for pair in 0..pairs {
                    let a = acts.codes[pair * 2 * stride..].as_ptr();
                    let mut accf = [[_mm256_setzero_ps(); 4]; 2];
                    for b in 0..blocks {
                        // SAFETY: the panel holds stride / kg groups of NR * kg bytes; the
                        // activations are padded to PAD_ROWS rows, a multiple of 2 (checked above)
                        let acc = unsafe { $block(panel, a, stride, b * BK / kg..(b + 1) * BK / kg) };
                        for (r, (accf, acc)) in accf.iter_mut().zip(&acc).enumerate() {
                            let a_scale = _mm256_set1_ps(acts.scales[(pair * 2 + r) * blocks + b]);
                            for h in 0..4 {
                                let at = b * n_pad + nb * NR + 8 * h;
                                // SAFETY: offsets (and a 4-bit weight's block scales) hold
                                // blocks rows of n_pad
                                let (off, scale) = unsafe {
                                    let off = _mm256_loadu_si256(w.offsets.as_ptr().add(at).cast());
                                    (
                                        off,
                                        if q4 {
                                            _mm256_mul_ps(a_scale, _mm256_loadu_ps(w.block_scales.as_ptr().add(at)))
                                        } else {
                                            a_scale
                                        },
                                    )
                                };
                                let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[h], off));
                                accf[h] = _mm256_add_ps(accf[h], _mm256_mul_ps(v, scale));
                            }
                        }
                    }
                    // epilogue: acc * s[o] + b[o], as the portable kernel rounds it
                    for (r, accf) in accf.iter().enumerate().take(rows - pair * 2) {
                        let row = pair * 2 + r;
                        for (h, &v) in accf.iter().enumerate() {
                            let o = nb * NR + 8 * h;
                            if o >= w.out {
                                break;
                            }
                            // SAFETY: scales and bias are padded to whole NR blocks
                            let (s, b) = unsafe {
                                (_mm256_loadu_ps(w.scales.as_ptr().add(o)), _mm256_loadu_ps(w.bias.as_ptr().add(o)))
                            };
                            let mut lanes = [0f32; 8];
                            // SAFETY: 8 lanes into an array of 8
                            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(_mm256_mul_ps(v, s), b)) };
                            let n = (w.out - o).min(8);
                            y[row * w.out + o..][..n].copy_from_slice(&lanes[..n]);
                        }
                    }
                }
            }
        }
    };
}

rows_256!(
    /// The pairs kernel with AVX2 (`vpmaddwd`).
    rows_pairs,
    "avx2",
    i16,
    Kernel::Pairs,
    block_pairs
);
rows_256!(
    /// The VNNI layout with AVX-VNNI (256-bit `vpdpbusd`, no AVX-512).
    rows_avx_vnni,
    "avx2,avxvnni",
    u8,
    Kernel::AvxVnni,
    block_avx_vnni
);
