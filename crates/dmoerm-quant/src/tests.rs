//! The kernels against the portable one and against f32 products.

use super::*;
#[cfg(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128")))]
use crate::portable::quantize_row;
// in wasm the tests run in Node (wasm-bindgen-test-runner)
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[test]
fn int8_rows_round_trip_within_half_a_step() {
    let values: Vec<f32> = (0..24).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.13 * (1 + i / 8) as f32).collect();
    let (codes, scales) = quantize_rows(&values, 3);
    assert_eq!(scales.len(), 3);
    for (i, (&q, &v)) in codes.iter().zip(&values).enumerate() {
        let scale = scales[i / 8];
        assert!((q as f32 * scale - v).abs() <= scale / 2.0 + 1e-6, "{i}: {q} * {scale} vs {v}");
    }
    // each row's largest magnitude maps to +-127
    for row in codes.chunks(8) {
        assert_eq!(row.iter().map(|q| q.unsigned_abs()).max(), Some(127));
    }
    // an all-zero row is representable
    let (codes, scales) = quantize_rows(&[0.0; 4], 1);
    assert_eq!((codes, scales), (vec![0; 4], vec![1.0]));
    // a row with a NaN or an infinity stays non-finite; the other rows are quantised
    let (codes, scales) = quantize_rows(&[1.0, f32::NAN, 2.0, -1.0, f32::INFINITY, 0.0], 3);
    assert!(scales[0].is_nan() && scales[2].is_nan() && scales[1] == 2.0 / 127.0, "{scales:?}");
    assert_eq!(codes[2..4], [127, -64]);
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// How a test weight is quantised.
#[derive(Debug, Clone, Copy)]
enum Format {
    Int8,
    Q4,
}

fn quantized(rows: usize, cols: usize, seed: u64, format: Format) -> QuantMatrix {
    let w = random(rows * cols, seed);
    match format {
        Format::Int8 => {
            let (codes, scales) = quantize_rows(&w, rows);
            QuantMatrix::Int8(Int8Matrix::new(rows, cols, codes, scales).unwrap())
        }
        Format::Q4 => QuantMatrix::Q4(Q4Matrix::quantize(&w, rows).unwrap()),
    }
}

fn linear_as(rows: usize, cols: usize, seed: u64, kernel: Kernel, format: Format) -> (Int8Linear, Vec<f32>, Vec<f32>) {
    let m = quantized(rows, cols, seed, format);
    let bias = random(rows, seed + 1);
    (Int8Linear::with_kernel(&m, Some(&bias), kernel_for(kernel, format)).unwrap(), m.to_f32(), bias)
}

fn linear(rows: usize, cols: usize, seed: u64, kernel: Kernel) -> (Int8Linear, Vec<f32>, Vec<f32>) {
    linear_as(rows, cols, seed, kernel, Format::Int8)
}

const SHAPES: [(usize, usize, usize); 7] =
    [(1, 1, 1), (3, 5, 7), (9, 70, 130), (17, 64, 384), (20, 33, 65), (200, 37, 70), (13, 100, 1536)];
/// Shapes of whole q4 blocks (`in` a multiple of 64).
const Q4_SHAPES: [(usize, usize, usize); 5] = [(1, 1, 64), (5, 33, 192), (17, 64, 384), (40, 130, 64), (13, 100, 1536)];
/// Every kernel: the int8 ones and the 4-bit-only one.
const KERNELS: [Kernel; 6] =
    [Kernel::Vnni, Kernel::AvxVnni, Kernel::Pairs, Kernel::I8mm, Kernel::Neon, Kernel::Relaxed];

/// `kernel` where it takes the format, else one that does (the portable kernel's numbers either
/// way): a 4-bit-only kernel's model holds its int8 weights on another kernel.
fn kernel_for(kernel: Kernel, format: Format) -> Kernel {
    match format {
        Format::Int8 if !kernel.takes_int8() => Kernel::Pairs,
        _ => kernel,
    }
}

/// Every (shape, format) the tests run.
fn cases() -> impl Iterator<Item = ((usize, usize, usize), Format)> {
    SHAPES.into_iter().map(|s| (s, Format::Int8)).chain(Q4_SHAPES.into_iter().map(|s| (s, Format::Q4)))
}

/// Each kernel this CPU runs gives the portable kernel's numbers bit for bit, and the two
/// layouts give the same numbers, for int8 and 4-bit weights.
#[test]
fn kernels_match_the_portable_one_bit_for_bit() {
    #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
    assert!(Kernel::Pairs.runs_here(), "no AVX2 or no simd128: only the portable kernel would be checked");
    // CI names the kernel it expects (ARM64 under qemu runs with and without `sdot`)
    if let Ok(want) = std::env::var("DMOERM_EXPECT_INT8_KERNEL") {
        assert_eq!(Int8Linear::kernel_name().unwrap_or("none"), want, "the kernel this CPU runs");
    }
    // the browser builds: 4-bit weights on relaxed SIMD where the build has it
    #[cfg(target_arch = "wasm32")]
    assert_eq!(
        (Int8Linear::kernel_name(), Int8Linear::q4_kernel_name()),
        (Some("simd128"), Some(if cfg!(feature = "relaxed-simd") { "relaxed-simd" } else { "simd128" }))
    );
    for ((t, rows, cols), format) in cases() {
        // extreme codes: rows at full scale with ties, zero rows
        let mut x = random(t * cols, 2);
        x[..cols].iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { 1.0 } else { -0.5 });
        if t > 2 {
            x[cols..2 * cols].fill(0.0);
        }
        let want = linear_as(rows, cols, 1, Kernel::Vnni, format).0.matmul_with(&x, false);
        for kernel in KERNELS {
            let (m, _, _) = linear_as(rows, cols, 1, kernel, format);
            let got = if kernel.runs_here() { m.matmul(&x) } else { m.matmul_with(&x, false) };
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && got.len() == want.len(), "{kernel:?} {format:?} ({t},{rows},{cols})");
        }
    }
}

/// The int8 matmul against the f32 product of the dequantised weights (int8 or 4-bit): the
/// error is the activations' rounding, at most half a step (`max|x| / 254`) per value.
#[test]
fn matmul_matches_the_dequantised_product() {
    for (((t, rows, cols), format), kernel) in cases().flat_map(|c| KERNELS.map(|k| (c, k))) {
        let (m, wd, bias) = linear_as(rows, cols, 1, kernel, format);
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
                    "{format:?} ({t},{rows},{cols}) [{r},{o}]: {got} vs {exact} (bound {bound})"
                );
            }
        }
    }
}

/// The q4 matmul against the f32 product of the weights before they were quantised: each
/// weight is within one step (its block's scale) of its code times the scale (half a step,
/// but where a value of the sign opposite to the block's extreme is clamped to 7), and the
/// activations within half a step of theirs.
#[test]
fn q4_matmul_is_within_a_step_of_the_f32_weights() {
    for ((t, rows, cols), kernel) in Q4_SHAPES.into_iter().flat_map(|s| KERNELS.map(|k| (s, k))) {
        let w = random(rows * cols, 1);
        let (m, wd, bias) = linear_as(rows, cols, 1, kernel, Format::Q4);
        let QuantMatrix::Q4(q) = quantized(rows, cols, 1, Format::Q4) else { unreachable!() };
        let x = random(t * cols, 2);
        let y = m.matmul(&x);
        for r in 0..t {
            let xr = &x[r * cols..(r + 1) * cols];
            let step = xr.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for o in 0..rows {
                let (wr, wq) = (&w[o * cols..(o + 1) * cols], &wd[o * cols..(o + 1) * cols]);
                let scales = &q.scales()[o * cols / Q4_BLOCK..];
                let exact: f32 = xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>() + bias[o];
                let weights: f32 = xr.iter().enumerate().map(|(k, a)| a.abs() * scales[k / Q4_BLOCK].abs()).sum();
                let bound = weights + step / 2.0 * wq.iter().map(|v| v.abs()).sum::<f32>() + 1e-4;
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
    for n in [1, 7, 8, 15, 16, 17, 64, 100] {
        let mut x = random(n, 7);
        x[0] = 0.5; // ties at every scale: 0.5 * 127 / max
        x[n / 2] = -1.0;
        let with = |i: usize, v: f32| {
            let mut y = x.clone();
            y[i] = v;
            y
        };
        for x in [x.clone(), vec![0.0; n], with(n - 1, f32::NAN), with(n - 1, f32::INFINITY), with(0, f32::NAN)] {
            #[cfg(target_arch = "x86_64")]
            if Kernel::Vnni.runs_here() {
                let (mut a, mut b) = (vec![128u8; n], vec![128u8; n]);
                // SAFETY: the CPU has AVX-512 (checked above)
                let sa = unsafe { x86::quantize_row(&x, &mut a) };
                let sb = quantize_row::<u8>(&x, &mut b);
                assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "{x:?}");
            }
            #[cfg(target_arch = "x86_64")]
            if Kernel::Pairs.runs_here() {
                let (mut a, mut b) = (vec![128i16; n], vec![128i16; n]);
                // SAFETY: the CPU has AVX2 (checked above)
                let sa = unsafe { x86::quantize_row_avx2(&x, &mut a) };
                let sb = quantize_row::<i16>(&x, &mut b);
                assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "{x:?}");
                let (mut a, mut b) = (vec![128u8; n], vec![128u8; n]);
                // SAFETY: as above
                let sa = unsafe { x86::quantize_row_avx2(&x, &mut a) };
                let sb = quantize_row::<u8>(&x, &mut b);
                assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "{x:?}");
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            {
                let (mut a, mut b) = (vec![128i16; n], vec![128i16; n]);
                let sa = wasm::quantize_row(&x, &mut a);
                let sb = quantize_row::<i16>(&x, &mut b);
                assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "{x:?}");
                let (mut a, mut b) = (vec![128u8; n], vec![128u8; n]);
                let sa = wasm::quantize_row(&x, &mut a);
                let sb = quantize_row::<u8>(&x, &mut b);
                assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "{x:?}");
            }
            let _ = x;
        }
    }
}

/// The weights that share one quantised input give the numbers of their matmuls one by one.
#[test]
fn matmuls_of_one_input_equal_the_matmuls_one_by_one() {
    for kernel in KERNELS {
        for t in [1, 5, 13, 200] {
            // int8 and q4 weights of different widths, one input of 128 values
            let (q, _, _) = linear_as(64, 128, 3, kernel, Format::Int8);
            let (k, _, _) = linear_as(100, 128, 4, kernel, Format::Q4);
            let (v, _, _) = linear_as(33, 128, 5, kernel, Format::Int8);
            let x = random(t * 128, 6);
            let got = Int8Linear::matmul_each(&[&q, &k, &v], &x);
            assert_eq!(got.len(), 3);
            for (w, got) in [&q, &k, &v].into_iter().zip(&got) {
                let want = w.matmul(&x);
                assert_eq!(got.len(), t * w.dims().0);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{kernel:?} t={t}");
            }
        }
    }
    assert!(Int8Linear::matmul_each(&[], &[1.0]).is_empty());
}

/// The fused pair gives the numbers of its three steps one after the other.
#[test]
fn a_pair_of_matmuls_equals_the_two_matmuls() {
    let gelu = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = *x * 0.5 * (1.0 + (*x * 0.8).tanh()));
    for (kernel, format) in KERNELS.into_iter().flat_map(|k| [(k, Format::Int8), (k, Format::Q4)]) {
        for t in [1, 5, 13, 200] {
            let (up, _, _) = linear_as(300, 128, 3, kernel, format);
            let (down, _, _) = linear(33, 300, 4, kernel);
            let x = random(t * 128, 5);
            let mut mid = up.matmul(&x);
            gelu(&mut mid);
            let want = down.matmul(&mid);
            let got = up.matmul_pair(&down, &x, gelu);
            assert_eq!(got.len(), t * 33);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{kernel:?} {format:?} t={t}");
        }
    }
}

/// The gated MLP gives the numbers of its steps one after the other.
#[test]
fn a_gated_mlp_equals_its_steps() {
    let silu = |v: &mut [f32]| v.iter_mut().for_each(|x| *x /= 1.0 + (-*x).exp());
    for (kernel, format) in KERNELS.into_iter().flat_map(|k| [(k, Format::Int8), (k, Format::Q4)]) {
        for t in [1, 7, 200] {
            let (gate, _, _) = linear_as(130, 64, 6, kernel, format);
            let (up, _, _) = linear_as(130, 64, 7, kernel, format);
            let (down, _, _) = linear(64, 130, 8, kernel);
            let x = random(t * 64, 9);
            let mut g = gate.matmul(&x);
            silu(&mut g);
            let mid: Vec<f32> = g.iter().zip(up.matmul(&x)).map(|(g, u)| g * u).collect();
            let want = down.matmul(&mid);
            let got = gate.matmul_gated(&up, &down, &x, silu);
            assert!(
                got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kernel:?} {format:?} t={t}"
            );
        }
    }
}

#[test]
fn zero_and_non_finite_rows() {
    let (codes, scales) = quantize_rows(&[1.0, -2.0, 0.5, 3.0], 2);
    let m = Int8Matrix::new(2, 2, codes.clone(), scales).unwrap();
    let qm = QuantMatrix::Int8(m.clone());
    for kernel in KERNELS {
        let l = Int8Linear::with_kernel(&qm, None, kernel_for(kernel, Format::Int8)).unwrap();
        for fast in [false, kernel.runs_here()] {
            assert_eq!(l.matmul_with(&[0.0, 0.0], fast), vec![0.0, 0.0]);
            assert!(l.matmul_with(&[f32::NAN, 1.0], fast).iter().all(|v| v.is_nan()));
            assert!(l.matmul_with(&[1.0, f32::INFINITY], fast).iter().all(|v| v.is_nan()));
        }
    }
    assert!(Int8Linear::with_kernel(&qm, None, Kernel::Relaxed).is_none(), "int8 weights on the 4-bit kernel");
    assert!(Int8Matrix::new(2, 2, codes[..3].to_vec(), vec![1.0, 1.0]).is_none());
    assert!(Int8Linear::new(&qm, Some(&[1.0])).is_none());
    for r in 0..2 {
        let want: Vec<f32> = codes[2 * r..2 * r + 2].iter().map(|&q| f32::from(q) * m.scales[r]).collect();
        assert_eq!(m.row(r).unwrap().collect::<Vec<_>>(), want);
    }
    assert!(m.row(2).is_none());
}
