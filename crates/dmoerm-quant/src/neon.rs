//! The int8 kernels of ARM64:
//! - the dot-product extension (`sdot`: Apple M1 and later, Graviton 2 and later, every ARMv8.4
//!   core): the VNNI layout (4 consecutive `k` per i32 lane), 16 i8 x i8 products summed 4 by 4
//!   into 4 i32 lanes per instruction;
//! - the int8 matrix multiply (`smmla`, i8mm: Apple M2 and later, Graviton 3 and later): 8
//!   consecutive `k` per output, a 2 x 8 block of two activation rows times an 8 x 2 block of two
//!   outputs into a 2 x 2 block of i32 sums, 32 products per instruction.
//!
//! Both multiply signed bytes, so the activation codes (`qx + 128`, as the other kernels read
//! them) are turned back into `qx` as they load, and each block's sum is then `sum qx * q`
//! directly: the integer the other kernels reach by subtracting the block offset. The f32
//! operations are the portable kernel's, in its order (a multiply, then an add: never fused), so
//! the numbers are the same bit for bit.
//!
//! Rust's `vdotq_s32` and `vmmlaq_s32` are not stable yet: the instructions are written as
//! inline assembly.

use crate::portable::Activations;
use crate::{Int8Linear, Kernel, BK, NR};
use std::arch::aarch64::*;
use std::arch::asm;

/// The `sdot` layout's `k` per group.
const KG: usize = Kernel::Neon.kg();
/// The `smmla` layout's `k` per group.
const KG_MMLA: usize = Kernel::I8mm.kg();

/// `acc + dot4(a, b)` per i32 lane: `sdot`.
///
/// # Safety
/// The CPU has the dot-product extension.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction; the caller's CPU has it
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc + A B^T` for the 2 x 8 blocks `a` (2 rows of 8 bytes) and `b` (2 outputs of 8 bytes):
/// lanes `[a0.b0, a0.b1, a1.b0, a1.b1]`, `smmla`.
///
/// # Safety
/// The CPU has the int8 matrix multiply extension.
#[inline(always)]
unsafe fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction; the caller's CPU has it
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The integer sums `sum qx * q` of 2 activation rows (at `a`, rows `stride` bytes apart, codes
/// `qx + 128`) with one panel of NR outputs over the groups `groups` of the `smmla` layout
/// (8 consecutive `k` per output): per group, the rows' 8 codes each in one register and 16
/// `smmla`, one per pair of outputs (16 bytes of weights). Returns, per pair of outputs `p`,
/// `[r0.o(2p), r0.o(2p+1), r1.o(2p), r1.o(2p+1)]`.
///
/// # Safety
/// The CPU has NEON and i8mm; `panel` holds the groups' 256 bytes each, `a` 2 rows of at least
/// `groups.end * 8` bytes.
#[target_feature(enable = "neon,i8mm")]
unsafe fn block_mmla(panel: *const i8, a: *const u8, stride: usize, groups: std::ops::Range<usize>) -> [int32x4_t; 16] {
    let mut c = [vdupq_n_s32(0); 16];
    let flip = vdupq_n_u8(0x80);
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let rows = vcombine_u8(vld1_u8(a.add(g * KG_MMLA)), vld1_u8(a.add(stride + g * KG_MMLA)));
            let x = vreinterpretq_s8_u8(veorq_u8(rows, flip));
            let wp = panel.add(g * NR * KG_MMLA);
            for (p, c) in c.iter_mut().enumerate() {
                *c = smmla(*c, x, vld1q_s8(wp.add(16 * p)));
            }
        }
    }
    c
}

/// The integer sums `sum qx * q` of 2 activation rows (at `a`, rows `stride` bytes apart, codes
/// `qx + 128`) with one panel of NR outputs over the groups `groups`: per group, 8 x 16 weight
/// bytes (4 outputs x 4 `k` each), and per row one broadcast of 4 codes and 8 `sdot`.
///
/// # Safety
/// The CPU has NEON and the dot-product extension; `panel` holds the groups' 128 bytes each,
/// `a` 2 rows of at least `groups.end * 4` bytes.
#[target_feature(enable = "neon,dotprod")]
unsafe fn block(panel: *const i8, a: *const u8, stride: usize, groups: std::ops::Range<usize>) -> [[int32x4_t; 8]; 2] {
    let mut c = [[vdupq_n_s32(0); 8]; 2];
    // `qx + 128` to `qx`: flip the top bit of each byte
    let flip = vdupq_n_u8(0x80);
    for g in groups {
        // SAFETY: in bounds by the function's contract
        unsafe {
            let wp = panel.add(g * NR * KG);
            let w = [0, 1, 2, 3, 4, 5, 6, 7].map(|q| vld1q_s8(wp.add(16 * q)));
            for (r, c) in c.iter_mut().enumerate() {
                let x = vdupq_n_u32(a.add(r * stride + g * KG).cast::<u32>().read_unaligned());
                let x = vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_u32(x), flip));
                for (c, &w) in c.iter_mut().zip(&w) {
                    *c = sdot(*c, w, x);
                }
            }
        }
    }
    c
}

/// [`block_mmla`]'s sums as [`block`] gives them: per row, 8 vectors of 4 consecutive outputs.
#[target_feature(enable = "neon")]
fn by_rows(c: [int32x4_t; 16]) -> [[int32x4_t; 8]; 2] {
    let mut out = [[vdupq_n_s32(0); 8]; 2];
    for q in 0..8 {
        // outputs 4q..4q + 4 are pairs 2q and 2q + 1: row 0 in their low halves, row 1 high
        let (lo, hi) = (vreinterpretq_s64_s32(c[2 * q]), vreinterpretq_s64_s32(c[2 * q + 1]));
        out[0][q] = vreinterpretq_s32_s64(vzip1q_s64(lo, hi));
        out[1][q] = vreinterpretq_s32_s64(vzip2q_s64(lo, hi));
    }
    out
}

/// The `sdot` kernel: see [`rows_with`].
#[target_feature(enable = "neon,dotprod")]
pub(super) fn rows_dot(w: &Int8Linear, acts: &Activations<u8>, y: &mut [f32]) {
    // SAFETY: the CPU has the dot-product extension (this function's features)
    rows_with(w, acts, y, Kernel::Neon, |panel, a, stride, groups| unsafe { block(panel, a, stride, groups) })
}

/// The `smmla` kernel: see [`rows_with`].
#[target_feature(enable = "neon,i8mm")]
pub(super) fn rows_mmla(w: &Int8Linear, acts: &Activations<u8>, y: &mut [f32]) {
    // SAFETY: the CPU has i8mm (this function's features)
    rows_with(w, acts, y, Kernel::I8mm, |panel, a, stride, groups| {
        by_rows(unsafe { block_mmla(panel, a, stride, groups) })
    });
}

/// For each weight panel of NR outputs, 2 activation rows at a time; per block of BK inputs the
/// integer sums (`sums` of the panel, the rows, their stride and the block's groups) scaled into
/// f32 accumulators as the portable kernel does, then `acc * s[o] + b[o]`.
#[target_feature(enable = "neon")]
#[inline]
fn rows_with(
    w: &Int8Linear,
    acts: &Activations<u8>,
    y: &mut [f32],
    kernel: Kernel,
    sums: impl Fn(*const i8, *const u8, usize, std::ops::Range<usize>) -> [[int32x4_t; 8]; 2],
) {
    let kg = kernel.kg();
    let (stride, n_pad, blocks, rows) = w.checked_dims(kernel, acts, y);
    let (q4, mut scratch) = (!w.block_scales.is_empty(), Vec::new());
    for nb in 0..n_pad / NR {
        let panel = w.panel(nb, stride, &mut scratch).as_ptr();
        for pair in 0..rows.div_ceil(2) {
            let a = acts.codes[pair * 2 * stride..].as_ptr();
            let mut accf = [[vdupq_n_f32(0.0); 8]; 2];
            for b in 0..blocks {
                // the panel holds stride / kg groups of NR * kg bytes; the activations are
                // padded to PAD_ROWS rows, a multiple of 2 (checked above)
                let acc = sums(panel, a, stride, b * BK / kg..(b + 1) * BK / kg);
                for (r, (accf, acc)) in accf.iter_mut().zip(&acc).enumerate() {
                    let a_scale = vdupq_n_f32(acts.scales[(pair * 2 + r) * blocks + b]);
                    for (q, (accf, &acc)) in accf.iter_mut().zip(acc).enumerate() {
                        let at = b * n_pad + nb * NR + 4 * q;
                        let scale = match q4 {
                            // SAFETY: a 4-bit weight's block scales hold blocks rows of n_pad
                            true => vmulq_f32(a_scale, unsafe { vld1q_f32(w.block_scales.as_ptr().add(at)) }),
                            false => a_scale,
                        };
                        *accf = vaddq_f32(*accf, vmulq_f32(vcvtq_f32_s32(acc), scale));
                    }
                }
            }
            // epilogue: acc * s[o] + b[o], as the portable kernel rounds it
            for (r, accf) in accf.iter().enumerate().take(rows - pair * 2) {
                let row = pair * 2 + r;
                for (q, &v) in accf.iter().enumerate() {
                    let o = nb * NR + 4 * q;
                    if o >= w.out {
                        break;
                    }
                    // SAFETY: scales and bias are padded to whole NR blocks
                    let (s, b) = unsafe { (vld1q_f32(w.scales.as_ptr().add(o)), vld1q_f32(w.bias.as_ptr().add(o))) };
                    let mut lanes = [0f32; 4];
                    // SAFETY: 4 lanes into an array of 4
                    unsafe { vst1q_f32(lanes.as_mut_ptr(), vaddq_f32(vmulq_f32(v, s), b)) };
                    let n = (w.out - o).min(4);
                    y[row * w.out + o..][..n].copy_from_slice(&lanes[..n]);
                }
            }
        }
    }
}
