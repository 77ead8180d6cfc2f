//! Safe Rust over the crate's own C++ files, `ffi.cpp` (what `tch` does not bind:
//! LibTorch's TF32 flags, the fused Adam kernel, CUDA graphs) and `fused.cpp` (the model's
//! fused operations, and the mixture's likelihood in `mixture.cpp`). `build.rs` compiles them against LibTorch's headers.
//!
//! Every C++ function returns null on success or an error message allocated in C++; no C++
//! exception crosses into Rust. [`check`] turns that message into the crate's [`Error`] and
//! frees it.

use std::ffi::{CStr, c_char};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The error a C++ function reported (null for none), as the crate's error; frees it.
pub(crate) fn check(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result of a function of `ffi.cpp` is a NUL-terminated string
    // that this side owns until it hands it to `ibvae_free_error`, once.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { ibvae_free_error(message) };
    Err(engine_error(text))
}

/// LibTorch refused a call of `ffi.cpp`.
fn engine_error(message: String) -> Error {
    Error::Device(format!("LibTorch: {message}"))
}

// ---------------------------------------------------------------------------------------
// Precision: TF32 on NVIDIA GPUs
// ---------------------------------------------------------------------------------------

/// Lets cuDNN's convolutions and cuBLAS's matrix products on NVIDIA GPUs round float32
/// inputs to TF32, or forbids it (LibTorch's process-wide flags).
pub fn set_allow_tf32(allow: bool) -> Result<()> {
    // SAFETY: the function only stores two flags of LibTorch's static context.
    check(unsafe { ibvae_set_allow_tf32(allow) })
}

/// Whether cuBLAS may use TF32 (LibTorch's flag).
pub fn allow_tf32_cublas() -> Result<bool> {
    let mut allowed = false;
    // SAFETY: `allowed` is a valid place for the answer for the whole call.
    check(unsafe { ibvae_allow_tf32_cublas(&mut allowed) })?;
    Ok(allowed)
}

// ---------------------------------------------------------------------------------------
// Optimizers: PyTorch's fused multi-tensor kernels
// ---------------------------------------------------------------------------------------

/// The tensors of one Adam step: the same number in every list, entry `i` of each belonging
/// to parameter `i` (same shape, dtype and device).
#[derive(Debug, Clone, Copy)]
pub struct AdamLists<'a> {
    pub params: &'a [Tensor],
    pub grads: &'a [Tensor],
    /// The first moments, `m`.
    pub exp_avgs: &'a [Tensor],
    /// The second moments, `v`.
    pub exp_avg_sqs: &'a [Tensor],
    /// float32 scalars (on the parameters' device) holding the step number `t` of this
    /// step: the caller increments them before the call, as PyTorch's `Adam.step` does (at
    /// `t = 0` the bias corrections would divide by zero).
    pub state_steps: &'a [Tensor],
}

/// Adam's constants (Kingma & Ba 2015).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct AdamConstants {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// One Adam step over every parameter with LibTorch's fused kernel
/// (`torch.optim.Adam(fused=True)`), in place on `params`, `exp_avgs` and `exp_avg_sqs`:
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)`. The learning rate is the
/// one-element tensor `lr`, read on the device, so a captured CUDA graph follows it. No
/// weight decay, no AMSGrad; autograd does not record the step.
pub fn fused_adam_(lists: AdamLists<'_>, lr: &Tensor, constants: AdamConstants) -> Result<()> {
    let n = lists.params.len();
    let lengths = [
        ("grads", lists.grads.len()),
        ("exp_avgs", lists.exp_avgs.len()),
        ("exp_avg_sqs", lists.exp_avg_sqs.len()),
        ("state_steps", lists.state_steps.len()),
    ];
    if let Some((name, len)) = lengths.iter().find(|(_, len)| *len != n) {
        return Err(engine_error(format!(
            "fused Adam: {n} parameters but {len} {name}; every list needs one per parameter"
        )));
    }
    let pointers = |tensors: &[Tensor]| tensors.iter().map(Tensor::as_ptr).collect::<Vec<_>>();
    let (params, grads) = (pointers(lists.params), pointers(lists.grads));
    let (exp_avgs, exp_avg_sqs) = (pointers(lists.exp_avgs), pointers(lists.exp_avg_sqs));
    let state_steps = pointers(lists.state_steps);
    let c_lists = CAdamLists {
        params: TensorList::new(&params),
        grads: TensorList::new(&grads),
        exp_avgs: TensorList::new(&exp_avgs),
        exp_avg_sqs: TensorList::new(&exp_avg_sqs),
        state_steps: TensorList::new(&state_steps),
    };
    // SAFETY: every pointer is the C++ tensor of a `Tensor` borrowed for the whole call
    // (the pointer arrays live until the end of this function); the kernel changes the
    // tensors' data in place, never the Rust handles.
    check(unsafe { ibvae_fused_adam_(c_lists, lr.as_ptr(), constants) })
}

/// `averages[i] += weight * (values[i] - averages[i])` over every pair at once, in place
/// on `averages` (`torch._foreach_lerp_`: the Polyak average's update). Autograd does not
/// record it.
pub fn foreach_lerp_(averages: &[Tensor], values: &[Tensor], weight: f64) -> Result<()> {
    if averages.len() != values.len() {
        return Err(engine_error(format!(
            "foreach lerp: {} averages but {} values",
            averages.len(),
            values.len()
        )));
    }
    let pointers = |tensors: &[Tensor]| tensors.iter().map(Tensor::as_ptr).collect::<Vec<_>>();
    let (a, v) = (pointers(averages), pointers(values));
    // SAFETY: as in `fused_adam_`: every pointer is the C++ tensor of a borrowed `Tensor`,
    // alive for the whole call; only the averages' data change.
    check(unsafe { ibvae_foreach_lerp_(TensorList::new(&a), TensorList::new(&v), weight) })
}

// ---------------------------------------------------------------------------------------
// The model's fused operations
// ---------------------------------------------------------------------------------------

/// PixelCNN++'s `concat_elu` of `x` (`[B, C, H, W]`), `elu(cat([x, -x], 1))`, padded with
/// zeros by `[left, right, top, bottom]` for the convolution that reads it: one tensor
/// `[B, 2C, top + H + bottom, left + W + right]`, differentiable, computed in fewer passes
/// over memory than the operations one by one.
pub fn concat_elu_padded(x: &Tensor, padding: [i64; 4]) -> Result<Tensor> {
    let [left, right, top, bottom] = padding;
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: `x` is a live tensor for the call; on success `out` holds a tensor allocated
    // with `new` in C++, which `Tensor::from_ptr` takes over (tch frees it the same way).
    check(unsafe { ibvae_concat_elu_padded(x.as_ptr(), left, right, top, bottom, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// A gated resnet's output, `x + a * sigmoid(b)` where `[a, b]` are the two halves of `c`
/// along the channels (`x`: `[B, C, H, W]`, `c`: `[B, 2C, H, W]`), differentiable, in one
/// fused operation.
pub fn gated_residual(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: as in `concat_elu_padded`.
    check(unsafe { ibvae_gated_residual(x.as_ptr(), c.as_ptr(), &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Weight normalisation, `g * v / sqrt(max(sum v^2, eps))` with one norm per index `o` of
/// axis `axis` of `v` (the sum over every other axis), `g` of shape `[v.size(axis)]`:
/// differentiable in `v` and `g`, one operation forward and one backward (sums in
/// float64; on the CPU in one pass over the weights).
pub fn weight_norm(v: &Tensor, g: &Tensor, axis: i64, eps: f64) -> Result<Tensor> {
    weight_norm_with(v, g, axis, eps, false)
}

/// [`weight_norm`]; with `tensor_operations` a CPU tensor takes the tensor operations a
/// GPU's takes instead of the CPU's loop (for the tests of both).
pub fn weight_norm_with(
    v: &Tensor,
    g: &Tensor,
    axis: i64,
    eps: f64,
    tensor_operations: bool,
) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: as in `concat_elu_padded`.
    check(unsafe {
        ibvae_weight_norm(
            v.as_ptr(),
            g.as_ptr(),
            axis,
            eps,
            tensor_operations,
            &mut out,
        )
    })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Dropout at rate 1/2 of `x` (on the CPU, NCHW or channels-last): element `i` in the
/// order of the logical NCHW indices is doubled when bit `i % 32` of `words[i / 32]` is
/// set and zeroed otherwise. `words` is int64, at least `numel / 32` rounded up, on the
/// CPU. Differentiable in `x`; the backward pass keeps only the words.
pub fn coin_dropout(x: &Tensor, words: &Tensor) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: as in `concat_elu_padded`.
    check(unsafe { ibvae_coin_dropout(x.as_ptr(), words.as_ptr(), &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// The constants of the mixture's likelihood (`model::dmol` defines and explains them).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct MixtureConstants {
    pub log_scale_min: f64,
    pub half_bin: f64,
    pub left_edge: f64,
    pub right_edge: f64,
    pub min_delta: f64,
    pub delta_floor: f64,
    pub log_half_levels: f64,
    /// The gradient by tensor operations on the CPU too (as on a GPU), where a loop is
    /// the default: for the tests of both.
    pub tensor_operations: bool,
}

/// PixelCNN++'s discretised mixture of logistics, `log p(x)` of each pixel (`params`:
/// `[B, P, H, W]` in the layout of `model::dmol`, `x`: `[B, C, H, W]` on the 256 levels of
/// `[-1, 1]`, returns `[B, H, W]`): the tensor operations of `dmol::log_prob` forward, and
/// its gradient in `params` written out by hand (`mixture.cpp`).
pub fn mixture_log_prob(
    params: &Tensor,
    x: &Tensor,
    constants: MixtureConstants,
) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: as in `concat_elu_padded`.
    check(unsafe { ibvae_mixture_log_prob(params.as_ptr(), x.as_ptr(), constants, &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

// ---------------------------------------------------------------------------------------
// CUDA graphs
// ---------------------------------------------------------------------------------------

/// Whether this build has CUDA graphs: LibTorch has CUDA and `build.rs` found CUDA's headers.
pub fn cuda_graphs_built() -> Result<bool> {
    let mut yes = false;
    // SAFETY: `yes` is a valid place for the answer for the whole call.
    check(unsafe { ibvae_cuda_graphs_built(&mut yes) })?;
    Ok(yes)
}

/// A CUDA graph (`at::cuda::CUDAGraph`) with the side stream it is captured on.
#[derive(Debug)]
pub struct CudaGraph {
    graph: *mut CGraph,
}

impl CudaGraph {
    /// An empty graph; an error on a build without CUDA graphs.
    pub fn new() -> Result<Self> {
        let mut graph: *mut CGraph = std::ptr::null_mut();
        // SAFETY: on success `graph` holds a graph allocated in C++, freed once in `drop`.
        check(unsafe { ibvae_graph_new(&mut graph) })?;
        Ok(Self { graph })
    }

    /// Enters a side stream of GPU `device` after the work queued so far (`enter`), or
    /// returns to the previous stream once the side stream's work is done. Warm-up steps
    /// and the capture run there.
    pub fn side_stream(&mut self, device: usize, enter: bool) -> Result<()> {
        // SAFETY: `self.graph` is live; the C++ side checks the index.
        check(unsafe { ibvae_graph_side_stream(self.graph, device as i64, enter) })
    }

    /// Records the kernels launched from now on instead of running them.
    pub fn capture_begin(&mut self) -> Result<()> {
        // SAFETY: `self.graph` is live.
        check(unsafe { ibvae_graph_capture_begin(self.graph) })
    }

    /// Ends the recording.
    pub fn capture_end(&mut self) -> Result<()> {
        // SAFETY: `self.graph` is live.
        check(unsafe { ibvae_graph_capture_end(self.graph) })
    }

    /// Runs the recorded kernels once.
    pub fn replay(&mut self) -> Result<()> {
        // SAFETY: `self.graph` is live.
        check(unsafe { ibvae_graph_replay(self.graph) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: the graph was allocated by `ibvae_graph_new` and is freed once, here.
        unsafe { ibvae_graph_free(self.graph) }
    }
}

/// `IbvaeGraph` in `ffi.cpp`, opaque here.
#[repr(C)]
struct CGraph {
    _private: [u8; 0],
}

// ---------------------------------------------------------------------------------------
// The C++ side
// ---------------------------------------------------------------------------------------

/// A borrowed array of C++ tensors (`IbvaeTensorList` in `ffi.cpp`).
#[repr(C)]
struct TensorList {
    tensors: *const *const C_tensor,
    len: usize,
}

impl TensorList {
    fn new(tensors: &[*const C_tensor]) -> Self {
        Self {
            tensors: tensors.as_ptr(),
            len: tensors.len(),
        }
    }
}

/// `IbvaeAdamLists` in `ffi.cpp`.
#[repr(C)]
struct CAdamLists {
    params: TensorList,
    grads: TensorList,
    exp_avgs: TensorList,
    exp_avg_sqs: TensorList,
    state_steps: TensorList,
}

unsafe extern "C" {
    pub(crate) fn ibvae_free_error(message: *mut c_char);
    fn ibvae_set_allow_tf32(allow: bool) -> *mut c_char;
    fn ibvae_allow_tf32_cublas(allowed: *mut bool) -> *mut c_char;
    fn ibvae_fused_adam_(
        lists: CAdamLists,
        lr: *const C_tensor,
        constants: AdamConstants,
    ) -> *mut c_char;
    fn ibvae_foreach_lerp_(averages: TensorList, values: TensorList, weight: f64) -> *mut c_char;
    fn ibvae_concat_elu_padded(
        x: *const C_tensor,
        left: i64,
        right: i64,
        top: i64,
        bottom: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn ibvae_cuda_graphs_built(yes: *mut bool) -> *mut c_char;
    fn ibvae_graph_new(out: *mut *mut CGraph) -> *mut c_char;
    fn ibvae_graph_free(graph: *mut CGraph);
    fn ibvae_graph_side_stream(graph: *mut CGraph, device: i64, enter: bool) -> *mut c_char;
    fn ibvae_graph_capture_begin(graph: *mut CGraph) -> *mut c_char;
    fn ibvae_graph_capture_end(graph: *mut CGraph) -> *mut c_char;
    fn ibvae_graph_replay(graph: *mut CGraph) -> *mut c_char;
    fn ibvae_gated_residual(
        x: *const C_tensor,
        c: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn ibvae_weight_norm(
        v: *const C_tensor,
        g: *const C_tensor,
        axis: i64,
        eps: f64,
        tensor_operations: bool,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn ibvae_mixture_log_prob(
        params: *const C_tensor,
        x: *const C_tensor,
        constants: MixtureConstants,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn ibvae_coin_dropout(
        x: *const C_tensor,
        words: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    /// Adam by hand in float64 (PyTorch's form, as in `torch.optim.Adam`'s docs), one
    /// scalar at a time: returns the new parameter, `m` and `v`.
    fn adam_by_hand(p: f64, g: f64, m: f64, v: f64, t: i32, lr: f64, c: AdamConstants) -> [f64; 3] {
        let m = c.beta1 * m + (1.0 - c.beta1) * g;
        let v = c.beta2 * v + (1.0 - c.beta2) * g * g;
        let m_hat = m / (1.0 - c.beta1.powi(t));
        let v_hat = v / (1.0 - c.beta2.powi(t));
        [p - lr * m_hat / (v_hat.sqrt() + c.eps), m, v]
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// Two steps of the fused kernel on three small float32 parameters (one of them a
    /// leaf that requires gradients) match Adam by hand in float64, with a different
    /// learning rate at each step.
    #[test]
    fn fused_adam_matches_adam_by_hand() {
        let opts = (Kind::Float, Device::Cpu);
        let params = [
            Tensor::from_slice(&[0.5f32, -1.0, 2.0]).set_requires_grad(true),
            Tensor::from_slice(&[0.25f32, 0.75, -0.125, 3.0]).reshape([2, 2]),
            Tensor::from_slice(&[-4.0f32]),
        ];
        let grads_per_step = [
            [vec![0.1, -0.2, 0.3], vec![1.0, -1.0, 0.5, 0.0], vec![2.0]],
            [
                vec![-0.3, 0.05, 0.3],
                vec![0.5, 2.0, -0.5, 1e-3],
                vec![-1.0],
            ],
        ];
        let c = AdamConstants {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let exp_avgs: Vec<Tensor> = params.iter().map(Tensor::zeros_like).collect();
        let exp_avg_sqs: Vec<Tensor> = params.iter().map(Tensor::zeros_like).collect();
        let mut state_steps: Vec<Tensor> = params.iter().map(|_| Tensor::zeros([], opts)).collect();
        let mut want: Vec<[Vec<f64>; 3]> = params
            .iter()
            .map(|p| [values(p), vec![0.0; p.numel()], vec![0.0; p.numel()]])
            .collect();
        for (step, (grads, lr)) in grads_per_step.iter().zip([1e-2, 3e-3]).enumerate() {
            let t = step as i32 + 1;
            for (w, g) in want.iter_mut().zip(grads) {
                for i in 0..g.len() {
                    let [p, m, v] = adam_by_hand(w[0][i], g[i], w[1][i], w[2][i], t, lr, c);
                    (w[0][i], w[1][i], w[2][i]) = (p, m, v);
                }
            }
            let grads: Vec<Tensor> = grads
                .iter()
                .zip(&params)
                .map(|(g, p)| Tensor::from_slice(g).to_kind(Kind::Float).view_as(p))
                .collect();
            for s in &mut state_steps {
                let _ = s.g_add_scalar_(1.0);
            }
            let lists = AdamLists {
                params: &params,
                grads: &grads,
                exp_avgs: &exp_avgs,
                exp_avg_sqs: &exp_avg_sqs,
                state_steps: &state_steps,
            };
            fused_adam_(lists, &Tensor::from(lr), c).unwrap();
        }
        for (i, w) in want.iter().enumerate() {
            for (got, want) in [&params[i], &exp_avgs[i], &exp_avg_sqs[i]].iter().zip(w) {
                for (a, b) in values(got).iter().zip(want) {
                    assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
                }
            }
        }
    }

    /// LibTorch's own checks come back as errors, not as a C++ exception.
    #[test]
    fn a_refused_call_is_an_error() {
        let params = [Tensor::zeros([3], (Kind::Float, Device::Cpu))];
        let step = [Tensor::ones([], (Kind::Float, Device::Cpu))];
        let lists = AdamLists {
            params: &params,
            grads: &params,
            exp_avgs: &params,
            exp_avg_sqs: &params,
            state_steps: &step,
        };
        let c = AdamConstants {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        // Two learning rates: the kernel's `lr.item()` throws.
        let lr = Tensor::from_slice(&[1e-3, 2e-3]);
        let err = fused_adam_(lists, &lr, c).unwrap_err().to_string();
        assert!(
            err.starts_with("LibTorch: ") && err.contains("2 elements"),
            "{err}"
        );
        let short = AdamLists {
            state_steps: &[],
            ..lists
        };
        let err = fused_adam_(short, &Tensor::from(1e-3), c).unwrap_err();
        assert!(err.to_string().contains("0 state_steps"), "{err}");
    }
}
