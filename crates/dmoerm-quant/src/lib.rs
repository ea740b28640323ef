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
//!   codes (the u8 codes flipped as they load, no offset to subtract);
//! - wasm with relaxed SIMD, for 4-bit weights (`wasm.rs`): `i32x4.relaxed_dot_i8x16_i7x16_add_s`
//!   (16 products summed 4 by 4, twice `i32x4.dot_i16x8_s`'s), `KG` = 4, on signed activation
//!   codes and the weight codes as `q + 8`. Its result is defined only where the second operand
//!   is in `0..=127`: a 4-bit code plus 8 is, an int8 code is not (split in two, it measured no
//!   faster than the pairs, which int8 weights keep).
//!
//! A portable kernel computes the same integers and the same f32 operations in the same order
//! (tests check every kernel against it bit for bit): every kernel gives the same numbers.
//! Where no kernel runs (other CPUs, wasm without `simd128`), int8 projections are
//! expanded to f32 when they load (see [`Int8Linear::available`]).
//!
//! A 4-bit weight ([`Q4Matrix`], one scale per block of 64 values of a row) runs through the
//! same kernels: its codes are integers in `-8..=7`, kept two per byte in the panel layout,
//! widened in registers as AVX-512 VNNI reads them (two masks and a shift per 128 codes; no
//! copy: with 16 rows that made q4 1.6x faster, `examples/matmul.rs`) and elsewhere unpacked to
//! i8 one weight panel at a time (NR outputs, a few KB) just before the kernel reads it, and
//! each block's integer sum is scaled by the activation's and the weight's block scales
//! together (the row scale is then 1):
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

mod linear;
mod matrix;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
mod q4;
#[cfg(test)]
mod tests;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use linear::Int8Linear;
#[cfg(target_arch = "x86_64")]
use linear::Packed;
pub use matrix::{quantize_rows, Int8Matrix, QuantMatrix};
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
    /// wasm's relaxed SIMD (`i32x4.relaxed_dot_i8x16_i7x16_add_s`), for 4-bit weights only: the
    /// VNNI layout, the weight codes as `q + 8` (the instruction's 7-bit operand), activations
    /// as u8 (read as signed codes).
    Relaxed,
}

/// The environment variable that picks the int8 kernel (tests and benchmarks compare them on
/// one CPU): `avx512-vnni`, `avx-vnni` or `avx2` (x86-64), `neon-i8mm` or `neon-dotprod`
/// (ARM64). A kernel this CPU does not run, or another value, leaves the fastest one, and says
/// so on stderr (once) with the kernels this CPU runs.
pub const KERNEL_VARIABLE: &str = "DMOERM_INT8_KERNEL";

impl Kernel {
    /// Consecutive `k` per 32-bit lane of the weight layout.
    const fn kg(self) -> usize {
        match self {
            Kernel::Vnni | Kernel::AvxVnni | Kernel::Neon | Kernel::Relaxed => 4,
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
            Kernel::Relaxed => "relaxed-simd",
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
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128", feature = "relaxed-simd"))]
            Kernel::Relaxed => true,
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
            Kernel::Pairs | Kernel::Relaxed => wasm::ROWS,
            _ => MR,
        }
    }

    /// The kernels for int8 weights, fastest first.
    const ALL: [Kernel; 5] = [Kernel::Vnni, Kernel::AvxVnni, Kernel::Pairs, Kernel::I8mm, Kernel::Neon];

    /// Whether the kernel takes int8 weights (every one but [`Kernel::Relaxed`], whose 7-bit
    /// operand holds a 4-bit code, not an 8-bit one).
    const fn takes_int8(self) -> bool {
        !matches!(self, Kernel::Relaxed)
    }

    /// The kernel new weights are laid out for: [`Kernel::Relaxed`] for a 4-bit weight where it
    /// runs, else [`Kernel::best`].
    fn best_for(q4: bool) -> Option<Self> {
        match q4 && Kernel::Relaxed.runs_here() {
            true => Some(Kernel::Relaxed),
            false => Kernel::best(),
        }
    }

    /// The kernel new weights are laid out for: the one [`KERNEL_VARIABLE`] names where this
    /// CPU runs it, else the fastest this CPU runs (read once).
    fn best() -> Option<Self> {
        static CHOSEN: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let runs = || Kernel::ALL.into_iter().filter(|k| k.runs_here());
            let Ok(named) = std::env::var(KERNEL_VARIABLE) else { return runs().next() };
            runs().find(|k| named == k.name()).or_else(|| {
                let here: Vec<&str> = runs().map(Kernel::name).collect();
                let fastest = runs().next();
                eprintln!(
                    "{KERNEL_VARIABLE}={named}: not an int8 kernel this CPU runs (it runs: {}); using {}",
                    if here.is_empty() { "none".to_string() } else { here.join(", ") },
                    fastest.map_or("none: int8 weights are expanded to f32", Kernel::name)
                );
                fastest
            })
        })
    }
}
