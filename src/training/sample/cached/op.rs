//! How the cached sampler computes one map from earlier ones: the convolution terms with
//! their windows, the operations of PixelCNN++ (summed convolutions, the two halves of a
//! gated resnet, the transposed convolution), and their outputs on one rectangle of
//! positions.

use tch::Tensor;

use super::map::{Access, Map};
use super::window::padded_window;
use crate::model::nn::{Shift, ShiftedConv2d};
use crate::model::ops::concat_elu;

/// A convolution of one input map with its effective weights, and the window each output
/// position reads: a shifted convolution, optionally followed by a shift of its output by
/// one row (`down_shift`) or one column (`right_shift`), which moves the window by one and
/// zeroes the first row or column.
pub(super) struct Term {
    pub(super) input: usize,
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) stride: i64,
    pub(super) top: i64,
    pub(super) left: i64,
    /// `concat_elu` of the input before the convolution (a gated resnet's `conv1`).
    pub(super) concat_elu: bool,
    pub(super) zero_row0: bool,
    pub(super) zero_col0: bool,
}

/// `down_shift` or `right_shift` applied to a convolution's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    Nothing,
    DownShift,
    RightShift,
}

impl Term {
    pub(super) fn new(input: usize, conv: &ShiftedConv2d, kind: tch::Kind, after: After) -> Self {
        let [kh, kw] = conv.conv.kernel();
        // A shift of the output by one moves a stride-1 window by one.
        assert!(
            after == After::Nothing || conv.conv.stride == 1,
            "a shifted output of a strided convolution"
        );
        let (top, left) = match conv.shift {
            Shift::Down => (kh - 1, (kw - 1) / 2),
            Shift::DownRight => (kh - 1, kw - 1),
        };
        Self {
            input,
            weight: conv.conv.weight(kind),
            bias: conv.conv.b.to_kind(kind),
            stride: conv.conv.stride,
            top: top + (after == After::DownShift) as i64,
            left: left + (after == After::RightShift) as i64,
            concat_elu: false,
            zero_row0: after == After::DownShift,
            zero_col0: after == After::RightShift,
        }
    }

    pub(super) fn access(&self) -> Access {
        let s = self.weight.size();
        Access::Window {
            stride: self.stride,
            top: self.top,
            left: self.left,
            kh: s[2],
            kw: s[3],
        }
    }

    /// The convolution's outputs at rows `r0..r1`, columns `c0..c1`: `[B, out, r1 - r0, c1 - c0]`.
    fn compute(&self, maps: &[Map], r0: i64, r1: i64, c0: i64, c1: i64) -> Tensor {
        let s = self.weight.size();
        let (kh, kw) = (s[2], s[3]);
        let rows = (
            self.stride * r0 - self.top,
            self.stride * (r1 - 1) - self.top + kh,
        );
        let cols = (
            self.stride * c0 - self.left,
            self.stride * (c1 - 1) - self.left + kw,
        );
        let window = padded_window(&maps[self.input], rows, cols, self.concat_elu);
        let out = window.conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride; 2],
            [0, 0],
            [1, 1],
            1,
        );
        if self.zero_row0 && r0 == 0 {
            let _ = out.narrow(2, 0, 1).zero_();
        }
        if self.zero_col0 && c0 == 0 {
            let _ = out.narrow(3, 0, 1).zero_();
        }
        out
    }
}

/// How one map is computed from earlier ones.
pub(super) enum Op {
    /// The sum of convolutions (`ul`'s first map adds two).
    Convs(Vec<Term>),
    /// A gated resnet's first half: `concat_elu(conv1(concat_elu(x)) + nin_a(concat_elu(a)))`
    /// with `a` the concatenation of the maps `a` (none without a short-cut input).
    GateIn {
        conv1: Term,
        a: Vec<usize>,
        nin_a: Option<(Tensor, Tensor)>,
    },
    /// Its second half: `x + c2[:nf] sigmoid(c2[nf:])`, `c2 = conv2(first half) + cond(h)`,
    /// with `cond(h)` computed for the whole image beforehand.
    GateOut {
        x: usize,
        conv2: Term,
        cond: Option<Tensor>,
    },
    /// A transposed convolution, cropped as
    /// [`ShiftedDeconv2d`](crate::model::nn::ShiftedDeconv2d) crops it: from column
    /// `crop`.
    Deconv {
        input: usize,
        weight: Tensor,
        bias: Tensor,
        crop: i64,
    },
}

pub(super) struct Node {
    pub(super) out: usize,
    pub(super) op: Op,
    /// The input maps and how an output position reads each.
    pub(super) reads: Vec<(usize, Access)>,
}

/// The outputs of `op` at rows `r0..r1`, columns `col0..col1`.
pub(super) fn compute(op: &Op, maps: &[Map], r0: i64, r1: i64, col0: i64, col1: i64) -> Tensor {
    let at = |m: usize| {
        maps[m]
            .t
            .narrow(2, r0, r1 - r0)
            .narrow(3, col0, col1 - col0)
    };
    match op {
        Op::Convs(terms) => {
            let mut sum = terms[0].compute(maps, r0, r1, col0, col1);
            for t in &terms[1..] {
                sum += t.compute(maps, r0, r1, col0, col1);
            }
            sum
        }
        Op::GateIn { conv1, a, nin_a } => {
            let mut c1 = conv1.compute(maps, r0, r1, col0, col1);
            if let Some((w, bias)) = nin_a {
                let parts: Vec<Tensor> = a.iter().map(|&m| at(m)).collect();
                let a = if parts.len() == 1 {
                    parts[0].shallow_clone()
                } else {
                    Tensor::cat(&parts, 1)
                };
                c1 += concat_elu(&a).conv2d(w, Some(bias), [1, 1], [0, 0], [1, 1], 1);
            }
            concat_elu(&c1)
        }
        Op::GateOut { x, conv2, cond } => {
            let mut c2 = conv2.compute(maps, r0, r1, col0, col1);
            if let Some(cond) = cond {
                c2 += cond.narrow(2, r0, r1 - r0).narrow(3, col0, col1 - col0);
            }
            let gates = c2.chunk(2, 1);
            at(*x) + &gates[0] * gates[1].sigmoid()
        }
        Op::Deconv {
            input,
            weight,
            bias,
            crop,
        } => {
            let map = &maps[*input];
            let kw = weight.size()[3];
            let (rr0, rr1) = (r0 / 2, (r1 - 1) / 2 + 1);
            let cc0 = (col0 + crop - kw + 2).div_euclid(2).max(0);
            let cc1 = ((col1 - 1 + crop) / 2 + 1).min(map.cols);
            let window = map.t.narrow(2, rr0, rr1 - rr0).narrow(3, cc0, cc1 - cc0);
            let y = window.conv_transpose2d(weight, Some(bias), [2, 2], [0, 0], [0, 0], 1, [1, 1]);
            y.narrow(2, r0 - 2 * rr0, r1 - r0)
                .narrow(3, col0 + crop - 2 * cc0, col1 - col0)
        }
    }
}
