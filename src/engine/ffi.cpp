// The crate's own calls into LibTorch's C++ API, for what `tch` does not bind: the
// process-wide TF32 flags of `at::globalContext()` and the fused multi-tensor optimizer
// kernels (`at::_fused_adam_`). `build.rs` compiles this file against LibTorch's headers;
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
#include <c10/util/Exception.h>

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
