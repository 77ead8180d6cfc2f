//! PixelCNN++ described for the cached sampler: every map of
//! [`PixelCnnPp::forward`] and the node that computes it, built in that pass's order (the
//! order in which the sampler advances them), with the effective weights in the compute
//! kind and the conditioning terms computed for the whole image beforehand.

use tch::Tensor;

use super::map::{Access, Map};
use super::op::{After, Node, Op, Term};
use crate::model::nn::{GatedResnet, Shift, ShiftedDeconv2d};
use crate::model::pixelcnn::PixelCnnPp;

/// The maps of the forward pass and the nodes that compute them, in its order.
pub(super) struct Network {
    pub(super) maps: Vec<Map>,
    pub(super) nodes: Vec<Node>,
    /// The image map: the pixels drawn so far and a channel of ones.
    pub(super) image: usize,
    /// The last `ul` map, whose `nin_out(elu(.))` is the network's output.
    pub(super) last: usize,
}

impl Network {
    /// The maps and nodes of `net`'s forward pass for `B` images of `channels` channels
    /// given the conditioning map `cond` (`[B, cond_ch, H, W]`; `H` and `W` divisible by 4),
    /// computing in `kind`.
    pub(super) fn build(net: &PixelCnnPp, cond: &Tensor, channels: i64, kind: tch::Kind) -> Self {
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
