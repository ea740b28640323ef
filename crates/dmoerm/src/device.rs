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
