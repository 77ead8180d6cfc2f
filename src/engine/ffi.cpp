// The crate's own calls into LibTorch's C++ API, for what `tch` does not bind: the
// process-wide TF32 flags of `at::globalContext()`, the fused multi-tensor optimizer
// kernels (`at::_fused_adam_`), and CUDA graphs (`at::cuda::CUDAGraph`, compiled in when
// LibTorch has CUDA: `IBVAE_WITH_CUDA`); the model's fused operations are in `fused.cpp`.
// `build.rs` compiles this file against LibTorch's headers; `ffi.rs` beside it declares
// every function below and wraps it in a safe Rust function.
// Every function follows the error rule of `guarded.h`.

#include "guarded.h"

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_fused_adam.h>
#include <c10/util/Exception.h>

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
// Errors: the try/catch around every exported function (`guarded.h`).
// ---------------------------------------------------------------------------------------

namespace {

// Returned when even the copy of a message cannot be allocated; `ibvae_free_error` knows
// not to free it.
char kOutOfMemory[] = "out of memory while reporting a LibTorch error";

}  // namespace

char* ibvae::copy_message(const char* message) noexcept {
  const std::size_t size = std::strlen(message) + 1;
  char* copy = static_cast<char*>(std::malloc(size));
  if (copy == nullptr) {
    return kOutOfMemory;
  }
  std::memcpy(copy, message, size);
  return copy;
}

using ibvae::guarded;

// Frees an error message returned by any function of the crate's C++ files.
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

