//! The causal convolutions of PixelCNN++ (nn.py's `down_shifted_conv2d`,
//! `down_right_shifted_conv2d` and their transposed versions). Padding only on the top
//! (and left) means the output at a pixel sees only rows above it (and columns to its
//! left); the streams are shifted once more at the input so that a pixel never sees
//! itself.

use tch::Tensor;
use tch::nn::Path;

use super::weight_norm::{WnConv2d, WnConvTranspose2d};
use crate::model::ops::{concat_elu_padded, pad};

/// Which causal shape a shifted convolution has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// Sees rows `<= r`, centred horizontally: pad `kh - 1` on top, `(kw - 1) / 2` on
    /// each side.
    Down,
    /// Sees rows `<= r` and columns `<= c`: pad `kh - 1` on top and `kw - 1` on the left.
    DownRight,
}

impl Shift {
    /// The kernel of the gated resnets' convolutions in this stream: 2x3 for `u`
    /// (down), 2x2 for `ul` (down-right), as in model.py.
    pub fn stream_kernel(self) -> [i64; 2] {
        match self {
            Shift::Down => [2, 3],
            Shift::DownRight => [2, 2],
        }
    }
}

/// A weight-normalised causal convolution. Its weights live under `<path>.conv`.
#[derive(Debug)]
pub struct ShiftedConv2d {
    pub conv: WnConv2d,
    pub shift: Shift,
}

/// Channels, kernel, stride and initial gain of a shifted convolution.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedConfig {
    pub cin: i64,
    pub cout: i64,
    pub kernel: [i64; 2],
    pub stride: i64,
    pub init_scale: f64,
}

impl ShiftedConfig {
    /// Stride 1, unit gain.
    pub fn new(cin: i64, cout: i64, kernel: [i64; 2]) -> Self {
        Self {
            cin,
            cout,
            kernel,
            stride: 1,
            init_scale: 1.0,
        }
    }
}

impl ShiftedConv2d {
    pub fn new(p: &Path, shift: Shift, c: ShiftedConfig) -> Self {
        Self {
            conv: WnConv2d::new(
                &(p / "conv"),
                c.cin,
                c.cout,
                c.kernel,
                c.stride,
                c.init_scale,
            ),
            shift,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, H, W]` (stride 1) or `[B, out, H / 2, W / 2]` (stride 2)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let [kh, kw] = self.conv.kernel();
        let padding = match self.shift {
            Shift::Down => [kh - 1, 0, (kw - 1) / 2, (kw - 1) / 2],
            Shift::DownRight => [kh - 1, 0, kw - 1, 0],
        };
        self.conv.forward_padded(x, padding)
    }

    /// `forward(concat_elu(x))`, with the causal padding written by the fused
    /// `concat_elu`; `then` runs on the padded map before the convolution (dropout: its
    /// zeros stay zeros).
    ///
    /// # Shapes
    /// `[B, in / 2, H, W]` -> `[B, out, H, W]` (stride 1)
    pub fn forward_concat_elu(&self, x: &Tensor, then: impl FnOnce(Tensor) -> Tensor) -> Tensor {
        let [kh, kw] = self.conv.kernel();
        let [left, right] = match self.shift {
            Shift::Down => [(kw - 1) / 2, (kw - 1) / 2],
            Shift::DownRight => [kw - 1, 0],
        };
        self.conv
            .forward(&then(concat_elu_padded(x, [left, right, kh - 1, 0])))
    }
}

/// A weight-normalised stride-2 causal transposed convolution, cropped to twice the
/// input size: rows `0..2H`, and columns `(kw - 1) / 2 ..` (down) or `0..` (down-right).
/// Its weights live under `<path>.deconv`.
#[derive(Debug)]
pub struct ShiftedDeconv2d {
    pub deconv: WnConvTranspose2d,
    pub shift: Shift,
}

impl ShiftedDeconv2d {
    pub fn new(p: &Path, shift: Shift, cin: i64, cout: i64) -> Self {
        let kernel = shift.stream_kernel();
        Self {
            deconv: WnConvTranspose2d::new(&(p / "deconv"), cin, cout, kernel, 2),
            shift,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, 2H, 2W]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (h, w) = (s[2], s[3]);
        let kw = self.deconv.v.size()[3];
        let stride = self.deconv.stride;
        let col0 = match self.shift {
            Shift::Down => (kw - 1) / 2,
            Shift::DownRight => 0,
        };
        let y = self.deconv.forward(x); // [B, out, (H - 1) s + kh, (W - 1) s + kw]
        let (yh, yw) = (y.size()[2], y.size()[3]);
        // Rows 0..2H and columns col0..col0 + 2W, cropped by negative padding.
        pad(&y, [-col0, col0 + w * stride - yw, 0, h * stride - yh]) // [B, out, 2H, 2W]
    }
}
