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
    /// such as Mesa's lavapipe when that is the only one).
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
        DeviceChoice::Gpu => wgpu_device(),
        DeviceChoice::Auto => {
            if has_hardware_gpu() {
                wgpu_device().or_else(|_| Ok(Device::flex()))
            } else {
                Ok(Device::flex())
            }
        }
    }
}

#[cfg(not(target_family = "wasm"))]
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
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = burn::tensor::read_sync(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.iter().any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
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
