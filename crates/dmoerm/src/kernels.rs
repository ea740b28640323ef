//! CPU fast paths for element-wise ops where burn's `flex` kernel is the bottleneck.
//!
//! flex evaluates `gelu` with a scalar, single-threaded `libm::erff` per element; on a MiniLM
//! batch that was ~35% of the wall time (perf, see BENCHMARKS.md). Here the exact (erf) GELU is
//! computed with a branch-free erf that the compiler vectorises, in parallel over rayon's pool.
//! The fast path is taken only for tensors on flex that autodiff does not track; everything
//! else (wgpu, training) goes through burn's own op.

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// GELU, erf form: `x / 2 * (1 + erf(x / sqrt(2)))` (HF `"gelu"`).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.is_autodiff() || x.device() != Device::flex() {
        return burn::tensor::activation::gelu(x);
    }
    let (shape, device) = (x.shape(), x.device());
    let mut values = match x.clone().into_data().try_into_vec::<f32>() {
        Ok(v) => v,
        // not f32 (an f16 or bf16 tensor): burn's op handles every dtype
        Err(_) => return burn::tensor::activation::gelu(x),
    };
    values.par_chunks_mut(1 << 14).for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu_f32(*v)));
    Tensor::from_data(TensorData::new(values, shape), &device)
}

/// GELU of one value; |error| < 1e-6 * max(|x|, 1) against the exact erf form.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x), absolute error below 1e-6 in f32 (measured 5.9e-7; Abramowitz & Stegun 7.1.26,
/// 1.5e-7 in exact arithmetic, with a polynomial exp).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];
    let a = x.abs().min(4.0); // erf(4) = 1 - 1.5e-8: 1 in f32
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp_neg(a * a)).copysign(x)
}

/// e^-y for y in [0, 16]: 2^k * e^r with k = round(-y / ln 2), |r| <= ln 2 / 2, and a
/// degree-6 Taylor polynomial for e^r (relative error < 2e-7).
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // round to nearest by adding and removing 1.5 * 2^23 (vectorises; `round` is a libm call)
    const ROUND: f32 = 12_582_912.0;
    let k = (-y * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (-y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k is in [-24, 0]: 2^k is a normal f32 built from its exponent bits
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

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
