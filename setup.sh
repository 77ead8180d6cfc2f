#!/usr/bin/env bash
# Installs what ibvae needs and builds it: PyTorch 2.11.0 from the package registry in a
# virtual environment (its LibTorch is the compute engine; for its CUDA build, CUDA's crt
# headers beside it), linked at .libtorch, then `cargo build --release`. Rerunning it
# reuses what is there.
#
#   IBVAE_TORCH_ENV   where the virtual environment lives
#                     [default: ~/.cache/ibvae/torch-2.11.0, shared by every checkout]
#   LIBTORCH          an existing LibTorch 2.11 (a libtorch folder, or the `torch` folder of
#                     a PyTorch 2.11 installation) to use instead; nothing is installed
#   IBVAE_NO_BUILD=1  install and link only
set -euo pipefail
cd "$(dirname "$0")"

torch_version=2.11.0
env_dir=${IBVAE_TORCH_ENV:-$HOME/.cache/ibvae/torch-$torch_version}

if [ -n "${LIBTORCH:-}" ]; then
  torch_dir=$LIBTORCH
  if [ ! -d "$torch_dir/lib" ] || [ ! -d "$torch_dir/include" ]; then
    echo "error: LIBTORCH=$torch_dir has no lib/ and include/ folders: point it at a" \
      "LibTorch $torch_version folder (or the torch folder of PyTorch $torch_version)" >&2
    exit 1
  fi
else
  has_torch() {
    "$env_dir/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" \
      2>/dev/null
  }
  if ! has_torch; then
    python=$(command -v python3 || command -v python || true)
    if [ -z "$python" ]; then
      echo "error: Python 3 is needed to install PyTorch $torch_version (apt-get install python3-venv)" >&2
      exit 1
    fi
    echo "installing PyTorch $torch_version into $env_dir (a few GB, once)"
    rm -rf "$env_dir"
    mkdir -p "$(dirname "$env_dir")"
    "$python" -m venv "$env_dir"
    "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$torch_version"
    has_torch || { echo "error: PyTorch $torch_version did not install in $env_dir" >&2; exit 1; }
  fi
  # A CUDA 13.0 build of torch ships the CUDA headers in nvidia/cu13/include without
  # crt/host_config.h, which cuda_runtime.h includes; nvidia-cuda-crt adds it, so that C++
  # code using LibTorch's CUDA side can be compiled against this environment.
  cuda_crt=13.0
  torch_cuda() {
    "$env_dir/bin/python" -c "import torch; print(torch.version.cuda or '')" 2>/dev/null
  }
  has_cuda_crt() {
    "$env_dir/bin/python" -c "import importlib.metadata as m, sys; \
sys.exit(not m.version('nvidia-cuda-crt').startswith('$cuda_crt.'))" 2>/dev/null
  }
  if [ "$(torch_cuda)" = "$cuda_crt" ] && ! has_cuda_crt; then
    echo "installing nvidia-cuda-crt $cuda_crt (CUDA's crt headers) into $env_dir"
    "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check "nvidia-cuda-crt==$cuda_crt.*"
    has_cuda_crt || { echo "error: nvidia-cuda-crt $cuda_crt did not install in $env_dir" >&2; exit 1; }
  fi
  torch_dir=$("$env_dir/bin/python" -c "import os, torch; print(os.path.dirname(torch.__file__))")
fi

# .cargo/config.toml points LIBTORCH at this link; build.rs records its target as the
# binaries' rpath, so they run without LD_LIBRARY_PATH.
ln -sfn "$torch_dir" .libtorch
echo "LibTorch: $torch_dir"

if [ "${IBVAE_NO_BUILD:-0}" != 1 ]; then
  cargo build --release
  echo "built ./target/release/ibvae"
fi
