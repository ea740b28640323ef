//! Int8 and 4-bit matrices that stay quantised in memory, and their matmul on the CPU.
//!
//! A packed int8 bundle stores a matrix as PyTorch lays it out, `[rows, cols]` (a linear
//! weight is `[out, in]`), one i8 code per value and one f32 scale per row:
//! `W[o, k] = q[o, k] * s[o]`. [`Int8Matrix`] keeps exactly that, a quarter of the f32 bytes;
//! an embedding table reads its rows from it. [`Int8Linear`] is the same weight rearranged for
//! the matmul kernel.
//!
//! [`Int8Linear::matmul`] computes `x W^T + b` with dynamic quantization of the activations,
//! as ONNX Runtime's does, but finer: each block of 64 inputs of an activation row `t` is
//! quantised on the fly to 8 bits with its own scale `a[t, b] = max|x[t, block b]| / 127`, the
//! products of a block are summed exactly in i32, and the blocks are summed in f32:
//!
//! ```text
//! y[t, o] = s[o] * sum_b a[t, b] * sum_{k in b} qx[t, k] * q[o, k] + b[o]
//! ```
//!
//! One scale per row was measured first: on the default model's test responses it moved the
//! reward by 0.033 of its standard deviation on average (a few large LayerNorm features set
//! the row's scale); with blocks of 64, by 0.013, for a 3% slower matmul (BENCHMARKS.md).
//!
//! Activations are stored as `qx + 128` (unsigned), and each block's sum is corrected by
//! `128 * sum_{k in b} q[o, k]`, kept per block and output. The kernels, chosen by the CPU
//! at run time ([`Kernel`]; [`KERNEL_VARIABLE`] forces one), lay the weight out so that one
//! vector load holds `KG` consecutive `k` of several outputs and the `KG` codes of one
//! activation row are broadcast against it (no horizontal sums):
//! - AVX-512 VNNI (`vpdpbusd`: 64 u8 x i8 products summed 4 by 4 into 16 i32 lanes), `KG` = 4,
//!   activations as u8;
//! - AVX-VNNI (the same instruction, 256 bits, VEX-encoded: Intel's Alder Lake and later
//!   without AVX-512, AMD's Zen 5), the same layout, tiles of 2 rows x 32 outputs;
//! - 16-bit pairs (`vpmaddwd` on AVX2, `i32x4.dot_i16x8_s` on wasm `simd128`): the weight
//!   bytes are widened to i16 as they load, 2 products per i32 lane, `KG` = 2, activations
//!   as i16;
//! - ARM64 (`neon.rs`): `smmla` (i8mm), `KG` = 8, and `sdot` (dot product), `KG` = 4, on signed
//!   codes (the u8 codes flipped as they load, no offset to subtract).
//!
//! A portable kernel computes the same integers and the same f32 operations in the same order
//! (tests check every kernel against it bit for bit): every kernel gives the same numbers.
//! Where no kernel runs (other CPUs, wasm without `simd128`), int8 projections are
//! expanded to f32 when they load (see [`Int8Linear::available`]).
//!
//! A 4-bit weight ([`Q4Matrix`], one scale per block of 64 values of a row) runs through the
//! same kernels: its codes are integers in `-8..=7`, kept two per byte in the panel layout and
//! unpacked to i8 one weight panel at a time (NR outputs, a few KB) just before the kernel
//! reads it, and each block's integer sum is scaled by the activation's and the weight's
//! block scales together (the row scale is then 1):
//!
//! ```text
//! y[t, o] = sum_b (a[t, b] * s[o, b]) * sum_{k in b} qx[t, k] * q[o, k] + b[o]
//! ```

/// Inputs per activation scale: each block of 64 values of an activation row has its own
/// scale, so that a few large features (LayerNorm outputs, GELU tails) do not flatten the
/// rest of the row to a handful of codes.
const BK: usize = 64;
/// Output columns per weight panel: two 512-bit registers of 16 i32 lanes.
const NR: usize = 32;
/// Activation rows per tile (VNNI: 6 x 2 integer and 6 x 2 f32 accumulators, its `block` is
/// written out for 6; the pairs kernels take 2 rows at a time with AVX2, 4 in wasm).
const MR: usize = 6;
/// Activation rows are padded to a multiple of this, which every kernel's row tile divides
/// (VNNI 6, AVX2 pairs 2, wasm pairs 4): a kernel reads whole tiles.
const PAD_ROWS: usize = 12;
/// Row tiles per task at most (96 rows: with 1024 inputs, 96 KB of activation codes).
const MAX_TILES: usize = 16;

#[cfg(target_arch = "aarch64")]
mod neon;
mod q4;
pub use q4::{Q4Matrix, Q4_BLOCK};

/// The int8 matmul kernels, each with its weight layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 VNNI: 4 consecutive `k` per i32 lane, activations as u8.
    Vnni,
    /// AVX-VNNI (the 256-bit VEX `vpdpbusd` of Intel's consumer CPUs since Alder Lake, which
    /// have no AVX-512; AMD's since Zen 5): the VNNI layout, activations as u8.
    AvxVnni,
    /// 16-bit pair dot products (AVX2, wasm `simd128`): 2 consecutive `k` per i32 lane,
    /// activations as i16.
    Pairs,
    /// ARM64's dot-product extension (`sdot`): the VNNI layout, activations as u8.
    Neon,
    /// ARM64's int8 matrix multiply (`smmla`, i8mm): 8 consecutive `k` per output, activations
    /// as u8.
    I8mm,
}

/// The environment variable that picks the int8 kernel (tests and benchmarks compare them on
/// one CPU): `avx512-vnni`, `avx-vnni` or `avx2` (x86-64), `neon-i8mm` or `neon-dotprod` (ARM64). A kernel this CPU does not run, or another
/// value, leaves the fastest one.
pub const KERNEL_VARIABLE: &str = "DMOERM_INT8_KERNEL";

impl Kernel {
    /// Consecutive `k` per 32-bit lane of the weight layout.
    const fn kg(self) -> usize {
        match self {
            Kernel::Vnni | Kernel::AvxVnni | Kernel::Neon => 4,
            Kernel::Pairs => 2,
            Kernel::I8mm => 8,
        }
    }

    /// Its name, as [`KERNEL_VARIABLE`] takes it.
    fn name(self) -> &'static str {
        match self {
            Kernel::Vnni => "avx512-vnni",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Pairs if cfg!(target_arch = "wasm32") => "simd128",
            Kernel::Pairs => "avx2",
            Kernel::Neon => "neon-dotprod",
            Kernel::I8mm => "neon-i8mm",
        }
    }

    /// Whether this CPU runs the kernel (elsewhere [`Int8Linear`] runs the portable one).
    fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => {
                std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => {
                std::arch::is_x86_feature_detected!("avxvnni") && std::arch::is_x86_feature_detected!("avx2")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Pairs => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Pairs => true,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[cfg(target_arch = "aarch64")]
            Kernel::I8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
            #[allow(unreachable_patterns)] // on x86_64 all are listed
            _ => false,
        }
    }

    /// A task's chunk of rows is a multiple of this: whole row tiles of the kernel.
    const fn chunk_rows(self) -> usize {
        match self {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kernel::Pairs => wasm::ROWS,
            _ => MR,
        }
    }

    const ALL: [Kernel; 5] = [Kernel::Vnni, Kernel::AvxVnni, Kernel::Pairs, Kernel::I8mm, Kernel::Neon];

    /// The kernel new weights are laid out for: the one [`KERNEL_VARIABLE`] names where this
    /// CPU runs it, else the fastest this CPU runs (read once).
    fn best() -> Option<Self> {
        static CHOSEN: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let named = std::env::var(KERNEL_VARIABLE).ok();
            let runs = || Kernel::ALL.into_iter().filter(|k| k.runs_here());
            runs().find(|k| named.as_deref() == Some(k.name())).or_else(|| runs().next())
        })
    }
}

/// A `[rows, cols]` matrix of i8 codes with one f32 scale per row, resident as int8.
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Matrix {
    /// From codes `[rows, cols]` (row-major) and one scale per row; `None` when the lengths do
    /// not match.
    pub fn new(rows: usize, cols: usize, codes: Vec<i8>, scales: Vec<f32>) -> Option<Self> {
        if codes.len() != rows.checked_mul(cols)? || scales.len() != rows {
            return None;
        }
        Some(Self { rows, cols, codes, scales })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The codes, `[rows, cols]` row-major.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// The scales, one per row.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Row `r` as f32 (an embedding lookup), or `None` past the last row.
    pub fn row(&self, r: usize) -> Option<impl Iterator<Item = f32> + '_> {
        let s = *self.scales.get(r)?;
        Some(self.codes[r * self.cols..(r + 1) * self.cols].iter().map(move |&q| f32::from(q) * s))
    }
}

/// A quantised matrix `[rows, cols]`, as a packed bundle stores it.
#[derive(Debug, Clone)]
pub enum QuantMatrix {
    /// int8 codes, one scale per row.
    Int8(Int8Matrix),
    /// 4-bit codes, one scale per block of [`Q4_BLOCK`] values of a row.
    Q4(Q4Matrix),
}

impl QuantMatrix {
    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            QuantMatrix::Int8(m) => m.dims(),
            QuantMatrix::Q4(m) => m.dims(),
        }
    }

    /// Appends row `r` as f32 to `out` (an embedding lookup); `false` past the last row.
    pub fn push_row(&self, r: usize, out: &mut Vec<f32>) -> bool {
        match self {
            QuantMatrix::Int8(m) => m.row(r).map(|row| out.extend(row)).is_some(),
            QuantMatrix::Q4(m) => m.row(r).map(|row| out.extend(row)).is_some(),
        }
    }

    /// Every value as f32, row-major (the codes times their scales).
    pub fn to_f32(&self) -> Vec<f32> {
        let (rows, cols) = self.dims();
        let mut out = Vec::with_capacity(rows * cols);
        (0..rows).for_each(|r| _ = self.push_row(r, &mut out));
        out
    }

    /// Row `r`'s codes into `out` (`cols` long).
    fn row_codes_into(&self, r: usize, out: &mut [i8]) {
        match self {
            QuantMatrix::Int8(m) => out.copy_from_slice(&m.codes[r * m.cols..(r + 1) * m.cols]),
            QuantMatrix::Q4(m) => out.iter_mut().zip(m.row_codes(r)).for_each(|(o, q)| *o = q),
        }
    }
}

/// A linear weight `[out, in]` as int8 (or 4-bit) codes, laid out for the matmul kernel, with
/// its bias.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    kernel: Kernel,
    out: usize,
    inp: usize,
    /// `[out / NR][in / KG][NR][KG]` (`out` rounded up to NR, `in` to BK, zero padded): the
    /// `NR * KG` codes at `(nb * k_groups + g) * NR * KG` are `k = KG g .. KG (g + 1)` of
    /// outputs `nb * NR .. (nb + 1) * NR`, output by output.
    packed: Packed,
    /// Per output, rounded up to NR: the row scale (1 for a 4-bit weight) and the bias.
    scales: Vec<f32>,
    /// A 4-bit weight's block scales, `[in / BK][out rounded up to NR]`; empty for int8.
    block_scales: Vec<f32>,
    /// `[in / BK][out rounded up to NR]`: `128 * sum q[o, k]` over the block's `k`.
    offsets: Vec<i32>,
    bias: Vec<f32>,
    has_bias: bool,
}

/// The codes of [`Int8Linear`]'s layout: one per byte, or two ([`q4::pack`]).
#[derive(Debug, Clone)]
enum Packed {
    Int8(Vec<i8>),
    Q4(Vec<u8>),
}

impl Int8Linear {
    /// Whether this CPU has an int8 kernel (AVX-512 VNNI, AVX2, wasm `simd128`); elsewhere
    /// int8 weights are expanded to f32 when they load.
    pub fn available() -> bool {
        Kernel::best().is_some()
    }

    /// The kernel new weights run on (`avx512-vnni`, `avx-vnni`, `avx2`, `simd128`,
    /// `neon-i8mm`, `neon-dotprod`), or `None`
    /// where int8 weights are expanded to f32.
    pub fn kernel_name() -> Option<&'static str> {
        Kernel::best().map(Kernel::name)
    }

    /// The weight `[out, in]` and its bias (`out` values), laid out for this CPU's kernel.
    pub fn new(weight: &QuantMatrix, bias: Option<&[f32]>) -> Option<Self> {
        Self::with_kernel(weight, bias, Kernel::best().unwrap_or(Kernel::Pairs))
    }

    fn with_kernel(weight: &QuantMatrix, bias: Option<&[f32]>, kernel: Kernel) -> Option<Self> {
        let (out, inp) = weight.dims();
        if bias.is_some_and(|b| b.len() != out) {
            return None;
        }
        let kg = kernel.kg();
        let (n_pad, groups, blocks) = (out.next_multiple_of(NR), inp.next_multiple_of(BK) / kg, inp.div_ceil(BK));
        let mut packed = vec![0i8; n_pad * groups * kg];
        let mut offsets = vec![0i32; blocks * n_pad];
        let mut row = vec![0i8; groups * kg];
        for o in 0..out {
            let (nb, lane) = (o / NR, o % NR);
            // the row's codes, zero padded to whole blocks; group g goes to panel nb's slot
            // (g, lane)
            weight.row_codes_into(o, &mut row[..inp]);
            let panel = &mut packed[nb * groups * NR * kg..(nb + 1) * groups * NR * kg];
            for (g, codes) in row.chunks_exact(kg).enumerate() {
                panel[(g * NR + lane) * kg..][..kg].copy_from_slice(codes);
            }
            for (b, codes) in row.chunks_exact(BK).enumerate() {
                offsets[b * n_pad + o] = 128 * codes.iter().map(|&q| i32::from(q)).sum::<i32>();
            }
        }
        let pad = |v: Vec<f32>| {
            let mut v = v;
            v.resize(n_pad, 0.0);
            v
        };
        let (packed, scales, block_scales) = match weight {
            QuantMatrix::Int8(m) => (Packed::Int8(packed), pad(m.scales.clone()), vec![]),
            QuantMatrix::Q4(m) => {
                let mut block_scales = vec![0f32; blocks * n_pad];
                for (o, row) in m.scales().chunks_exact(blocks).enumerate() {
                    row.iter().enumerate().for_each(|(b, &s)| block_scales[b * n_pad + o] = s);
                }
                (Packed::Q4(q4::pack(&packed)), vec![1.0; n_pad], block_scales)
            }
        };
        Some(Self {
            kernel,
            out,
            inp,
            packed,
            scales,
            block_scales,
            offsets,
            bias: pad(bias.map_or_else(|| vec![0.0; out], <[f32]>::to_vec)),
            has_bias: bias.is_some(),
        })
    }

    /// The codes of weight panel `nb` (`stride` = `in` rounded up to BK): a slice of the
    /// layout, or for a 4-bit weight its codes unpacked into `scratch`.
    fn panel<'a>(&'a self, nb: usize, stride: usize, scratch: &'a mut Vec<i8>) -> &'a [i8] {
        let len = stride * NR;
        match &self.packed {
            Packed::Int8(codes) => &codes[nb * len..(nb + 1) * len],
            Packed::Q4(packed) => {
                scratch.resize(len, 0);
                q4::unpack(&packed[nb * len / 2..(nb + 1) * len / 2], scratch);
                scratch
            }
        }
    }

    /// The factor of block `b`'s integer sum for output `o`: the activation's block scale `a`,
    /// times the weight's block scale for a 4-bit weight (the kernels multiply the same way).
    fn block_scale(&self, a: f32, b: usize, n_pad: usize, o: usize) -> f32 {
        if self.block_scales.is_empty() {
            a
        } else {
            a * self.block_scales[b * n_pad + o]
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Number of parameters (weights and bias).
    pub fn num_params(&self) -> usize {
        self.out * self.inp + if self.has_bias { self.out } else { 0 }
    }

    /// `x W^T + b`: `x` is `[t, in]` row-major, the result `[t, out]`.
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `in`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        self.matmul_with(x, self.kernel.runs_here())
    }

    /// `[w.matmul(x) for w in weights]` with each chunk of `x`'s rows quantised once for all
    /// of them (attention's query, key and value projections read the same rows): the same
    /// numbers as the matmuls one by one.
    ///
    /// # Panics
    /// When the weights do not all take `in` inputs with the same kernel, or `x.len()` is not
    /// a multiple of `in`.
    pub fn matmul_each(weights: &[&Int8Linear], x: &[f32]) -> Vec<Vec<f32>> {
        let Some(first) = weights.first() else { return Vec::new() };
        assert!(
            weights.iter().all(|w| w.inp == first.inp && w.kernel == first.kernel),
            "the weights take different inputs or kernels"
        );
        let fast = first.kernel.runs_here();
        let outs: Vec<usize> = weights.iter().map(|w| w.out).collect();
        first.for_row_chunks_each(x, &outs, |x, ys| {
            let acts = first.quantize(x, fast);
            for (w, y) in weights.iter().zip(ys) {
                w.rows_quantized(&acts, y, fast);
            }
        })
    }

    /// `next.matmul(between(self.matmul(x)))` (a transformer's MLP: up projection,
    /// activation, down projection), chunk by chunk of rows, so that the `[t, out]`
    /// intermediate is never held whole: each task holds at most MAX_TILES * MR rows of it.
    /// The same numbers as the three steps one after the other (rows are independent).
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `in`, or `next`'s `in` is not this `out`.
    pub fn matmul_pair(&self, next: &Int8Linear, x: &[f32], between: impl Fn(&mut [f32]) + Sync) -> Vec<f32> {
        assert!(next.inp == self.out, "the second matmul takes {} inputs, not {}", next.inp, self.out);
        let fast = self.kernel.runs_here() && next.kernel.runs_here();
        self.for_row_chunks(x, next.out, |x, y| {
            let mut mid = vec![0f32; x.len() / self.inp * self.out];
            self.rows(x, &mut mid, fast);
            between(&mut mid);
            next.rows(&mid, y, fast);
        })
    }

    /// `down.matmul(act(self.matmul(x)) * up.matmul(x))`, a gated MLP (Llama's: SiLU of the
    /// gate projection, this one, times the up projection), chunk by chunk of rows like
    /// [`Self::matmul_pair`], with the same numbers as the steps one after the other.
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `in`, or the three do not chain.
    pub fn matmul_gated(
        &self,
        up: &Int8Linear,
        down: &Int8Linear,
        x: &[f32],
        act: impl Fn(&mut [f32]) + Sync,
    ) -> Vec<f32> {
        assert!(
            up.dims() == self.dims() && up.kernel == self.kernel && down.inp == self.out,
            "the gate, up and down projections do not chain"
        );
        let fast = self.kernel.runs_here() && up.kernel.runs_here() && down.kernel.runs_here();
        self.for_row_chunks(x, down.out, |x, y| {
            let rows = x.len() / self.inp;
            let (mut gate, mut mid) = (vec![0f32; rows * self.out], vec![0f32; rows * self.out]);
            // the gate and up projections read the same rows: quantised once
            let acts = self.quantize(x, fast);
            self.rows_quantized(&acts, &mut gate, fast);
            act(&mut gate);
            up.rows_quantized(&acts, &mut mid, fast);
            mid.iter_mut().zip(&gate).for_each(|(u, g)| *u *= g);
            down.rows(&mid, y, fast);
        })
    }

    /// [`Self::matmul`] with the kernel (`fast`, which the caller checked this CPU runs) or
    /// with the portable one.
    fn matmul_with(&self, x: &[f32], fast: bool) -> Vec<f32> {
        self.for_row_chunks(x, self.out, |x, y| self.rows(x, y, fast))
    }

    /// The `[t, out]` result of `task` over `x` `[t, in]`, one task per chunk of rows: it
    /// quantises them and writes their output rows, one weight panel at a time over all its
    /// row tiles, so that each panel is read from memory once per chunk, not once per tile.
    /// Chunks of at most MAX_TILES tiles, small enough to give every thread two.
    fn for_row_chunks(&self, x: &[f32], out: usize, task: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
        let mut ys = self.for_row_chunks_each(x, &[out], |x, ys| task(x, ys[0]));
        ys.pop().unwrap_or_default()
    }

    /// [`Self::for_row_chunks`] for a task that writes several results, `[t, outs[i]]` each.
    fn for_row_chunks_each(
        &self,
        x: &[f32],
        outs: &[usize],
        task: impl Fn(&[f32], &mut [&mut [f32]]) + Sync,
    ) -> Vec<Vec<f32>> {
        assert!(self.inp > 0 && x.len().is_multiple_of(self.inp), "x is not [t, {}]", self.inp);
        let t = x.len() / self.inp;
        let mut ys: Vec<Vec<f32>> = outs.iter().map(|out| vec![0f32; t * out]).collect();
        // rayon natively and in the threaded wasm build (`+atomics`); one thread otherwise
        #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
        let threads = rayon::current_num_threads();
        #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
        let threads = 1;
        // whole row tiles per chunk, at most MAX_TILES; at least two chunks a thread, and as
        // many for every thread, the tiles spread evenly over them: chunks of 96 rows left a
        // thread 6 of 11 chunks of a 1k-token input against the other's 5
        let tile = self.kernel.chunk_rows();
        let tiles = t.div_ceil(tile);
        let chunks = tiles.div_ceil(MAX_TILES).max(2 * threads).next_multiple_of(threads).min(tiles).max(1);
        let (base, extra) = (tiles / chunks, tiles % chunks);
        let mut bounds = Vec::with_capacity(chunks);
        for i in 0..chunks {
            let start = bounds.last().map_or(0, |&(_, end)| end);
            bounds.push((start, (start + (base + usize::from(i < extra)) * tile).min(t)));
        }
        // per chunk of rows: its x rows and its rows of every result
        let mut tasks: Vec<(&[f32], Vec<&mut [f32]>)> =
            bounds.iter().map(|&(start, end)| (&x[start * self.inp..end * self.inp], Vec::new())).collect();
        for (y, out) in ys.iter_mut().zip(outs) {
            let mut rest = y.as_mut_slice();
            for ((_, rows), &(start, end)) in tasks.iter_mut().zip(&bounds) {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut((end - start) * out);
                rows.push(head);
                rest = tail;
            }
        }
        #[cfg(any(not(target_family = "wasm"), target_feature = "atomics"))]
        {
            use rayon::iter::{IntoParallelIterator, ParallelIterator};
            tasks.into_par_iter().for_each(|(x, mut ys)| task(x, &mut ys));
        }
        #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
        tasks.into_iter().for_each(|(x, mut ys)| task(x, &mut ys));
        ys
    }

    /// `y = x W^T + b` for a chunk of rows, on this thread.
    fn rows(&self, x: &[f32], y: &mut [f32], fast: bool) {
        self.rows_quantized(&self.quantize(x, fast), y, fast);
    }

    /// The rows `x` quantised as this weight's kernel reads them (`fast`: with the SIMD
    /// quantiser, which gives the portable one's codes).
    fn quantize(&self, x: &[f32], fast: bool) -> Quantized {
        let _ = fast; // read only where the target has a SIMD quantiser
        match self.kernel {
            Kernel::Vnni => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX-512 F, BW and VNNI (`Kernel::runs_here`)
                    return Quantized::U8(Activations::quantize(x, self.inp, |x, q| unsafe {
                        x86::quantize_row(x, q)
                    }));
                }
                Quantized::U8(Activations::quantize(x, self.inp, quantize_row))
            }
            Kernel::AvxVnni => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 (`Kernel::runs_here`)
                    return Quantized::U8(Activations::quantize(x, self.inp, |x, q| unsafe {
                        x86::quantize_row_avx2(x, q)
                    }));
                }
                Quantized::U8(Activations::quantize(x, self.inp, quantize_row))
            }
            Kernel::Neon | Kernel::I8mm => Quantized::U8(Activations::quantize(x, self.inp, quantize_row)),
            Kernel::Pairs => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 (`Kernel::runs_here`)
                    let quantize = |x: &[f32], q: &mut [i16]| unsafe { x86::quantize_row_avx2(x, q) };
                    return Quantized::I16(Activations::quantize(x, self.inp, quantize));
                }
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                if fast {
                    return Quantized::I16(Activations::quantize(x, self.inp, wasm::quantize_row));
                }
                Quantized::I16(Activations::quantize(x, self.inp, quantize_row))
            }
        }
    }

    /// `y = x W^T + b` for a chunk of rows quantised by [`Self::quantize`] (of this weight or
    /// of one with the same kernel and inputs), on this thread.
    fn rows_quantized(&self, acts: &Quantized, y: &mut [f32], fast: bool) {
        match (self.kernel, acts) {
            (Kernel::Vnni, Quantized::U8(acts)) => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX-512 F, BW and VNNI (`Kernel::runs_here`)
                    return unsafe { x86::rows_vnni(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::AvxVnni, Quantized::U8(acts)) => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 and AVX-VNNI (`Kernel::runs_here`)
                    return unsafe { x86::rows_avx_vnni(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::Neon, Quantized::U8(acts)) => {
                #[cfg(target_arch = "aarch64")]
                if fast {
                    // SAFETY: the CPU has the dot-product extension (`Kernel::runs_here`)
                    return unsafe { neon::rows_dot(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::I8mm, Quantized::U8(acts)) => {
                #[cfg(target_arch = "aarch64")]
                if fast {
                    // SAFETY: the CPU has i8mm (`Kernel::runs_here`)
                    return unsafe { neon::rows_mmla(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::Pairs, Quantized::I16(acts)) => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 (`Kernel::runs_here`)
                    return unsafe { x86::rows_pairs(self, acts, y) };
                }
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                if fast {
                    return wasm::rows_pairs(self, acts, y);
                }
                self.rows_portable(acts, y);
            }
            _ => panic!("activations quantised for another kernel"),
        }
        let _ = fast;
    }

    /// `(stride, n_pad, blocks, rows)` of a kernel's call on `acts` into `y`: the activation
    /// row stride (`in` rounded up to BK), `out` rounded up to NR, the blocks of BK per row
    /// and the rows; the kernels' pointer arithmetic relies on these checks.
    fn checked_dims<T>(&self, kernel: Kernel, acts: &Activations<T>, y: &[f32]) -> (usize, usize, usize, usize) {
        let (stride, n_pad) = (self.inp.next_multiple_of(BK), self.scales.len());
        let (blocks, rows) = (stride / BK, y.len() / self.out);
        let padded = rows.next_multiple_of(PAD_ROWS);
        assert!(
            self.kernel == kernel
                && y.len() == rows * self.out
                && acts.codes.len() == padded * stride
                && acts.scales.len() == padded * blocks
                && self.packed_codes() == n_pad * stride
                && self.offsets.len() == blocks * n_pad
                && (self.block_scales.is_empty() || self.block_scales.len() == blocks * n_pad)
        );
        (stride, n_pad, blocks, rows)
    }

    /// How many codes the layout holds.
    fn packed_codes(&self) -> usize {
        match &self.packed {
            Packed::Int8(codes) => codes.len(),
            Packed::Q4(packed) => 2 * packed.len(),
        }
    }

    /// The integers and the f32 operations of the kernels, in the same order, in plain Rust.
    fn rows_portable<T: Code>(&self, acts: &Activations<T>, y: &mut [f32]) {
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

/// An activation code, `qx + 128`: u8 for VNNI, i16 for the pair kernels.
trait Code: Copy + Into<i32> + From<u8> {}
impl Code for u8 {}
impl Code for i16 {}

/// Symmetric int8 quantisation of a row-major `[rows, cols]` matrix, one scale per row
/// (`max |w| / 127`): returns the codes and the scales. A row with a NaN or an infinity gets a
/// NaN scale, so that it stays non-finite (a bundle packed from broken weights is as broken,
/// and says so: `inspect --check`, and scoring fails) instead of its NaN becoming code 0.
pub fn quantize_rows(values: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = values.len().checked_div(rows).unwrap_or(0);
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(cols.max(1)) {
        if !row.iter().all(|v| v.is_finite()) {
            codes.extend(std::iter::repeat_n(0, row.len()));
            scales.push(f32::NAN);
            continue;
        }
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        codes.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
        scales.push(scale);
    }
    (codes, scales)
}

/// Activation rows quantised for one of the kernels: u8 codes for VNNI, i16 for the pairs.
enum Quantized {
    U8(Activations<u8>),
    I16(Activations<i16>),
}

/// Activation rows quantised to `qx + 128`, each block of BK values with its own scale, rows
/// padded to whole blocks and to PAD_ROWS rows with 128 (zero).
struct Activations<T> {
    /// `[rows rounded up to PAD_ROWS, in rounded up to BK]`.
    codes: Vec<T>,
    /// `[rows rounded up to PAD_ROWS, blocks]` (0 for the padding).
    scales: Vec<f32>,
}

impl<T: Code> Activations<T> {
    /// `x` `[t, cols]`, each block by `quantize` ([`quantize_row`] or a SIMD copy of it).
    fn quantize(x: &[f32], cols: usize, quantize: impl Fn(&[f32], &mut [T]) -> f32) -> Self {
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

/// Quantises `x` into `q` (`qx + 128`, rounding half to even) and returns its scale; NaN when
/// `x` has a NaN or an infinity (the output rows become NaN: a non-finite score is an error).
fn quantize_row<T: Code>(x: &[f32], q: &mut [T]) -> f32 {
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

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;

#[cfg(test)]
mod tests {
    use super::*;
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

    fn linear_as(
        rows: usize,
        cols: usize,
        seed: u64,
        kernel: Kernel,
        format: Format,
    ) -> (Int8Linear, Vec<f32>, Vec<f32>) {
        let m = quantized(rows, cols, seed, format);
        let bias = random(rows, seed + 1);
        (Int8Linear::with_kernel(&m, Some(&bias), kernel).unwrap(), m.to_f32(), bias)
    }

    fn linear(rows: usize, cols: usize, seed: u64, kernel: Kernel) -> (Int8Linear, Vec<f32>, Vec<f32>) {
        linear_as(rows, cols, seed, kernel, Format::Int8)
    }

    const SHAPES: [(usize, usize, usize); 7] =
        [(1, 1, 1), (3, 5, 7), (9, 70, 130), (17, 64, 384), (20, 33, 65), (200, 37, 70), (13, 100, 1536)];
    /// Shapes of whole q4 blocks (`in` a multiple of 64).
    const Q4_SHAPES: [(usize, usize, usize); 5] =
        [(1, 1, 64), (5, 33, 192), (17, 64, 384), (40, 130, 64), (13, 100, 1536)];
    const KERNELS: [Kernel; 5] = Kernel::ALL;

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
            let l = Int8Linear::with_kernel(&qm, None, kernel).unwrap();
            for fast in [false, kernel.runs_here()] {
                assert_eq!(l.matmul_with(&[0.0, 0.0], fast), vec![0.0, 0.0]);
                assert!(l.matmul_with(&[f32::NAN, 1.0], fast).iter().all(|v| v.is_nan()));
                assert!(l.matmul_with(&[1.0, f32::INFINITY], fast).iter().all(|v| v.is_nan()));
            }
        }
        assert!(Int8Matrix::new(2, 2, codes[..3].to_vec(), vec![1.0, 1.0]).is_none());
        assert!(Int8Linear::new(&qm, Some(&[1.0])).is_none());
        for r in 0..2 {
            let want: Vec<f32> = codes[2 * r..2 * r + 2].iter().map(|&q| f32::from(q) * m.scales[r]).collect();
            assert_eq!(m.row(r).unwrap().collect::<Vec<_>>(), want);
        }
        assert!(m.row(2).is_none());
    }
}
