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
//!
//! The parts: `map` holds the maps and the ways an output position reads its inputs,
//! `window` the rectangle arithmetic, `op` the operations that compute a map on a
//! rectangle, `network` the maps and operations in the forward pass's order; this module
//! drives them pixel by pixel.

mod map;
mod network;
mod op;
mod window;

use tch::Tensor;

use crate::model::pixelcnn::PixelCnnPp;
use map::Map;
use network::Network;
use op::{Node, compute};
use window::rectangles;

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
        let Network {
            maps,
            nodes,
            image,
            last,
        } = Network::build(net, cond, channels, kind);
        Self {
            maps,
            nodes,
            image,
            last,
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
