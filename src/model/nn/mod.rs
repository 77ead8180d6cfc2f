//! Layers of the model: plain and weight-normalised convolutions, the shifted
//! convolutions of PixelCNN++, and the gated resnet.
//!
//! Every layer is built from a `VarStore` path and keeps its weights under the names of
//! the reference `hybrid_ref.py` (`weight`, `bias`; `V`, `g`, `b` for weight norm), so
//! the variable names are the PyTorch `state_dict` names.
//!
//! Layers compute in the floating-point type of their input: the weights (float32) are
//! cast to it, so a bfloat16 input gives a bfloat16 convolution whose gradients flow
//! back to the float32 weights.

pub mod conv;
pub mod gated_resnet;
pub mod shifted;
pub mod weight_norm;

pub use conv::{Conv2d, ConvConfig, ConvTranspose2d};
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
