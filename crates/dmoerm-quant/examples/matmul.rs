//! The int8 and q4 matmuls beside the CPU's int8 limit, in GOP/s (2 operations a
//! multiply-add).
//!
//! ```text
//! cargo run --release -p dmoerm-quant --example matmul [t in out]   # default 1024 1024 3072
//! ```
//!
//! The limit is measured, not taken from a datasheet: a loop of independent `vpdpbusd`
//! (AVX-512 VNNI, 64 multiply-adds each) on one thread, then on every thread of rayon's
//! pool. The matmul is timed on one thread and on the pool, best of several calls.

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
/// instruction's throughput, not its latency; `None` without AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
fn vnni_loop() -> Option<i32> {
    use std::arch::x86_64::*;
    if !(is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512f")) {
        return None;
    }
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn run(iters: usize) -> i32 {
        let (a, b) = (_mm512_set1_epi8(1), _mm512_set1_epi8(2));
        let mut c = [_mm512_setzero_si512(); 12];
        for _ in 0..iters {
            // written out so that the 12 accumulators stay in registers
            c[0] = _mm512_dpbusd_epi32(c[0], a, b);
            c[1] = _mm512_dpbusd_epi32(c[1], a, b);
            c[2] = _mm512_dpbusd_epi32(c[2], a, b);
            c[3] = _mm512_dpbusd_epi32(c[3], a, b);
            c[4] = _mm512_dpbusd_epi32(c[4], a, b);
            c[5] = _mm512_dpbusd_epi32(c[5], a, b);
            c[6] = _mm512_dpbusd_epi32(c[6], a, b);
            c[7] = _mm512_dpbusd_epi32(c[7], a, b);
            c[8] = _mm512_dpbusd_epi32(c[8], a, b);
            c[9] = _mm512_dpbusd_epi32(c[9], a, b);
            c[10] = _mm512_dpbusd_epi32(c[10], a, b);
            c[11] = _mm512_dpbusd_epi32(c[11], a, b);
        }
        c.iter().map(|&v| _mm512_reduce_add_epi32(v)).fold(0, i32::wrapping_add)
    }
    // SAFETY: the CPU has AVX-512 F and VNNI (checked above)
    Some(unsafe { run(std::hint::black_box(ITERS)) })
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni_loop() -> Option<i32> {
    None
}

/// Iterations of [`vnni_loop`]: 768 multiply-adds each.
const ITERS: usize = 20_000_000;

/// The multiply-adds a second of [`vnni_loop`] on one thread and on each of `threads` at once.
fn vnni_peak(threads: usize) -> Option<(f64, f64)> {
    vnni_loop()?;
    let macs = ITERS as f64 * 12.0 * 64.0;
    let one = best(|| _ = std::hint::black_box(vnni_loop()));
    let all = best(|| _ = std::hint::black_box(rayon::broadcast(|_| vnni_loop())));
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
    println!("[{t} x {inp}] x [{inp} x {out}], {threads} threads");
    let peak = vnni_peak(threads);
    if let Some((one, all)) = peak {
        println!("vpdpbusd peak: {:.0} GOP/s on 1 thread, {:.0} on {threads}", gop_of(one), gop_of(all));
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
