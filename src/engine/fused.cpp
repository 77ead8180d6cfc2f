// The model's fused operations, each a LibTorch autograd function with its own gradient,
// for what would otherwise be several operations (and several autograd nodes) one after
// the other: `concat_elu` with the zero padding of the convolution that reads it, the
// gated resnet's gate, weight normalisation, and binary dropout at rate 1/2 from random
// bits. `ffi.rs` declares the exported functions and wraps them; each follows the error
// rule of `guarded.h`.

#include "guarded.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addcmul.h>
#include <ATen/ops/elu.h>
#include <ATen/ops/elu_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/neg.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/sigmoid_backward.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

using ibvae::guarded;

// ---------------------------------------------------------------------------------------
// The model: PixelCNN++'s concat_elu, padded for the convolution that reads it.
// ---------------------------------------------------------------------------------------

namespace {

// `e^x - 1` for `x <= 0` in float32, in arithmetic alone so that a loop of it
// vectorises: with `x = n log 2 + r`, |r| <= log(2)/2, it is `2^n (e^r - 1) + (2^n - 1)`,
// `e^r - 1` by its Taylor series to r^8 (truncation below 1.5e-8 relative, and no
// cancellation: at n = 0 it is the whole answer) and 2^n from the exponent bits. Below
// -87, n stops at -126 and r at -1, which gives -1 to float32 precision; NaN stays NaN.
// Within a few float32 ulps of `expm1` (tested against float64).
inline float expm1_nonpositive(float x) {
  int32_t n = static_cast<int32_t>(x * 1.44269504f - 0.5f);  // round to nearest, x <= 0
  n = std::max(n, -126);
  const float fn = static_cast<float>(n);
  float r = (x - fn * 0.693145752f) - fn * 1.42860677e-6f;  // log 2 in two parts
  r = std::max(r, -1.0f);
  const float q =
      r + r * r *
              (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 +
              r * (1.0f / 5040 + r * (1.0f / 40320)))))));
  const int32_t bits = (n + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return two_n * q + (two_n - 1.0f);
}

// `pos = ELU(x)`, `neg = ELU(-x)` over `n` elements: one `expm1`, of -|x|, per element
// (only one of the two is negative), and ELU(t) = max(t, e^-|t| - 1) since e^t - 1 >= t.
// The float32 version is compiled like `elu_pair_grad`; other types use `std::expm1`.
template <typename scalar_t>
void elu_pair(const scalar_t* __restrict__ x, scalar_t* __restrict__ pos,
              scalar_t* __restrict__ neg, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const scalar_t v = x[j];
    const scalar_t e = std::expm1(-std::abs(v));
    pos[j] = v > 0 ? v : e;
    neg[j] = v < 0 ? -v : e;
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void elu_pair_f32(const float* __restrict__ x, float* __restrict__ pos,
                  float* __restrict__ neg, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j];
    const float e = expm1_nonpositive(-std::fabs(v));
    pos[j] = std::max(v, e);
    neg[j] = std::max(-v, e);
  }
}

template <>
void elu_pair<float>(const float* __restrict__ x, float* __restrict__ pos,
                     float* __restrict__ neg, int64_t n) {
  elu_pair_f32(x, pos, neg, n);
}

// `out = g1 ELU'(t1) - g2 ELU'(t2)` over `n` elements, from the outputs `e = ELU(t)`:
// g (min(e, 0) + 1), without a branch (a NaN stays NaN). The float32 version is compiled
// for AVX-512, AVX2 and plain x86-64, chosen when the program starts
// (`target_clones`), so that it runs at the vector width of the machine it is on.
template <typename scalar_t>
void elu_pair_grad(const scalar_t* __restrict__ g1, const scalar_t* __restrict__ e1,
                   const scalar_t* __restrict__ g2, const scalar_t* __restrict__ e2,
                   scalar_t* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    out[j] = g1[j] * (std::min(e1[j], scalar_t(0)) + scalar_t(1)) -
             g2[j] * (std::min(e2[j], scalar_t(0)) + scalar_t(1));
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void elu_pair_grad_f32(const float* __restrict__ g1, const float* __restrict__ e1,
                       const float* __restrict__ g2, const float* __restrict__ e2,
                       float* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    out[j] = g1[j] * (std::min(e1[j], 0.0f) + 1.0f) - g2[j] * (std::min(e2[j], 0.0f) + 1.0f);
  }
}

template <>
void elu_pair_grad<float>(const float* __restrict__ g1, const float* __restrict__ e1,
                          const float* __restrict__ g2, const float* __restrict__ e2,
                          float* __restrict__ out, int64_t n) {
  elu_pair_grad_f32(g1, e1, g2, e2, out, n);
}

// `pad(elu(cat([x, -x], 1)))` with zeros: `left`, `right` columns and `top`, `bottom` rows
// around each map. Equal to the three operations and the padding one after the other
// (ELU(0) = 0, so padding before or after the ELU is the same), written into one tensor
// in three passes instead of five, with one allocation instead of four; the backward pass
// reads the saved output (ELU'(x) = ELU(x) + 1 where x <= 0), which the convolution keeps
// anyway.
struct ConcatEluPadded : public torch::autograd::Function<ConcatEluPadded> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t left, int64_t right, int64_t top, int64_t bottom) {
    TORCH_CHECK(x.dim() == 4, "concat_elu: a [B, C, H, W] map was expected, not ", x.sizes());
    TORCH_CHECK(left >= 0 && right >= 0 && top >= 0 && bottom >= 0,
                "concat_elu: negative padding");
    const int64_t c = x.size(1);
    const int64_t h = x.size(2);
    const int64_t w = x.size(3);
    at::Tensor y = at::empty({x.size(0), 2 * c, top + h + bottom, left + w + right},
                             x.options().memory_format(x.suggest_memory_format()));
    if (top > 0) y.narrow(2, 0, top).zero_();
    if (bottom > 0) y.narrow(2, top + h, bottom).zero_();
    if (left > 0) y.narrow(3, 0, left).zero_();
    if (right > 0) y.narrow(3, left + w, right).zero_();
    const at::MemoryFormat format = x.suggest_memory_format();
    if (x.is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
        x.is_contiguous(format)) {
      forward_loop(x, y, {left, top, h, w}, format == at::MemoryFormat::ChannelsLast);
    } else {
      const at::Tensor inner = y.narrow(2, top, h).narrow(3, left, w);
      at::Tensor positive = inner.narrow(1, 0, c);
      at::Tensor negative = inner.narrow(1, c, c);
      at::elu_out(positive, x);
      at::neg_out(negative, x);
      at::elu_(negative);
    }
    ctx->save_for_backward({y});
    ctx->saved_data["box"] = std::vector<int64_t>{left, top, h, w};
    return y;
  }

  // Calls `run(at, half, n, i)` for each run of `n` elements of the box `{left, top, h,
  // w}` of a padded `[b, 2c, hp, wp]` map that are consecutive in memory: the positive
  // half's run starts at offset `at`, the negative half's at `at + half`, and the same
  // run of the unpadded `[b, c, h, w]` map (in the same layout) at offset `i`. NCHW runs
  // along a row of one channel, channels-last along the channels of one pixel.
  template <typename Run>
  static void for_each_run(int64_t b, int64_t c, int64_t hp, int64_t wp,
                           const std::vector<int64_t>& box, bool nhwc, const Run& run) {
    const int64_t left = box[0], top = box[1], h = box[2], w = box[3];
    if (!nhwc) {
      at::parallel_for(0, b * c * h, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, w)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t image = r / (c * h), ch = (r / h) % c, row = r % h;
          run(((image * 2 * c + ch) * hp + top + row) * wp + left, c * hp * wp, w, r * w);
        }
      });
    } else {
      at::parallel_for(0, b * h * w, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, c)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t image = p / (h * w), row = (p / w) % h, col = p % w;
          run(((image * hp + top + row) * wp + left + col) * 2 * c, c, c, p * c);
        }
      });
    }
  }

  // ELU of `x` and of `-x` into the box `{left, top, h, w}` of the two halves of `y`, in
  // one pass over `x` (dense, in `y`'s layout).
  static void forward_loop(const at::Tensor& x, at::Tensor& y, const std::vector<int64_t>& box,
                           bool nhwc) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "concat_elu", [&] {
      const scalar_t* px = x.const_data_ptr<scalar_t>();
      scalar_t* py = y.mutable_data_ptr<scalar_t>();
      for_each_run(x.size(0), x.size(1), y.size(2), y.size(3), box, nhwc,
                   [&](int64_t at, int64_t half, int64_t n, int64_t i) {
                     elu_pair(px + i, py + at, py + at + half, n);
                   });
    });
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const at::Tensor y = ctx->get_saved_variables()[0];
    const std::vector<int64_t> box = ctx->saved_data["box"].toIntVector();
    const int64_t c = y.size(1) / 2;
    const auto inner = [&](const at::Tensor& t) {
      return t.narrow(2, box[1], box[2]).narrow(3, box[0], box[3]);
    };
    // d/dx [elu(x), elu(-x)] . [g1, g2] = g1 elu'(x) - g2 elu'(-x), each elu' from its
    // output (ELU'(t) = 1 where ELU(t) > 0, ELU(t) + 1 elsewhere). On the CPU one pass
    // over the four inputs when the gradient has the output's layout; else one pass over
    // both halves, then their difference.
    if (y.is_cpu() && grad.strides() == y.strides() &&
        (y.scalar_type() == at::kFloat || y.scalar_type() == at::kDouble) &&
        (y.is_contiguous() || y.is_contiguous(at::MemoryFormat::ChannelsLast))) {
      return {backward_loop(grad, y, box), at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor()};
    }
    const at::Tensor both = at::elu_backward(inner(grad), 1.0, 1.0, 1.0, /*is_result=*/true,
                                             inner(y));
    const at::Tensor dx = at::sub(both.narrow(1, 0, c), both.narrow(1, c, c));
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

  // `g1 elu'(x) - g2 elu'(-x)` in one loop over the box `{left, top, h, w}` of `grad` and
  // `y` (dense, one layout, NCHW or channels-last), into a new tensor of that layout.
  static at::Tensor backward_loop(const at::Tensor& grad, const at::Tensor& y,
                                  const std::vector<int64_t>& box) {
    const int64_t b = y.size(0), c = y.size(1) / 2, hp = y.size(2), wp = y.size(3);
    const int64_t h = box[2], w = box[3];
    const bool nhwc = !y.is_contiguous();
    at::Tensor dx = at::empty({b, c, h, w}, y.options().memory_format(
                                                nhwc ? at::MemoryFormat::ChannelsLast
                                                     : at::MemoryFormat::Contiguous));
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "concat_elu_backward", [&] {
      const scalar_t* pg = grad.const_data_ptr<scalar_t>();
      const scalar_t* py = y.const_data_ptr<scalar_t>();
      scalar_t* pd = dx.mutable_data_ptr<scalar_t>();
      for_each_run(b, c, hp, wp, box, nhwc, [&](int64_t at, int64_t half, int64_t n, int64_t i) {
        elu_pair_grad(pg + at, py + at, pg + at + half, py + at + half, pd + i, n);
      });
    });
    return dx;
  }
};

// The gated resnet's output, `x + a * sigmoid(b)` where `[a, b] = c` split along the
// channels: two passes forward instead of three, and a backward pass that writes the
// gradients of `a` and `b` into one tensor instead of concatenating them.
struct GatedResidual : public torch::autograd::Function<GatedResidual> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& c) {
    TORCH_CHECK(x.dim() == 4 && c.dim() == 4 && c.size(0) == x.size(0) &&
                    c.size(1) == 2 * x.size(1) && c.size(2) == x.size(2) &&
                    c.size(3) == x.size(3),
                "gated residual: maps [B, C, H, W] and [B, 2C, H, W] were expected, not ",
                x.sizes(), " and ", c.sizes());
    const int64_t n = x.size(1);
    const at::Tensor a = c.narrow(1, 0, n);
    const at::Tensor s = at::sigmoid(c.narrow(1, n, n));
    ctx->save_for_backward({a, s});
    return at::addcmul(x, a, s);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) {
      return {at::Tensor(), at::Tensor()};
    }
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor& a = saved[0];
    const at::Tensor& s = saved[1];
    const int64_t n = a.size(1);
    std::vector<int64_t> sizes = a.sizes().vec();
    sizes[1] = 2 * n;
    at::Tensor dc = at::empty(sizes, grad.options().memory_format(a.suggest_memory_format()));
    at::Tensor da = dc.narrow(1, 0, n);
    at::Tensor db = dc.narrow(1, n, n);
    at::mul_out(da, grad, s);                           // d/da = g s
    at::sigmoid_backward_out(db, at::mul(grad, a), s);  // d/db = g a s (1 - s)
    return {grad, dc};
  }
};

// Weight normalisation, `w = g * v / sqrt(max(sum v^2, eps))` with one norm per output
// channel `o` (Salimans & Kingma 2016), as one operation forward and one backward where
// the operations one by one make seven and a dozen, each tiny: `v` is read as `[A, O, R]`
// around its output axis `axis` (a convolution's `[out, in, kh, kw]` has axis 0, a
// transposed convolution's `[in, out, kh, kw]` axis 1). Sums are taken in float64. The
// gradient, with `n` the norm and `s = sum_i dw_i v_i` over one channel:
//   dg = s / n,   dv = (g / n) (dw - s v / n^2)   (dv = (g / n) dw where the floor holds,
// whose own gradient is zero, as that of `clamp_min`).
struct WeightNorm : public torch::autograd::Function<WeightNorm> {
  // [A, O, R] of `v` around `axis`.
  static std::array<int64_t, 3> box(const at::Tensor& v, int64_t axis) {
    int64_t a = 1;
    int64_t r = 1;
    for (int64_t d = 0; d < v.dim(); ++d) {
      if (d < axis) a *= v.size(d);
      if (d > axis) r *= v.size(d);
    }
    return {a, v.size(axis), r};
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& v,
                            const at::Tensor& g, int64_t axis, double eps,
                            bool tensor_operations) {
    TORCH_CHECK(axis >= 0 && axis < v.dim() && g.dim() == 1 && g.size(0) == v.size(axis) &&
                    g.scalar_type() == v.scalar_type() && g.device() == v.device(),
                "weight norm: gains of shape [", v.size(axis), "] for axis ", axis, " of ",
                v.sizes(), " were expected, not ", g.sizes());
    const at::Tensor vc = v.contiguous();
    const at::Tensor gc = g.contiguous();
    const auto [a, o, r] = box(vc, axis);
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["loop"] = vc.is_cpu() && !tensor_operations;
    if (!ctx->saved_data["loop"].toBool()) {
      // On a GPU (or on request, for the tests), the same formula in tensor operations.
      const at::Tensor v3 = vc.view({a, o, r});
      const at::Tensor ss = v3.square().sum(at::IntArrayRef{0, 2}, false, at::kDouble);
      ctx->save_for_backward({vc, gc, ss});
      const at::Tensor scale = gc.to(at::kDouble) / ss.clamp_min(eps).sqrt();
      return (v3 * scale.to(vc.scalar_type()).view({1, o, 1})).view(vc.sizes());
    }
    at::Tensor w = at::empty_like(vc);
    at::Tensor sumsq = at::empty({o}, vc.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "weight_norm", [&] {
      const scalar_t* pv = vc.const_data_ptr<scalar_t>();
      const scalar_t* pg = gc.const_data_ptr<scalar_t>();
      scalar_t* pw = w.mutable_data_ptr<scalar_t>();
      double* ps = sumsq.mutable_data_ptr<double>();
      at::parallel_for(0, o, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, a * r)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          double ss = 0.0;
          for (int64_t i = 0; i < a; ++i) {
            const scalar_t* row = pv + (i * o + k) * r;
            for (int64_t j = 0; j < r; ++j) ss += double(row[j]) * double(row[j]);
          }
          ps[k] = ss;
          const double scale = double(pg[k]) / std::sqrt(std::max(ss, eps));
          for (int64_t i = 0; i < a; ++i) {
            const int64_t at = (i * o + k) * r;
            for (int64_t j = 0; j < r; ++j) pw[at + j] = scalar_t(double(pv[at + j]) * scale);
          }
        }
      });
    });
    ctx->save_for_backward({vc, gc, sumsq});
    return w;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor& v = saved[0];
    const at::Tensor& g = saved[1];
    const at::Tensor& sumsq = saved[2];
    const double eps = ctx->saved_data["eps"].toDouble();
    const auto [a, o, r] = box(v, ctx->saved_data["axis"].toInt());
    const at::Tensor dw = grad.contiguous();
    if (!ctx->saved_data["loop"].toBool()) {
      const at::Tensor v3 = v.view({a, o, r});
      const at::Tensor dw3 = dw.view({a, o, r});
      const at::Tensor s = (dw3 * v3).sum(at::IntArrayRef{0, 2}, false, at::kDouble);
      const at::Tensor n = sumsq.clamp_min(eps).sqrt();
      const at::Tensor along = at::where(sumsq >= eps, s / (n * n), at::zeros_like(s));
      const auto as_v = [&](const at::Tensor& t) {
        return t.to(v.scalar_type()).view({1, o, 1});
      };
      const at::Tensor dv = (as_v(g.to(at::kDouble) / n) * (dw3 - as_v(along) * v3));
      return {dv.view(v.sizes()), (s / n).to(g.scalar_type()), at::Tensor(), at::Tensor(),
              at::Tensor()};
    }
    at::Tensor dv = at::empty_like(v);
    at::Tensor dg = at::empty_like(g);
    AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "weight_norm_backward", [&] {
      const scalar_t* pv = v.const_data_ptr<scalar_t>();
      const scalar_t* pg = g.const_data_ptr<scalar_t>();
      const scalar_t* pdw = dw.const_data_ptr<scalar_t>();
      const double* ps = sumsq.const_data_ptr<double>();
      scalar_t* pdv = dv.mutable_data_ptr<scalar_t>();
      scalar_t* pdg = dg.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, o, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, a * r)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          double s = 0.0;
          for (int64_t i = 0; i < a; ++i) {
            const int64_t at = (i * o + k) * r;
            for (int64_t j = 0; j < r; ++j) s += double(pdw[at + j]) * double(pv[at + j]);
          }
          const double n = std::sqrt(std::max(ps[k], eps));
          const double scale = double(pg[k]) / n;
          const double along = ps[k] >= eps ? s / (n * n) : 0.0;
          pdg[k] = scalar_t(s / n);
          for (int64_t i = 0; i < a; ++i) {
            const int64_t at = (i * o + k) * r;
            for (int64_t j = 0; j < r; ++j) {
              pdv[at + j] = scalar_t(scale * (double(pdw[at + j]) - along * double(pv[at + j])));
            }
          }
        }
      });
    });
    return {dv, dg, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Binary dropout at rate 1/2 on the CPU: element `i` of `x` (in the order of its logical
// NCHW indices, whatever its memory layout) is multiplied by 2 when bit `i % 32` of
// `words[i / 32]` is set, and by 0 otherwise. `words` holds uniform draws from
// `[0, 2^32)`: one random number per 32 elements, where LibTorch's Bernoulli fill draws
// one per element in a serial loop. The backward pass applies the same bits to the
// gradient, from the words it keeps (a 64th of the mask's size).
struct CoinDropout : public torch::autograd::Function<CoinDropout> {
  // The mask's factors (0 or 2) for the 8 bits of each byte value, low bit first.
  static const std::array<std::array<float, 8>, 256>& factors() {
    static const std::array<std::array<float, 8>, 256> table = [] {
      std::array<std::array<float, 8>, 256> t{};
      for (int byte = 0; byte < 256; ++byte) {
        for (int j = 0; j < 8; ++j) t[byte][j] = ((byte >> j) & 1) != 0 ? 2.0f : 0.0f;
      }
      return t;
    }();
    return table;
  }

  // `dst = src * mask` elementwise, the mask 2 where the element's bit is set and 0
  // elsewhere (a product, as `F.dropout`'s, so a NaN stays NaN); `src` and `dst` have one
  // layout, NCHW or channels-last, both dense.
  template <typename scalar_t>
  static void apply_bits(const at::Tensor& src, const int64_t* words, int64_t n_words,
                         at::Tensor& dst) {
    const scalar_t* ps = src.const_data_ptr<scalar_t>();
    scalar_t* pd = dst.mutable_data_ptr<scalar_t>();
    const auto& table = factors();
    const auto factor = [&](int64_t i) {
      return scalar_t(((words[i >> 5] >> (i & 31)) & 1) != 0 ? 2.0f : 0.0f);
    };
    const int64_t n = src.numel();
    if (src.is_contiguous()) {
      // A word at a time: 32 elements whose bits are those of one number, a byte (8
      // factors from the table) at a time.
      at::parallel_for(0, (n + 31) / 32, 1024, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t base = k * 32;
          if (base + 32 > n) {
            for (int64_t i = base; i < n; ++i) pd[i] = ps[i] * factor(i);
            continue;
          }
          const uint32_t bits = static_cast<uint32_t>(words[k]);
          for (int byte = 0; byte < 4; ++byte) {
            const std::array<float, 8>& f = table[(bits >> (8 * byte)) & 0xffu];
            const int64_t at = base + 8 * byte;
            for (int j = 0; j < 8; ++j) pd[at + j] = ps[at + j] * scalar_t(f[j]);
          }
        }
      });
      return;
    }
    // Channels-last: memory runs over [B, H, W, C], in order here; the bits run over
    // [B, C, H, W]. So per block of 32 pixels of one image, each channel's 32 bits (one
    // window, from at most two words) are gathered first; then every pixel of the block
    // reads its bit at one shift from all the channels' windows, a loop that vectorises.
    const int64_t c = src.size(1), plane = src.size(2) * src.size(3);
    const int64_t blocks = (plane + 31) / 32;
    at::parallel_for(0, src.size(0) * blocks, std::max<int64_t>(1, 1024 / std::max<int64_t>(1, c)),
                     [&](int64_t begin, int64_t end) {
      std::vector<uint32_t> window(c);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t image = job / blocks, p0 = (job % blocks) * 32;
        const int64_t len = std::min<int64_t>(32, plane - p0);
        for (int64_t ch = 0; ch < c; ++ch) {
          const int64_t bit = (image * c + ch) * plane + p0;
          const int64_t w = bit >> 5;
          uint64_t two = static_cast<uint32_t>(words[w]);
          if (w + 1 < n_words) two |= uint64_t(static_cast<uint32_t>(words[w + 1])) << 32;
          window[ch] = static_cast<uint32_t>(two >> (bit & 31));
        }
        for (int64_t j = 0; j < len; ++j) {
          const int64_t pixel = image * plane + p0 + j;
          const scalar_t* from = ps + pixel * c;
          scalar_t* to = pd + pixel * c;
          for (int64_t ch = 0; ch < c; ++ch) {
            to[ch] = from[ch] * scalar_t(float((window[ch] >> j) & 1u) * 2.0f);
          }
        }
      }
    });
  }

  // `src` as a dense tensor of NCHW or channels-last layout (a copy if it is neither).
  static at::Tensor dense(const at::Tensor& src) {
    if (src.is_contiguous() ||
        (src.dim() == 4 && src.is_contiguous(at::MemoryFormat::ChannelsLast))) {
      return src;
    }
    return src.contiguous();
  }

  static at::Tensor masked(const at::Tensor& src, const at::Tensor& words) {
    const at::Tensor s = dense(src);
    at::Tensor out = at::empty_like(s);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, s.scalar_type(), "coin_dropout",
                                    [&] { apply_bits<scalar_t>(s, words.const_data_ptr<int64_t>(), words.numel(), out); });
    return out;
  }

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& words) {
    TORCH_CHECK(x.device().is_cpu() && words.device().is_cpu() &&
                    words.scalar_type() == at::kLong && words.dim() == 1 &&
                    words.is_contiguous() && words.numel() * 32 >= x.numel(),
                "coin dropout: ", (x.numel() + 31) / 32,
                " int64 words on the CPU were expected for ", x.sizes(), ", not ",
                words.sizes(), " ", words.scalar_type(), " on ", words.device());
    TORCH_CHECK(x.is_contiguous() || x.dim() == 4,
                "coin dropout: a dense tensor or a [B, C, H, W] map was expected");
    ctx->save_for_backward({words});
    return masked(x, words);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) {
      return {at::Tensor(), at::Tensor()};
    }
    return {masked(grad, ctx->get_saved_variables()[0]), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// `g * v / ||v||` with one norm per index of axis `axis` of `v` (over all the other axes),
// floored at `sqrt(eps)`, differentiable in `v` and `g`: a new tensor written to `out`.
// With `tensor_operations`, a CPU tensor takes the GPU's way (for the tests of both).
char* ibvae_weight_norm(const at::Tensor* v, const at::Tensor* g, int64_t axis, double eps,
                        bool tensor_operations, at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(v != nullptr && g != nullptr && out != nullptr,
                "ibvae_weight_norm: missing tensor");
    *out = new at::Tensor(WeightNorm::apply(*v, *g, axis, eps, tensor_operations));
  });
}

// Dropout at rate 1/2 of `x` from the random bits of `words` (`CoinDropout`),
// differentiable in `x`: a new tensor written to `out`.
char* ibvae_coin_dropout(const at::Tensor* x, const at::Tensor* words, at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(x != nullptr && words != nullptr && out != nullptr,
                "ibvae_coin_dropout: missing tensor");
    *out = new at::Tensor(CoinDropout::apply(*x, *words));
  });
}

// `x + a * sigmoid(b)` for `[a, b]` the two halves of `c` along the channels,
// differentiable: a new tensor written to `out`, which Rust owns.
char* ibvae_gated_residual(const at::Tensor* x, const at::Tensor* c, at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(x != nullptr && c != nullptr && out != nullptr,
                "ibvae_gated_residual: missing tensor");
    *out = new at::Tensor(GatedResidual::apply(*x, *c));
  });
}

// `concat_elu` of `x` (`[B, C, H, W]`) padded with zeros (`left`, `right`, `top`,
// `bottom`), differentiable: a new tensor written to `out`, which Rust owns.
char* ibvae_concat_elu_padded(const at::Tensor* x, int64_t left, int64_t right, int64_t top,
                              int64_t bottom, at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(x != nullptr && out != nullptr, "ibvae_concat_elu_padded: missing tensor");
    *out = new at::Tensor(ConcatEluPadded::apply(*x, left, right, top, bottom));
  });
}

}  // extern "C"

