//! The int8 kernel with ARM64's dot-product extension (`sdot`: Apple M1 and later, Graviton 2
//! and later, every ARMv8.4 core): the VNNI layout (4 consecutive `k` per i32 lane), 16 i8 x i8
//! products summed 4 by 4 into 4 i32 lanes per instruction.
//!
//! `sdot` multiplies signed bytes, so the activation codes (`qx + 128`, as the VNNI layout
//! stores them) are turned back into `qx` as they are broadcast, and each block's sum is then
//! `sum qx * q` directly: the integer the other kernels reach by subtracting the block offset.
//! The f32 operations are the portable kernel's, in its order (a multiply, then an add: never
//! fused), so the numbers are the same bit for bit.
//!
//! Rust's `vdotq_s32` is not stable yet: the instruction is written as inline assembly.

use super::{Activations, Int8Linear, Kernel, BK, NR};
use std::arch::aarch64::*;
use std::arch::asm;

/// The layout's `k` per group.
const KG: usize = Kernel::Neon.kg();

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

/// For each weight panel of NR outputs, 2 activation rows at a time; per block of BK inputs the
/// integer sums scaled into f32 accumulators as the portable kernel does, then
/// `acc * s[o] + b[o]`.
#[target_feature(enable = "neon,dotprod")]
pub(super) fn rows_dot(w: &Int8Linear, acts: &Activations<u8>, y: &mut [f32]) {
    let (stride, n_pad, blocks, rows) = w.checked_dims(Kernel::Neon, acts, y);
    let (q4, mut scratch) = (!w.block_scales.is_empty(), Vec::new());
    for nb in 0..n_pad / NR {
        let panel = w.panel(nb, stride, &mut scratch).as_ptr();
        for pair in 0..rows.div_ceil(2) {
            let a = acts.codes[pair * 2 * stride..].as_ptr();
            let mut accf = [[vdupq_n_f32(0.0); 8]; 2];
            for b in 0..blocks {
                // SAFETY: the panel holds stride / KG groups of NR * KG bytes; the activations
                // are padded to PAD_ROWS rows, a multiple of 2 (checked above)
                let acc = unsafe { block(panel, a, stride, b * BK / KG..(b + 1) * BK / KG) };
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
