//! The f32 matmul of the browser's wasm CPU path: `C = alpha * A B (+ C)`, with `B` packed
//! into panels of 8 columns and `C` computed in tiles of 4 rows x 8 columns.
//!
//! The `gemm` crate's `simd128` kernel (burn's f32 matmul, and attention's two products) runs
//! at 14 GMAC/s on projection shapes in Node on Zen 4, and at 6 on attention's in a model
//! (its packing gathers the transposed keys); this kernel at 20 on both (BENCHMARKS.md): a tile
//! keeps 8 accumulators, two panel vectors, a broadcast value and a product in registers, which
//! x86's 16 vector registers hold once V8 compiles it (a larger tile spills).
//!
//! Compiled for wasm, and natively for its tests, where [`F4`] is an array of 4 lanes.

/// What [`PackedB::matmul`] writes of a product `A B`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Output {
    /// `alpha * A B`.
    Scaled(f32),
    /// `C + A B` (a bias already in `C`).
    Added,
}

/// Columns per panel: two vectors of 4 lanes.
const NC: usize = 8;
/// Rows per tile.
const MR: usize = 4;

/// A `[k, n]` matrix `B` packed for [`PackedB::matmul`]: panel `p` holds columns
/// `8p .. 8p + 8` (zeros past `n`) row after row, `panels[(p * k + c) * 8 + j] = B[c, 8p + j]`.
#[derive(Debug, Clone, Default)]
pub struct PackedB {
    k: usize,
    n: usize,
    panels: Vec<f32>,
}

impl PackedB {
    /// `B[c, j] = b[c * rs + j * cs]` packed, in a new buffer.
    ///
    /// # Panics
    /// When `b` is too short for the strides.
    pub fn new(k: usize, n: usize, b: &[f32], rs: usize, cs: usize) -> Self {
        let mut packed = Self::default();
        packed.pack(k, n, b, rs, cs);
        packed
    }

    /// `B[c, j] = b[c * rs + j * cs]` packed into this buffer (reused from call to call).
    ///
    /// # Panics
    /// When `b` is too short for the strides.
    pub fn pack(&mut self, k: usize, n: usize, b: &[f32], rs: usize, cs: usize) {
        if k > 0 && n > 0 {
            assert!(b.len() > (k - 1) * rs + (n - 1) * cs, "B is shorter than [{k}, {n}] with its strides");
        }
        (self.k, self.n) = (k, n);
        self.panels.clear();
        self.panels.resize(n.div_ceil(NC) * k * NC, 0.0);
        for col in 0..n {
            for c in 0..k {
                let at = self.index(c, col);
                self.panels[at] = b[c * rs + col * cs];
            }
        }
    }

    /// Where `B[c, col]` is in `panels`.
    fn index(&self, c: usize, col: usize) -> usize {
        (col / NC * self.k + c) * NC + col % NC
    }

    /// Panel `p`: columns `8p .. 8p + 8`, `k` rows of 8 (empty when `k` is 0).
    fn panel(&self, p: usize) -> &[f32] {
        let len = self.k * NC;
        &self.panels[p * len..(p + 1) * len]
    }

    /// Frees the buffer where it holds over `values` (a long input's), for the next
    /// [`Self::pack`] to allocate what it needs.
    pub fn release_over(&mut self, values: usize) {
        if self.panels.capacity() > values {
            *self = Self::default();
        }
    }

    /// `(k, n)`
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `B` row-major, `[k, n]`.
    pub fn to_row_major(&self) -> Vec<f32> {
        (0..self.k).flat_map(|c| (0..self.n).map(move |col| self.panels[self.index(c, col)])).collect()
    }

    /// `c[i * ldc + j] = out(sum_c a[i * lda + c] * B[c, j])` for `i < m`, `j < n`.
    ///
    /// # Panics
    /// When `a` or `c` is too short for `m` rows with their strides.
    pub fn matmul_into(&self, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, out: Output) {
        if m > 0 && self.n > 0 {
            assert!(c.len() >= (m - 1) * ldc + self.n, "C is shorter than [{m}, {}] with its stride", self.n);
        }
        // SAFETY: `c` holds the m rows of n values at ldc apart (checked above)
        unsafe { self.matmul(m, a, lda, c.as_mut_ptr(), ldc, out) }
    }

    /// [`Self::matmul_into`] into `c` given as a pointer (attention's tasks write disjoint
    /// columns of shared rows).
    ///
    /// # Safety
    /// `c[i * ldc + j]` is valid for reads and writes for `i < m`, `j < n`, and no other
    /// thread accesses those elements during the call.
    ///
    /// # Panics
    /// When `a` is too short for `m` rows of `k` values at `lda` apart.
    pub unsafe fn matmul(&self, m: usize, a: &[f32], lda: usize, c: *mut f32, ldc: usize, out: Output) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(k == 0 || a.len() >= (m - 1) * lda + k, "A is shorter than [{m}, {k}] with its stride");
        let (alpha, accumulate) = match out {
            Output::Scaled(alpha) => (alpha, false),
            Output::Added => (1.0, true),
        };
        let alpha4 = F4::splat(alpha);
        for p in 0..n.div_ceil(NC) {
            let panel = self.panel(p);
            let cols = (n - p * NC).min(NC);
            for t in 0..m.div_ceil(MR) {
                // a tile past the last row repeats it (its results are not written)
                let rows: [*const f32; MR] = std::array::from_fn(|r| a[(t * MR + r).min(m - 1) * lda..].as_ptr());
                let mut acc = [[F4::splat(0.0); 2]; MR];
                for q in 0..k {
                    // SAFETY: the panel holds k rows of NC values; each row pointer k values
                    // (checked above)
                    unsafe {
                        let (b0, b1) = (F4::load(panel.as_ptr().add(q * NC)), F4::load(panel.as_ptr().add(q * NC + 4)));
                        for (acc, row) in acc.iter_mut().zip(&rows) {
                            let x = F4::load_splat(row.add(q));
                            acc[0] = acc[0].add(x.mul(b0));
                            acc[1] = acc[1].add(x.mul(b1));
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(m - t * MR) {
                    let (lo, hi) = (acc[0].mul(alpha4).to_array(), acc[1].mul(alpha4).to_array());
                    let out = lo.iter().chain(&hi);
                    // SAFETY: row t * MR + r < m, columns p * NC + j < n (the function's contract)
                    unsafe {
                        let dst = c.add((t * MR + r) * ldc + p * NC);
                        for (j, v) in out.enumerate().take(cols) {
                            *dst.add(j) = if accumulate { *dst.add(j) + v } else { *v };
                        }
                    }
                }
            }
        }
    }
}

/// 4 f32 lanes: wasm's `v128`, or an array natively (the tests).
#[derive(Clone, Copy)]
struct F4(
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))] core::arch::wasm32::v128,
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))] [f32; 4],
);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl F4 {
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Self(core::arch::wasm32::f32x4_splat(v))
    }

    /// # Safety
    /// `p` is valid for reading 4 values.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(unsafe { core::arch::wasm32::v128_load(p.cast()) })
    }

    /// `*p` in every lane.
    ///
    /// # Safety
    /// `p` is valid for reading.
    #[inline(always)]
    unsafe fn load_splat(p: *const f32) -> Self {
        Self(unsafe { core::arch::wasm32::v128_load32_splat(p.cast()) })
    }

    #[inline(always)]
    fn to_array(self) -> [f32; 4] {
        let mut out = [0f32; 4];
        // SAFETY: 4 lanes into 4 values
        unsafe { core::arch::wasm32::v128_store(out.as_mut_ptr().cast(), self.0) };
        out
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self(core::arch::wasm32::f32x4_add(self.0, o.0))
    }

    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Self(core::arch::wasm32::f32x4_mul(self.0, o.0))
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
impl F4 {
    fn splat(v: f32) -> Self {
        Self([v; 4])
    }

    /// # Safety
    /// `p` is valid for reading 4 values.
    unsafe fn load(p: *const f32) -> Self {
        Self(std::array::from_fn(|i| unsafe { *p.add(i) }))
    }

    /// # Safety
    /// `p` is valid for reading.
    unsafe fn load_splat(p: *const f32) -> Self {
        Self([unsafe { *p }; 4])
    }

    fn to_array(self) -> [f32; 4] {
        self.0
    }

    fn add(self, o: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }

    fn mul(self, o: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] * o.0[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// Against an f64 product, over shapes with partial tiles and panels, a transposed `B`
    /// (attention's keys), row strides wider than the rows, a scale and a bias added.
    #[test]
    fn matmul_matches_an_f64_product_over_partial_tiles_strides_and_accumulation() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (4, 8, 8), (9, 33, 17), (13, 64, 40), (6, 0, 3)] {
            for transposed in [false, true] {
                let (lda, ldc) = (k + 3, n + 2);
                let a = values(m * lda, 1);
                // B [k, n] stored row-major or as its transpose [n, k] with a wider row
                let (b, rs, cs) = match transposed {
                    false => (values(k * n, 2), n, 1),
                    true => (values(n * (k + 1), 2), 1, k + 1),
                };
                let packed = PackedB::new(k, n, &b, rs, cs);
                let reference: Vec<f64> = (0..m * n)
                    .map(|ij| {
                        let (i, j) = (ij / n, ij % n);
                        (0..k).map(|q| a[i * lda + q] as f64 * b[q * rs + j * cs] as f64).sum::<f64>()
                    })
                    .collect();
                for out in [Output::Scaled(0.5), Output::Added] {
                    let mut c = values(m * ldc, 3);
                    let before = c.clone();
                    packed.matmul_into(m, &a, lda, &mut c, ldc, out);
                    for i in 0..m {
                        for j in 0..ldc {
                            let got = c[i * ldc + j] as f64;
                            let want = match (j < n, out) {
                                (true, Output::Scaled(alpha)) => alpha as f64 * reference[i * n + j],
                                (true, Output::Added) => before[i * ldc + j] as f64 + reference[i * n + j],
                                (false, _) => before[i * ldc + j] as f64, // past n: untouched
                            };
                            let at = format!("({m},{k},{n}) transposed {transposed} {out:?}: [{i},{j}]");
                            assert!((got - want).abs() < 1e-5, "{at}: {got} != {want}");
                        }
                    }
                }
                let row_major: Vec<f32> = (0..k * n).map(|ij| b[ij / n * rs + ij % n * cs]).collect();
                assert_eq!(packed.to_row_major(), row_major);
            }
        }
    }
}
