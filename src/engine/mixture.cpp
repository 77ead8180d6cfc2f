// PixelCNN++'s discretised mixture of logistics, `log p(x)` per pixel, as one LibTorch
// autograd function with its gradient written out by hand: the forward pass is the
// tensor operations of `model/dmol.rs` (the same numbers), and the backward pass takes
// one loop on the CPU (a dozen tensor operations elsewhere) where LibTorch's autograd
// replays some 60 nodes.
// `ffi.rs` declares the exported function; it follows the error rule of `guarded.h`.
//
// With `K` components, `C` channels (1 or 3), `h = 1/255`, for each channel and component
// (the constants come from `model/dmol.rs`):
//   s = exp(ls), ls = max(raw, -7);  m = mu (+ tanh(c) x of earlier channels, for C = 3)
//   plus = (x - m + h)/s,  minus = (x - m - h)/s,  mid = (x - m)/s
//   lp = log_sigmoid(plus)                       where x < -0.999   (the lowest level)
//      = -softplus(minus)                        where x > 0.999    (the highest level)
//      = log(sigmoid(plus) - sigmoid(minus))     where that difference > 1e-5
//      = mid - ls - 2 softplus(mid) - log(127.5) elsewhere
//   joint_k = log_softmax(logits)_k + sum_c lp;  out = logsumexp_k joint_k.
// The gradient: with w_k = exp(joint_k - out) and an upstream `g`, d/d logits = g (w - pi)
// and d/d lp = g w_k; d lp/d plus, d/d minus, d/d mid and the direct d/d ls come from the
// branch, then d/d m = -(d plus + d minus + d mid)/s and d/d ls = -(plus d plus + minus
// d minus + mid d mid) + direct, passed to `raw` where raw >= -7 (as `clamp_min`'s).

#include "guarded.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/log.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/softplus.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

using ibvae::guarded;

namespace {

}  // namespace

// The formula's constants, from `model/dmol.rs` (-7, 1/255, -0.999, 0.999, 1e-5, 1e-12 and
// log(127.5) above). Mirrored by `MixtureConstants` in `ffi.rs`.
struct IbvaeMixtureConstants {
  double log_scale_min;
  double half_bin;
  double left_edge;
  double right_edge;
  double min_delta;
  double delta_floor;
  double log_half_levels;
  // The gradient by tensor operations on the CPU too (as on a GPU): for the tests.
  bool tensor_operations;
};

namespace {

// The thresholds that pick a sub-pixel's branch.
struct Branches {
  double left_edge;
  double right_edge;
  double min_delta;
  double log_scale_min;
};

// On the CPU, d/d m and d/d raw log-scale in one pass over the saved tensors (in the
// order of `save_for_backward`), where the tensor operations take some 25 passes; `gk` is
// d out/d lp, [B, 1, K, H, W]. Returns both as [B, C, K, H, W].
std::pair<at::Tensor, at::Tensor> cpu_means_and_scales(const Branches& br,
                                                       const torch::autograd::variable_list& s,
                                                       const at::Tensor& gk_in) {
  const at::Tensor raw = s[0].contiguous(), xk = s[2].contiguous(), inv = s[3].contiguous(),
                   plus = s[4].contiguous(), minus = s[5].contiguous(), mid = s[6].contiguous(),
                   sp = s[7].contiguous(), sm = s[8].contiguous(), delta = s[9].contiguous(),
                   gk = gk_in.contiguous();
  const int64_t b = plus.size(0), c = plus.size(1), k = plus.size(2);
  const int64_t hw = plus.size(3) * plus.size(4);
  at::Tensor dm = at::empty_like(plus, at::MemoryFormat::Contiguous);
  at::Tensor dls = at::empty_like(plus, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(plus.scalar_type(), "mixture_backward", [&] {
    const scalar_t *p_raw = raw.const_data_ptr<scalar_t>(), *p_x = xk.const_data_ptr<scalar_t>(),
                   *p_inv = inv.const_data_ptr<scalar_t>(), *p_plus = plus.const_data_ptr<scalar_t>(),
                   *p_minus = minus.const_data_ptr<scalar_t>(), *p_mid = mid.const_data_ptr<scalar_t>(),
                   *p_sp = sp.const_data_ptr<scalar_t>(), *p_sm = sm.const_data_ptr<scalar_t>(),
                   *p_delta = delta.const_data_ptr<scalar_t>(), *p_g = gk.const_data_ptr<scalar_t>();
    scalar_t* p_dm = dm.mutable_data_ptr<scalar_t>();
    scalar_t* p_dls = dls.mutable_data_ptr<scalar_t>();
    // One (image, channel, component) row of `hw` sub-pixels per job.
    at::parallel_for(0, b * c * k, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, hw)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t image = row / (c * k), ch = (row / k) % c, comp = row % k;
        const scalar_t* x = p_x + (image * c + ch) * hw;
        const scalar_t* g = p_g + (image * k + comp) * hw;
        const int64_t at = row * hw;
        for (int64_t j = 0; j < hw; ++j) {
          const int64_t i = at + j;
          scalar_t d_plus = 0, d_minus = 0, d_mid = 0, direct = 0;
          if (x[j] < br.left_edge) {
            d_plus = scalar_t(1) / (scalar_t(1) + std::exp(p_plus[i]));  // sigmoid(-plus)
          } else if (x[j] > br.right_edge) {
            d_minus = -p_sm[i];
          } else if (p_delta[i] > br.min_delta) {
            d_plus = p_sp[i] * (scalar_t(1) - p_sp[i]) / p_delta[i];
            d_minus = -p_sm[i] * (scalar_t(1) - p_sm[i]) / p_delta[i];
          } else {
            d_mid = scalar_t(1) - scalar_t(2) / (scalar_t(1) + std::exp(-p_mid[i]));
            direct = -1;
          }
          p_dm[i] = -(d_plus + d_minus + d_mid) * p_inv[i] * g[j];
          const scalar_t d_scale =
              direct - (d_plus * p_plus[i] + d_minus * p_minus[i] + d_mid * p_mid[i]);
          p_dls[i] = p_raw[i] >= br.log_scale_min ? d_scale * g[j] : scalar_t(0);
        }
      }
    });
  });
  return {dm, dls};
}

struct MixtureLogProb : public torch::autograd::Function<MixtureLogProb> {
  // params [B, P, H, W], x [B, C, H, W] in [-1, 1] (data: no gradient) -> [B, H, W].
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& params,
                            const at::Tensor& x_in, const IbvaeMixtureConstants& k_) {
    TORCH_CHECK(params.dim() == 4 && x_in.dim() == 4 && params.size(0) == x_in.size(0) &&
                    params.size(2) == x_in.size(2) && params.size(3) == x_in.size(3),
                "mixture of logistics: parameters [B, P, H, W] and images [B, C, H, W] were "
                "expected, not ", params.sizes(), " and ", x_in.sizes());
    const int64_t b = params.size(0), p = params.size(1), h = params.size(2), w = params.size(3);
    const int64_t c = x_in.size(1);
    TORCH_CHECK(c == 1 || c == 3, "mixture of logistics: 1 or 3 channels, not ", c);
    const int64_t per = c == 3 ? 10 : 3;
    const int64_t groups = c == 3 ? 3 : 2;
    TORCH_CHECK(p > 0 && p % per == 0, "mixture of logistics: ", p,
                " parameters per pixel do not fit ", c, " channel(s)");
    const int64_t k = p / per;
    const at::Tensor x = x_in.to(params.scalar_type());
    const std::vector<at::Tensor> parts = params.split_with_sizes({k, p - k}, 1);
    const std::vector<at::Tensor> rest = parts[1].reshape({b, c, groups, k, h, w}).unbind(2);
    const at::Tensor& mu = rest[0];
    const at::Tensor& raw = rest[1];
    const at::Tensor ls = raw.clamp_min(k_.log_scale_min);
    const at::Tensor xk = x.unsqueeze(2);  // [B, C, 1, H, W]
    at::Tensor m = mu;
    at::Tensor t;  // tanh of the coefficients, [B, 3, K, H, W]
    if (c == 3) {
      t = rest[2].tanh();
      const std::vector<at::Tensor> tc = t.unbind(1);
      const std::vector<at::Tensor> mc = mu.unbind(1);
      const std::vector<at::Tensor> xc = xk.unbind(1);
      m = at::stack({mc[0], mc[1] + tc[0] * xc[0], mc[2] + tc[1] * xc[0] + tc[2] * xc[1]}, 1);
    }
    const at::Tensor cen = xk - m;
    const at::Tensor inv = (-ls).exp();
    const at::Tensor plus = inv * (cen + k_.half_bin);
    const at::Tensor minus = inv * (cen - k_.half_bin);
    const at::Tensor sp = plus.sigmoid();
    const at::Tensor sm = minus.sigmoid();
    const at::Tensor delta = sp - sm;
    const at::Tensor mid = inv * cen;
    const at::Tensor log_left = at::log_sigmoid(plus);
    const at::Tensor log_right = -at::softplus(minus);
    const at::Tensor log_delta = delta.clamp_min(k_.delta_floor).log();
    const at::Tensor log_mid = mid - ls - at::softplus(mid) * 2.0 - k_.log_half_levels;
    const at::Tensor ok = delta > k_.min_delta;
    const at::Tensor left = xk < k_.left_edge;
    const at::Tensor right = xk > k_.right_edge;
    const at::Tensor inner = at::where(ok, log_delta, log_mid);
    const at::Tensor lp = at::where(left, log_left, at::where(right, log_right, inner));
    const at::Tensor log_pi = at::log_softmax(parts[0], 1);
    const at::Tensor joint = log_pi + lp.sum(1);  // [B, K, H, W]
    const at::Tensor out = at::logsumexp(joint, {1}, false);
    ctx->save_for_backward({raw, t, xk, inv, plus, minus, mid, sp, sm, delta, ok, left, right,
                            log_pi, joint, out});
    ctx->saved_data["log_scale_min"] = k_.log_scale_min;
    ctx->saved_data["left_edge"] = k_.left_edge;
    ctx->saved_data["right_edge"] = k_.right_edge;
    ctx->saved_data["min_delta"] = k_.min_delta;
    ctx->saved_data["loop"] = params.is_cpu() && !k_.tensor_operations;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor& g = grads[0];
    if (!g.defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const double log_scale_min = ctx->saved_data["log_scale_min"].toDouble();
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    const at::Tensor &raw = s[0], &t = s[1], &xk = s[2], &inv = s[3], &plus = s[4],
                     &minus = s[5], &mid = s[6], &sp = s[7], &sm = s[8], &delta = s[9],
                     &ok = s[10], &left = s[11], &right = s[12], &log_pi = s[13],
                     &joint = s[14], &out = s[15];
    const int64_t c = xk.size(1);
    const at::Tensor g1 = g.unsqueeze(1);                       // [B, 1, H, W]
    const at::Tensor gw = (joint - out.unsqueeze(1)).exp() * g1;  // g w_k, [B, K, H, W]
    const at::Tensor d_logits = gw - log_pi.exp() * g1;
    const at::Tensor gk = gw.unsqueeze(1);  // d out/d lp, [B, 1, K, H, W]
    at::Tensor dm, dls;
    if (ctx->saved_data["loop"].toBool()) {
      const Branches branches{ctx->saved_data["left_edge"].toDouble(),
                              ctx->saved_data["right_edge"].toDouble(),
                              ctx->saved_data["min_delta"].toDouble(), log_scale_min};
      std::tie(dm, dls) = cpu_means_and_scales(branches, s, gk);
    } else {
      // Each pixel's branch: the edges, then the bin's mass, else the density at its centre.
      const at::Tensor zero = at::zeros_like(plus);
      const at::Tensor edge = left.logical_or(right);
      const at::Tensor in_bin = ok.logical_and(edge.logical_not());
      const at::Tensor at_mid = edge.logical_or(ok).logical_not();
      const at::Tensor d_plus = at::where(left, (-plus).sigmoid(),
                                          at::where(in_bin, sp * (1.0 - sp) / delta, zero));
      const at::Tensor d_minus = at::where(right, -sm,
                                           at::where(in_bin, -sm * (1.0 - sm) / delta, zero));
      const at::Tensor d_mid = at::where(at_mid, 1.0 - 2.0 * mid.sigmoid(), zero);
      dm = -(d_plus + d_minus + d_mid) * inv * gk;
      dls =
          (at::where(at_mid, zero - 1.0, zero) - (d_plus * plus + d_minus * minus + d_mid * mid)) *
          gk * (raw >= log_scale_min);
    }
    // Through the means' coupling (C = 3): m_G = mu_G + t0 x_R, m_B = mu_B + t1 x_R + t2 x_G.
    std::vector<at::Tensor> groups = {dm, dls};
    if (c == 3) {
      const std::vector<at::Tensor> dmc = dm.unbind(1);
      const std::vector<at::Tensor> xc = xk.unbind(1);
      const at::Tensor dt = at::stack({dmc[1] * xc[0], dmc[2] * xc[0], dmc[2] * xc[1]}, 1);
      groups.push_back(dt * (1.0 - t * t));
    }
    // Back to the layout [logits | per channel: the groups' K numbers each].
    const at::Tensor rest = at::stack(groups, 2);  // [B, C, G, K, H, W]
    const int64_t b = rest.size(0);
    const at::Tensor d_rest = rest.reshape({b, -1, rest.size(4), rest.size(5)});
    return {at::cat({d_logits, d_rest}, 1), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// `log p(x)` of each pixel under the mixture whose parameters are `params` ([B, P, H, W])
// for the images `x` ([B, C, H, W] on the 256 levels of [-1, 1]), differentiable in
// `params`: a new tensor [B, H, W] written to `out`, which Rust owns.
char* ibvae_mixture_log_prob(const at::Tensor* params, const at::Tensor* x,
                             IbvaeMixtureConstants constants, at::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(params != nullptr && x != nullptr && out != nullptr,
                "ibvae_mixture_log_prob: missing tensor");
    *out = new at::Tensor(MixtureLogProb::apply(*params, *x, constants));
  });
}

}  // extern "C"
