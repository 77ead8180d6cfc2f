// The error rule of the crate's C++ files: no C++ exception may cross into Rust (unwinding
// through an `extern "C"` frame aborts the process, or worse). Every exported function
// runs its body inside `ibvae::guarded`, which catches every exception and returns its
// message as a string allocated here (`nullptr` on success); Rust copies the message into
// its error type and hands the string back to `ibvae_free_error` (in `ffi.cpp`). A
// function with a result writes it through an out-pointer. Every exported name starts
// with `ibvae_`.

#pragma once

#include <c10/util/Exception.h>

#include <exception>

namespace ibvae {

// A copy of `message` that Rust frees through `ibvae_free_error`; a static message when
// even that cannot be allocated (which `ibvae_free_error` knows not to free).
char* copy_message(const char* message) noexcept;

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

}  // namespace ibvae
