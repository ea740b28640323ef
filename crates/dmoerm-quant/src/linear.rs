//! [`Int8Linear`]: a linear weight laid out for the matmul kernel of this CPU, and the matmul
//! over chunks of activation rows on rayon: quantise the rows, run the kernel (or the portable
//! one), scale and add the bias.

use crate::portable::{quantize_row, Activations, Quantized};
use crate::{q4, Kernel, QuantMatrix, BK, MAX_TILES, NR, PAD_ROWS};

/// A linear weight `[out, in]` as int8 (or 4-bit) codes, laid out for the matmul kernel, with
/// its bias.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    pub(crate) kernel: Kernel,
    pub(crate) out: usize,
    pub(crate) inp: usize,
    /// `[out / NR][in / KG][NR][KG]` (`out` rounded up to NR, `in` to BK, zero padded): the
    /// `NR * KG` codes at `(nb * k_groups + g) * NR * KG` are `k = KG g .. KG (g + 1)` of
    /// outputs `nb * NR .. (nb + 1) * NR`, output by output.
    pub(crate) packed: Packed,
    /// Per output, rounded up to NR: the row scale (1 for a 4-bit weight) and the bias.
    pub(crate) scales: Vec<f32>,
    /// A 4-bit weight's block scales, `[in / BK][out rounded up to NR]`; empty for int8.
    pub(crate) block_scales: Vec<f32>,
    /// `[in / BK][out rounded up to NR]`: `128 * sum q[o, k]` over the block's `k`.
    pub(crate) offsets: Vec<i32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) has_bias: bool,
}

/// The codes of [`Int8Linear`]'s layout: one per byte, or two ([`q4::pack`]).
#[derive(Debug, Clone)]
pub(crate) enum Packed {
    Int8(Vec<i8>),
    Q4(Vec<u8>),
}

impl Int8Linear {
    /// Whether this CPU has an int8 kernel (AVX-512 VNNI, AVX2, wasm `simd128`); elsewhere
    /// int8 weights are expanded to f32 when they load.
    pub fn available() -> bool {
        Kernel::best().is_some()
    }

    /// The kernel new int8 weights run on (`avx512-vnni`, `avx-vnni`, `avx2`, `simd128`,
    /// `neon-i8mm`, `neon-dotprod`), or `None` where int8 weights are expanded to f32.
    pub fn kernel_name() -> Option<&'static str> {
        Kernel::best().map(Kernel::name)
    }

    /// The kernel new 4-bit weights run on: [`Self::kernel_name`]'s, or `relaxed-simd` in a
    /// wasm build with relaxed SIMD.
    pub fn q4_kernel_name() -> Option<&'static str> {
        Kernel::best_for(true).map(Kernel::name)
    }

    /// The weight `[out, in]` and its bias (`out` values), laid out for this CPU's kernel.
    pub fn new(weight: &QuantMatrix, bias: Option<&[f32]>) -> Option<Self> {
        let q4 = matches!(weight, QuantMatrix::Q4(_));
        Self::with_kernel(weight, bias, Kernel::best_for(q4).unwrap_or(Kernel::Pairs))
    }

    /// `None` where the bias does not match, or the kernel does not take int8 weights.
    pub(crate) fn with_kernel(weight: &QuantMatrix, bias: Option<&[f32]>, kernel: Kernel) -> Option<Self> {
        let (out, inp) = weight.dims();
        if bias.is_some_and(|b| b.len() != out) || matches!(weight, QuantMatrix::Int8(_)) && !kernel.takes_int8() {
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
    pub(crate) fn panel<'a>(&'a self, nb: usize, stride: usize, scratch: &'a mut Vec<i8>) -> &'a [i8] {
        self.panel_plus(nb, stride, scratch, 0)
    }

    /// [`Self::panel`], a 4-bit weight's codes with `plus` added (`-8..=7` becomes
    /// `plus - 8..=plus + 7`; an int8 weight's are as stored).
    pub(crate) fn panel_plus<'a>(&'a self, nb: usize, stride: usize, scratch: &'a mut Vec<i8>, plus: i8) -> &'a [i8] {
        let len = stride * NR;
        match &self.packed {
            Packed::Int8(codes) => &codes[nb * len..(nb + 1) * len],
            Packed::Q4(packed) => {
                scratch.resize(len, 0);
                q4::unpack(&packed[nb * len / 2..(nb + 1) * len / 2], scratch, plus);
                scratch
            }
        }
    }

    /// The factor of block `b`'s integer sum for output `o`: the activation's block scale `a`,
    /// times the weight's block scale for a 4-bit weight (the kernels multiply the same way).
    pub(crate) fn block_scale(&self, a: f32, b: usize, n_pad: usize, o: usize) -> f32 {
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
    /// of them (attention's query, key and value projections read the same rows; once per
    /// kernel where they run on different ones): the same numbers as the matmuls one by one.
    ///
    /// # Panics
    /// When the weights do not all take `in` inputs, or `x.len()` is not a multiple of `in`.
    pub fn matmul_each(weights: &[&Int8Linear], x: &[f32]) -> Vec<Vec<f32>> {
        let Some(first) = weights.first() else { return Vec::new() };
        assert!(weights.iter().all(|w| w.inp == first.inp), "the weights take different inputs");
        let outs: Vec<usize> = weights.iter().map(|w| w.out).collect();
        first.for_row_chunks_each(x, &outs, |x, ys| {
            let mut quantized: Vec<(Kernel, Quantized)> = Vec::new();
            for (w, y) in weights.iter().zip(ys) {
                let fast = w.kernel.runs_here();
                let at = match quantized.iter().position(|(kernel, _)| *kernel == w.kernel) {
                    Some(at) => at,
                    None => {
                        quantized.push((w.kernel, w.quantize(x, fast)));
                        quantized.len() - 1
                    }
                };
                w.rows_quantized(&quantized[at].1, y, fast);
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
        self.for_row_chunks(x, next.out, |x, y| {
            let mut mid = vec![0f32; x.len() / self.inp * self.out];
            self.rows(x, &mut mid, self.kernel.runs_here());
            between(&mut mid);
            next.rows(&mid, y, next.kernel.runs_here());
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
        assert!(up.dims() == self.dims() && down.inp == self.out, "the gate, up and down projections do not chain");
        let fast = |w: &Int8Linear| w.kernel.runs_here();
        self.for_row_chunks(x, down.out, |x, y| {
            let rows = x.len() / self.inp;
            let (mut gate, mut mid) = (vec![0f32; rows * self.out], vec![0f32; rows * self.out]);
            // the gate and up projections read the same rows: quantised once (on one kernel)
            let acts = self.quantize(x, fast(self));
            self.rows_quantized(&acts, &mut gate, fast(self));
            act(&mut gate);
            match up.kernel == self.kernel {
                true => up.rows_quantized(&acts, &mut mid, fast(up)),
                false => up.rows(x, &mut mid, fast(up)),
            }
            mid.iter_mut().zip(&gate).for_each(|(u, g)| *u *= g);
            down.rows(&mid, y, fast(down));
        })
    }

    /// [`Self::matmul`] with the kernel (`fast`, which the caller checked this CPU runs) or
    /// with the portable one.
    pub(crate) fn matmul_with(&self, x: &[f32], fast: bool) -> Vec<f32> {
        self.for_row_chunks(x, self.out, |x, y| self.rows(x, y, fast))
    }

    /// The `[t, out]` result of `task` over `x` `[t, in]`, one task per chunk of rows: it
    /// quantises them and writes their output rows, one weight panel at a time over all its
    /// row tiles, so that each panel is read from memory once per chunk, not once per tile.
    /// Chunks of at most MAX_TILES tiles, small enough to give every thread two.
    pub(crate) fn for_row_chunks(&self, x: &[f32], out: usize, task: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
        let mut ys = self.for_row_chunks_each(x, &[out], |x, ys| task(x, ys[0]));
        ys.pop().unwrap_or_default()
    }

    /// [`Self::for_row_chunks`] for a task that writes several results, `[t, outs[i]]` each.
    pub(crate) fn for_row_chunks_each(
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
    pub(crate) fn rows(&self, x: &[f32], y: &mut [f32], fast: bool) {
        self.rows_quantized(&self.quantize(x, fast), y, fast);
    }

    /// The rows `x` quantised as this weight's kernel reads them (`fast`: with the SIMD
    /// quantiser, which gives the portable one's codes).
    pub(crate) fn quantize(&self, x: &[f32], fast: bool) -> Quantized {
        let _ = fast; // read only where the target has a SIMD quantiser
        match self.kernel {
            Kernel::Vnni => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX-512 F, BW and VNNI (`Kernel::runs_here`)
                    return Quantized::U8(Activations::quantize(x, self.inp, |x, q| unsafe {
                        crate::x86::quantize_row(x, q)
                    }));
                }
                Quantized::U8(Activations::quantize(x, self.inp, quantize_row))
            }
            Kernel::AvxVnni => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 (`Kernel::runs_here`)
                    return Quantized::U8(Activations::quantize(x, self.inp, |x, q| unsafe {
                        crate::x86::quantize_row_avx2(x, q)
                    }));
                }
                Quantized::U8(Activations::quantize(x, self.inp, quantize_row))
            }
            Kernel::Neon | Kernel::I8mm => Quantized::U8(Activations::quantize(x, self.inp, quantize_row)),
            Kernel::Relaxed => {
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                if fast {
                    return Quantized::U8(Activations::quantize(x, self.inp, crate::wasm::quantize_row));
                }
                Quantized::U8(Activations::quantize(x, self.inp, quantize_row))
            }
            Kernel::Pairs => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 (`Kernel::runs_here`)
                    let quantize = |x: &[f32], q: &mut [i16]| unsafe { crate::x86::quantize_row_avx2(x, q) };
                    return Quantized::I16(Activations::quantize(x, self.inp, quantize));
                }
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                if fast {
                    return Quantized::I16(Activations::quantize(x, self.inp, crate::wasm::quantize_row));
                }
                Quantized::I16(Activations::quantize(x, self.inp, quantize_row))
            }
        }
    }

    /// `y = x W^T + b` for a chunk of rows quantised by [`Self::quantize`] (of this weight or
    /// of one with the same kernel and inputs), on this thread.
    pub(crate) fn rows_quantized(&self, acts: &Quantized, y: &mut [f32], fast: bool) {
        match (self.kernel, acts) {
            (Kernel::Vnni, Quantized::U8(acts)) => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX-512 F, BW and VNNI (`Kernel::runs_here`)
                    return unsafe { crate::x86::rows_vnni(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::AvxVnni, Quantized::U8(acts)) => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 and AVX-VNNI (`Kernel::runs_here`)
                    return unsafe { crate::x86::rows_avx_vnni(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::Neon, Quantized::U8(acts)) => {
                #[cfg(target_arch = "aarch64")]
                if fast {
                    // SAFETY: the CPU has the dot-product extension (`Kernel::runs_here`)
                    return unsafe { crate::neon::rows_dot(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::I8mm, Quantized::U8(acts)) => {
                #[cfg(target_arch = "aarch64")]
                if fast {
                    // SAFETY: the CPU has i8mm (`Kernel::runs_here`)
                    return unsafe { crate::neon::rows_mmla(self, acts, y) };
                }
                self.rows_portable(acts, y);
            }
            (Kernel::Relaxed, Quantized::U8(acts)) => {
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128", feature = "relaxed-simd"))]
                if fast {
                    return crate::wasm::rows_relaxed(self, acts, y);
                }
                self.rows_portable(acts, y);
            }
            (Kernel::Pairs, Quantized::I16(acts)) => {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 (`Kernel::runs_here`)
                    return unsafe { crate::x86::rows_pairs(self, acts, y) };
                }
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                if fast {
                    return crate::wasm::rows_pairs(self, acts, y);
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
    pub(crate) fn checked_dims<T>(
        &self,
        kernel: Kernel,
        acts: &Activations<T>,
        y: &[f32],
    ) -> (usize, usize, usize, usize) {
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
    pub(crate) fn packed_codes(&self) -> usize {
        match &self.packed {
            Packed::Int8(codes) => codes.len(),
            Packed::Q4(packed) => 2 * packed.len(),
        }
    }
}
