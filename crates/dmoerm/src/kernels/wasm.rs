//! [`gelu_f32`](super::cpu::gelu_f32) and softmax's exponentials four values at a time with
//! wasm `simd128`, for the browser: LLVM leaves the scalar loops unvectorised there. The same
//! operations in the same order, so the same numbers.

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
/// [`super::cpu::below`] does) for the whole groups of 4 of `values`, in place; returns the rest.
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

/// [`super::cpu::gelu_f32`].
#[inline(always)]
fn gelu(x: v128) -> v128 {
    let e = erf_abs(f32x4_mul(f32x4_abs(x), f32x4_splat(std::f32::consts::FRAC_1_SQRT_2)));
    let signed = v128_bitselect(f32x4_neg(e), e, f32x4_lt(x, f32x4_splat(0.0)));
    f32x4_mul(f32x4_mul(f32x4_splat(0.5), x), f32x4_add(f32x4_splat(1.0), signed))
}

/// [`super::cpu::erf_abs`].
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

/// [`super::cpu::exp_neg`].
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
