//! The causal convolutions of PixelCNN++ (nn.py's `down_shifted_conv2d`,
//! `down_right_shifted_conv2d` and their transposed versions). Padding only on the top
//! (and left) means the output at a pixel sees only rows above it (and columns to its
//! left); the streams are shifted once more at the input so that a pixel never sees
//! itself.

use burn::prelude::*;

use super::weight_norm::{WnConv2d, WnConvTranspose2d};

/// Which causal shape a shifted convolution has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Shift {
    /// Sees rows `<= r`, centred horizontally: pad `kh - 1` on top, `(kw - 1) / 2` on
    /// each side.
    Down,
    /// Sees rows `<= r` and columns `<= c`: pad `kh - 1` on top and `kw - 1` on the left.
    DownRight,
}

crate::constant_module!(Shift);

/// A weight-normalised causal convolution.
#[derive(Module, Debug)]
pub struct ShiftedConv2d {
    pub conv: WnConv2d,
    pub shift: Shift,
}

impl ShiftedConv2d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        shift: Shift,
        stride: usize,
        init_scale: f64,
        device: &Device,
    ) -> Self {
        Self {
            conv: WnConv2d::new(cin, cout, kernel, stride, init_scale, device),
            shift,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, H, W]` (stride 1) or `[B, out, H / 2, W / 2]` (stride 2)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, kh, kw] = self.conv.v.dims();
        let padding = match self.shift {
            Shift::Down => [kh - 1, 0, (kw - 1) / 2, (kw - 1) / 2],
            Shift::DownRight => [kh - 1, 0, kw - 1, 0],
        };
        self.conv.forward_padded(x, padding)
    }
}

/// A weight-normalised stride-2 causal transposed convolution, cropped to twice the
/// input size: rows `0..2H`, and columns `(kw - 1) / 2 ..` (down) or `0..` (down-right).
#[derive(Module, Debug)]
pub struct ShiftedDeconv2d {
    pub deconv: WnConvTranspose2d,
    pub shift: Shift,
}

impl ShiftedDeconv2d {
    pub fn new(cin: usize, cout: usize, kernel: [usize; 2], shift: Shift, device: &Device) -> Self {
        Self {
            deconv: WnConvTranspose2d::new(cin, cout, kernel, 2, device),
            shift,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, 2H, 2W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let [_, _, _, kw] = self.deconv.v.dims();
        let s = self.deconv.stride;
        let col0 = match self.shift {
            Shift::Down => (kw - 1) / 2,
            Shift::DownRight => 0,
        };
        let y = self.deconv.forward(x); // [B, out, (H - 1) s + kh, (W - 1) s + kw]
        y.narrow(2, 0, h * s).narrow(3, col0, w * s) // [B, out, 2H, 2W]
    }
}
