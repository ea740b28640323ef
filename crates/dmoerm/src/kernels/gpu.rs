//! GPU fast paths (wgpu: Vulkan, Metal, DX12 natively, WebGPU in the browser): ops that burn
//! composes of many kernel launches run as one CubeCL kernel each. On WebGPU a launch costs
//! a dispatch whatever its size, and a score of the default model launched ~750 of them.
//!
//! - [`attention`]: burn splits the heads (copies), multiplies Q by K^T, scales, masks with a
//!   boolean `[B, H, S, S]` tensor, runs softmax (max, subtract, exp, sum, divide), multiplies
//!   by V and merges the heads: ~20 launches per layer. Here one launch reads the heads in
//!   place in the projections' `[B, S, H * hd]` layout, runs softmax in one pass over the keys
//!   each query sees and writes the merged output, with no `S x S` buffer: on a GPU a
//!   workgroup takes a block of queries (of all the query heads sharing a KV head) through
//!   tiles of keys and values in workgroup memory, skipping the tiles no query of the block
//!   sees; on a software adapter a thread takes a query through its keys one by one.
//! - [`layer_norm_sum`]: `LayerNorm(a + b)`, the residual sum and the norm (9 launches in
//!   burn's composition, 10 with the sum), one workgroup per row.
//! - [`rms_norm`]: RMSNorm (Llama family), 6 launches in burn's composition; here one; so are
//!   [`rope`] (6) and the gated MLP's [`silu_mul`] (3).
//! - [`gelu`]: burn's erf GELU is 5 element-wise launches; here one.
//! - [`linear`], [`matmul`]: f32 products (the projections, LoRA's), the bias added as the
//!   product is written (burn adds it in a second launch). burn's unit kernel, which runs where
//!   a device has no cooperative matrices, stages in shared memory behind barriers that a CPU
//!   emulating a GPU runs slowly (224 ms a projection on SwiftShader against 23.5 here). An
//!   f16 weight (a 16-bit bundle on an adapter with f16 in shaders) is read as f16 and
//!   multiplied in f32; where the device has f16 cooperative matrices (tensor cores: Vulkan
//!   with dmoerm's `vulkan` feature) it runs on them instead, each activation split into two
//!   f16 ([`matmul_cmma_kernel`]). Sizes that are not multiples of 4 (the heads) take a thread
//!   per output ([`matmul_any_kernel`]): no product of a score goes to burn's matmul, which on
//!   a device with cooperative matrices multiplies f32 operands as f16.
//!
//! - [`linear_quant`]: an int8 or q4 bundle's projections (the shipped default model is int8)
//!   read as their codes, four or eight to a u32, turned into f32 in the kernel and scaled per
//!   block: burn's quantised matmul took 8.6-8.9 s a score of the default model on SwiftShader,
//!   15x its f32 twin; this takes 0.56 s, the f32 twin's time (BENCHMARKS.md).
//!
//! On a GPU the products and attention stage their operands in workgroup memory (blocks of
//! 64 x 64 outputs through tiles of 16 of `k`; tiles of keys and values), so a block reads
//! each value from the device's memory once; a software adapter runs the kernels that need
//! no barriers ([`tiled`]). Both are tested against the definitions on lavapipe; the tiled
//! kernels' speed on a GPU is not measured yet (`scripts/gpu-check.sh` times both).
//!
//! Each takes f32 tensors (and [`linear`] an f16 weight) on a cubecl device that autodiff does
//! not track (inference on wgpu) and gives its inputs back otherwise, for burn's ops.

// A fast path that does not apply gives its input tensors back as `Err`.
#![allow(clippy::result_large_err)]

use burn::tensor::{DType, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::Cube;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use super::QKV;

/// Threads per workgroup of the row kernels (a power of two: the reductions halve it) and of
/// attention (neighbouring queries), within WebGPU's default limit of 256 invocations.
const THREADS: usize = 64;

/// Whether the kernels that stage their operands in workgroup memory run
/// ([`attention_tiled_kernel`], [`matmul_tiled_kernel`]): on a GPU, and not on a software
/// adapter (lavapipe, SwiftShader: Chromium reports it as the fallback adapter), where a CPU
/// runs a workgroup's barriers as loops over its threads and the kernels that need none are
/// faster (tiled attention took 3.1x the time of a thread per query: a 4k-token score of the
/// tiny Qwen3 on lavapipe, 11.9 s against 3.8 s). `DMOERM_GPU_TILED=1` or `0` overrides the
/// choice, to time both on one device (`scripts/gpu-check.sh`).
fn tiled(client: &cubecl::client::Client) -> bool {
    #[cfg(test)]
    if let Some(tiled) = tests::TILED.get() {
        return tiled;
    }
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    gpu_choice(client, "DMOERM_GPU_TILED", &FORCED)
}

/// Whether kernels that pay on a GPU and not on a software adapter run on `client`'s device:
/// what the environment variable `var` forces (`1` or `0`, read once into `forced`), else
/// whether the device is a GPU (a software adapter is no physical device).
fn gpu_choice(client: &cubecl::client::Client, var: &str, forced: &std::sync::OnceLock<Option<bool>>) -> bool {
    let forced = forced.get_or_init(|| match std::env::var(var).as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    });
    forced.unwrap_or_else(|| client.properties().identity.physical.is_some())
}

/// The longest sequence [`attention`] takes: a thread walks its query's keys one by one, with
/// no `S x S` buffer. At 4k tokens that is still 3.4x faster than burn's attention in chunks of
/// queries on lavapipe (a tiny 8-layer Qwen3: 4.0 s against 13.8 s a score, 86 dispatches
/// against 1,142, 16 MiB of GPU memory against 75); longer sequences, measured nowhere yet, go
/// to burn's.
const MAX_KEYS: usize = 16384;

/// The widest head [`attention`] takes: a thread holds its query and output (unrolled).
const MAX_HEAD_DIM: usize = 256;

/// `x`'s cubecl tensor (contiguous) where `x` is an f32 tensor on a cubecl device that
/// autodiff does not track, else `x` back.
fn take<const D: usize>(x: Tensor<D>) -> Result<CubeTensor, Tensor<D>> {
    take_as(x, &[DType::F32])
}

/// [`take`] of a tensor of one of `dtypes`.
fn take_as<const D: usize>(x: Tensor<D>, dtypes: &[DType]) -> Result<CubeTensor, Tensor<D>> {
    if x.is_autodiff() || !dtypes.contains(&x.dtype()) {
        return Err(x);
    }
    match x.clone().try_into_primitive::<Cube>() {
        Ok(t) => Ok(into_contiguous(t)),
        Err(_) => Err(x),
    }
}

/// The largest buffer `device`'s runtime allocates (`None` off a cubecl device or under
/// autodiff).
pub(crate) fn largest_buffer(device: &burn::tensor::Device) -> Option<u64> {
    Some(client_of(device)?.properties().memory.max_page_size)
}

/// `device`'s cubecl client (`None` off a cubecl device or under autodiff).
fn client_of(device: &burn::tensor::Device) -> Option<cubecl::client::Client> {
    Some(take(Tensor::<1>::empty([1], device)).ok()?.client)
}

/// The side of the cooperative matrices `device`'s f16 products run on ([`matmul_cmma_kernel`]:
/// 16 on most GPUs, 8 on lavapipe), `None` where they run without them (WGSL, a device without
/// f16 cooperative matrices, a software adapter unless `DMOERM_GPU_CMMA=1`, `DMOERM_GPU_CMMA=0`)
/// or off a cubecl device.
pub fn cooperative_matrices(device: &burn::tensor::Device) -> Option<usize> {
    cmma_f16(&client_of(device)?)
}

/// The bytes `device`'s runtime holds in its memory pools now (reserved: the pools grow to a
/// pass's peak and keep it), `None` off a cubecl device or under autodiff.
pub(crate) fn memory_reserved(device: &burn::tensor::Device) -> Option<u64> {
    let report = client_of(device)?.memory_report(cubecl::MemoryScope::Device);
    Some(report.usage().bytes_reserved)
}

/// [`take`] of two tensors, or both back.
fn take_pair<const D: usize, const E: usize>(
    a: Tensor<D>,
    b: Tensor<E>,
) -> Result<(CubeTensor, CubeTensor), (Tensor<D>, Tensor<E>)> {
    match (take(a), take(b)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err((a.map(give).unwrap_or_else(|a| a), b.map(give).unwrap_or_else(|b| b))),
    }
}

/// An element-wise kernel's output (shaped like its input) and grid: a thread per value.
struct Elementwise {
    out: CubeTensor,
    client: cubecl::client::Client,
    count: CubeCount,
    dim: CubeDim,
}

fn elementwise(like: &CubeTensor) -> Elementwise {
    let out = empty_like(like);
    let client = out.client.clone();
    let n = out.meta.shape().num_elements();
    let dim = CubeDim::new(&client, n);
    let count = calculate_cube_count_elemwise(&client, n, dim);
    Elementwise { out, client, count, dim }
}

/// The tensor of a kernel's output.
fn give<const D: usize>(t: CubeTensor) -> Tensor<D> {
    Tensor::from_primitive::<Cube>(t)
}

/// A new contiguous f32 tensor shaped like `like`, on its device.
fn empty_like(like: &CubeTensor) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), like.meta.shape().clone(), DType::F32)
}

/// The sum of each thread's `value` over the workgroup (every thread gets it). `red` holds
/// [`THREADS`] values; `CUBE_DIM` is a power of two.
#[cube]
fn cube_sum(red: &mut Shared<[f32]>, value: f32) -> f32 {
    let t = UNIT_POS as usize;
    red[t] = value;
    sync_cube();
    let mut half = CUBE_DIM as usize / 2;
    while half > 0 {
        if t < half {
            let other = red[t + half];
            red[t] += other;
        }
        sync_cube();
        half /= 2;
    }
    let total = red[0];
    sync_cube(); // every thread has read it before `red` is written again
    total
}

/// Four f32 values: one load or store, one register (WGSL's `vec4<f32>`).
type F4 = Vector<f32, Const<4>>;

/// [`matmul_kernel`]'s workgroup: 16 threads along the columns by 4 along the rows, each
/// computing 4 rows by 4 columns (a block of 16 rows by 64 columns).
const MATMUL_CUBE: (u32, u32) = (16, 4);

/// The first `F4` of each of a product tile's four rows of `a` (`k4` `F4` a row, from row
/// `base`): rows `row..row + 4`, the last row of `m` again where the tile passes it.
#[cube]
fn tile_rows(row: usize, m: usize, base: usize, k4: usize) -> Array<usize> {
    let mut rows = Array::<usize>::new(4usize);
    #[unroll]
    for r in 0..4 {
        let mut at = row + r;
        if at >= m {
            at = m - 1;
        }
        rows[r] = (base + at) * k4;
    }
    rows
}

/// One step of four `k` of a product tile: `acc[r] += a[r, 4 kk + i] * b_i`, the four `F4` of
/// `b` (four columns each) against each row's `F4` of `a`.
#[cube]
#[allow(clippy::too_many_arguments)] // the four rows of `b`
fn tile_step(acc: &mut Array<F4>, a: &[F4], rows: &Array<usize>, kk: usize, b0: F4, b1: F4, b2: F4, b3: F4) {
    #[unroll]
    for r in 0..4 {
        acc[r] = multiply_add(acc[r], a[rows[r] + kk], b0, b1, b2, b3);
    }
}

/// `acc + sum_i a_i b_i`: a row's four values of `a` times four rows of `b` (four columns
/// each), added to the row's four outputs.
#[cube]
fn multiply_add(acc: F4, a: F4, b0: F4, b1: F4, b2: F4, b3: F4) -> F4 {
    acc + b0 * F4::new(a.extract(0usize))
        + b1 * F4::new(a.extract(1usize))
        + b2 * F4::new(a.extract(2usize))
        + b3 * F4::new(a.extract(3usize))
}

/// `out[z] = a[z] b[z]`, read and written four values at a time, with the epilogue the flags
/// ask for as each value is written: `gated`, `silu(a b) * (a up)` (Llama's gated MLP: `b` its
/// gate projection, `up` its up projection); `biased`, `+ bias`; `added`, `+ residual` (the
/// layer's input, so the layer's output is written once). `a` `[Z, m, k]`, `b` and `up`
/// `[k, n]` at `z * b_batch` values (0: one `b` for all), `residual` and `out` `[Z, m, n]`,
/// row-major, `k` and `n` multiples of 4. `b` is f32 or f16 (`W`), converted to f32 as it is
/// read: the products and sums are f32 either way. Each thread keeps a 4 x 4 block of the
/// output in four `F4` registers (eight when gated); per four steps of `k` it loads four `F4`
/// of `a` (its rows, the same for the 16 threads along a workgroup's columns) and four of `b`
/// (neighbouring threads, neighbouring columns) for 64 multiply-adds. No shared memory and no
/// barriers. A partial block at the bottom reads the last row again and does not write it.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn matmul_kernel<W: Float>(
    a: &[F4],
    b: &[Vector<W, Const<4>>],
    up: &[Vector<W, Const<4>>],
    bias: &[F4],
    residual: &[F4],
    out: &mut [F4],
    m: usize,
    k: usize,
    n: usize,
    b_batch: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let z = CUBE_POS_Z as usize;
    let col = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * 4;
    let row = (CUBE_POS_Y as usize * CUBE_DIM_Y as usize + UNIT_POS_Y as usize) * 4;
    if row >= m || col >= n {
        terminate!();
    }
    // in units of F4
    let (k4, n4) = (k / 4, n / 4);
    let rows = tile_rows(row, m, z * m, k4);
    let b_at = z * b_batch / 4 + col / 4;
    let mut acc = Array::<F4>::new(4usize);
    let mut acc_up = Array::<F4>::new(4usize);
    #[unroll]
    for r in 0..4 {
        acc[r] = F4::new(0.0);
        acc_up[r] = F4::new(0.0);
    }
    for kk in 0..k4 {
        let at = b_at + 4 * kk * n4;
        float_step(&mut acc, a, &rows, kk, b, at, n4);
        if gated {
            float_step(&mut acc_up, a, &rows, kk, up, at, n4);
        }
    }
    #[unroll]
    for r in 0..4 {
        if row + r < m {
            let at = ((z * m + row + r) * n + col) / 4;
            out[at] = epilogue(acc[r], acc_up[r], bias, residual, col / 4, at, gated, biased, added);
        }
    }
}

/// [`matmul_tiled_kernel`]'s block of the output: 64 rows by 64 columns, 16 x 16 threads of
/// 4 x 4 values each, through tiles of 16 of `k`.
const TILED_BLOCK: usize = 64;
const TILED_K: usize = 16;

/// [`matmul_kernel`]'s product and epilogues with the operands staged in workgroup memory: per
/// 16 of `k`, the workgroup loads a 64 x 16 tile of `a` and a 16 x 64 tile of `b` (and of `up`
/// where `gated`), one `F4` of each per thread, coalesced, `b` as f32 (f16 converted), then
/// each thread multiplies its 4 rows of the `a` tile by its 4 columns of `b`'s
/// ([`tiled_multiply`]). Each value of `a` and `b` is read from the device's memory once per
/// block, not once per thread. Values past `m`, `k` or `n` load as zeros and are not written.
/// [`matmul_quant_tiled_kernel`] is its twin for quantised weights (each with the bindings of
/// its untiled twin: WebGPU's default limit is 8 storage buffers a launch).
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn matmul_tiled_kernel<W: Float>(
    a: &[F4],
    b: &[Vector<W, Const<4>>],
    up: &[Vector<W, Const<4>>],
    bias: &[F4],
    residual: &[F4],
    out: &mut [F4],
    m: usize,
    k: usize,
    n: usize,
    b_batch: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let z = CUBE_POS_Z as usize;
    let t = UNIT_POS as usize;
    let mut tiles = TiledTiles::new(gated);
    let mut acc = TiledAcc::new();
    let row0 = CUBE_POS_Y as usize * TILED_BLOCK;
    let col0 = CUBE_POS_X as usize * TILED_BLOCK;
    let (k4, n4) = (k / 4, n / 4);
    // what this thread loads of `b`: F4 `t % 16` of the tile's row `t / 16`
    let b_col = col0 / 4 + t % 16;
    let b_at = z * b_batch / 4 + b_col;
    let a_at = tiled_a_at(z, m, k4, row0, t);
    let mut step = 0usize;
    while step * TILED_K < k {
        tiled_load_a(&mut tiles, a, a_at, step, k4, t);
        let kr = step * TILED_K + t / 16;
        let mut bv = F4::new(0.0);
        let mut uv = F4::new(0.0);
        if kr < k && b_col < n4 {
            bv = F4::cast_from(b[b_at + kr * n4]);
            if gated {
                uv = F4::cast_from(up[b_at + kr * n4]);
            }
        }
        tiled_multiply(&mut tiles, &mut acc, bv, uv, gated);
        step += 1;
    }
    tiled_write(out, &acc, bias, residual, z, m, n, row0, col0, gated, biased, added);
}

/// [`matmul_tiled_kernel`] for a quantised weight ([`matmul_quant_kernel`]'s operands and
/// layouts): the tiles of the weight (and of `up`) hold its codes times their scales, as f32.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn matmul_quant_tiled_kernel(
    a: &[F4],
    codes: &[u32],
    scales: &[F4],
    up_codes: &[u32],
    up_scales: &[F4],
    bias: &[F4],
    residual: &[F4],
    out: &mut [F4],
    m: usize,
    k: usize,
    n: usize,
    #[comptime] q4: bool,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let t = UNIT_POS as usize;
    let mut tiles = TiledTiles::new(gated);
    let mut acc = TiledAcc::new();
    let row0 = CUBE_POS_Y as usize * TILED_BLOCK;
    let col0 = CUBE_POS_X as usize * TILED_BLOCK;
    let (k4, n4) = (k / 4, n / 4);
    let c = col0 / 4 + t % 16;
    let a_at = tiled_a_at(0, m, k4, row0, t);
    let mut step = 0usize;
    while step * TILED_K < k {
        tiled_load_a(&mut tiles, a, a_at, step, k4, t);
        let kr = step * TILED_K + t / 16;
        let mut bv = F4::new(0.0);
        let mut uv = F4::new(0.0);
        if kr < k && c < n4 {
            bv = quant_row(codes, scales, kr, c, n4, q4);
            if gated {
                uv = quant_row(up_codes, up_scales, kr, c, n4, q4);
            }
        }
        tiled_multiply(&mut tiles, &mut acc, bv, uv, gated);
        step += 1;
    }
    tiled_write(out, &acc, bias, residual, 0, m, n, row0, col0, gated, biased, added);
}

/// [`matmul_kernel`]'s product and epilogues for any sizes, a thread per output value, each
/// sum over `k` in f32: the products whose `k` or `n` is not a multiple of 4 (reward and
/// classifier heads, the aggregator's output). They are small, and burn's matmul, which would
/// take them otherwise, multiplies f32 operands as f16 on a device with cooperative matrices.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn matmul_any_kernel<W: Float>(
    a: &[f32],
    b: &[W],
    up: &[W],
    bias: &[f32],
    residual: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    b_batch: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let (z, row, col) = (i / (m * n), (i / n) % m, i % n);
    let (a_at, b_at) = ((z * m + row) * k, z * b_batch + col);
    let mut y = 0.0f32;
    let mut y_up = 0.0f32;
    for kk in 0..k {
        let x = a[a_at + kk];
        y += x * f32::cast_from(b[b_at + kk * n]);
        if gated {
            y_up += x * f32::cast_from(up[b_at + kk * n]);
        }
    }
    out[i] = epilogue_value(y, y_up, bias, residual, col, i, gated, biased, added);
}

/// The planes (subgroups) of a workgroup of [`matmul_cmma_kernel`], and the square cooperative
/// matrices (f16 by f16 into f32) a plane holds across: its block is `4 side` square, a plane
/// multiplies `side` rows of it by all its columns.
const CMMA_PLANES: usize = 4;

/// [`matmul_kernel`]'s product and epilogues for an f16 weight on cooperative matrices (tensor
/// cores) of `side` (16 on NVIDIA's and most GPUs, 8 on lavapipe). The f32 activations `a` are
/// each split in two f16, `high + rest` (`high` the value with its mantissa cut to f16's 11
/// bits, `rest` what that leaves out, rounded to f16): `a W = high W + rest W` is two products
/// on the tensor cores, within about 2^-22 of the f32 product where one f16 would be 2^-11
/// away (the weight is f16 already; the sums are f32). Values under f16's normal range (6e-5)
/// keep f16's absolute precision there; over 65,504 they overflow, and the score is not
/// finite (an error). Per `side` of `k` the workgroup stages the two `4 side x side` tiles of
/// `a` and the weight's `side x 4 side` tile (and `up`'s) in workgroup memory; each of its four
/// planes (`UNIT_POS_Y`) multiplies its `side` rows of `a`'s tiles by the four `side x side`
/// blocks of the weight's into four f32 accumulators (and four of `up`'s). At the end a plane
/// stores each accumulator to workgroup memory and its lanes write the outputs with the
/// epilogue. Values past `m`, `k` or `n` load as zeros and are not written. The bindings are
/// [`matmul_kernel`]'s buffers, read as scalars.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn matmul_cmma_kernel(
    a: &[f32],
    b: &[half::f16],
    up: &[half::f16],
    bias: &[f32],
    residual: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    #[comptime] side: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let block = comptime!(CMMA_PLANES * side);
    let square = comptime!(side * side);
    let plane = UNIT_POS_Y as usize;
    let t = UNIT_POS as usize;
    let threads = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
    let row0 = CUBE_POS_Y as usize * block;
    let col0 = CUBE_POS_X as usize * block;
    let tile = comptime!(CMMA_PLANES * side * side);
    let mut a_tile = Shared::<[half::f16]>::new_slice(tile);
    let mut a_rest = Shared::<[half::f16]>::new_slice(tile);
    let mut b_tile = Shared::<[half::f16]>::new_slice(tile);
    let mut u_tile = Shared::<[half::f16]>::new_slice(comptime!(if gated { tile } else { 1usize }));
    let mut acc = CmmaStrip::new(side);
    let mut acc_up = CmmaStrip::new(side);
    let mut k0 = 0usize;
    while k0 < k {
        // this thread's values of the tiles: `a`'s `block` rows of `side`, the weights' `side`
        // rows of `block`
        let mut i = t;
        while i < tile {
            let (r, c) = (row0 + i / side, k0 + i % side);
            let mut v = 0.0f32;
            if r < m && c < k {
                v = a[r * k + c];
            }
            // `v` as two f16: its first 11 significant bits (the rest of the mantissa cleared:
            // exact in f16) and what they leave out (exact in f32, rounded to f16's 11 bits).
            // Not `v - f32(f16(v))`: lavapipe's compiler folds that round trip to 0.
            let high = f32::reinterpret(u32::reinterpret(v) & 0xFFFF_E000u32);
            a_tile[i] = half::f16::cast_from(high);
            a_rest[i] = half::f16::cast_from(v - high);
            let (kr, col) = (k0 + i / block, col0 + i % block);
            let mut w = half::f16::new(0.0);
            let mut u = half::f16::new(0.0);
            if kr < k && col < n {
                w = b[kr * n + col];
                if gated {
                    u = up[kr * n + col];
                }
            }
            b_tile[i] = w;
            if gated {
                u_tile[i] = u;
            }
            i += threads;
        }
        sync_cube();
        #[unroll]
        for part in 0..2usize {
            let rows = if part == 0 { &a_tile } else { &a_rest };
            let a_frag = cmma::Matrix::<half::f16>::from_slice(
                cmma::MatrixIdent::A,
                side,
                side,
                side,
                cmma::MatrixLayout::RowMajor,
                &rows[plane * square..(plane + 1) * square],
                side as u32,
            );
            acc.multiply(&a_frag, &b_tile, side);
            if gated {
                acc_up.multiply(&a_frag, &u_tile, side);
            }
        }
        sync_cube(); // every plane is done with the tiles before the next ones are loaded
        k0 += side;
    }
    let mut staged = Shared::<[f32]>::new_slice(tile);
    let mut staged_up = Shared::<[f32]>::new_slice(comptime!(if gated { tile } else { 1usize }));
    let at = plane * square;
    #[unroll]
    for j in 0..CMMA_PLANES {
        cmma::store(&mut staged[at..at + square], acc.block(j), side as u32, cmma::MatrixLayout::RowMajor);
        if gated {
            let up_block = acc_up.block(j);
            cmma::store(&mut staged_up[at..at + square], up_block, side as u32, cmma::MatrixLayout::RowMajor);
        }
        sync_cube();
        let mut e = UNIT_POS_X as usize;
        while e < square {
            let row = row0 + plane * side + e / side;
            let col = col0 + j * side + e % side;
            if row < m && col < n {
                let mut up_y = 0.0f32;
                if gated {
                    up_y = staged_up[at + e];
                }
                let at_out = row * n + col;
                out[at_out] = epilogue_value(staged[at + e], up_y, bias, residual, col, at_out, gated, biased, added);
            }
            e += CUBE_DIM_X as usize;
        }
        sync_cube(); // the block's values are written before the next block is stored
    }
}

/// A plane's `side x 4 side` strip of [`matmul_cmma_kernel`]'s output: four f32 accumulators.
#[derive(CubeType)]
struct CmmaStrip {
    c0: cmma::Matrix<f32>,
    c1: cmma::Matrix<f32>,
    c2: cmma::Matrix<f32>,
    c3: cmma::Matrix<f32>,
}

#[cube]
impl CmmaStrip {
    fn new(#[comptime] side: usize) -> CmmaStrip {
        CmmaStrip {
            c0: cmma_accumulator(side),
            c1: cmma_accumulator(side),
            c2: cmma_accumulator(side),
            c3: cmma_accumulator(side),
        }
    }

    /// Adds `a` (`side x side`) times each of the four `side x side` blocks of `tile` (`side`
    /// rows of `4 side`).
    fn multiply(&mut self, a: &cmma::Matrix<half::f16>, tile: &Shared<[half::f16]>, #[comptime] side: usize) {
        cmma_multiply(a, tile, 0usize, side, &self.c0);
        cmma_multiply(a, tile, 1usize, side, &self.c1);
        cmma_multiply(a, tile, 2usize, side, &self.c2);
        cmma_multiply(a, tile, 3usize, side, &self.c3);
    }

    fn block(&self, #[comptime] j: usize) -> &cmma::Matrix<f32> {
        match j {
            0 => &self.c0,
            1 => &self.c1,
            2 => &self.c2,
            _ => &self.c3,
        }
    }
}

#[cube]
fn cmma_accumulator(#[comptime] side: usize) -> cmma::Matrix<f32> {
    cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        side,
        side,
        side,
        cmma::MatrixLayout::Undefined,
        0.0,
    )
}

/// `acc += a b_j`, `b_j` the `j`-th `side x side` block of `tile` (`side` rows of `4 side`).
#[cube]
fn cmma_multiply(
    a: &cmma::Matrix<half::f16>,
    tile: &Shared<[half::f16]>,
    #[comptime] j: usize,
    #[comptime] side: usize,
    acc: &cmma::Matrix<f32>,
) {
    let start = comptime!(j * side);
    let end = comptime!(j * side + (side - 1) * CMMA_PLANES * side + side);
    let b_frag = cmma::Matrix::<half::f16>::from_slice(
        cmma::MatrixIdent::B,
        side,
        side,
        side,
        cmma::MatrixLayout::RowMajor,
        &tile[start..end],
        (CMMA_PLANES * side) as u32,
    );
    cmma::execute(a, &b_frag, acc, acc);
}

/// Row `kr` of a quantised weight at the `F4` of columns `c`, as f32: its codes times their
/// scales ([`matmul_quant_kernel`]'s layouts).
#[cube]
fn quant_row(codes: &[u32], scales: &[F4], kr: usize, c: usize, n4: usize, #[comptime] q4: bool) -> F4 {
    if q4 {
        let shift = (kr % 2) as u32 * 4u32;
        q4_codes(codes[(kr / 2) * n4 + c], shift) * scales[(kr / Q4_BLOCK) * n4 + c]
    } else {
        int8_codes(codes[kr * n4 + c]) * scales[c]
    }
}

/// The tiled products' tiles in workgroup memory: `a`'s, 64 rows of 4 `F4` (16 of `k`); the
/// weight's and `up`'s, 16 rows of 16 `F4`.
#[derive(CubeType)]
struct TiledTiles {
    a: Shared<[F4]>,
    b: Shared<[F4]>,
    up: Shared<[F4]>,
}

#[cube]
impl TiledTiles {
    fn new(#[comptime] gated: bool) -> TiledTiles {
        let up_size = comptime!(if gated { TILED_K * TILED_BLOCK / 4 } else { 1usize });
        TiledTiles {
            a: Shared::<[F4]>::new_slice(comptime!(TILED_BLOCK * TILED_K / 4)),
            b: Shared::<[F4]>::new_slice(comptime!(TILED_K * TILED_BLOCK / 4)),
            up: Shared::<[F4]>::new_slice(up_size),
        }
    }
}

/// A tiled product thread's 4 x 4 block of the output (and of the up projection's).
#[derive(CubeType)]
struct TiledAcc {
    y: Array<F4>,
    up: Array<F4>,
}

#[cube]
impl TiledAcc {
    fn new() -> TiledAcc {
        let mut y = Array::<F4>::new(4usize);
        let mut up = Array::<F4>::new(4usize);
        #[unroll]
        for r in 0..4usize {
            y[r] = F4::new(0.0);
            up[r] = F4::new(0.0);
        }
        TiledAcc { y, up }
    }
}

/// Where thread `t` loads its `F4` of each tile of `a` (`k4` `F4` a row): F4 `t % 4` of the
/// block's row `t / 4` (the last row of `m` again past it).
#[cube]
fn tiled_a_at(z: usize, m: usize, k4: usize, row0: usize, t: usize) -> usize {
    let mut row = row0 + t / 4;
    if row >= m {
        row = m - 1;
    }
    (z * m + row) * k4 + t % 4
}

/// Thread `t`'s `F4` of the tile of `a` at `step` (zeros past `k`).
#[cube]
fn tiled_load_a(tiles: &mut TiledTiles, a: &[F4], a_at: usize, step: usize, k4: usize, t: usize) {
    let mut av = F4::new(0.0);
    if step * 4 + t % 4 < k4 {
        av = a[a_at + step * 4];
    }
    tiles.a[t] = av;
}

/// Stores this thread's `F4` of the weight's tile (`b`) and of `up`'s, waits for the
/// workgroup's, adds the products of the thread's 4 rows of `a`'s tile and its 4 columns of
/// the weight's to its block, and waits until every thread is done with the tiles.
#[cube]
fn tiled_multiply(tiles: &mut TiledTiles, acc: &mut TiledAcc, b: F4, up: F4, #[comptime] gated: bool) {
    let t = UNIT_POS as usize;
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    tiles.b[t] = b;
    if gated {
        tiles.up[t] = up;
    }
    sync_cube();
    #[unroll]
    for q in 0..4usize {
        let at = 4 * q * 16 + tx;
        let b0 = tiles.b[at];
        let b1 = tiles.b[at + 16];
        let b2 = tiles.b[at + 32];
        let b3 = tiles.b[at + 48];
        #[unroll]
        for r in 0..4usize {
            acc.y[r] = multiply_add(acc.y[r], tiles.a[(ty * 4 + r) * 4 + q], b0, b1, b2, b3);
        }
        if gated {
            let u0 = tiles.up[at];
            let u1 = tiles.up[at + 16];
            let u2 = tiles.up[at + 32];
            let u3 = tiles.up[at + 48];
            #[unroll]
            for r in 0..4usize {
                acc.up[r] = multiply_add(acc.up[r], tiles.a[(ty * 4 + r) * 4 + q], u0, u1, u2, u3);
            }
        }
    }
    sync_cube(); // every thread is done with the tiles before the next ones are loaded
}

/// Writes a tiled product thread's block of the output `[z, m, n]` with the epilogue.
#[cube]
#[allow(clippy::too_many_arguments)] // the block, its place and the epilogue's operands
fn tiled_write(
    out: &mut [F4],
    acc: &TiledAcc,
    bias: &[F4],
    residual: &[F4],
    z: usize,
    m: usize,
    n: usize,
    row0: usize,
    col0: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let col = col0 + UNIT_POS_X as usize * 4;
    #[unroll]
    for r in 0..4usize {
        let row = row0 + UNIT_POS_Y as usize * 4 + r;
        if row < m && col < n {
            let at = ((z * m + row) * n + col) / 4;
            out[at] = epilogue(acc.y[r], acc.up[r], bias, residual, col / 4, at, gated, biased, added);
        }
    }
}

/// One step of four `k` of a product tile ([`tile_step`] on the four rows of `b` from `at`,
/// `n4` `F4` apart, read as f32).
#[cube]
#[allow(clippy::too_many_arguments)] // the tile's operands
fn float_step<W: Float>(
    acc: &mut Array<F4>,
    a: &[F4],
    rows: &Array<usize>,
    kk: usize,
    b: &[Vector<W, Const<4>>],
    at: usize,
    n4: usize,
) {
    let b0 = F4::cast_from(b[at]);
    let b1 = F4::cast_from(b[at + n4]);
    let b2 = F4::cast_from(b[at + 2 * n4]);
    let b3 = F4::cast_from(b[at + 3 * n4]);
    tile_step(acc, a, rows, kk, b0, b1, b2, b3);
}

/// A product kernel's output block of four values as it is written: `silu(y) * up_y` where
/// `gated`, then `+ bias[c]` where `biased`, then `+ residual[at]` where `added`.
#[cube]
#[allow(clippy::too_many_arguments)] // the epilogue's operands and flags
fn epilogue(
    y: F4,
    up_y: F4,
    bias: &[F4],
    residual: &[F4],
    c: usize,
    at: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) -> F4 {
    let mut v = y;
    if gated {
        v = v / (F4::new(1.0) + (-v).exp()) * up_y;
    }
    if biased {
        v += bias[c];
    }
    if added {
        v += residual[at];
    }
    v
}

/// [`epilogue`] of one value, for the kernels that write scalars.
#[cube]
#[allow(clippy::too_many_arguments)] // the epilogue's operands and flags
fn epilogue_value(
    y: f32,
    up_y: f32,
    bias: &[f32],
    residual: &[f32],
    col: usize,
    at: usize,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) -> f32 {
    let mut v = y;
    if gated {
        v = v / (1.0 + (-v).exp()) * up_y;
    }
    if biased {
        v += bias[col];
    }
    if added {
        v += residual[at];
    }
    v
}

/// The grid and the workgroup of the product kernels for an output `[z, m, n]`: a thread per
/// 4 x 4 block.
fn product_grid([z, m, n]: [usize; 3]) -> (CubeCount, CubeDim) {
    let (x, y) = MATMUL_CUBE;
    let count = CubeCount::Static(n.div_ceil(x as usize * 4) as u32, m.div_ceil(y as usize * 4) as u32, z as u32);
    (count, CubeDim::new_2d(x, y))
}

/// The grid and the workgroup of [`matmul_tiled_kernel`] for an output `[z, m, n]`.
fn tiled_grid([z, m, n]: [usize; 3]) -> (CubeCount, CubeDim) {
    let count = CubeCount::Static(n.div_ceil(TILED_BLOCK) as u32, m.div_ceil(TILED_BLOCK) as u32, z as u32);
    let side = (TILED_BLOCK / 4) as u32;
    (count, CubeDim::new_2d(side, side))
}

/// Whether the product kernels run tiled on `client`'s device ([`tiled`]), and their grid and
/// workgroup for an output `[z, m, n]`.
fn product_launch(client: &cubecl::client::Client, shape: [usize; 3]) -> (bool, CubeCount, CubeDim) {
    let tiled = tiled(client);
    let (count, dim) = if tiled { tiled_grid(shape) } else { product_grid(shape) };
    (tiled, count, dim)
}

/// Whether [`product_grid`] holds `m` output rows: at most 65,535 workgroups along them.
fn grid_holds(m: usize) -> bool {
    m.div_ceil(MATMUL_CUBE.1 as usize * 4) <= 65_535
}

/// A product kernel's optional operand (a bias, a residual, a second weight), and whether it
/// is there; else `stand_in` (an operand of the same launch, of the same element type), which
/// the kernel does not read: binding it costs no upload.
fn optional_arg(operand: Option<CubeTensor>, stand_in: &CubeTensor) -> (BufferArg, bool) {
    match operand {
        Some(t) => (t.into_buffer_arg(), true),
        None => (stand_in.clone().into_buffer_arg(), false),
    }
}

/// What a product kernel applies to its output as it writes it ([`epilogue`]): the up
/// projection of a gated MLP (`silu(x gate) * (x up)`), a bias, a residual (shaped like the
/// output).
struct Epilogue<Up> {
    up: Option<Up>,
    bias: Option<CubeTensor>,
    residual: Option<CubeTensor>,
}

impl<Up> Epilogue<Up> {
    /// The epilogue of `bias` and `residual` ([`take`]n), or `x` back where one of them is not
    /// a tensor the kernels read.
    fn take<X>(bias: Option<&Tensor<1>>, residual: Option<&Tensor<3>>, x: X) -> Result<(Self, X), X> {
        let bias = bias.map(|t| take(t.clone())).transpose();
        let residual = residual.map(|t| take(t.clone())).transpose();
        match (bias, residual) {
            (Ok(bias), Ok(residual)) => Ok((Self { up: None, bias, residual }, x)),
            _ => Err(x),
        }
    }
}

/// Launches [`matmul_kernel`] on `a` `[Z, m, k]` and `b` (`[k, n]`, or `[Z, k, n]` with
/// `batched`; f32 or f16) with `epilogue` (an `up` weight as `b`): `[Z, m, n]`.
fn launch_matmul(a: CubeTensor, b: CubeTensor, epilogue: Epilogue<CubeTensor>, batched: bool) -> CubeTensor {
    let [z, m, k] = a.meta.shape().dims::<3>();
    let n = *b.meta.shape().as_slice().last().unwrap_or(&0);
    let client = a.client.clone();
    let out = empty_device_dtype(client.clone(), a.device.clone(), [z, m, n].into(), DType::F32);
    let (up, gated) = optional_arg(epilogue.up, &b);
    let (bias, biased) = optional_arg(epilogue.bias, &a);
    let (residual, added) = optional_arg(epilogue.residual, &a);
    let vector = vector_product((m, k, n));
    if let (DType::F16, 1, true, Some(side)) = (b.dtype, z, vector, cmma_f16(&client)) {
        let (plane, block) = (client.properties().hardware.plane_size_max, CMMA_PLANES * side);
        matmul_cmma_kernel::launch(
            &client,
            CubeCount::Static(n.div_ceil(block) as u32, m.div_ceil(block) as u32, 1),
            CubeDim::new_2d(plane, CMMA_PLANES as u32),
            a.into_buffer_arg(),
            b.into_buffer_arg(),
            up,
            bias,
            residual,
            out.clone().into_buffer_arg(),
            m,
            k,
            n,
            side,
            gated,
            biased,
            added,
        );
        return out;
    }
    // four values at a time where the sizes allow, else a thread per output value
    let (launch, cube_count, cube_dim) = if vector {
        let (tiled, cube_count, cube_dim) = product_launch(&client, [z, m, n]);
        let launch = match (tiled, b.dtype) {
            (true, DType::F16) => matmul_tiled_kernel::launch::<half::f16>,
            (true, _) => matmul_tiled_kernel::launch::<f32>,
            (false, DType::F16) => matmul_kernel::launch::<half::f16>,
            (false, _) => matmul_kernel::launch::<f32>,
        };
        (launch, cube_count, cube_dim)
    } else {
        let count = z * m * n;
        let cube_dim = CubeDim::new(&client, count);
        let launch = match b.dtype {
            DType::F16 => matmul_any_kernel::launch::<half::f16>,
            _ => matmul_any_kernel::launch::<f32>,
        };
        (launch, calculate_cube_count_elemwise(&client, count, cube_dim), cube_dim)
    };
    launch(
        &client,
        cube_count,
        cube_dim,
        a.into_buffer_arg(),
        b.into_buffer_arg(),
        up,
        bias,
        residual,
        out.clone().into_buffer_arg(),
        m,
        k,
        n,
        if batched { k * n } else { 0 },
        gated,
        biased,
        added,
    );
    out
}

/// The side of the cooperative matrices f16 products run on ([`matmul_cmma_kernel`]), `None`
/// where they do not: the device reports square f16 x f16 -> f32 ones of 16 or 8 (Vulkan with
/// CubeCL's SPIR-V compiler: dmoerm's `vulkan` feature) and has one plane size (a workgroup is
/// four planes), and it is a GPU: a software adapter emulates them slower than it runs the f32
/// products (lavapipe: 6 GFLOP/s against 24). `DMOERM_GPU_CMMA=1` or `0` overrides that choice
/// (to test them on lavapipe, `scripts/cmma-check.sh`, and to time both on one device,
/// `scripts/gpu-check.sh`).
fn cmma_f16(client: &cubecl::client::Client) -> Option<usize> {
    use cubecl::ir::{features::MmaConfig, ElemType, FloatKind};
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let props = client.properties();
    if !gpu_choice(client, "DMOERM_GPU_CMMA", &FORCED) || props.hardware.plane_size_min != props.hardware.plane_size_max
    {
        return None;
    }
    let (f16, f32) = (ElemType::Float(FloatKind::F16), ElemType::Float(FloatKind::F32));
    let square = |side: u32| MmaConfig { a_type: f16, b_type: f16, cd_type: f32, m: side, k: side, n: side };
    [16, 8].into_iter().find(|&side| props.features.matmul.cmma.contains(&square(side))).map(|side| side as usize)
}

/// Whether [`matmul_kernel`] (and its tiled and cooperative-matrix twins) takes a product of
/// `m x k` by `k x n`: `k` and `n` multiples of 4 (it reads four values at a time) and rows
/// within the grid's 65,535 blocks; [`matmul_any_kernel`] takes the others.
fn vector_product((m, k, n): (usize, usize, usize)) -> bool {
    k.is_multiple_of(4) && n.is_multiple_of(4) && grid_holds(m)
}

/// `x W + b (+ residual)` (a linear layer, `W` `[in, out]`, f32 or f16) in one launch, the
/// bias and the residual added as the product is written; `x` back where the fast path does
/// not apply (a quantised `W`, or not on a GPU).
///
/// # Shapes
/// - x: `[B, S, in]`, weight: `[in, out]`, bias: `[out]`, residual and output: `[B, S, out]`
pub fn linear(
    x: Tensor<3>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    residual: Option<&Tensor<3>>,
) -> Result<Tensor<3>, Tensor<3>> {
    let [b, s, d_in] = x.dims();
    let [w_in, d_out] = weight.dims();
    if w_in != d_in
        || bias.is_some_and(|bias| bias.dims() != [d_out])
        || residual.is_some_and(|r| r.dims() != [b, s, d_out])
        || b * s * d_in * d_out == 0
    {
        return Err(x);
    }
    let x = take(x)?;
    let Ok(w) = take_as(weight.clone(), &[DType::F32, DType::F16]) else { return Err(give(x)) };
    let (epilogue, x) = Epilogue::take(bias, residual, x).map_err(give)?;
    let x = reshape(x, [1, b * s, d_in]);
    Ok(give(reshape(launch_matmul(x, w, epilogue, false), [b, s, d_out])))
}

/// `silu(x G) * (x U)` (Llama's gated MLP before its down projection; `G` and `U` `[in, out]`,
/// f32 or f16, of one dtype) in one launch; `x` back where the fast path does not apply.
///
/// # Shapes
/// - x: `[B, S, in]`, gate and up: `[in, out]`, output: `[B, S, out]`
pub fn gated(x: Tensor<3>, gate: &Tensor<2>, up: &Tensor<2>) -> Result<Tensor<3>, Tensor<3>> {
    let [b, s, d_in] = x.dims();
    let [w_in, d_out] = gate.dims();
    if w_in != d_in || up.dims() != gate.dims() || up.dtype() != gate.dtype() || b * s * d_in * d_out == 0 {
        return Err(x);
    }
    let x = take(x)?;
    let weights = [gate, up].map(|w| take_as(w.clone(), &[DType::F32, DType::F16]));
    let [Ok(g), Ok(u)] = weights else { return Err(give(x)) };
    let x = reshape(x, [1, b * s, d_in]);
    let epilogue = Epilogue { up: Some(u), bias: None, residual: None };
    Ok(give(reshape(launch_matmul(x, g, epilogue, false), [b, s, d_out])))
}

/// Four int8 codes of a u32, stored `q + 128` from the lowest byte up, as the `F4` of `q`.
#[cube]
fn int8_codes(w: u32) -> F4 {
    let mut v = F4::new(0.0);
    v.insert(0usize, f32::cast_from(w & 255u32));
    v.insert(1usize, f32::cast_from((w >> 8u32) & 255u32));
    v.insert(2usize, f32::cast_from((w >> 16u32) & 255u32));
    v.insert(3usize, f32::cast_from(w >> 24u32));
    v - F4::new(128.0)
}

/// Four 4-bit codes of a u32, stored `q + 8` in the nibbles at `shift` of its four bytes
/// (0: the low nibbles, 4: the high ones), as the `F4` of `q`.
#[cube]
fn q4_codes(w: u32, shift: u32) -> F4 {
    let mut v = F4::new(0.0);
    v.insert(0usize, f32::cast_from((w >> shift) & 15u32));
    v.insert(1usize, f32::cast_from((w >> (shift + 8u32)) & 15u32));
    v.insert(2usize, f32::cast_from((w >> (shift + 16u32)) & 15u32));
    v.insert(3usize, f32::cast_from((w >> (shift + 24u32)) & 15u32));
    v - F4::new(8.0)
}

/// Inputs per scale of a 4-bit weight (`dmoerm_quant::Q4_BLOCK`): 16 steps of 4 of `k`.
const Q4_BLOCK: usize = 64;

/// `out = a W` for a quantised weight, with [`matmul_kernel`]'s epilogues (`gated`: `W` the
/// gate projection, `up_codes` and `up_scales` the up projection, quantised alike): int8
/// (`codes` `[k, n / 4]`, each u32 four outputs' codes of one input, [`int8_codes`]; `scales`
/// `[1, n]`, one per output) or 4-bit (`q4`: `codes` `[k / 2, n / 4]`, each u32 four outputs'
/// codes of two inputs, [`q4_codes`]; `scales` `[k / 64, n]`, one per block of 64 inputs and
/// output); `a` `[m, k]`, `residual` and `out` `[m, n]`. [`matmul_kernel`]'s tiles (a thread's
/// 4 x 4 block of the output, per four steps of `k` four `F4` of `a` and the codes of four rows
/// of `W`, for 64 multiply-adds), the codes turned into f32 as they are read; the products of
/// a block of inputs (all of them for int8) are summed, then scaled. A quarter (an eighth) of
/// f32's bytes to read.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn matmul_quant_kernel(
    a: &[F4],
    codes: &[u32],
    scales: &[F4],
    up_codes: &[u32],
    up_scales: &[F4],
    bias: &[F4],
    residual: &[F4],
    out: &mut [F4],
    m: usize,
    k: usize,
    n: usize,
    #[comptime] q4: bool,
    #[comptime] gated: bool,
    #[comptime] biased: bool,
    #[comptime] added: bool,
) {
    let col = (CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize) * 4;
    let row = (CUBE_POS_Y as usize * CUBE_DIM_Y as usize + UNIT_POS_Y as usize) * 4;
    if row >= m || col >= n {
        terminate!();
    }
    let (k4, n4) = (k / 4, n / 4);
    let rows = tile_rows(row, m, 0, k4);
    let c = col / 4;
    // steps of 4 inputs per scale: a q4 block's, or every input of an int8 weight
    let mut per_scale = k4;
    if q4 {
        per_scale = Q4_BLOCK / 4;
    }
    let mut acc = Array::<F4>::new(4usize);
    let mut acc_up = Array::<F4>::new(4usize);
    let mut part = Array::<F4>::new(4usize);
    let mut part_up = Array::<F4>::new(4usize);
    #[unroll]
    for r in 0..4 {
        acc[r] = F4::new(0.0);
        acc_up[r] = F4::new(0.0);
    }
    for blk in 0..k4 / per_scale {
        #[unroll]
        for r in 0..4 {
            part[r] = F4::new(0.0);
            part_up[r] = F4::new(0.0);
        }
        for kk in blk * per_scale..(blk + 1) * per_scale {
            quant_step(&mut part, a, &rows, codes, c, kk, n4, q4);
            if gated {
                quant_step(&mut part_up, a, &rows, up_codes, c, kk, n4, q4);
            }
        }
        let scale = scales[blk * n4 + c];
        #[unroll]
        for r in 0..4 {
            acc[r] += part[r] * scale;
        }
        if gated {
            let up_scale = up_scales[blk * n4 + c];
            #[unroll]
            for r in 0..4 {
                acc_up[r] += part_up[r] * up_scale;
            }
        }
    }
    #[unroll]
    for r in 0..4 {
        if row + r < m {
            let at = ((row + r) * n + col) / 4;
            out[at] = epilogue(acc[r], acc_up[r], bias, residual, c, at, gated, biased, added);
        }
    }
}

/// One step of four `k` of a quantised product tile ([`tile_step`] on the four rows of `W`
/// at `kk`, their codes at column `c` of `codes` read as f32).
#[cube]
#[allow(clippy::too_many_arguments)] // the tile's operands
fn quant_step(
    acc: &mut Array<F4>,
    a: &[F4],
    rows: &Array<usize>,
    codes: &[u32],
    c: usize,
    kk: usize,
    n4: usize,
    #[comptime] q4: bool,
) {
    let (b0, b1, b2, b3) = if q4 {
        let w0 = codes[c + (2 * kk) * n4];
        let w1 = codes[c + (2 * kk + 1) * n4];
        (q4_codes(w0, 0u32), q4_codes(w0, 4u32), q4_codes(w1, 0u32), q4_codes(w1, 4u32))
    } else {
        (
            int8_codes(codes[c + (4 * kk) * n4]),
            int8_codes(codes[c + (4 * kk + 1) * n4]),
            int8_codes(codes[c + (4 * kk + 2) * n4]),
            int8_codes(codes[c + (4 * kk + 3) * n4]),
        )
    };
    tile_step(acc, a, rows, kk, b0, b1, b2, b3);
}

/// A quantised weight `[out, in]` (PyTorch's layout) as [`linear_quant`] reads it: its codes
/// and scales, each a tensor's bits and values on the device.
#[derive(Debug, Clone)]
pub struct QuantWeight {
    /// int8: `[in, out / 4]`, four outputs' codes of one input in the bytes of a u32 (`q + 128`,
    /// the first output in the lowest byte); 4-bit: `[in / 2, out / 4]`, four outputs' codes of
    /// inputs `2 p` and `2 p + 1` in the low and high nibbles of its four bytes (`q + 8`). Held
    /// in an i32 tensor's bits.
    pub codes: Tensor<2, burn::tensor::Int>,
    /// `[1, out]` (int8) or `[in / 64, out]` (4-bit).
    pub scales: Tensor<2>,
    /// 4-bit codes.
    pub q4: bool,
}

impl QuantWeight {
    /// `weight` laid out on `device`; `None` unless `out` and `in` are multiples of 4 (and of
    /// 64 for `in` of a 4-bit weight, which its blocks already are).
    pub fn new(weight: &crate::quant::QuantMatrix, device: &burn::tensor::Device) -> Option<Self> {
        use crate::quant::QuantMatrix;
        let (out, inp) = weight.dims();
        if !out.is_multiple_of(4) || !inp.is_multiple_of(4) || out * inp == 0 {
            return None;
        }
        let quarters = out / 4;
        let (codes, rows, scales, blocks, q4): (Vec<i32>, usize, Vec<f32>, usize, bool) = match weight {
            QuantMatrix::Int8(m) => {
                let q = m.codes();
                let byte = |o: usize, k: usize| u32::from((i16::from(q[o * inp + k]) + 128) as u8);
                let codes = (0..inp)
                    .flat_map(|k| {
                        (0..quarters).map(move |c| (0..4).fold(0u32, |w, j| w | byte(4 * c + j, k) << (8 * j)) as i32)
                    })
                    .collect();
                (codes, inp, m.scales().to_vec(), 1, false)
            }
            QuantMatrix::Q4(m) => {
                if !inp.is_multiple_of(Q4_BLOCK) {
                    return None;
                }
                // the bundle's byte `k / 2` of row `o` holds `q + 8` of inputs `k` (low nibble)
                // and `k + 1` (high)
                let b = m.codes();
                let pair = |o: usize, p: usize| u32::from(b[o * inp / 2 + p]);
                let codes = (0..inp / 2)
                    .flat_map(|p| {
                        (0..quarters).map(move |c| (0..4).fold(0u32, |w, j| w | pair(4 * c + j, p) << (8 * j)) as i32)
                    })
                    .collect();
                // [out, in / 64] -> [in / 64, out]
                let blocks = inp / Q4_BLOCK;
                let s = m.scales();
                let scales = (0..blocks).flat_map(|blk| (0..out).map(move |o| s[o * blocks + blk])).collect();
                (codes, inp / 2, scales, blocks, true)
            }
        };
        Some(Self {
            codes: Tensor::from_data(TensorData::new(codes, [rows, quarters]), device),
            scales: Tensor::from_data(TensorData::new(scales, [blocks, out]), device),
            q4,
        })
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        let [rows, quarters] = self.codes.dims();
        (if self.q4 { 2 * rows } else { rows }, 4 * quarters)
    }

    /// The f32 weight `[in, out]`, made with burn's ops: the product for burn where the kernel
    /// does not apply.
    pub fn dequantized(&self) -> Tensor<2> {
        let (d_in, d_out) = self.dims();
        let [rows, quarters] = self.codes.dims();
        // output 4 c + j is byte j of column c: `q + 128`, or two nibbles `q + 8` (inputs 2 p
        // in the low one, 2 p + 1 in the high one)
        let (bits, mask, offset) = if self.q4 { (4, 15, 8.0) } else { (8, 255, 128.0) };
        let fields = if self.q4 { 2 } else { 1 };
        let parts = (0..fields)
            .map(|f: i32| {
                let bytes = (0..4)
                    .map(|j: i32| {
                        let w = self.codes.clone().bitwise_right_shift_scalar(8 * j + bits * f);
                        w.bitwise_and_scalar(mask).unsqueeze_dim::<3>(2)
                    })
                    .collect();
                Tensor::cat(bytes, 2).reshape([rows, 4 * quarters]).unsqueeze_dim::<3>(1)
            })
            .collect();
        let q = Tensor::cat(parts, 1).reshape([d_in, d_out]).float().sub_scalar(offset);
        let per = d_in / self.scales.dims()[0];
        let scales = self.scales.clone().unsqueeze_dim::<3>(1).repeat_dim(1, per).reshape([d_in, d_out]);
        q * scales
    }
}

/// `x W + b (+ residual)` for a quantised weight ([`QuantWeight`]) in one launch, its codes
/// read as f32 in the kernel; `x` back where it does not apply (not on a GPU, or more rows
/// than the grid holds).
///
/// # Shapes
/// - x: `[B, S, in]`, bias: `[out]`, residual and output: `[B, S, out]`
pub fn linear_quant(
    x: Tensor<3>,
    w: &QuantWeight,
    bias: Option<&Tensor<1>>,
    residual: Option<&Tensor<3>>,
) -> Result<Tensor<3>, Tensor<3>> {
    let [b, s, d_in] = x.dims();
    let (w_in, d_out) = w.dims();
    if w_in != d_in
        || bias.is_some_and(|bias| bias.dims() != [d_out])
        || residual.is_some_and(|r| r.dims() != [b, s, d_out])
        || b * s * d_in * d_out == 0
        || !grid_holds(b * s)
    {
        return Err(x);
    }
    let x = take(x)?;
    let (epilogue, x) = Epilogue::take(bias, residual, x).map_err(give)?;
    launch_quant(x, w, epilogue)
}

/// `silu(x G) * (x U)` for the quantised gate and up projections of a gated MLP (of one kind,
/// int8 or q4) in one launch; `x` back where it does not apply.
///
/// # Shapes
/// - x: `[B, S, in]`, output: `[B, S, out]`
pub fn gated_quant(x: Tensor<3>, gate: &QuantWeight, up: &QuantWeight) -> Result<Tensor<3>, Tensor<3>> {
    let [b, s, d_in] = x.dims();
    let (w_in, d_out) = gate.dims();
    if w_in != d_in || up.dims() != gate.dims() || up.q4 != gate.q4 || b * s * d_in * d_out == 0 || !grid_holds(b * s) {
        return Err(x);
    }
    let x = take(x)?;
    let epilogue = Epilogue { up: Some(up), bias: None, residual: None };
    launch_quant(x, gate, epilogue)
}

/// Launches [`matmul_quant_kernel`] on `x` `[B, S, in]` (taken) and `w`: `[B, S, out]`.
fn launch_quant(x: CubeTensor, w: &QuantWeight, epilogue: Epilogue<&QuantWeight>) -> Result<Tensor<3>, Tensor<3>> {
    let [b, s, d_in] = x.meta.shape().dims::<3>();
    let d_out = w.dims().1;
    let operands = |w: &QuantWeight| {
        let codes = w.codes.clone().try_into_primitive::<Cube>().map(into_contiguous).ok()?;
        Some((codes, take(w.scales.clone()).ok()?))
    };
    let Some((codes, scales)) = operands(w) else { return Err(give(x)) };
    let up = match epilogue.up.map(operands) {
        Some(None) => return Err(give(x)),
        up => up.flatten(),
    };
    let m = b * s;
    let client = x.client.clone();
    let out = empty_device_dtype(client.clone(), x.device.clone(), [b, s, d_out].into(), DType::F32);
    let (up_codes, gated) = optional_arg(up.as_ref().map(|(codes, _)| codes.clone()), &codes);
    let (up_scales, _) = optional_arg(up.map(|(_, scales)| scales), &scales);
    let (bias, biased) = optional_arg(epilogue.bias, &x);
    let (residual, added) = optional_arg(epilogue.residual, &x);
    let (tiled, cube_count, cube_dim) = product_launch(&client, [1, m, d_out]);
    let launch = match tiled {
        true => matmul_quant_tiled_kernel::launch,
        false => matmul_quant_kernel::launch,
    };
    launch(
        &client,
        cube_count,
        cube_dim,
        x.into_buffer_arg(),
        codes.into_buffer_arg(),
        scales.into_buffer_arg(),
        up_codes,
        up_scales,
        bias,
        residual,
        out.clone().into_buffer_arg(),
        m,
        d_in,
        d_out,
        w.q4,
        gated,
        biased,
        added,
    );
    Ok(give(out))
}

/// The batched product `a b` in one launch; `(a, b)` back where the fast path does not apply.
///
/// # Shapes
/// - a: `[Z, m, k]`, b: `[Z, k, n]`, output: `[Z, m, n]`
pub fn matmul(a: Tensor<3>, b: Tensor<3>) -> Result<Tensor<3>, (Tensor<3>, Tensor<3>)> {
    let ([z, m, k], [zb, kb, n]) = (a.dims(), b.dims());
    if z != zb || k != kb || z * m * k * n == 0 || z > 65_535 {
        return Err((a, b));
    }
    let (a, b) = take_pair(a, b)?;
    Ok(give(launch_matmul(a, b, Epilogue { up: None, bias: None, residual: None }, true)))
}

/// A contiguous tensor with a new shape of as many values (metadata only).
fn reshape<const D: usize>(t: CubeTensor, shape: [usize; D]) -> CubeTensor {
    let client = t.client.clone();
    CubeTensor::new_contiguous(client, t.device.clone(), shape.into(), t.handle, t.dtype)
}

/// `LayerNorm(a + b)` over rows of `dim`, one workgroup per row (rows numbered across the
/// x and y of the grid). Mean and variance as PyTorch takes them: the mean, then the mean of
/// the squared deviations (biased).
#[cube(launch)]
fn layer_norm_sum_kernel(a: &[f32], b: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32], dim: usize, eps: f32) {
    let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    if row * dim >= out.len() {
        terminate!(); // the whole workgroup: its threads share the row
    }
    let base = row * dim;
    let t = UNIT_POS as usize;
    let step = CUBE_DIM as usize;
    let mut red = Shared::new_slice(THREADS);
    let n = f32::cast_from(dim as u32);

    let mut sum = 0.0f32;
    let mut i = t;
    while i < dim {
        sum += a[base + i] + b[base + i];
        i += step;
    }
    let mean = cube_sum(&mut red, sum) / n;

    let mut squares = 0.0f32;
    let mut i = t;
    while i < dim {
        let d = a[base + i] + b[base + i] - mean;
        squares += d * d;
        i += step;
    }
    let inv = 1.0f32 / (cube_sum(&mut red, squares) / n + eps).sqrt();

    let mut i = t;
    while i < dim {
        out[base + i] = (a[base + i] + b[base + i] - mean) * inv * weight[i] + bias[i];
        i += step;
    }
}

/// `LayerNorm(a + b)` over the last dimension with `weight` and `bias` (`[dim]` each), one
/// launch; `(a, b)` back where the fast path does not apply.
///
/// # Shapes
/// - a, b: `[..., dim]`, output: `[..., dim]`
pub fn layer_norm_sum<const D: usize>(
    a: Tensor<D>,
    b: Tensor<D>,
    weight: &Tensor<1>,
    bias: &Tensor<1>,
    eps: f64,
) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
    let dim = a.dims()[D - 1];
    if a.dims() != b.dims() || weight.dims() != [dim] || bias.dims() != [dim] || dim == 0 {
        return Err((a, b));
    }
    let (a, b) = take_pair(a, b)?;
    let Ok((w, bias)) = take_pair(weight.clone(), bias.clone()) else {
        return Err((give(a), give(b)));
    };
    let out = empty_like(&a);
    let rows = out.meta.shape().num_elements() / dim;
    let client = out.client.clone();
    let cube_count = rows_grid(rows);
    layer_norm_sum_kernel::launch(
        &client,
        cube_count,
        CubeDim::new_1d(THREADS as u32),
        a.into_buffer_arg(),
        b.into_buffer_arg(),
        w.into_buffer_arg(),
        bias.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        dim,
        eps as f32,
    );
    Ok(give(out))
}

/// RMSNorm over rows of `dim`, `x / sqrt(mean(x^2) + eps) * weight`, one workgroup per row.
#[cube(launch)]
fn rms_norm_kernel(x: &[f32], weight: &[f32], out: &mut [f32], dim: usize, eps: f32) {
    let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    if row * dim >= out.len() {
        terminate!();
    }
    let base = row * dim;
    let t = UNIT_POS as usize;
    let step = CUBE_DIM as usize;
    let mut red = Shared::new_slice(THREADS);
    let mut squares = 0.0f32;
    let mut i = t;
    while i < dim {
        let v = x[base + i];
        squares += v * v;
        i += step;
    }
    let rms = (cube_sum(&mut red, squares) / f32::cast_from(dim as u32) + eps).sqrt();
    let mut i = t;
    while i < dim {
        out[base + i] = x[base + i] / rms * weight[i];
        i += step;
    }
}

/// RMSNorm over the last dimension (HF Llama) in one launch; `x` back where the fast path
/// does not apply.
///
/// # Shapes
/// - x: `[..., dim]`, weight: `[dim]`, output: `[..., dim]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Result<Tensor<D>, Tensor<D>> {
    let dim = x.dims()[D - 1];
    if weight.dims() != [dim] || dim == 0 {
        return Err(x);
    }
    let x = take(x)?;
    let Ok(w) = take(weight.clone()) else { return Err(give(x)) };
    let out = empty_like(&x);
    let rows = out.meta.shape().num_elements() / dim;
    let client = out.client.clone();
    rms_norm_kernel::launch(
        &client,
        rows_grid(rows),
        CubeDim::new_1d(THREADS as u32),
        x.into_buffer_arg(),
        w.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        dim,
        eps as f32,
    );
    Ok(give(out))
}

/// A grid of at least `rows` workgroups within WebGPU's 65,535 per dimension (x, then y).
fn rows_grid(rows: usize) -> CubeCount {
    const MAX: usize = 65_535;
    let x = rows.clamp(1, MAX);
    CubeCount::Static(x as u32, rows.div_ceil(x).max(1) as u32, 1)
}

/// GELU, erf form, element-wise.
#[cube(launch)]
fn gelu_kernel(x: &[f32], out: &mut [f32]) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let v = x[i];
        out[i] = v * 0.5f32 * (1.0f32 + Erf::erf(v * 0.70710677f32));
    }
}

/// GELU, erf form (HF `"gelu"`), in one launch; `x` back where the fast path does not apply.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    let x = take(x)?;
    let Elementwise { out, client, count, dim } = elementwise(&x);
    gelu_kernel::launch(&client, count, dim, x.into_buffer_arg(), out.clone().into_buffer_arg());
    Ok(give(out))
}

/// Rotary position embedding, element-wise over `x` `[B, S, heads, hd]`: with `a` the value
/// and `b` its partner half a head away, `a cos - b sin` in the first half of a head and
/// `a cos + b sin` in the second (HF's `x * cos + rotate_half(x) * sin`), the tables `[S, hd]`.
#[cube(launch)]
fn rope_kernel(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32], seq: usize, heads: usize, head_dim: usize) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let d = i % head_dim;
        let at = ((i / (head_dim * heads)) % seq) * head_dim + d;
        let half = head_dim / 2;
        if d < half {
            out[i] = x[i] * cos[at] + -x[i + half] * sin[at];
        } else {
            out[i] = x[i] * cos[at] + x[i - half] * sin[at];
        }
    }
}

/// Rotary position embedding in one launch (burn composes it of six), with the tables `cos`
/// and `sin` `[1, S, 1, hd]` on the device; `x` back where the fast path does not apply.
///
/// # Shapes
/// - x: `[B, S, heads, hd]`, output: the same
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [_, s, heads, d] = x.dims();
    if d == 0 || !d.is_multiple_of(2) || cos.dims() != [1, s, 1, d] || sin.dims() != [1, s, 1, d] {
        return Err(x);
    }
    let x = take(x)?;
    let Ok((cos, sin)) = take_pair(cos.clone(), sin.clone()) else { return Err(give(x)) };
    let Elementwise { out, client, count, dim } = elementwise(&x);
    rope_kernel::launch(
        &client,
        count,
        dim,
        x.into_buffer_arg(),
        cos.into_buffer_arg(),
        sin.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        s,
        heads,
        d,
    );
    Ok(give(out))
}

/// The rotary position embedding of the query and the key heads ([`rope_kernel`]'s rotation)
/// in one launch, each head's values first RMS-normalised where `normed` (Qwen3's `q_norm` and
/// `k_norm`: `x / sqrt(mean(x^2) + eps) * weight` over the head, as [`rms_norm_kernel`]). One
/// workgroup per head of a token: the `q_rows` rows of `q` `[B, S, heads, hd]`, then those of
/// `k` `[B, S, kv_heads, hd]`; each thread takes pairs of values half a head apart. The tables
/// are `[S, hd]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn qk_rope_kernel(
    q: &[f32],
    k: &[f32],
    q_weight: &[f32],
    k_weight: &[f32],
    cos: &[f32],
    sin: &[f32],
    q_out: &mut [f32],
    k_out: &mut [f32],
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    #[comptime] normed: bool,
) {
    let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    let q_rows = q_out.len() / head_dim;
    if row >= q_rows + k_out.len() / head_dim {
        terminate!(); // the whole workgroup: its threads share the row
    }
    let is_q = row < q_rows;
    let mut r = row;
    let mut per_token = heads;
    if !is_q {
        r = row - q_rows;
        per_token = kv_heads;
    }
    let base = r * head_dim;
    let at = ((r / per_token) % seq) * head_dim;
    let half = head_dim / 2;
    let t = UNIT_POS as usize;
    let step = CUBE_DIM as usize;
    let mut rms = 1.0f32;
    if normed {
        let mut red = Shared::new_slice(THREADS);
        let mut squares = 0.0f32;
        let mut i = t;
        while i < head_dim {
            let mut v = k[base + i];
            if is_q {
                v = q[base + i];
            }
            squares += v * v;
            i += step;
        }
        rms = (cube_sum(&mut red, squares) / f32::cast_from(head_dim as u32) + eps).sqrt();
    }
    let mut j = t;
    while j < half {
        let (mut a, mut b) = (k[base + j], k[base + j + half]);
        if is_q {
            a = q[base + j];
            b = q[base + j + half];
        }
        if normed {
            let (mut wa, mut wb) = (k_weight[j], k_weight[j + half]);
            if is_q {
                wa = q_weight[j];
                wb = q_weight[j + half];
            }
            a = a / rms * wa;
            b = b / rms * wb;
        }
        let first = a * cos[at + j] + -b * sin[at + j];
        let second = b * cos[at + j + half] + a * sin[at + j + half];
        if is_q {
            q_out[base + j] = first;
            q_out[base + j + half] = second;
        } else {
            k_out[base + j] = first;
            k_out[base + j + half] = second;
        }
        j += step;
    }
}

/// The rotary position embedding of `q` and `k` in one launch, each head RMS-normalised first
/// where `norms` gives the weights (`(q's, k's, eps)`, Qwen3), with the tables `cos` and `sin`
/// `[1, S, 1, hd]` on the device; `(q, k)` back where the fast path does not apply.
///
/// # Shapes
/// - q: `[B, S, heads, hd]`, k: `[B, S, kv_heads, hd]`, norms: `[hd]`, outputs: as q and k
#[allow(clippy::type_complexity)] // the two tensors, or the two back
pub fn qk_rope(
    q: Tensor<4>,
    k: Tensor<4>,
    norms: Option<(&Tensor<1>, &Tensor<1>, f64)>,
    (cos, sin): (&Tensor<4>, &Tensor<4>),
) -> Result<(Tensor<4>, Tensor<4>), (Tensor<4>, Tensor<4>)> {
    let ([b, s, heads, d], [kb, ks, kv_heads, kd]) = (q.dims(), k.dims());
    let tables = [1, s, 1, d];
    if d == 0
        || !d.is_multiple_of(2)
        || [kb, ks, kd] != [b, s, d]
        || cos.dims() != tables
        || sin.dims() != tables
        || norms.is_some_and(|(qw, kw, _)| qw.dims() != [d] || kw.dims() != [d])
    {
        return Err((q, k));
    }
    let (q, k) = take_pair(q, k)?;
    let back = |q: CubeTensor, k: CubeTensor| (give(q), give(k));
    let Ok((cos, sin)) = take_pair(cos.clone(), sin.clone()) else { return Err(back(q, k)) };
    let weights = match norms {
        Some((qw, kw, _)) => match take_pair(qw.clone(), kw.clone()) {
            Ok(w) => Some(w),
            Err(_) => return Err(back(q, k)),
        },
        None => None,
    };
    let (q_out, k_out) = (empty_like(&q), empty_like(&k));
    let rows = b * s * (heads + kv_heads);
    let client = q.client.clone();
    let normed = weights.is_some();
    // without norms, the tables stand in for the weights (not read)
    let (q_weight, k_weight) = weights.unwrap_or_else(|| (cos.clone(), cos.clone()));
    qk_rope_kernel::launch(
        &client,
        rows_grid(rows),
        CubeDim::new_1d(THREADS as u32),
        q.into_buffer_arg(),
        k.into_buffer_arg(),
        q_weight.into_buffer_arg(),
        k_weight.into_buffer_arg(),
        cos.into_buffer_arg(),
        sin.into_buffer_arg(),
        q_out.clone().into_buffer_arg(),
        k_out.clone().into_buffer_arg(),
        s,
        heads,
        kv_heads,
        d,
        norms.map_or(0.0, |(_, _, eps)| eps as f32),
        normed,
    );
    Ok((give(q_out), give(k_out)))
}

/// `silu(gate) * up`, element-wise (Llama's gated MLP), `silu(g) = g / (1 + exp(-g))`.
#[cube(launch)]
fn silu_mul_kernel(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let i = ABSOLUTE_POS;
    if i < out.len() {
        let g = gate[i];
        out[i] = g / (1.0f32 + (-g).exp()) * up[i];
    }
}

/// `silu(gate) * up` in one launch (burn's composition is three); the inputs back where the
/// fast path does not apply.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
    if gate.dims() != up.dims() {
        return Err((gate, up));
    }
    let (gate, up) = take_pair(gate, up)?;
    let Elementwise { out, client, count, dim } = elementwise(&gate);
    silu_mul_kernel::launch(
        &client,
        count,
        dim,
        gate.into_buffer_arg(),
        up.into_buffer_arg(),
        out.clone().into_buffer_arg(),
    );
    Ok(give(out))
}

/// The first key query `i` of a row of `len` real tokens sees: with a sliding `window` (> 0)
/// the first of the last `window` up to it; a padding query (`i >= len`) sees every real key.
#[cube]
fn first_key(i: usize, len: usize, window: usize) -> usize {
    let mut lo = 0usize;
    if i < len && window > 0 && i + 1 > window {
        lo = i + 1 - window;
    }
    lo
}

/// One past the last key query `i` of a row of `len` real tokens sees: with `causal` itself,
/// else (and for a padding query) the last real token.
#[cube]
fn end_key(i: usize, len: usize, #[comptime] causal: bool) -> usize {
    let mut hi = len;
    if causal && i < len {
        hi = i + 1;
    }
    hi
}

/// Scaled dot-product attention, one thread per (row `b`, head `h`, query `i`), `i` fastest:
/// the keys the query sees (the real ones of its row; with `causal` none after it; with a
/// `window` > 0 only the last `window` up to it; a padding query sees every real key, as
/// [`crate::backbones::Visibility`] says), softmax in one pass with a running maximum
/// (rescaling the sum and the output when it grows), the weighted sum of their values. No
/// shared memory and no barriers: the threads of a workgroup are neighbouring queries of one
/// head and read the same keys. `q` is `[B, S, H * hd]`, `k` and `v` `[B, S, KV * hd]` with
/// query head `h` reading KV head `h / group`; `out` is `[B, S, H * hd]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn attention_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lengths: &[u32],
    out: &mut [f32],
    seq: usize,
    scale: f32,
    window: usize,
    #[comptime] heads: usize,
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] causal: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() / head_dim {
        terminate!();
    }
    let i = pos % seq;
    let h = (pos / seq) % heads;
    let b = pos / (seq * heads);
    let q_row = heads * head_dim;
    let kv_row = q_row / group;
    let kv_col = (h / group) * head_dim;

    // the keys `lo..hi` this query sees
    let len = lengths[b] as usize;
    let lo = first_key(i, len, window);
    let hi = end_key(i, len, causal);

    let at = (b * seq + i) * q_row + h * head_dim;
    let mut query = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    #[unroll]
    for d in 0..head_dim {
        query[d] = q[at + d];
    }
    let mut top = f32::new(-3.0e38);
    let mut sum = 0.0f32;
    for j in lo..hi {
        let kv_at = (b * seq + j) * kv_row + kv_col;
        let mut s = 0.0f32;
        #[unroll]
        for d in 0..head_dim {
            s += query[d] * k[kv_at + d];
        }
        s *= scale;
        if s > top {
            // the earlier terms were taken against a smaller maximum
            let shrink = (top - s).exp();
            sum *= shrink;
            #[unroll]
            for d in 0..head_dim {
                acc[d] *= shrink;
            }
            top = s;
        }
        let e = (s - top).exp();
        sum += e;
        #[unroll]
        for d in 0..head_dim {
            acc[d] += e * v[kv_at + d];
        }
    }
    let inv = 1.0f32 / sum;
    #[unroll]
    for d in 0..head_dim {
        out[at + d] = acc[d] * inv;
    }
}

/// How [`attention_tiled_kernel`] splits a workgroup ([`THREADS`] threads): `parts` threads
/// per query row (each holds `dims` of its head's values, `parts` apart), `rows` rows, and
/// `keys` keys per tile of K and V in workgroup memory. Sized so a thread holds at most 32
/// values of its query and 32 of its output, and the tiles with the partial scores fit
/// WebGPU's default 16 KiB of workgroup memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AttentionTile {
    parts: usize,
    dims: usize,
    rows: usize,
    keys: usize,
}

impl AttentionTile {
    /// Workgroup memory's f32 values within WebGPU's default limit (16 KiB).
    const SHARED: usize = 4096;

    fn new(head_dim: usize) -> Self {
        let parts = head_dim.div_ceil(32).next_power_of_two().min(THREADS);
        let keys = (Self::SHARED / (2 * head_dim + THREADS)).clamp(1, 16);
        Self { parts, dims: head_dim.div_ceil(parts), rows: THREADS / parts, keys }
    }
}

/// Scaled dot-product attention (as [`attention_kernel`] defines it) by tiles of keys: a
/// workgroup takes `rows` query rows that read one KV head, which are up to `rows / heads_in`
/// neighbouring queries of `heads_in` of the query heads sharing that KV head (grouped-query
/// attention reads each key once for the group), and walks the keys its queries see a tile of
/// `keys` at a time: the workgroup loads the tile's K and V into workgroup memory (coalesced),
/// each thread takes the dot products of its `dims` values of its query with each key, the
/// `parts` threads of a row sum them through workgroup memory, and each thread updates its
/// row's running softmax (all `parts` alike) and its `dims` values of the output. Tiles past
/// a causal workgroup's last query or before a sliding window's first key are never loaded.
/// Grid: x the blocks of queries, y the KV heads times the chunks of `heads_in` query heads,
/// z the batch rows.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel's arguments
fn attention_tiled_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lengths: &[u32],
    out: &mut [f32],
    seq: usize,
    scale: f32,
    window: usize,
    #[comptime] heads: usize,
    #[comptime] group: usize,
    #[comptime] heads_in: usize,
    #[comptime] head_dim: usize,
    #[comptime] causal: bool,
    #[comptime] tile: AttentionTile,
) {
    let t = UNIT_POS as usize;
    let part = t % tile.parts;
    let r = t / tile.parts;
    let queries = comptime!(tile.rows / heads_in);
    let chunks = comptime!(group.div_ceil(heads_in));
    let first = CUBE_POS_X as usize * queries;
    let query = first + r / heads_in;
    let kv_head = CUBE_POS_Y as usize / chunks;
    let in_group = (CUBE_POS_Y as usize % chunks) * heads_in + r % heads_in;
    let b = CUBE_POS_Z as usize;
    // rows past the block's queries or the group's heads load tiles and wait at barriers only
    let active = r < queries * heads_in && in_group < group && query < seq;
    let q_row = heads * head_dim;
    let kv_row = q_row / group;

    // the keys `lo..hi` this row's query sees, and `from..to` those any row of the block sees
    // (a padding query sees every real key)
    let len = lengths[b] as usize;
    let lo = first_key(query, len, window);
    let hi = end_key(query, len, causal);
    let mut last = first + queries - 1;
    if last >= seq {
        last = seq - 1;
    }
    let mut from = 0usize;
    if last < len {
        from = first_key(first, len, window);
    }
    let to = end_key(last, len, causal);

    let at = (b * seq + query) * q_row + (kv_head * group + in_group) * head_dim;
    let mut query_part = Array::<f32>::new(tile.dims);
    let mut acc = Array::<f32>::new(tile.dims);
    #[unroll]
    for i in 0..tile.dims {
        let d = part + i * tile.parts;
        let mut x = 0.0f32;
        if active && d < head_dim {
            x = q[at + d] * scale;
        }
        query_part[i] = x;
        acc[i] = 0.0;
    }
    let mut keys = Shared::<[f32]>::new_slice(comptime!(tile.keys * head_dim));
    let mut values = Shared::<[f32]>::new_slice(comptime!(tile.keys * head_dim));
    let mut partial = Shared::<[f32]>::new_slice(comptime!(tile.keys * THREADS));
    let mut scores = Array::<f32>::new(tile.keys);
    let mut top = f32::new(-3.0e38);
    let mut sum = 0.0f32;
    let mut start = from;
    while start < to {
        // the tile's keys and values, zeros past the block's last key
        let mut e = t;
        while e < comptime!(tile.keys * head_dim) {
            let j = start + e / head_dim;
            let mut kx = 0.0f32;
            let mut vx = 0.0f32;
            if j < to {
                let kv_at = (b * seq + j) * kv_row + kv_head * head_dim + e % head_dim;
                kx = k[kv_at];
                vx = v[kv_at];
            }
            keys[e] = kx;
            values[e] = vx;
            e += THREADS;
        }
        sync_cube();
        #[unroll]
        for j in 0..tile.keys {
            let mut s = 0.0f32;
            #[unroll]
            for i in 0..tile.dims {
                let d = part + i * tile.parts;
                if d < head_dim {
                    s += query_part[i] * keys[j * head_dim + d];
                }
            }
            partial[j * THREADS + t] = s;
        }
        sync_cube();
        let mut tile_top = top;
        #[unroll]
        for j in 0..tile.keys {
            let mut s = 0.0f32;
            #[unroll]
            for p in 0..tile.parts {
                s += partial[j * THREADS + r * tile.parts + p];
            }
            scores[j] = s;
            let key = start + j;
            if key >= lo && key < hi {
                tile_top = f32::max(tile_top, s);
            }
        }
        // the earlier terms were taken against a smaller maximum
        let shrink = (top - tile_top).exp();
        top = tile_top;
        sum *= shrink;
        #[unroll]
        for i in 0..tile.dims {
            acc[i] *= shrink;
        }
        #[unroll]
        for j in 0..tile.keys {
            let key = start + j;
            let mut w = 0.0f32;
            if key >= lo && key < hi {
                w = (scores[j] - top).exp();
            }
            sum += w;
            #[unroll]
            for i in 0..tile.dims {
                let d = part + i * tile.parts;
                if d < head_dim {
                    acc[i] += w * values[j * head_dim + d];
                }
            }
        }
        sync_cube(); // every thread is done with the tile before the next one is loaded
        start += tile.keys;
    }
    if active {
        let inv = 1.0f32 / sum;
        #[unroll]
        for i in 0..tile.dims {
            let d = part + i * tile.parts;
            if d < head_dim {
                out[at + d] = acc[i] * inv;
            }
        }
    }
}

/// Scaled dot-product attention in one launch, as [`super::attention`] states it: `q`
/// `[B, S, H * hd]`, `k` and `v` `[B, S, KV * hd]` read in place, the keys each query sees
/// from the row `lengths`, `causal` and `window`; the heads merged, `[B, S, H * hd]`. The
/// inputs back where the fast path does not apply (sequences over [`MAX_KEYS`], heads over
/// [`MAX_HEAD_DIM`]).
pub fn attention(
    (q, k, v): QKV,
    (heads, kv_heads): (usize, usize),
    lengths: &[usize],
    causal: bool,
    window: Option<usize>,
) -> Result<Tensor<3>, QKV> {
    let [b, s, row] = q.dims();
    let head_dim = row.checked_div(heads).unwrap_or(0);
    let fits = heads > 0
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && head_dim * heads == row
        && k.dims() == [b, s, kv_heads * head_dim]
        && v.dims() == k.dims()
        && lengths.len() == b
        && lengths.iter().all(|&n| n <= s)
        && (1..=MAX_KEYS).contains(&s)
        && window != Some(0)
        && head_dim <= MAX_HEAD_DIM;
    if !fits {
        return Err((q, k, v));
    }
    let (q, k, v) = match (take(q), take(k), take(v)) {
        (Ok(q), Ok(k), Ok(v)) => (q, k, v),
        (q, k, v) => {
            let back = |t: Result<CubeTensor, Tensor<3>>| t.map(give).unwrap_or_else(|t| t);
            return Err((back(q), back(k), back(v)));
        }
    };
    let tiled = tiled(&q.client);
    Ok(give(launch_attention((q, k, v), (heads, kv_heads), lengths, causal, window, tiled)))
}

/// Launches [`attention_tiled_kernel`] (`tiled`) or [`attention_kernel`] on `q`, `k`, `v`
/// (checked by [`attention`]).
fn launch_attention(
    (q, k, v): (CubeTensor, CubeTensor, CubeTensor),
    (heads, kv_heads): (usize, usize),
    lengths: &[usize],
    causal: bool,
    window: Option<usize>,
    tiled: bool,
) -> CubeTensor {
    let [b, s, row] = q.meta.shape().dims();
    let head_dim = row / heads;
    let group = heads / kv_heads;
    let out = empty_like(&q);
    let client = out.client.clone();
    let host: Vec<u32> = lengths.iter().map(|&n| n as u32).collect();
    let lengths = client.create_from_slice(u32::as_bytes(&host));
    let scale = 1.0 / (head_dim as f32).sqrt();
    // SAFETY: the buffer holds `b` u32 values, the length given.
    let lengths = unsafe { BufferArg::from_raw_parts(lengths, b) };
    let (q, k, v, o) = (q.into_buffer_arg(), k.into_buffer_arg(), v.into_buffer_arg(), out.clone().into_buffer_arg());
    let window = window.unwrap_or(0);
    if tiled {
        let tile = AttentionTile::new(head_dim);
        let heads_in = group.min(tile.rows);
        let cube_count = CubeCount::Static(
            s.div_ceil(tile.rows / heads_in) as u32,
            (kv_heads * group.div_ceil(heads_in)) as u32,
            b as u32,
        );
        let cube_dim = CubeDim::new_1d(THREADS as u32);
        attention_tiled_kernel::launch(
            &client, cube_count, cube_dim, q, k, v, lengths, o, s, scale, window, heads, group, heads_in, head_dim,
            causal, tile,
        );
    } else {
        let cube_dim = CubeDim::new_1d(THREADS as u32);
        let cube_count = calculate_cube_count_elemwise(&client, b * heads * s, cube_dim);
        attention_kernel::launch(
            &client, cube_count, cube_dim, q, k, v, lengths, o, s, scale, window, heads, group, head_dim, causal,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbones::Visibility;
    use burn::tensor::{Device, TensorData};

    thread_local! {
        /// [`tiled`]'s answer on this test's thread, where set.
        pub(super) static TILED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }

    /// The wgpu device (CI installs Mesa's lavapipe); `None` with `DMOERM_SKIP_WGPU=1`.
    fn gpu() -> Option<Device> {
        if std::env::var("DMOERM_SKIP_WGPU").as_deref() == Ok("1") {
            eprintln!("DMOERM_SKIP_WGPU=1: the GPU kernels are NOT checked");
            return None;
        }
        Some(crate::device::open(crate::DeviceChoice::Gpu).expect("a wgpu adapter (mesa-vulkan-drivers)"))
    }

    /// `n` values in `-1 .. 1`, a different sequence per `seed`.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn upload<const D: usize>(v: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
    }

    fn download<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().expect("f32 values")
    }

    /// The int8 and q4 products against the f64 product of the same weights (their codes times
    /// their scales), and burn's product on [`QuantWeight::dequantized`] (the fallback) too,
    /// over sizes a tile does not divide.
    #[test]
    fn quantised_products_and_their_fallback_match_the_host_product() {
        use crate::quant::{quantize_rows, Int8Matrix, Q4Matrix, QuantMatrix};
        let Some(device) = gpu() else { return };
        let cases = [(1, 64, 4, false), (5, 128, 8, true), (37, 64, 132, true), (70, 384, 36, false)];
        let variants = cases.into_iter().flat_map(|c| [(c, false), (c, true)]);
        for (tiled, ((m, d_in, d_out, biased), q4)) in
            [false, true].into_iter().flat_map(|t| variants.clone().map(move |v| (t, v)))
        {
            TILED.set(Some(tiled));
            // `d_out x d_in` pseudo-random weights from `seed`, quantised as int8 or q4
            let quantized = |seed| {
                let w = values(d_out * d_in, seed);
                match q4 {
                    false => {
                        let (codes, scales) = quantize_rows(&w, d_out);
                        QuantMatrix::Int8(Int8Matrix::new(d_out, d_in, codes, scales).expect("int8"))
                    }
                    true => QuantMatrix::Q4(Q4Matrix::quantize(&w, d_out).expect("q4")),
                }
            };
            let matrix = quantized(1);
            let deq = matrix.to_f32(); // [out, in]
            let (x, bias) = (values(m * d_in, 3), values(d_out, 4));
            let weight = QuantWeight::new(&matrix, &device).expect("multiples of 4");
            assert_eq!(weight.dims(), (d_in, d_out));
            let bias_t = upload(&bias, [d_out], &device);
            let bias_t = biased.then_some(&bias_t);
            // output `i` (row `i / d_out`, column `i % d_out`) of `x` times `w` `[out, in]`, in f64
            let dot = |i: usize, w: &[f32]| -> f64 {
                let (r, o) = (i / d_out, i % d_out);
                (0..d_in).map(|k| f64::from(x[r * d_in + k]) * f64::from(w[o * d_in + k])).sum()
            };
            let want: Vec<f64> =
                (0..m * d_out).map(|i| dot(i, &deq) + if biased { f64::from(bias[i % d_out]) } else { 0.0 }).collect();
            let xt = upload(&x, [1, m, d_in], &device);
            let kernel = download(linear_quant(xt.clone(), &weight, bias_t, None).expect("the kernel applies"));
            let fallback = download(burn::tensor::module::linear(xt.clone(), weight.dequantized(), bias_t.cloned()));
            // the residual epilogue
            let residual = values(m * d_out, 5);
            let residual_t = upload(&residual, [1, m, d_out], &device);
            let added = linear_quant(xt.clone(), &weight, bias_t, Some(&residual_t)).expect("the kernel applies");
            let added: Vec<f32> = download(added).iter().zip(&residual).map(|(y, r)| y - r).collect();
            for (what, got) in [("kernel", kernel), ("fallback", fallback), ("kernel + residual", added)] {
                let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-4, "{what}, q4 {q4}, tiled {tiled} ({m}, {d_in}, {d_out}): worst {worst:e}");
            }
            // the gated MLP's activation with this weight as the gate and another as up
            let up_matrix = quantized(6);
            let up_deq = up_matrix.to_f32();
            let up = QuantWeight::new(&up_matrix, &device).expect("multiples of 4");
            let want_gated: Vec<(f64, f64)> = (0..m * d_out).map(|i| (dot(i, &deq), dot(i, &up_deq))).collect();
            let got = download(gated_quant(xt, &weight, &up).expect("the gated kernel applies"));
            let err = gated_error(&got, &want_gated);
            assert!(err < 1e-4, "gated, q4 {q4}, tiled {tiled} ({m}, {d_in}, {d_out}): worst scaled error {err:e}");
        }
        // sizes the layout does not take
        let odd =
            |out, inp| QuantMatrix::Int8(Int8Matrix::new(out, inp, vec![0; out * inp], vec![1.0; out]).expect("int8"));
        assert!(QuantWeight::new(&odd(6, 4), &device).is_none());
        assert!(QuantWeight::new(&odd(4, 6), &device).is_none());
    }

    /// Attention in f64 on the host, straight from the definition: for each query, the
    /// softmax of `q . k / sqrt(hd)` over the keys [`Visibility::sees`] allows, times V.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        (q, k, v): (&[f32], &[f32], &[f32]),
        (b, s, heads, kv_heads, hd): (usize, usize, usize, usize, usize),
        lengths: &[usize],
        seen: Visibility,
    ) -> Vec<f64> {
        let (row, kv_row) = (heads * hd, kv_heads * hd);
        let mut out = vec![0.0; b * s * row];
        for r in 0..b {
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                for i in 0..s {
                    let keys: Vec<usize> = (0..s).filter(|&j| seen.sees(i, j, lengths[r])).collect();
                    let score = |j: usize| {
                        let dot: f64 = (0..hd)
                            .map(|d| {
                                q[(r * s + i) * row + h * hd + d] as f64 * k[(r * s + j) * kv_row + kvh * hd + d] as f64
                            })
                            .sum();
                        dot / (hd as f64).sqrt()
                    };
                    let top = keys.iter().map(|&j| score(j)).fold(f64::MIN, f64::max);
                    let weights: Vec<f64> = keys.iter().map(|&j| (score(j) - top).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for d in 0..hd {
                        let acc: f64 = keys
                            .iter()
                            .zip(&weights)
                            .map(|(&j, w)| w * v[(r * s + j) * kv_row + kvh * hd + d] as f64)
                            .sum();
                        out[(r * s + i) * row + h * hd + d] = acc / total;
                    }
                }
            }
        }
        out
    }

    fn worst(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn attention_matches_the_definition_for_padding_causal_windows_and_grouped_heads() {
        let Some(device) = gpu() else { return };
        // (batch, seq, heads, kv heads, head dim, row lengths, rule): head dims 8 to 256 (one
        // to eight threads a query row in the tiled kernel, tiles of 16 to 7 keys), groups of
        // 1 to 16 query heads (7: a block's rows not a multiple of them; 16: more than a
        // block's rows), padding rows, queries past one block, windows starting inside tiles
        let cases = [
            (2, 7, 4, 4, 32, vec![7, 3], Visibility::BIDIRECTIONAL),
            (3, 75, 12, 12, 32, vec![75, 11, 40], Visibility::BIDIRECTIONAL),
            (2, 130, 4, 2, 16, vec![130, 97], Visibility::CAUSAL),
            (2, 40, 6, 2, 48, vec![40, 25], Visibility { causal: true, window: Some(9) }),
            (1, 19, 2, 1, 80, vec![19], Visibility::BIDIRECTIONAL),
            (2, 61, 14, 2, 64, vec![61, 30], Visibility::CAUSAL),
            (1, 45, 16, 8, 128, vec![41], Visibility { causal: true, window: Some(13) }),
            (1, 33, 16, 1, 256, vec![33], Visibility::CAUSAL),
            (2, 29, 4, 4, 256, vec![17, 29], Visibility::BIDIRECTIONAL),
            // a long sequence (4k tokens went to burn's chunked attention before)
            (1, 4100, 2, 1, 8, vec![4090], Visibility::CAUSAL),
        ];
        for (n, (b, s, heads, kv_heads, hd, lengths, seen)) in cases.into_iter().enumerate() {
            let (q, k, v) = (
                values(b * s * heads * hd, 3 * n as u64 + 1),
                values(b * s * kv_heads * hd, 3 * n as u64 + 2),
                values(b * s * kv_heads * hd, 3 * n as u64 + 3),
            );
            let want = reference((&q, &k, &v), (b, s, heads, kv_heads, hd), &lengths, seen);
            let qkv = || {
                (
                    upload(&q, [b, s, heads * hd], &device),
                    upload(&k, [b, s, kv_heads * hd], &device),
                    upload(&v, [b, s, kv_heads * hd], &device),
                )
            };
            let out = attention(qkv(), (heads, kv_heads), &lengths, seen.causal, seen.window)
                .unwrap_or_else(|_| panic!("case {n}: the GPU kernel applies"));
            let err = worst(&download(out), &want);
            assert!(err < 1e-5, "case {n}: worst |error| {err:e}");
            // each kernel, whichever `attention` chooses on this device
            for tiled in [true, false] {
                let (q, k, v) = qkv();
                let taken = (take(q).ok().unwrap(), take(k).ok().unwrap(), take(v).ok().unwrap());
                let out = launch_attention(taken, (heads, kv_heads), &lengths, seen.causal, seen.window, tiled);
                let err = worst(&download(give::<3>(out)), &want);
                assert!(err < 1e-5, "case {n}, tiled {tiled}: worst |error| {err:e}");
            }
        }
    }

    #[test]
    fn attention_gives_its_inputs_back_where_it_does_not_apply() {
        let Some(device) = gpu() else { return };
        let t = |s: usize| upload(&values(s * 8, 1), [1, s, 8], &device);
        // more keys than a thread walks (burn's chunked attention takes them)
        let long = attention((t(MAX_KEYS + 1), t(MAX_KEYS + 1), t(MAX_KEYS + 1)), (2, 2), &[MAX_KEYS + 1], false, None);
        assert!(long.is_err());
        // on the CPU
        let host = |s: usize| upload(&values(s * 8, 1), [1, s, 8], &Device::flex());
        assert!(attention((host(4), host(4), host(4)), (2, 2), &[4], false, None).is_err());
    }

    #[test]
    fn layer_norm_of_a_sum_matches_the_definition() {
        let Some(device) = gpu() else { return };
        // rows narrower and wider than the workgroup, an offset mean
        for (n, (rows, dim)) in [(3, 16), (75, 384), (5, 1000)].into_iter().enumerate() {
            let a: Vec<f32> = values(rows * dim, 10 + n as u64).iter().map(|x| x * 3.0 + 5.0).collect();
            let b = values(rows * dim, 20 + n as u64);
            let (w, bias) = (values(dim, 30 + n as u64), values(dim, 40 + n as u64));
            let eps = 1e-12;
            let mut want = Vec::with_capacity(rows * dim);
            for r in 0..rows {
                let x: Vec<f64> = (0..dim).map(|i| a[r * dim + i] as f64 + b[r * dim + i] as f64).collect();
                let mean = x.iter().sum::<f64>() / dim as f64;
                let var = x.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / dim as f64;
                want.extend((0..dim).map(|i| (x[i] - mean) / (var + eps).sqrt() * w[i] as f64 + bias[i] as f64));
            }
            let out = layer_norm_sum(
                upload(&a, [1, rows, dim], &device),
                upload(&b, [1, rows, dim], &device),
                &upload(&w, [dim], &device),
                &upload(&bias, [dim], &device),
                eps,
            )
            .unwrap_or_else(|_| panic!("case {n}: the GPU kernel applies"));
            let err = worst(&download(out), &want);
            assert!(err < 1e-5, "case {n}: worst |error| {err:e}");
        }
    }

    /// `a b` in f64: `a` `[m, k]`, `b` `[k, n]`.
    fn product(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            }
        }
        out
    }

    /// The worst error of `got` against `silu(g) * u` for the `(g, u)` of `want`, scaled by
    /// `|u| + |silu(g)| + 1` (what an error in `g` or `u` becomes in the activation).
    fn gated_error(got: &[f32], want: &[(f64, f64)]) -> f64 {
        assert_eq!(got.len(), want.len());
        let silu = |g: f64| g / (1.0 + (-g).exp());
        let scaled =
            got.iter().zip(want).map(|(&y, &(g, u))| (y as f64 - silu(g) * u).abs() / (u.abs() + silu(g).abs() + 1.0));
        scaled.fold(0.0, f64::max)
    }

    #[test]
    fn linear_and_batched_products_match_the_definition() {
        let Some(device) = gpu() else { return };
        for tiled in [false, true] {
            products_match_the_definition(&device, tiled);
        }
    }

    /// [`linear_and_batched_products_match_the_definition`] with the `tiled` kernels or the others.
    fn products_match_the_definition(device: &Device, tiled: bool) {
        TILED.set(Some(tiled));
        let device = device.clone();
        // rows that fill no tile, part of one, several; columns of a partial workgroup
        for (n_case, (rows, d_in, d_out)) in
            [(1, 4, 4), (7, 384, 1536), (81, 64, 12), (130, 20, 392)].into_iter().enumerate()
        {
            let seed = 100 + 4 * n_case as u64;
            let (x, w, bias) = (values(rows * d_in, seed), values(d_in * d_out, seed + 1), values(d_out, seed + 2));
            let plain = product(&x, &w, (rows, d_in, d_out));
            let biased: Vec<f64> = plain.iter().enumerate().map(|(i, y)| y + bias[i % d_out] as f64).collect();
            let x_t = || upload(&x, [1, rows, d_in], &device);
            let w_t = upload(&w, [d_in, d_out], &device);
            // the residual epilogue, with the bias and without
            let residual = values(rows * d_out, seed + 3);
            let residual_t = upload(&residual, [1, rows, d_out], &device);
            let added = |want: &[f64]| -> Vec<f64> { want.iter().zip(&residual).map(|(y, r)| y + *r as f64).collect() };
            let (plain_added, biased_added) = (added(&plain), added(&biased));
            let bias_t = upload(&bias, [d_out], &device);
            for (bias, residual, want) in [
                (None, None, &plain),
                (Some(&bias_t), None, &biased),
                (None, Some(&residual_t), &plain_added),
                (Some(&bias_t), Some(&residual_t), &biased_added),
            ] {
                let y =
                    linear(x_t(), &w_t, bias, residual).unwrap_or_else(|_| panic!("case {n_case}: the kernel applies"));
                let err = worst(&download(y), want) / (d_in as f64).sqrt();
                let what = (bias.is_some(), residual.is_some());
                assert!(
                    err < 1e-6,
                    "case {n_case}, tiled {tiled}, (bias, residual) {what:?}: worst |error| / sqrt(k) {err:e}"
                );
            }
            // the gated MLP's activation, silu(x G) * (x U), against the f64 definition; and
            // `gated`'s fallback (two products and silu_mul) the same. An error of e in each
            // product is one of about e (|u| + |silu(g)|) in the activation.
            let up = values(d_in * d_out, seed + 4);
            let up_t = upload(&up, [d_in, d_out], &device);
            let gu: Vec<(f64, f64)> = plain.iter().copied().zip(product(&x, &up, (rows, d_in, d_out))).collect();
            let kernel =
                gated(x_t(), &w_t, &up_t).unwrap_or_else(|_| panic!("case {n_case}: the gated kernel applies"));
            let unfused = super::super::silu_mul(
                linear(x_t(), &w_t, None, None).unwrap_or_else(|_| panic!("applies")),
                linear(x_t(), &up_t, None, None).unwrap_or_else(|_| panic!("applies")),
            );
            for (what, got) in [("kernel", kernel), ("unfused", unfused)] {
                let err = gated_error(&download(got), &gu) / (d_in as f64).sqrt();
                assert!(err < 1e-6, "case {n_case}, tiled {tiled}, gated {what}: worst scaled error / sqrt(k) {err:e}");
            }
        }
        // three products at once, each its own `b` (LoRA's per-expert matrices)
        let (z, m, k, n) = (3, 10, 16, 8);
        let (a, b) = (values(z * m * k, 7), values(z * k * n, 8));
        let y = matmul(upload(&a, [z, m, k], &device), upload(&b, [z, k, n], &device))
            .unwrap_or_else(|_| panic!("the batched kernel applies"));
        let want: Vec<f64> = (0..z)
            .flat_map(|i| product(&a[i * m * k..(i + 1) * m * k], &b[i * k * n..(i + 1) * k * n], (m, k, n)))
            .collect();
        let err = worst(&download(y), &want);
        assert!(err < 1e-5, "batched: worst |error| {err:e}");
        // sizes that are not multiples of 4 (a thread per output value), with the bias and the
        // residual; and a batch of them with `n` 1 (an expert head per expert)
        for (rows, d_in, d_out) in [(2, 3, 4), (5, 8, 1), (3, 6, 7)] {
            let (x, w) = (values(rows * d_in, 11), values(d_in * d_out, 12));
            let (bias, residual) = (values(d_out, 13), values(rows * d_out, 14));
            let want: Vec<f64> = product(&x, &w, (rows, d_in, d_out))
                .iter()
                .enumerate()
                .map(|(i, y)| y + bias[i % d_out] as f64 + residual[i] as f64)
                .collect();
            let y = linear(
                upload(&x, [1, rows, d_in], &device),
                &upload(&w, [d_in, d_out], &device),
                Some(&upload(&bias, [d_out], &device)),
                Some(&upload(&residual, [1, rows, d_out], &device)),
            )
            .unwrap_or_else(|_| panic!("the kernel takes {rows} x {d_in} x {d_out}"));
            let err = worst(&download(y), &want);
            assert!(err < 1e-6, "{rows} x {d_in} x {d_out}: worst |error| {err:e}");
        }
        let (z, m, k) = (3, 5, 12);
        let (a, b) = (values(z * m * k, 15), values(z * k, 16));
        let y = matmul(upload(&a, [z, m, k], &device), upload(&b, [z, k, 1], &device))
            .unwrap_or_else(|_| panic!("the batched kernel takes n = 1"));
        let want: Vec<f64> =
            (0..z).flat_map(|i| product(&a[i * m * k..(i + 1) * m * k], &b[i * k..(i + 1) * k], (m, k, 1))).collect();
        let err = worst(&download(y), &want);
        assert!(err < 1e-6, "batched, n = 1: worst |error| {err:e}");
    }

    /// An f16 weight (an f16 bundle's, on a GPU with f16 in shaders) is read as the f32 it
    /// stands for: the products (`affine`'s, with the residual, the gated MLP's) are those of the
    /// weight expanded to f32, within f32's error, on cooperative matrices too
    /// ([`matmul_cmma_kernel`], each activation split into two f16).
    /// `DMOERM_GPU_CMMA=1` (`scripts/cmma-check.sh`) fails the test where the device has none.
    #[test]
    fn an_f16_weight_multiplies_as_its_f32_values() {
        let Some(device) = gpu() else { return };
        // lavapipe has f16 in shaders, as most Vulkan GPUs do
        assert!(crate::device::half_resident(&device), "the adapter has no f16 in shaders");
        let cmma = cooperative_matrices(&device).is_some();
        if std::env::var("DMOERM_GPU_CMMA").as_deref() == Ok("1") {
            assert!(cmma, "DMOERM_GPU_CMMA=1, but the device has no f16 cooperative matrices");
        }
        let cases = [(7, 384, 1536), (81, 64, 12), (130, 20, 392), (5, 6, 10)];
        for (n_case, (tiled, (rows, d_in, d_out))) in
            [false, true].into_iter().flat_map(|t| cases.map(|c| (t, c))).enumerate()
        {
            TILED.set(Some(tiled));
            let seed = 300 + 4 * n_case as u64;
            let (x, bias) = (values(rows * d_in, seed), values(d_out, seed + 2));
            let half = |v: Vec<f32>| -> Vec<half::f16> { v.into_iter().map(half::f16::from_f32).collect() };
            let (w16, up16) = (half(values(d_in * d_out, seed + 1)), half(values(d_in * d_out, seed + 3)));
            let f32s = |v: &[half::f16]| -> Vec<f32> { v.iter().map(|v| v.to_f32()).collect() };
            let (w, up) = (f32s(&w16), f32s(&up16));
            // on cooperative matrices, which take the products the other vector kernels take, the
            // activations are two f16 each (the rounding and what it left out)
            let on_cmma = cmma && d_in.is_multiple_of(4) && d_out.is_multiple_of(4);
            let plain = product(&x, &w, (rows, d_in, d_out));
            let want: Vec<f64> = plain.iter().enumerate().map(|(i, y)| y + bias[i % d_out] as f64).collect();
            let weight =
                |v: Vec<half::f16>| Tensor::<2>::from_data(TensorData::new(v, [d_in, d_out]), (&device, DType::F16));
            let (w_t, up_t) = (weight(w16), weight(up16));
            assert_eq!(w_t.dtype(), DType::F16);
            let (x_t, bias_t) = (upload(&x, [1, rows, d_in], &device), upload(&bias, [d_out], &device));
            let y = crate::kernels::affine(x_t.clone(), &w_t, Some(&bias_t), None);
            assert_eq!(y.dtype(), DType::F32);
            let err = worst(&download(y), &want) / (d_in as f64).sqrt();
            assert!(err < 1e-6, "case {n_case} (tiled {tiled}, cmma {on_cmma}): worst |error| / sqrt(k) {err:e}");
            // with the residual epilogue
            let residual = values(rows * d_out, seed + 5);
            let residual_t = upload(&residual, [1, rows, d_out], &device);
            let y = linear(x_t.clone(), &w_t, Some(&bias_t), Some(&residual_t))
                .unwrap_or_else(|_| panic!("case {n_case}: the kernel applies"));
            let want: Vec<f64> = want.iter().zip(&residual).map(|(y, r)| y + *r as f64).collect();
            let err = worst(&download(y), &want) / (d_in as f64).sqrt();
            assert!(
                err < 1e-6,
                "case {n_case} (tiled {tiled}, cmma {on_cmma}), residual: worst |error| / sqrt(k) {err:e}"
            );
            // the gated MLP's activation
            let gu: Vec<(f64, f64)> = plain.into_iter().zip(product(&x, &up, (rows, d_in, d_out))).collect();
            let got = gated(x_t, &w_t, &up_t).unwrap_or_else(|_| panic!("case {n_case}: the gated kernel applies"));
            let err = gated_error(&download(got), &gu) / (d_in as f64).sqrt();
            assert!(
                err < 1e-6,
                "case {n_case} (tiled {tiled}, cmma {on_cmma}), gated: worst scaled error / sqrt(k) {err:e}"
            );
        }
    }

    #[test]
    fn rms_norm_matches_the_definition() {
        let Some(device) = gpu() else { return };
        for (n, (rows, dim)) in [(4, 24), (9, 576)].into_iter().enumerate() {
            let (x, w) = (values(rows * dim, 50 + n as u64), values(dim, 60 + n as u64));
            let eps = 1e-6;
            let mut want = Vec::with_capacity(rows * dim);
            for r in 0..rows {
                let row = &x[r * dim..(r + 1) * dim];
                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
                want.extend(row.iter().zip(&w).map(|(&v, &w)| v as f64 / (ms + eps).sqrt() * w as f64));
            }
            let out = rms_norm(upload(&x, [rows, dim], &device), &upload(&w, [dim], &device), eps)
                .unwrap_or_else(|_| panic!("case {n}: the GPU kernel applies"));
            let err = worst(&download(out), &want);
            assert!(err < 1e-5, "case {n}: worst |error| {err:e}");
        }
    }

    /// The query and key heads' rope in one launch, with the heads' RMSNorm first and without,
    /// is [`rms_norm`] then [`rope`] (each checked against its definition) on each tensor.
    #[test]
    fn query_and_key_rope_in_one_launch_is_the_norms_then_rope() {
        let Some(device) = gpu() else { return };
        // head dims of fewer pairs than a workgroup's threads, as many, and twice as many
        for (n_case, (b, s, heads, kv_heads, hd)) in
            [(2, 5, 4, 2, 16), (1, 7, 2, 1, 128), (2, 3, 2, 2, 256)].into_iter().enumerate()
        {
            let seed = 400 + 10 * n_case as u64;
            let (q, k) = (values(b * s * heads * hd, seed), values(b * s * kv_heads * hd, seed + 1));
            let (qw, kw) = (values(hd, seed + 2), values(hd, seed + 3));
            let (cos, sin) = (values(s * hd, seed + 4), values(s * hd, seed + 5));
            let (q_t, k_t) = (upload(&q, [b, s, heads, hd], &device), upload(&k, [b, s, kv_heads, hd], &device));
            let (qw_t, kw_t) = (upload(&qw, [hd], &device), upload(&kw, [hd], &device));
            let (cos_t, sin_t) = (upload(&cos, [1, s, 1, hd], &device), upload(&sin, [1, s, 1, hd], &device));
            let eps = 1e-6;
            for normed in [false, true] {
                let norms = normed.then_some((&qw_t, &kw_t, eps));
                let (q_got, k_got) = qk_rope(q_t.clone(), k_t.clone(), norms, (&cos_t, &sin_t))
                    .unwrap_or_else(|_| panic!("case {n_case}: the kernel applies"));
                let one = |x: Tensor<4>, w: &Tensor<1>| {
                    let x = match normed {
                        true => rms_norm(x, w, eps).unwrap_or_else(|_| panic!("the norm applies")),
                        false => x,
                    };
                    download(rope(x, &cos_t, &sin_t).unwrap_or_else(|_| panic!("rope applies")))
                };
                for (what, got, want) in
                    [("q", download(q_got), one(q_t.clone(), &qw_t)), ("k", download(k_got), one(k_t.clone(), &kw_t))]
                {
                    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    let err = worst(&got, &want);
                    assert!(err < 1e-5, "case {n_case}, normed {normed}, {what}: worst |error| {err:e}");
                }
            }
        }
    }

    #[test]
    fn rope_and_the_gated_mlp_product_match_their_definitions() {
        let Some(device) = gpu() else { return };
        let (b, s, heads, hd) = (2, 9, 3, 8);
        let x = values(b * s * heads * hd, 70);
        // tables as Llama builds them: the half-dim angles twice
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for pos in 0..s {
            let angles: Vec<f32> =
                (0..hd / 2).map(|i| pos as f32 * 10_000f32.powf(-2.0 * i as f32 / hd as f32)).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let mut want = Vec::with_capacity(x.len());
        for (n, head) in x.chunks(hd).enumerate() {
            let pos = n / heads % s;
            let (c, sn) = (&cos[pos * hd..(pos + 1) * hd], &sin[pos * hd..(pos + 1) * hd]);
            // x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1)
            let rotated: Vec<f64> = (0..hd)
                .map(|d| if d < hd / 2 { -(head[d + hd / 2] as f64) } else { head[d - hd / 2] as f64 })
                .collect();
            want.extend((0..hd).map(|d| head[d] as f64 * c[d] as f64 + rotated[d] * sn[d] as f64));
        }
        let table = |v: &[f32]| upload(v, [1, s, 1, hd], &device);
        let out = rope(upload(&x, [b, s, heads, hd], &device), &table(&cos), &table(&sin))
            .unwrap_or_else(|_| panic!("the rope kernel applies"));
        let err = worst(&download(out), &want);
        assert!(err < 1e-6, "rope: worst |error| {err:e}");

        let (gate, up): (Vec<f32>, Vec<f32>) = (
            values(4096, 71).iter().map(|g| g * 12.0).collect(), // -12 .. 12
            values(4096, 72),
        );
        let want: Vec<f64> =
            gate.iter().zip(&up).map(|(&g, &u)| g as f64 / (1.0 + (-(g as f64)).exp()) * u as f64).collect();
        let out = silu_mul(upload(&gate, [4, 1024], &device), upload(&up, [4, 1024], &device))
            .unwrap_or_else(|_| panic!("the silu kernel applies"));
        let got = download(out);
        let err = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max);
        assert!(err < 1e-6, "silu(gate) * up: worst error {err:e} (relative to max(|y|, 1))");
    }

    #[test]
    fn gelu_matches_the_definition() {
        let Some(device) = gpu() else { return };
        let x: Vec<f32> = (-60_000..60_000).map(|i| i as f32 * 1e-4).collect(); // -6 .. 6
        let want: Vec<f64> =
            x.iter().map(|&x| 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))).collect();
        let out = gelu(upload(&x, [2, x.len() / 2], &device)).unwrap_or_else(|_| panic!("the GPU kernel applies"));
        let err = worst(&download(out), &want);
        assert!(err < 1e-6, "worst |error| {err:e}");
    }
}
