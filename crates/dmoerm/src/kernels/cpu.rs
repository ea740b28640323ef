//! The element-wise passes on the CPU (softmax, GELU, SiLU, RMSNorm) and the scalar functions
//! they are made of, written once, portably: on x86-64 each pass is compiled three times, for
//! the baseline (SSE2), for AVX2 + FMA and for AVX-512, and picks one at run time
//! (`simd_dispatch`); ARM64's baseline is NEON, which the one copy uses; in the browser's wasm
//! the `simd128` versions of GELU and of softmax's exponentials are written out (`wasm.rs`:
//! LLVM leaves those loops unvectorised there).

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
    ($vis:vis $name:ident, $body:ident, $($arg:ident: $ty:ty),*) => {
        $vis fn $name($($arg: $ty),*) {
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

simd_dispatch!(pub(super) softmax_in_place, softmax_passes, r: &mut [f32]);
simd_dispatch!(pub(super) gelu_in_place, gelu_pass, values: &mut [f32]);
simd_dispatch!(pub(super) silu_in_place, silu_pass, values: &mut [f32]);
simd_dispatch!(pub(super) rms_norm_row, rms_norm_pass, row: &mut [f32], weight: &[f32], eps: f32);

#[inline(always)]
fn gelu_pass(values: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let values = super::wasm::gelu_x4(values);
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
    let r_rest = super::wasm::exp_below_max_x4(r, max);
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
pub(super) fn erf_abs(a: f32) -> f32 {
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
pub(super) fn below(x: f32, hi: f32) -> f32 {
    if x < hi {
        x
    } else {
        hi
    }
}

/// `max.max(x)` for a running `max` that is never NaN (a NaN `x` leaves it), as
/// [`below`] does it.
#[inline(always)]
pub(super) fn above(max: f32, x: f32) -> f32 {
    if x > max {
        x
    } else {
        max
    }
}

/// e^-y for y in [0, 87]: 2^k * e^r with k = round(-y / ln 2), |r| <= ln 2 / 2, and a
/// degree-6 Taylor polynomial for e^r (relative error < 2e-7).
#[inline(always)]
pub(super) fn exp_neg(y: f32) -> f32 {
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
