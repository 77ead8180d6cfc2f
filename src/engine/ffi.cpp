// The crate's own calls into LibTorch's C++ API, for what `tch` does not bind: the
// process-wide TF32 flags of `at::globalContext()` and the fused multi-tensor optimizer
// kernels (`at::_fused_adam_`), and one fused operation of the model with its own gradient
// (`concat_elu` with the zero padding of the convolution that reads it), and CUDA graphs
// (`at::cuda::CUDAGraph`, compiled in when LibTorch has CUDA: `IBVAE_WITH_CUDA`). `build.rs` compiles this file against LibTorch's headers;
// `ffi.rs` beside it declares every function below and wraps it in a safe Rust function.
//
// The error rule: no C++ exception may cross into Rust (unwinding through an `extern "C"`
// frame aborts the process, or worse). Every exported function therefore runs its body
// inside `guarded`, which catches every exception and returns its message as a string
// allocated here (`nullptr` on success); Rust copies the message into its error type and
// hands the string back to `ibvae_free_error`. A function with a result writes it through
// an out-pointer. Every exported name starts with `ibvae_`.

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/elu.h>
#include <ATen/ops/elu_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/addcmul.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/neg.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/sigmoid_backward.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>

#ifdef IBVAE_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#endif

#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

// ---------------------------------------------------------------------------------------
// Errors: the try/catch around every exported function.
// ---------------------------------------------------------------------------------------

namespace {

// Returned when even the copy of a message cannot be allocated; `ibvae_free_error` knows
// not to free it.
char kOutOfMemory[] = "out of memory while reporting a LibTorch error";

// A copy of `message` that Rust frees through `ibvae_free_error`.
char* copy_message(const char* message) noexcept {
  const std::size_t size = std::strlen(message) + 1;
  char* copy = static_cast<char*>(std::malloc(size));
  if (copy == nullptr) {
    return kOutOfMemory;
  }
  std::memcpy(copy, message, size);
  return copy;
}

// Runs `body` and returns `nullptr`, or the message of whatever it threw. LibTorch's own
// errors (`c10::Error`, which `TORCH_CHECK` throws) are reported without their C++
// backtrace: the message already says what was wrong.
template <typename Body>
char* guarded(Body&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("LibTorch threw an exception that is not a std::exception");
  }
}

}  // namespace

// Frees an error message returned by any function of this file.
extern "C" void ibvae_free_error(char* message) {
  if (message != kOutOfMemory) {
    std::free(message);
  }
}

// ---------------------------------------------------------------------------------------
// Tensor lists passed from Rust.
// ---------------------------------------------------------------------------------------

// A borrowed array of tensors: `tch::Tensor::as_ptr` of each, which points at an
// `at::Tensor` (tch's `C_tensor` is a `torch::Tensor*`). Mirrored by `TensorList` in
// `ffi.rs`.
struct IbvaeTensorList {
  const at::Tensor* const* tensors;
  std::size_t len;
};

namespace {

// New handles to the same tensors (the storage is shared: in-place kernels update the
// caller's tensors).
std::vector<at::Tensor> to_vector(IbvaeTensorList list) {
  TORCH_CHECK(list.len == 0 || list.tensors != nullptr, "a tensor list has no tensors");
  std::vector<at::Tensor> tensors;
  tensors.reserve(list.len);
  for (std::size_t i = 0; i < list.len; ++i) {
    TORCH_CHECK(list.tensors[i] != nullptr, "tensor ", i, " of a list is missing");
    tensors.push_back(*list.tensors[i]);
  }
  return tensors;
}

}  // namespace

extern "C" {

// ---------------------------------------------------------------------------------------
// Precision: TF32 on NVIDIA GPUs (process-wide flags of LibTorch's global context).
// ---------------------------------------------------------------------------------------

// Lets cuDNN's convolutions and cuBLAS's matrix products round float32 inputs to TF32, or
// forbids it.
char* ibvae_set_allow_tf32(bool allow) {
  return guarded([&] {
    at::globalContext().setAllowTF32CuDNN(allow);
    at::globalContext().setAllowTF32CuBLAS(allow);
  });
}

// Whether cuBLAS may use TF32, written to `allowed`.
char* ibvae_allow_tf32_cublas(bool* allowed) {
  return guarded([&] {
    TORCH_CHECK(allowed != nullptr, "ibvae_allow_tf32_cublas: no place for the answer");
    *allowed = at::globalContext().allowTF32CuBLAS();
  });
}

// ---------------------------------------------------------------------------------------
// Optimizers: PyTorch's fused multi-tensor kernels (`torch.optim.Adam(fused=True)`).
// ---------------------------------------------------------------------------------------

// The tensors of one Adam step, one entry per parameter in every list. Mirrored by
// `AdamLists` in `ffi.rs`.
struct IbvaeAdamLists {
  IbvaeTensorList params;
  IbvaeTensorList grads;
  IbvaeTensorList exp_avgs;
  IbvaeTensorList exp_avg_sqs;
  // float32 scalars holding the step number, already incremented for this step.
  IbvaeTensorList state_steps;
};

// Adam's constants. Mirrored by `AdamConstants` in `ffi.rs`.
struct IbvaeAdamConstants {
  double beta1;
  double beta2;
  double eps;
};

// One Adam step over every parameter in a single kernel launch per device and dtype, with
// the learning rate read from the tensor `lr` (so a captured CUDA graph sees each step's
// rate). No weight decay, no AMSGrad, no gradient scaler. Runs without autograd recording:
// the parameters are leaves that require gradients, and an optimizer step is never
// differentiated.
char* ibvae_fused_adam_(IbvaeAdamLists lists, const at::Tensor* lr,
                        IbvaeAdamConstants constants) {
  return guarded([&] {
    TORCH_CHECK(lr != nullptr, "ibvae_fused_adam_: no learning-rate tensor");
    // LibTorch's CUDA kernel reads a tensor learning rate as float32 (the CPU one as a
    // double, whatever its type).
    TORCH_CHECK(lr->device().is_cpu() || lr->scalar_type() == at::kFloat,
                "ibvae_fused_adam_: on a GPU the learning rate must be a float32 tensor");
    const at::NoGradGuard no_grad;
    const std::vector<at::Tensor> params = to_vector(lists.params);
    const std::vector<at::Tensor> grads = to_vector(lists.grads);
    const std::vector<at::Tensor> exp_avgs = to_vector(lists.exp_avgs);
    const std::vector<at::Tensor> exp_avg_sqs = to_vector(lists.exp_avg_sqs);
    const std::vector<at::Tensor> state_steps = to_vector(lists.state_steps);
    const std::vector<at::Tensor> max_exp_avg_sqs;  // only read with AMSGrad
    at::_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                     *lr, constants.beta1, constants.beta2, /*weight_decay=*/0.0,
                     constants.eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

// The Polyak average's update over every tensor at once: `averages[i] += weight *
// (values[i] - averages[i])` (`torch._foreach_lerp_`), a few kernel launches per step
// instead of one per tensor.
char* ibvae_foreach_lerp_(IbvaeTensorList averages, IbvaeTensorList values, double weight) {
  return guarded([&] {
    const at::NoGradGuard no_grad;
    const std::vector<at::Tensor> selves = to_vector(averages);
    const std::vector<at::Tensor> ends = to_vector(values);
    TORCH_CHECK(selves.size() == ends.size(), "ibvae_foreach_lerp_: ", selves.size(),
                " averages but ", ends.size(), " values");
    at::_foreach_lerp_(selves, ends, weight);
  });
}

// ---------------------------------------------------------------------------------------
// The model: PixelCNN++'s concat_elu, padded for the convolution that reads it.
// ---------------------------------------------------------------------------------------

namespace {

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
    const at::Tensor inner = y.narrow(2, top, h).narrow(3, left, w);
    at::Tensor positive = inner.narrow(1, 0, c);
    at::Tensor negative = inner.narrow(1, c, c);
    at::elu_out(positive, x);
    at::neg_out(negative, x);
    at::elu_(negative);
    ctx->save_for_backward({y});
    ctx->saved_data["box"] = std::vector<int64_t>{left, top, h, w};
    return y;
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
    const auto inner = [&](const at::Tensor& t, int64_t half) {
      return t.narrow(2, box[1], box[2]).narrow(3, box[0], box[3]).narrow(1, half * c, c);
    };
    // d/dx [elu(x), elu(-x)] . [g1, g2] = g1 elu'(x) - g2 elu'(-x), each elu' from its output.
    at::Tensor dx = at::elu_backward(inner(grad, 0), 1.0, 1.0, 1.0, /*is_result=*/true,
                                     inner(y, 0));
    dx.sub_(at::elu_backward(inner(grad, 1), 1.0, 1.0, 1.0, /*is_result=*/true, inner(y, 1)));
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
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

}  // namespace

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

// ---------------------------------------------------------------------------------------
// CUDA graphs: one training step captured once and replayed (`at::cuda::CUDAGraph`).
// ---------------------------------------------------------------------------------------

// A graph and the side stream it is captured on. Without CUDA (`IBVAE_WITH_CUDA` unset:
// LibTorch or CUDA's headers had no CUDA), every function below reports that instead.
struct IbvaeGraph {
#ifdef IBVAE_WITH_CUDA
  // Made at the capture (making one touches the CUDA runtime, which a machine without a
  // GPU refuses).
  std::optional<at::cuda::CUDAGraph> graph;
  // The stream before the side stream, set between `ibvae_graph_side_stream(.., true)`
  // and `(.., false)`: warm-up steps and the capture run on a stream of LibTorch's pool,
  // never on the default stream (which cannot be captured). Set by hand rather than with
  // a `CUDAStreamGuard`, whose inline code would call the CUDA runtime directly and tie
  // the binary to one copy of it.
  std::optional<c10::cuda::CUDAStream> side;
  // The current device before the side stream (the graph's device is made current, so
  // that the capture, its memory pool and its generator are that device's).
  c10::DeviceIndex previous_device = 0;
#endif
};

namespace {

#ifdef IBVAE_WITH_CUDA
IbvaeGraph& checked(IbvaeGraph* graph) {
  TORCH_CHECK(graph != nullptr, "no CUDA graph");
  return *graph;
}

// Back to the stream and device before the side stream, if it was entered.
void leave_side_stream(IbvaeGraph& g) {
  if (g.side.has_value()) {
    c10::cuda::setCurrentCUDAStream(*g.side);
    g.side.reset();
    c10::cuda::set_device(g.previous_device);
  }
}
#else
[[noreturn]] void no_cuda() {
  TORCH_CHECK(false, "this ibvae was built against a LibTorch without CUDA (or without CUDA's "
                     "headers), so it has no CUDA graphs: run with --cuda-graph off");
}
#endif

}  // namespace

extern "C" {

// Whether this build has CUDA graphs, written to `yes`.
char* ibvae_cuda_graphs_built(bool* yes) {
  return guarded([&] {
    TORCH_CHECK(yes != nullptr, "ibvae_cuda_graphs_built: no place for the answer");
#ifdef IBVAE_WITH_CUDA
    *yes = true;
#else
    *yes = false;
#endif
  });
}

// A new, empty graph, written to `out`; freed with `ibvae_graph_free`.
char* ibvae_graph_new(IbvaeGraph** out) {
  return guarded([&] {
    TORCH_CHECK(out != nullptr, "ibvae_graph_new: no place for the graph");
#ifdef IBVAE_WITH_CUDA
    *out = new IbvaeGraph();
#else
    no_cuda();
#endif
  });
}

// Frees a graph, first leaving its side stream if a warm-up or a capture was cut short.
void ibvae_graph_free(IbvaeGraph* graph) {
#ifdef IBVAE_WITH_CUDA
  if (graph != nullptr) {
    char* error = guarded([&] { leave_side_stream(*graph); });
    ibvae_free_error(error);
  }
#endif
  delete graph;
}

// Enters (`enter`) a side stream of GPU `device` after the work queued so far, or returns
// to the stream before it once the side stream's work is done.
char* ibvae_graph_side_stream(IbvaeGraph* graph, int64_t device, bool enter) {
  return guarded([&] {
#ifdef IBVAE_WITH_CUDA
    IbvaeGraph& g = checked(graph);
    const auto index = static_cast<c10::DeviceIndex>(device);
    c10::cuda::device_synchronize();
    if (enter) {
      TORCH_CHECK(!g.side.has_value(), "the side stream was entered twice");
      g.previous_device = c10::cuda::current_device();
      c10::cuda::set_device(index);
      g.side.emplace(c10::cuda::getCurrentCUDAStream(index));
      c10::cuda::setCurrentCUDAStream(
          c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index));
    } else {
      leave_side_stream(g);
    }
#else
    (void)graph;
    (void)device;
    (void)enter;
    no_cuda();
#endif
  });
}

// Starts recording the kernels launched on the side stream (which must be entered) instead
// of running them. LibTorch registers its default CUDA generator with the graph, so the
// random draws of each replay follow the generator's seed at the replay.
char* ibvae_graph_capture_begin(IbvaeGraph* graph) {
  return guarded([&] {
#ifdef IBVAE_WITH_CUDA
    IbvaeGraph& g = checked(graph);
    TORCH_CHECK(g.side.has_value(), "a CUDA graph is captured on the side stream");
    TORCH_CHECK(!g.graph.has_value(), "a CUDA graph is captured once");
    g.graph.emplace();
    g.graph->capture_begin();
#else
    (void)graph;
    no_cuda();
#endif
  });
}

// Ends the recording and makes the graph ready to replay.
char* ibvae_graph_capture_end(IbvaeGraph* graph) {
  return guarded([&] {
#ifdef IBVAE_WITH_CUDA
    IbvaeGraph& g = checked(graph);
    TORCH_CHECK(g.graph.has_value(), "no capture was begun");
    g.graph->capture_end();
#else
    (void)graph;
    no_cuda();
#endif
  });
}

// Runs the recorded kernels once, on the current stream, with the tensors they were
// recorded on (their addresses are fixed: the caller copies new inputs into them).
char* ibvae_graph_replay(IbvaeGraph* graph) {
  return guarded([&] {
#ifdef IBVAE_WITH_CUDA
    IbvaeGraph& g = checked(graph);
    TORCH_CHECK(g.graph.has_value(), "the CUDA graph was not captured");
    g.graph->replay();
#else
    (void)graph;
    no_cuda();
#endif
  });
}

}  // extern "C"

