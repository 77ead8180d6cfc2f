//! The one place that talks to the compute engine about devices, threads, seeds and
//! precision. The engine is LibTorch (through `tch`): tensors, autograd, cuDNN on NVIDIA
//! GPUs and oneDNN on the CPU are PyTorch's own.

pub mod ffi;
pub mod memory;
pub mod profiler;
pub mod random;

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind};

use crate::error::{Error, Result};

/// Which device to run on, as chosen on the command line: `cpu`, `cuda` (the first GPU)
/// or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(0) => write!(f, "cuda"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match lower.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::Config(format!(
                    "unknown device `{s}`: use cpu, cuda or cuda:N (N = 0 for the first GPU)"
                ))),
            },
        }
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where a command computes, with how many CPU threads, in which memory layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runtime {
    pub device: DeviceChoice,
    /// LibTorch's intra-op CPU threads (LibTorch's default, all cores, when `None`).
    pub threads: Option<usize>,
    /// The activations' layout.
    pub layout: Layout,
}

impl Runtime {
    /// Sets the threads and the layout of the models built from now on, and returns the
    /// device, or a clear error.
    pub fn start(&self) -> Result<Device> {
        if let Some(t) = self.threads {
            set_threads(t)?;
        }
        set_layout(self.layout);
        device(self.device)
    }
}

/// How the model's activations (`[B, C, H, W]` maps) lie in memory. The same numbers
/// either way, up to the order of a convolution's sums; only the speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The one measured faster for the device and the model's width
    /// ([`Layout::channels_last_for`]).
    #[default]
    Auto,
    /// NCHW, PyTorch's default.
    Nchw,
    /// Channels last (NHWC in memory, PyTorch's `torch.channels_last`), the layout of
    /// oneDNN's and cuDNN's fastest convolutions.
    ChannelsLast,
}

/// The narrowest model that trains faster channels-last on the CPU.
const CPU_CHANNELS_LAST_MIN_FILTERS: usize = 32;

impl Layout {
    /// Whether a model of `nr_filters` filters on `device` computes channels-last.
    /// `Auto` on a GPU: yes, as PyTorch advises for tensor cores (not yet measured here).
    /// `Auto` on the CPU: from 32 filters up. On a 2-core Intel Xeon, `small` (32
    /// filters) trained 4% faster channels-last and `tiny` (8 filters, where the cost per
    /// operation dominates) 18% slower (`docs/performance.md`).
    pub fn channels_last_for(self, device: Device, nr_filters: usize) -> bool {
        match self {
            Self::ChannelsLast => true,
            Self::Nchw => false,
            Self::Auto => device.is_cuda() || nr_filters >= CPU_CHANNELS_LAST_MIN_FILTERS,
        }
    }

    /// The layout this one stands for on `device` with `nr_filters` filters (`Auto`
    /// resolved).
    pub fn resolved(self, device: Device, nr_filters: usize) -> Self {
        match self.channels_last_for(device, nr_filters) {
            true => Self::ChannelsLast,
            false => Self::Nchw,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::ChannelsLast => "channels-last",
            Self::Nchw => "nchw",
        })
    }
}

impl FromStr for Layout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "channels-last" | "channels_last" | "nhwc" => Ok(Self::ChannelsLast),
            "nchw" | "contiguous" => Ok(Self::Nchw),
            _ => Err(Error::Config(format!(
                "unknown layout `{s}`: use auto, channels-last or nchw"
            ))),
        }
    }
}

/// The layout of models built from now on ([`Runtime::start`] sets it once per command):
/// 0 auto, 1 NCHW, 2 channels-last.
static LAYOUT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the layout that models built from now on compute in (a model's own
/// `set_layout` overrides it).
pub fn set_layout(layout: Layout) {
    let code = match layout {
        Layout::Auto => 0,
        Layout::Nchw => 1,
        Layout::ChannelsLast => 2,
    };
    LAYOUT.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// The layout new models compute in.
pub fn layout() -> Layout {
    match LAYOUT.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Layout::Nchw,
        2 => Layout::ChannelsLast,
        _ => Layout::Auto,
    }
}

/// The CPU device.
pub fn cpu() -> Device {
    Device::Cpu
}

/// The device for `choice`, or a clear error when it cannot be had.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            let count = tch::Cuda::device_count().max(0) as usize;
            if count == 0 {
                return Err(Error::Device(format!(
                    "--device {choice}: no CUDA GPU is visible to LibTorch (no NVIDIA driver, \
                     CUDA_VISIBLE_DEVICES empty, or a CPU-only LibTorch); run with --device cpu"
                )));
            }
            if n >= count {
                return Err(Error::Device(format!(
                    "--device {choice}: there {} only {count} CUDA GPU{} (cuda:0 .. cuda:{}); \
                     pick one of those",
                    if count == 1 { "is" } else { "are" },
                    if count == 1 { "" } else { "s" },
                    count - 1
                )));
            }
            // Let cuDNN pick the fastest convolution algorithm for each shape (the shapes
            // of a run repeat every step).
            tch::Cuda::cudnn_set_benchmark(true);
            // Float32 means float32 until a model asks for TF32 (`Precision::Tf32`).
            set_tf32(false);
            Ok(Device::Cuda(n))
        }
    }
}

/// Sets LibTorch's intra-op CPU threads (and one inter-op thread: the model runs one
/// operation at a time).
pub fn set_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    tch::set_num_threads(threads as i32);
    Ok(())
}

/// Waits until the device has finished its queued work (for timing).
pub fn sync(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

/// Whether cuDNN's convolutions and cuBLAS's matrix products on NVIDIA GPUs may round
/// their float32 inputs to TF32 (10-bit mantissa; relative errors near 1e-3). LibTorch
/// allows it for convolutions by default, as PyTorch does; `ibvae` turns it off for
/// `--precision f32` and on for `--precision tf32`. A process-wide LibTorch setting,
/// without effect on the CPU.
///
/// `tch` has no binding for it: the crate's own C++ file sets it ([`ffi`]).
pub fn set_tf32(allow: bool) {
    ffi::set_allow_tf32(allow).expect(TF32_FLAGS_ACCEPT);
}

/// Whether cuBLAS may use TF32 (LibTorch's flag, which [`set_tf32`] sets with cuDNN's).
pub fn tf32_allowed() -> bool {
    ffi::allow_tf32_cublas().expect(TF32_FLAGS_ACCEPT)
}

/// Why LibTorch's TF32 calls cannot fail here: LibTorch only refuses them once its newer
/// fp32-precision settings have been used as well.
const TF32_FLAGS_ACCEPT: &str = "LibTorch refuses its legacy TF32 flags only after its \
     fp32-precision settings were used, which ibvae never calls";

/// The floating-point type of convolutions and matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in float32.
    #[default]
    F32,
    /// float32, but on NVIDIA GPUs convolutions and matrix products round their inputs to
    /// TF32 (PyTorch's default for convolutions): faster on tensor cores, relative errors
    /// near 1e-3. The same as `F32` on the CPU.
    Tf32,
    /// Convolutions and matrix products (and the activations between them) in bfloat16;
    /// the mixture of logistics, the KL terms, the bottleneck rate, the weights and the
    /// Adam state stay in float32. bfloat16 has float32's range, so no loss scaling.
    Bf16,
}

impl Precision {
    /// The tensor kind the model computes its layers in.
    pub fn compute_kind(self) -> Kind {
        match self {
            Self::F32 | Self::Tf32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "tf32" => Ok(Self::Tf32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            _ => Err(Error::Config(format!(
                "unknown precision `{s}`: use f32, tf32 or bf16"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calls into LibTorch's C++ context reach it: the flag reads back as set.
    #[test]
    fn tf32_is_switched_off_and_on() {
        set_tf32(true);
        assert!(tf32_allowed());
        set_tf32(false);
        assert!(!tf32_allowed());
        assert_eq!("tf32".parse::<Precision>().unwrap(), Precision::Tf32);
        assert_eq!(Precision::Tf32.compute_kind(), Kind::Float);
    }

    /// `auto` is channels-last on a GPU and on the CPU from 32 filters up; the other two
    /// are what they say; every name parses back from its printed form.
    #[test]
    fn layouts_parse_print_and_resolve() {
        for layout in [Layout::Auto, Layout::Nchw, Layout::ChannelsLast] {
            assert_eq!(layout.to_string().parse::<Layout>().unwrap(), layout);
        }
        assert_eq!("NHWC".parse::<Layout>().unwrap(), Layout::ChannelsLast);
        let err = "nwhc".parse::<Layout>().unwrap_err().to_string();
        assert!(err.contains("auto, channels-last or nchw"), "{err}");
        let cpu = Device::Cpu;
        assert!(!Layout::Auto.channels_last_for(cpu, 8));
        assert!(!Layout::Auto.channels_last_for(cpu, 31));
        assert!(Layout::Auto.channels_last_for(cpu, 32));
        assert!(Layout::Auto.channels_last_for(Device::Cuda(0), 8));
        assert!(Layout::ChannelsLast.channels_last_for(cpu, 8));
        assert!(!Layout::Nchw.channels_last_for(cpu, 160));
        assert_eq!(Layout::Auto.resolved(cpu, 8), Layout::Nchw);
        assert_eq!(Layout::Auto.resolved(cpu, 32), Layout::ChannelsLast);
    }

    #[test]
    fn devices_parse_and_print() {
        for (s, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("CUDA", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            let got: DeviceChoice = s.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string().parse::<DeviceChoice>().unwrap(), want);
        }
        for bad in ["vulkan", "cuda:", "cuda:x", "tpu"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("cpu, cuda or cuda:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_gpu_is_a_clear_error() {
        if tch::Cuda::device_count() > 0 {
            return;
        }
        let err = device(DeviceChoice::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("--device cpu"), "{err}");
    }

    #[test]
    fn precisions_parse() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("F32".parse::<Precision>().unwrap(), Precision::F32);
        assert!("f16".parse::<Precision>().is_err());
    }
}
