//! The int8 and q4 matmuls beside the CPU's int8 limit, in GOP/s (2 operations a
//! multiply-add).
//!
//! ```text
//! cargo run --release -p dmoerm-quant --example matmul [t in out]   # default 1024 1024 3072
//! ```
//!
//! The limit is measured, not taken from a datasheet: a loop of independent `vpdpbusd` of the
//! kernel's width (AVX-512 VNNI, 64 multiply-adds each; AVX-VNNI, 32) on one thread, then on
//! every thread of rayon's pool (none for the AVX2 kernel). The matmul is timed on one thread
//! and on the pool, best of several calls. `DMOERM_INT8_KERNEL=avx512-vnni|avx-vnni|avx2`
//! picks the kernel. Where the CPU has AVX-512 BF16, the peak of `vdpbf16ps` (bf16 products,
//! what a kernel for bf16 weights could reach at most) is measured the same way, beside it.

use dmoerm_quant::{quantize_rows, Int8Linear, Int8Matrix, Q4Matrix, QuantMatrix};
use std::time::Instant;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The best time of `f` over enough calls to fill about a second (at least 3).
fn best(mut f: impl FnMut()) -> f64 {
    let (start, mut best, mut calls) = (Instant::now(), f64::INFINITY, 0);
    while calls < 3 || start.elapsed().as_secs_f64() < 1.0 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    best
}

/// `ITERS` x 12 `vpdpbusd` into 12 independent accumulators, so that the loop is bound by the
/// instruction's throughput, not its latency: the 512-bit form (AVX-512 VNNI) for the
/// `avx512-vnni` kernel, the 256-bit VEX form (AVX-VNNI) for `avx-vnni`. Returns a sum (so the
/// loop is not removed) and the multiply-adds of one instruction; `None` for another kernel or
/// without the instruction.
#[cfg(target_arch = "x86_64")]
fn vnni_loop(kernel: &str) -> Option<(i32, usize)> {
    use std::arch::x86_64::*;
    // 12 accumulators written out so that they stay in registers
    macro_rules! twelve {
        ($c:ident, $dp:ident, $a:ident, $b:ident) => {
            for _ in 0..std::hint::black_box(ITERS) {
                $c[0] = $dp($c[0], $a, $b);
                $c[1] = $dp($c[1], $a, $b);
                $c[2] = $dp($c[2], $a, $b);
                $c[3] = $dp($c[3], $a, $b);
                $c[4] = $dp($c[4], $a, $b);
                $c[5] = $dp($c[5], $a, $b);
                $c[6] = $dp($c[6], $a, $b);
                $c[7] = $dp($c[7], $a, $b);
                $c[8] = $dp($c[8], $a, $b);
                $c[9] = $dp($c[9], $a, $b);
                $c[10] = $dp($c[10], $a, $b);
                $c[11] = $dp($c[11], $a, $b);
            }
        };
    }
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn zmm() -> i32 {
        let (a, b) = (_mm512_set1_epi8(1), _mm512_set1_epi8(2));
        let mut c = [_mm512_setzero_si512(); 12];
        twelve!(c, _mm512_dpbusd_epi32, a, b);
        c.iter().map(|&v| _mm512_reduce_add_epi32(v)).fold(0, i32::wrapping_add)
    }
    #[target_feature(enable = "avx2,avxvnni")]
    fn ymm() -> i32 {
        let (a, b) = (_mm256_set1_epi8(1), _mm256_set1_epi8(2));
        let mut c = [_mm256_setzero_si256(); 12];
        twelve!(c, _mm256_dpbusd_avx_epi32, a, b);
        c.iter().map(|&v| _mm256_extract_epi32::<0>(v)).fold(0, i32::wrapping_add)
    }
    match kernel {
        // SAFETY: the CPU has the features (checked first)
        "avx512-vnni" if is_x86_feature_detected!("avx512vnni") => Some((unsafe { zmm() }, 64)),
        "avx-vnni" if is_x86_feature_detected!("avxvnni") => Some((unsafe { ymm() }, 32)),
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni_loop(_: &str) -> Option<(i32, usize)> {
    None
}

/// `ITERS` x 12 AVX-512 BF16 `vdpbf16ps` (16 f32 lanes, each the sum of 2 bf16 products: 32
/// multiply-adds) into 12 independent accumulators: the limit of a bf16-weight kernel, beside
/// [`vnni_loop`]'s. Returns a sum and the multiply-adds of one instruction; `None` without
/// AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
fn bf16_loop() -> Option<(f32, usize)> {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn zmm() -> f32 {
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.0), _mm512_set1_ps(0.5));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-9), _mm512_set1_ps(1e-9));
        let mut c = [_mm512_setzero_ps(); 12];
        for _ in 0..std::hint::black_box(ITERS) {
            for c in &mut c {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        c.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }
    // SAFETY: the CPU has the features (checked first)
    is_x86_feature_detected!("avx512bf16").then(|| (unsafe { zmm() }, 32))
}

#[cfg(not(target_arch = "x86_64"))]
fn bf16_loop() -> Option<(f32, usize)> {
    None
}

/// Iterations of [`vnni_loop`] and [`bf16_loop`]: 12 instructions each.
const ITERS: usize = 20_000_000;

/// The multiply-adds a second of [`vnni_loop`] on one thread and on each of `threads` at once.
fn vnni_peak(kernel: &str, threads: usize) -> Option<(f64, f64)> {
    let macs = ITERS as f64 * 12.0 * vnni_loop(kernel)?.1 as f64;
    let one = best(|| _ = std::hint::black_box(vnni_loop(kernel)));
    let all = best(|| _ = std::hint::black_box(rayon::broadcast(|_| vnni_loop(kernel))));
    Some((macs / one, macs * threads as f64 / all))
}

/// GOP/s of a rate in multiply-adds a second.
fn gop_of(macs_per_second: f64) -> f64 {
    2.0 * macs_per_second / 1e9
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("t in out: three integers")).collect();
    let [t, inp, out] = args[..] else {
        return run(1024, 1024, 3072);
    };
    run(t, inp, out)
}

fn run(t: usize, inp: usize, out: usize) {
    let threads = rayon::current_num_threads();
    let x = random(t * inp, 1);
    let w = random(out * inp, 2);
    let (codes, scales) = quantize_rows(&w, out);
    let int8 = Int8Linear::new(&QuantMatrix::Int8(Int8Matrix::new(out, inp, codes, scales).unwrap()), None).unwrap();
    let q4 = Int8Linear::new(&QuantMatrix::Q4(Q4Matrix::quantize(&w, out).unwrap()), None).unwrap();
    let macs = (t * inp * out) as f64;
    let gop = |seconds: f64| gop_of(macs / seconds);
    let kernel = Int8Linear::kernel_name().unwrap_or("none");
    println!("[{t} x {inp}] x [{inp} x {out}], {threads} threads, the {kernel} kernel");
    let peak = vnni_peak(kernel, threads);
    if let Some((one, all)) = peak {
        println!("{kernel} vpdpbusd peak: {:.0} GOP/s on 1 thread, {:.0} on {threads}", gop_of(one), gop_of(all));
    }
    // what a bf16-weight kernel could reach at most, for comparison (issue 35: AVX-512 BF16)
    if let Some((_, per)) = bf16_loop() {
        let macs = ITERS as f64 * 12.0 * per as f64;
        let one = best(|| _ = std::hint::black_box(bf16_loop()));
        let all = best(|| _ = std::hint::black_box(rayon::broadcast(|_| bf16_loop())));
        let (one, all) = (gop_of(macs / one), gop_of(macs * threads as f64 / all));
        println!("AVX-512 BF16 vdpbf16ps peak: {one:.0} GOP/s on 1 thread, {all:.0} on {threads}");
    }
    for (name, m) in [("int8", &int8), ("q4", &q4)] {
        let pool = best(|| _ = std::hint::black_box(m.matmul(&x)));
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| best(|| _ = std::hint::black_box(m.matmul(&x))));
        let share = |s: f64, p: Option<f64>| {
            p.map_or(String::new(), |p| format!(" ({:.0}% of peak)", 100.0 * gop(s) / gop_of(p)))
        };
        println!(
            "{name}: 1 thread {:.1} ms, {:.0} GOP/s{}; {threads} threads {:.1} ms, {:.0} GOP/s{}",
            one * 1e3,
            gop(one),
            share(one, peak.map(|p| p.0)),
            pool * 1e3,
            gop(pool),
            share(pool, peak.map(|p| p.1))
        );
    }
}
