//! Choosing where the model runs: a GPU through wgpu, or the CPU through burn's `flex`.

#[cfg(not(target_family = "wasm"))]
use burn::tensor::Device;

use crate::error::{Error, Result};

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu when one exists, else the CPU.
    #[default]
    Auto,
    /// The CPU (`flex` backend).
    Cpu,
    /// wgpu on its default adapter (Vulkan, Metal, DX12, WebGPU; also a software adapter
    /// such as Mesa's lavapipe when that is the only one). Needs the `gpu` feature.
    Gpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            other => Err(Error::Input(format!("device `{other}`: expected cpu, gpu or auto"))),
        }
    }
}

/// Opens the device (native).
///
/// wgpu's runtime can be initialised once per process; the device is kept and shared by
/// every model loaded afterwards.
#[cfg(not(target_family = "wasm"))]
pub fn open(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        // no adapter listing: that is only for the words of `open_explained`
        DeviceChoice::Gpu => wgpu_device(),
        DeviceChoice::Auto => open_explained(choice).map(|(device, _)| device),
    }
}

/// [`open`], with the decision in plain words (what the CLI prints with `-v`), e.g. "the CPU
/// (flex, 2 threads): no hardware GPU found; wgpu sees llvmpipe (Cpu, Vulkan)".
#[cfg(not(target_family = "wasm"))]
pub fn open_explained(choice: DeviceChoice) -> Result<(Device, String)> {
    let cpu = || format!("the CPU (flex, {} threads)", rayon::current_num_threads());
    match choice {
        DeviceChoice::Cpu => Ok((Device::flex(), format!("{}, as asked", cpu()))),
        #[cfg(not(feature = "gpu"))]
        DeviceChoice::Gpu => wgpu_device().map(|device| (device, String::new())),
        #[cfg(not(feature = "gpu"))]
        DeviceChoice::Auto => Ok((Device::flex(), format!("{}: {NO_GPU_SUPPORT}", cpu()))),
        #[cfg(feature = "gpu")]
        DeviceChoice::Gpu => {
            let device = wgpu_device()?;
            Ok((device, format!("a GPU through wgpu, as asked (wgpu sees {})", describe(&adapters()))))
        }
        #[cfg(feature = "gpu")]
        DeviceChoice::Auto => {
            let seen = adapters();
            let Some(gpu) = seen.iter().find(|a| is_hardware(a)) else {
                let why = match seen.is_empty() {
                    true => "no GPU adapter found".to_string(),
                    false => format!("no hardware GPU found; wgpu sees {}", describe(&seen)),
                };
                return Ok((Device::flex(), format!("{}: {why}", cpu())));
            };
            Ok(match wgpu_device() {
                Ok(device) => (device, format!("the GPU {} through wgpu ({:?})", gpu.name, gpu.backend)),
                Err(e) => (Device::flex(), format!("{}: the GPU {} did not open ({e})", cpu(), gpu.name)),
            })
        }
    }
}

#[cfg(all(not(target_family = "wasm"), not(feature = "gpu")))]
const NO_GPU_SUPPORT: &str = "this build has no GPU support (build dmoerm with its `gpu` feature)";

#[cfg(all(not(target_family = "wasm"), not(feature = "gpu")))]
fn wgpu_device() -> Result<Device> {
    Err(Error::Device(NO_GPU_SUPPORT.into()))
}

#[cfg(all(not(target_family = "wasm"), feature = "gpu"))]
fn wgpu_device() -> Result<Device> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        // Opening an adapter can panic inside some drivers; keep that from taking the caller down.
        std::panic::catch_unwind(|| Device::wgpu_options().init().map_err(|e| e.to_string()))
            .unwrap_or_else(|_| Err("the wgpu runtime panicked while opening an adapter".into()))
    })
    .clone()
    .map_err(|e| Error::Device(format!("no usable wgpu adapter: {e}")))
}

/// Whether wgpu sees an adapter that is not a CPU emulation (lavapipe, SwiftShader, WARP are
/// slower than `flex`, so `auto` does not pick them).
#[cfg(not(target_family = "wasm"))]
pub fn has_hardware_gpu() -> bool {
    #[cfg(feature = "gpu")]
    return adapters().iter().any(is_hardware);
    #[cfg(not(feature = "gpu"))]
    false
}

/// The adapters wgpu sees on every backend.
#[cfg(all(not(target_family = "wasm"), feature = "gpu"))]
fn adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = burn::tensor::read_sync(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.iter().map(|a| a.get_info()).collect()
}

#[cfg(all(not(target_family = "wasm"), feature = "gpu"))]
fn is_hardware(adapter: &wgpu::AdapterInfo) -> bool {
    adapter.device_type != wgpu::DeviceType::Cpu
}

#[cfg(all(not(target_family = "wasm"), feature = "gpu"))]
fn describe(adapters: &[wgpu::AdapterInfo]) -> String {
    if adapters.is_empty() {
        return "no adapter".into();
    }
    let each = adapters.iter().map(|a| format!("{} ({:?}, {:?})", a.name, a.device_type, a.backend));
    each.collect::<Vec<_>>().join(", ")
}

/// Keeps the Vulkan loader quiet on machines without a desktop session (servers, containers,
/// CI): call it at the start of `main`, before any thread starts, as the `dmoerm` command does.
///
/// Listing adapters loads Mesa's `VK_LAYER_MESA_device_select`, which connects to the
/// Wayland display to order the GPUs; without `XDG_RUNTIME_DIR`, libwayland prints
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` on every probe,
/// although nothing failed. Without a runtime dir there is no display to order GPUs for, so
/// this turns the layer off (`NODEVICE_SELECT=1`); wgpu ranks the adapters itself. It does
/// nothing when `XDG_RUNTIME_DIR` or `NODEVICE_SELECT` is set.
///
/// # Safety
/// It sets an environment variable: no other thread may read or write the environment
/// while it runs (see [`std::env::set_var`]).
#[cfg(not(target_family = "wasm"))]
pub unsafe fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// Whether `device` is the CPU backend for inference, where quantised weights stay quantised
/// on the host (the kernels of [`crate::quant`]; autodiff gets f32).
pub(crate) fn quantized_resident(device: &burn::tensor::Device) -> bool {
    // an autodiff device compares equal to the device it wraps
    *device == burn::tensor::Device::flex() && !device.is_autodiff()
}

/// Whether `device` holds a weight that a bundle stores in 16 bits (f16; bf16 within f16's
/// range) in f16, half the memory and half the reads of f32: a GPU for inference whose
/// adapter has f16 in shaders (WebGPU's `shader-f16`; Vulkan's `shaderFloat16` with 16-bit
/// storage). The model still computes in f32: the products read the f16 weights and multiply
/// and sum in f32, so the scores are those of the same weights expanded to f32. Elsewhere a
/// 16-bit weight is expanded when it loads.
pub(crate) fn half_resident(device: &burn::tensor::Device) -> bool {
    *device != burn::tensor::Device::flex() && !device.is_autodiff() && device.supports_dtype(burn::tensor::DType::F16)
}

/// The most bytes one tensor may take on `device`: a GPU's largest buffer (WebGPU's
/// `maxBufferSize` and `maxStorageBufferBindingSize`, the smaller); `None` on the CPU.
pub(crate) fn largest_buffer(device: &burn::tensor::Device) -> Option<u64> {
    #[cfg(feature = "gpu")]
    if *device != burn::tensor::Device::flex() {
        return crate::kernels::gpu::largest_buffer(device);
    }
    let _ = device;
    None
}

/// The bytes of GPU memory `device` holds now: the model's weights, and the pools its passes
/// grew to (a pool keeps its peak for the next pass), so after a score it is the weights plus
/// that score's working memory. `None` on the CPU.
pub fn gpu_memory_reserved(device: &burn::tensor::Device) -> Option<u64> {
    #[cfg(feature = "gpu")]
    if *device != burn::tensor::Device::flex() {
        return crate::kernels::gpu::memory_reserved(device);
    }
    let _ = device;
    None
}

/// Gives the heap memory that is free now back to the kernel (glibc's `malloc_trim`).
///
/// Under [`keep_freed_cpu_memory`] the buffers that loading reads each tensor through stay
/// resident after it: [`RewardModel`](crate::RewardModel) calls this once a model has loaded
/// onto the CPU, so a loaded model's resident memory is its weights (scoring then grows the
/// heap to its working set and keeps it). Linux with glibc only (elsewhere it does nothing).
pub fn release_freed_cpu_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Makes glibc keep freed memory for reuse instead of returning each large block to the kernel.
///
/// flex allocates a fresh buffer for every tensor op, and glibc serves each buffer over 32 MB
/// (a MiniLM batch's activations are 20-60 MB) with its own `mmap`, then `munmap`s it when
/// freed: every op then page-faults its output in again. On a 16 x 128-token MiniLM batch that
/// was a third of the wall time (3.5 s -> 2.2 s per call, kernel time 5.3 s -> 0.3 s; see
/// BENCHMARKS.md). This raises `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` to 1 GiB, so freed
/// buffers stay in the heap (the process keeps its peak footprint).
///
/// [`RewardModel`](crate::RewardModel) calls it when it loads onto the CPU; set
/// `DMOERM_KEEP_MALLOC=1` to leave malloc as it is. Once per process; Linux with glibc only
/// (elsewhere it does nothing).
pub fn keep_freed_cpu_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("DMOERM_KEEP_MALLOC").is_some_and(|v| v == "1") {
                return;
            }
            const GIB: libc::c_int = 1 << 30;
            // SAFETY: mallopt only changes two of glibc's malloc parameters; it is thread-safe.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, GIB);
                libc::mallopt(libc::M_TRIM_THRESHOLD, GIB);
            }
        });
    }
}
