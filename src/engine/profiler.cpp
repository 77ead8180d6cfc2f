// LibTorch's profiler (Kineto), which `tch` does not bind: `ibvae bench --profile` records
// every operation of the timed steps (and, on a GPU, every kernel), writes the Chrome
// trace, and hands the events to Rust as text, one line each, for its table of where the
// time goes. `profiler.rs` declares both functions and wraps them.
//
// Both functions follow the error rule of `guarded.h`.

#include "guarded.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <string>

namespace {

using ibvae::guarded;
namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

// An event's name with the separators of the text format (tabs, line ends) made spaces.
std::string clean(std::string name) {
  for (char& c : name) {
    if (c == '\t' || c == '\n' || c == '\r') {
      c = ' ';
    }
  }
  return name;
}

}  // namespace

extern "C" {

// Starts recording operations on the CPU, and with `cuda` the GPU's kernels and copies.
char* ibvae_profiler_start(bool cuda) {
  return guarded([&] {
    // Kineto's notes on stderr (its stages; on a machine without a GPU, that it found
    // none) are not the user's business, unless they asked for them.
    setenv("KINETO_LOG_LEVEL", "5", 0);
    std::set<ActivityType> activities{ActivityType::CPU};
    if (cuda) {
      activities.insert(ActivityType::CUDA);
    }
    const ProfilerConfig config(ProfilerState::KINETO);
    kineto::prepareProfiler(config, activities);
    kineto::enableProfiler(config, activities);
  });
}

// Stops recording; writes the Chrome trace to `trace_path` unless it is null, and sets
// `*events` to one line per event, `device \t activity \t thread \t start_ns \t end_ns \t
// name` (device 0 for the CPU, 1 for CUDA; activity is Kineto's `ActivityType` number), a
// string that Rust frees with `ibvae_free_error`.
char* ibvae_profiler_stop(const char* trace_path, char** events) {
  return guarded([&] {
    TORCH_CHECK(events != nullptr, "no place for the profiler's events");
    *events = nullptr;
    std::unique_ptr<kineto::ProfilerResult> result = kineto::disableProfiler();
    TORCH_CHECK(result != nullptr, "the profiler was not running");
    std::ostringstream text;
    for (const kineto::KinetoEvent& e : result->events()) {
      const int device = e.deviceType() == c10::DeviceType::CUDA ? 1 : 0;
      text << device << '\t' << static_cast<int>(e.activityType()) << '\t' << e.startThreadId()
           << '\t' << e.startNs() << '\t' << e.endNs() << '\t' << clean(e.name()) << '\n';
    }
    if (trace_path != nullptr) {
      result->save(trace_path);
    }
    const std::string all = text.str();
    *events = static_cast<char*>(std::malloc(all.size() + 1));
    TORCH_CHECK(*events != nullptr, "out of memory for the profiler's events");
    std::memcpy(*events, all.c_str(), all.size() + 1);
  });
}

}  // extern "C"
