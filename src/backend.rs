//! The one place that names a backend. Model code takes a `Device` and never asks which
//! backend it is.
//!
//! - CPU: Burn's `flex` backend (pure Rust, SIMD, rayon threads). Always built.
//! - GPU: Burn's `vulkan` backend, behind the `vulkan` cargo feature. Kernels compile at
//!   run time, so one binary built without a GPU runs on any Vulkan-capable card.

use burn::prelude::*;

use crate::error::{Error, Result};

/// Which device to run on, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU (`flex`).
    #[default]
    Cpu,
    /// The first Vulkan GPU (needs the `vulkan` feature).
    Vulkan,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "vulkan" | "gpu" => Ok(Self::Vulkan),
            _ => Err(Error::Config(format!(
                "unknown device `{s}`: use cpu or vulkan"
            ))),
        }
    }
}

/// The CPU device.
pub fn cpu() -> Device {
    Device::flex()
}

/// The device for `choice`, or a clear error when it cannot be had.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Vulkan => vulkan(),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan() -> Result<Device> {
    use burn::tensor::DeviceType;
    // `Device::vulkan` never fails itself; without an adapter the first tensor operation
    // panics on Burn's runtime thread. Ask for the adapters first.
    if Device::enumerate(DeviceType::Vulkan).is_empty() {
        return Err(Error::Device(
            "no Vulkan GPU was found: install the GPU driver and the Vulkan loader \
             (libvulkan1), or run with --device cpu"
                .into(),
        ));
    }
    Ok(Device::vulkan(Default::default()))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan() -> Result<Device> {
    Err(Error::Device(
        "this ibvae was built without GPU support: rebuild with \
         `cargo build --release --features vulkan`, or run with --device cpu"
            .into(),
    ))
}

/// Seeds the device's random number generator (dropout masks, bottleneck noise, `z`).
pub fn seed(device: &Device, seed: u64) {
    device.seed(seed);
}

/// Sets the number of CPU threads used by the `flex` backend. Call once, before any
/// tensor work; later calls have no effect.
pub fn set_threads(threads: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Error::Config(format!("could not set {threads} threads: {e}")))
}
