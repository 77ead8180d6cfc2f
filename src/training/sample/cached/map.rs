//! The activation maps the cached sampler keeps between pixels, each final on a prefix of
//! its positions, and the patterns by which an output position reads an input map: what
//! decides when a position can be computed.

use tch::Tensor;

/// An activation map `[B, ch, rows, cols]` filled in raster order: its first `done`
/// positions (all channels, all images) are final.
pub(super) struct Map {
    pub(super) t: Tensor,
    pub(super) rows: i64,
    pub(super) cols: i64,
    pub(super) done: i64,
}

impl Map {
    pub(super) fn len(&self) -> i64 {
        self.rows * self.cols
    }
}

/// Which positions of an input map one output position reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Access {
    /// The same position (a 1x1 convolution, an elementwise operation).
    Same,
    /// A convolution's window: rows `stride r - top ..` (`kh` of them), columns
    /// `stride c - left ..` (`kw`), zero outside the map.
    Window {
        stride: i64,
        top: i64,
        left: i64,
        kh: i64,
        kw: i64,
    },
    /// A stride-2 transposed convolution (kernel width `kw`) whose output is cropped from
    /// column `crop` (and row 0): output `(r, c)` reads row `r / 2` and the columns `C`
    /// with `0 <= c + crop - 2 C < kw`.
    Deconv { crop: i64 },
}

impl Access {
    /// The last position (raster index) of `input` that output `(r, c)` reads, or -1 when
    /// it reads none (its window lies outside the map).
    pub(super) fn last_read(self, input: &Map, r: i64, c: i64) -> i64 {
        match self {
            Access::Same => r * input.cols + c,
            Access::Window {
                stride,
                top,
                left,
                kh,
                kw,
            } => {
                let row = (stride * r - top + kh - 1).min(input.rows - 1);
                let col_lo = (stride * c - left).max(0);
                let col_hi = (stride * c - left + kw - 1).min(input.cols - 1);
                if row < 0 || col_hi < col_lo {
                    -1
                } else {
                    row * input.cols + col_hi
                }
            }
            Access::Deconv { crop } => {
                let col = ((c + crop) / 2).min(input.cols - 1);
                (r / 2) * input.cols + col
            }
        }
    }
}
