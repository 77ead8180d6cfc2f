#!/usr/bin/env bash
# Installs what ibvae needs and builds it: PyTorch 2.11.0 from the package registry in a
# virtual environment (its LibTorch is the compute engine), linked at .libtorch, then
# `cargo build --release`. Rerunning it reuses what is there.
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
