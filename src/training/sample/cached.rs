//! Cached generation for PixelCNN++ (after Ramachandran et al. 2017, "Fast Generation for
//! Convolutional Autoregressive Models"): every activation map of the network is kept
//! between pixels and each of its positions is computed exactly once, as soon as the
//! positions it reads are final.
//!
//! Every map of the network (the input, the outputs of the shifted, strided and
//! transposed convolutions, the two halves of each gated resnet) is filled in raster
//! order, so what is known of it is a prefix: its first `done` positions. A position can
//! be computed once every position it reads (its window in each input map) lies in that
//! input's prefix; causality (the output at pixel `j` depends on pixels before `j`) makes
//! the output at the pixel about to be drawn computable. Before each pixel the sampler
//! advances every map, in the forward pass's order, as far as its inputs allow, and
//! computes the new positions as at most three rectangles (the end of a row, whole rows,
//! the start of a row), each from the window of its inputs that it reads, zero-padded at
//! the borders as the full convolution is. Over one image every position of every map is
//! computed once: the work of one forward pass, spread over the pixels, instead of one
//! forward pass per pixel.
//!
//! The numbers are those of [`PixelCnnPp::forward`](crate::model::pixelcnn::PixelCnnPp::forward)
//! in evaluation mode (the same operations on the same values; in float64 the samples are
//! the naive sampler's to the byte, which the tests check).

use tch::Tensor;

use crate::model::nn::{GatedResnet, Shift, ShiftedConv2d, ShiftedDeconv2d};
use crate::model::ops::concat_elu;
use crate::model::pixelcnn::PixelCnnPp;

/// An activation map `[B, ch, rows, cols]` filled in raster order: its first `done`
/// positions (all channels, all images) are final.
struct Map {
    t: Tensor,
    rows: i64,
    cols: i64,
    done: i64,
}

impl Map {
    fn len(&self) -> i64 {
        self.rows * self.cols
    }
}

/// Which positions of an input map one output position reads.
#[derive(Debug, Clone, Copy)]
enum Access {
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
    fn last_read(self, input: &Map, r: i64, c: i64) -> i64 {
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

/// A convolution of one input map with its effective weights, and the window each output
/// position reads: a shifted convolution, optionally followed by a shift of its output by
/// one row (`down_shift`) or one column (`right_shift`), which moves the window by one and
/// zeroes the first row or column.
struct Term {
    input: usize,
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    top: i64,
    left: i64,
    /// `concat_elu` of the input before the convolution (a gated resnet's `conv1`).
    concat_elu: bool,
    zero_row0: bool,
    zero_col0: bool,
}

/// `down_shift` or `right_shift` applied to a convolution's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    DownShift,
    RightShift,
}

impl Term {
    fn new(input: usize, conv: &ShiftedConv2d, kind: tch::Kind, after: After) -> Self {
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

    fn access(&self) -> Access {
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

/// Rows `rows.0..rows.1` and columns `cols.0..cols.1` of `map`, through `concat_elu`
/// when `elu_pair`, with zeros where they lie outside it (the zero padding of the full
/// convolution, which pads after `concat_elu` as this does).
fn padded_window(map: &Map, rows: (i64, i64), cols: (i64, i64), elu_pair: bool) -> Tensor {
    let (r_lo, r_hi) = (rows.0.max(0), rows.1.min(map.rows));
    let (c_lo, c_hi) = (cols.0.max(0), cols.1.min(map.cols));
    if r_hi <= r_lo || c_hi <= c_lo {
        // Wholly outside: zeros (concat_elu doubles the channels).
        let s = map.t.size();
        let ch = if elu_pair { 2 * s[1] } else { s[1] };
        return Tensor::zeros(
            [s[0], ch, rows.1 - rows.0, cols.1 - cols.0],
            (map.t.kind(), map.t.device()),
        );
    }
    let inside = map
        .t
        .narrow(2, r_lo, r_hi - r_lo)
        .narrow(3, c_lo, c_hi - c_lo);
    let inside = if elu_pair {
        concat_elu(&inside)
    } else {
        inside
    };
    let pad = [c_lo - cols.0, cols.1 - c_hi, r_lo - rows.0, rows.1 - r_hi];
    if pad == [0; 4] {
        inside
    } else {
        inside.constant_pad_nd(pad)
    }
}

/// How one map is computed from earlier ones.
enum Op {
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
    /// A transposed convolution, cropped as [`ShiftedDeconv2d`] crops it: from column
    /// `crop`.
    Deconv {
        input: usize,
        weight: Tensor,
        bias: Tensor,
        crop: i64,
    },
}

struct Node {
    out: usize,
    op: Op,
    /// The input maps and how an output position reads each.
    reads: Vec<(usize, Access)>,
}

/// PixelCNN++ in evaluation mode, one pixel at a time, for a batch of images.
pub struct CachedPixelCnn {
    maps: Vec<Map>,
    nodes: Vec<Node>,
    /// The image map: the pixels drawn so far and a channel of ones.
    image: usize,
    /// The last `ul` map, whose `nin_out(elu(.))` is the network's output.
    last: usize,
    nin_out: (Tensor, Tensor),
    channels: i64,
}

impl CachedPixelCnn {
    /// Prepares generation of `B` images of `channels` channels given the conditioning
    /// map `cond` (`[B, cond_ch, H, W]`, the hybrid's `u`; `H` and `W` divisible by 4, as
    /// for [`PixelCnnPp::forward`]), computing in `kind`.
    pub fn new(net: &PixelCnnPp, cond: &Tensor, channels: i64, kind: tch::Kind) -> Self {
        let s = cond.size();
        let (batch, rows, cols) = (s[0], s[2], s[3]);
        assert!(
            rows % 4 == 0 && cols % 4 == 0,
            "PixelCNN++ needs sides divisible by 4, not {rows}x{cols}"
        );
        let device = cond.device();
        let cond = cond.to_kind(kind);
        let pool = |k: i64| cond.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>);
        let hs = [cond.shallow_clone(), pool(2), pool(4)];
        let nf = net.nin_out.v.size()[1];
        let mut b = Builder {
            maps: Vec::new(),
            nodes: Vec::new(),
            batch,
            kind,
            device,
        };
        // The image's channels (zero until drawn), then a channel of ones.
        let image = b.map(channels + 1, rows, cols);
        let _ = b.maps[image].t.narrow(1, channels, 1).fill_(1.0);
        let u0 = b.convs(
            nf,
            vec![Term::new(image, &net.u_init, kind, After::DownShift)],
        );
        let ul0 = b.convs(
            nf,
            vec![
                Term::new(image, &net.ul_init_above, kind, After::DownShift),
                Term::new(image, &net.ul_init_left, kind, After::RightShift),
            ],
        );
        let mut u_list = vec![u0];
        let mut ul_list = vec![ul0];
        // Up pass.
        for (s, h_s) in hs.iter().enumerate() {
            if s > 0 {
                let u_in = *u_list.last().expect("saved u");
                let ul_in = *ul_list.last().expect("saved ul");
                let u = b.convs(
                    nf,
                    vec![Term::new(u_in, &net.down_u[s - 1], kind, After::Nothing)],
                );
                let ul = b.convs(
                    nf,
                    vec![Term::new(ul_in, &net.down_ul[s - 1], kind, After::Nothing)],
                );
                u_list.push(u);
                ul_list.push(ul);
            }
            for (gu, gul) in net.up_u[s].iter().zip(&net.up_ul[s]) {
                let u = b.gated(gu, *u_list.last().expect("saved u"), vec![], h_s);
                let ul = b.gated(gul, *ul_list.last().expect("saved ul"), vec![u], h_s);
                u_list.push(u);
                ul_list.push(ul);
            }
        }
        // Down pass.
        let mut u = u_list.pop().expect("saved u");
        let mut ul = ul_list.pop().expect("saved ul");
        for s in 0..3 {
            let res = 2 - s;
            if s > 0 {
                u = b.deconv(u, &net.up_u_deconv[s - 1]);
                ul = b.deconv(ul, &net.up_ul_deconv[s - 1]);
            }
            for (gu, gul) in net.dn_u[s].iter().zip(&net.dn_ul[s]) {
                let saved_u = u_list.pop().expect("one saved u per down-pass block");
                let saved_ul = ul_list.pop().expect("one saved ul per down-pass block");
                u = b.gated(gu, u, vec![saved_u], &hs[res]);
                ul = b.gated(gul, ul, vec![u, saved_ul], &hs[res]);
            }
        }
        assert_eq!(
            (b.maps[ul].rows, b.maps[ul].cols),
            (rows, cols),
            "the last map has the image's size"
        );
        Self {
            maps: b.maps,
            nodes: b.nodes,
            image,
            last: ul,
            nin_out: (net.nin_out.weight(kind), net.nin_out.b.to_kind(kind)),
            channels,
        }
    }

    /// The network's output `v` at pixel `(r, c)` (`[B, out_ch, 1, 1]`), all earlier
    /// pixels having been set with [`CachedPixelCnn::set_pixel`].
    pub fn output_at(&mut self, r: i64, c: i64) -> Tensor {
        let cols = self.maps[self.image].cols;
        let k = r * cols + c;
        assert_eq!(
            self.maps[self.image].done, k,
            "pixels are drawn in raster order"
        );
        self.advance();
        let last = &self.maps[self.last];
        assert!(last.done > k, "the output at pixel {k} is not computable");
        let ul = last.t.narrow(2, r, 1).narrow(3, c, 1); // [B, nf, 1, 1]
        ul.elu().conv2d(
            &self.nin_out.0,
            Some(&self.nin_out.1),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        )
    }

    /// Sets the next pixel (`[B, C]` values in `[-1, 1]`, in the compute kind).
    pub fn set_pixel(&mut self, values: &Tensor) {
        let map = &mut self.maps[self.image];
        let (r, c) = (map.done / map.cols, map.done % map.cols);
        let b = values.size()[0];
        map.t
            .narrow(1, 0, self.channels)
            .narrow(2, r, 1)
            .narrow(3, c, 1)
            .copy_(&values.view([b, self.channels, 1, 1]));
        map.done += 1;
    }

    /// Computes every position whose inputs are final, map by map in the forward order.
    fn advance(&mut self) {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let out = &self.maps[node.out];
            let start = out.done;
            let mut end = start;
            // Stops at the first position not ready: positions are computed in raster
            // order, never past one that is waiting.
            while end < out.len() {
                let (r, c) = (end / out.cols, end % out.cols);
                let ready = node
                    .reads
                    .iter()
                    .all(|&(m, access)| access.last_read(&self.maps[m], r, c) < self.maps[m].done);
                if !ready {
                    break;
                }
                end += 1;
            }
            if end == start {
                continue;
            }
            let cols = out.cols;
            for (r0, r1, c0, c1) in rectangles(start, end, cols) {
                let value = compute(&self.nodes[i].op, &self.maps, r0, r1, c0, c1);
                let out = &self.maps[self.nodes[i].out];
                out.t
                    .narrow(2, r0, r1 - r0)
                    .narrow(3, c0, c1 - c0)
                    .copy_(&value);
            }
            self.maps[self.nodes[i].out].done = end;
        }
    }
}

/// The positions `start..end` (raster order, rows of `cols`) as at most three rectangles
/// `(r0, r1, c0, c1)`: the end of a row, whole rows, the start of a row.
fn rectangles(start: i64, end: i64, cols: i64) -> Vec<(i64, i64, i64, i64)> {
    let mut out = Vec::with_capacity(3);
    let mut p = start;
    while p < end {
        let (r, c) = (p / cols, p % cols);
        if c == 0 && end - p >= cols {
            let n = (end - p) / cols;
            out.push((r, r + n, 0, cols));
            p += n * cols;
        } else {
            let stop = end.min((r + 1) * cols);
            out.push((r, r + 1, c, stop - r * cols));
            p = stop;
        }
    }
    out
}

/// The outputs of `op` at rows `r0..r1`, columns `col0..col1`.
fn compute(op: &Op, maps: &[Map], r0: i64, r1: i64, col0: i64, col1: i64) -> Tensor {
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

/// Collects the maps and nodes in the forward pass's order.
struct Builder {
    maps: Vec<Map>,
    nodes: Vec<Node>,
    batch: i64,
    kind: tch::Kind,
    device: tch::Device,
}

impl Builder {
    fn map(&mut self, ch: i64, rows: i64, cols: i64) -> usize {
        let t = Tensor::zeros([self.batch, ch, rows, cols], (self.kind, self.device));
        self.maps.push(Map {
            t,
            rows,
            cols,
            done: 0,
        });
        self.maps.len() - 1
    }

    fn node(
        &mut self,
        ch: i64,
        rows: i64,
        cols: i64,
        op: Op,
        reads: Vec<(usize, Access)>,
    ) -> usize {
        let out = self.map(ch, rows, cols);
        self.nodes.push(Node { out, op, reads });
        out
    }

    /// The output size of a convolution term on its input.
    fn conv_size(&self, t: &Term) -> (i64, i64) {
        let m = &self.maps[t.input];
        (m.rows / t.stride, m.cols / t.stride)
    }

    fn convs(&mut self, ch: i64, terms: Vec<Term>) -> usize {
        let (rows, cols) = self.conv_size(&terms[0]);
        let reads = terms.iter().map(|t| (t.input, t.access())).collect();
        self.node(ch, rows, cols, Op::Convs(terms), reads)
    }

    fn gated(&mut self, g: &GatedResnet, x: usize, a: Vec<usize>, h: &Tensor) -> usize {
        let kind = self.kind;
        let (rows, cols) = (self.maps[x].rows, self.maps[x].cols);
        let nf = self.maps[x].t.size()[1];
        let conv1 = Term {
            concat_elu: true,
            ..Term::new(x, &g.conv1, kind, After::Nothing)
        };
        let nin_a = g
            .nin_a
            .as_ref()
            .map(|n| (n.weight(kind), n.b.to_kind(kind)));
        // Without a short-cut convolution the block reads no short-cut input.
        let a = if nin_a.is_some() { a } else { Vec::new() };
        let mut reads = vec![(x, conv1.access())];
        reads.extend(a.iter().map(|&m| (m, Access::Same)));
        let hidden = self.node(2 * nf, rows, cols, Op::GateIn { conv1, a, nin_a }, reads);
        let conv2 = Term::new(hidden, &g.conv2, kind, After::Nothing);
        let reads = vec![(hidden, conv2.access()), (x, Access::Same)];
        let cond = g.cond.as_ref().map(|c| c.forward(h));
        self.node(nf, rows, cols, Op::GateOut { x, conv2, cond }, reads)
    }

    fn deconv(&mut self, input: usize, d: &ShiftedDeconv2d) -> usize {
        let kind = self.kind;
        let weight = d.deconv.weight(kind);
        let kw = weight.size()[3];
        // Rows: output row r reads input row r / 2 alone (kernel height 2, stride 2).
        assert!(
            weight.size()[2] == 2 && d.deconv.stride == 2,
            "the cached sampler knows stride-2 transposed convolutions of height 2"
        );
        let crop = match d.shift {
            Shift::Down => (kw - 1) / 2,
            Shift::DownRight => 0,
        };
        let m = &self.maps[input];
        let (rows, cols, ch) = (2 * m.rows, 2 * m.cols, weight.size()[1]);
        let op = Op::Deconv {
            input,
            weight,
            bias: d.deconv.b.to_kind(kind),
            crop,
        };
        self.node(ch, rows, cols, op, vec![(input, Access::Deconv { crop })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_positions_splits_into_a_row_end_whole_rows_and_a_row_start() {
        assert_eq!(rectangles(3, 4, 8), vec![(0, 1, 3, 4)]);
        assert_eq!(
            rectangles(5, 29, 8),
            vec![(0, 1, 5, 8), (1, 3, 0, 8), (3, 4, 0, 5)]
        );
        assert_eq!(rectangles(0, 16, 8), vec![(0, 2, 0, 8)]);
        assert_eq!(rectangles(8, 8, 8), vec![]);
    }
}
