//! Layers of the model: plain and weight-normalised convolutions, the shifted
//! convolutions of PixelCNN++, and the gated resnet.
//!
//! Every layer keeps its weights under the names of the reference `hybrid_ref.py`
//! (`weight`, `bias`; `v`, `g`, `b` for weight norm), so that a PyTorch state dict maps
//! onto the module tree by name.

pub mod conv;
pub mod gated_resnet;
pub mod shifted;
pub mod weight_norm;

pub use conv::{Conv2d, ConvTranspose2d};
pub use gated_resnet::GatedResnet;
pub use shifted::{Shift, ShiftedConv2d, ShiftedDeconv2d};
pub use weight_norm::{WnConv2d, WnConvTranspose2d};

/// Training adds binary dropout and bottleneck noise; evaluation does neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

impl Mode {
    pub fn is_train(self) -> bool {
        self == Mode::Train
    }
}

/// Implements Burn's `Module` for a plain value type that a module carries as settings
/// (no tensors inside): it is kept as is by every module operation.
#[macro_export]
macro_rules! constant_module {
    ($type:ty) => {
        impl burn::module::Module for $type {
            fn visit<V: burn::module::ModuleVisitor>(&self, _visitor: &mut V) {}
            fn map<M: burn::module::ModuleMapper>(self, _mapper: &mut M) -> Self {
                self
            }
            fn to_device(self, _: &burn::tensor::Device) -> Self {
                self
            }
            fn fork(self, _: &burn::tensor::Device) -> Self {
                self
            }
            fn collect_devices(&self, devices: burn::module::Devices) -> burn::module::Devices {
                devices
            }
            fn materialize(self) -> Self {
                self
            }
            fn valid(&self) -> Self {
                self.clone()
            }
            fn train(self) -> Self {
                self
            }
        }

        impl burn::module::ModuleDisplayDefault for $type {
            fn content(&self, content: burn::module::Content) -> Option<burn::module::Content> {
                content.add_formatted(&format!("{:?}", self)).optional()
            }
        }

        impl burn::module::ModuleDisplay for $type {}
    };
}
