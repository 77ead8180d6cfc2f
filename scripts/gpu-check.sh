#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one go, for a machine with an NVIDIA GPU and
# PyTorch 2.11 installed for `python3`: the binary built elsewhere (target/release/ibvae)
# uses that machine's LibTorch. Everything goes to one file, $OUT/gpu-check.txt.
#   1. verify-torch --device cuda on every fixture (float32, TF32 off);
#   2. sampling: bench-sample (cached against naive, 16 images) of paper and small;
#   3. training: bench of paper and small in f32, tf32 and bf16, each beside the
#      reference's `hybrid_ref.py bench --device cuda` (which uses TF32 convolutions,
#      PyTorch's default).
# REF: the reference script [../shared/reference/hybrid_ref.py]; its fixtures are taken
# from the `fixtures` folder beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
ref=${REF:-../shared/reference/hybrid_ref.py}
steps=${STEPS:-20}
mkdir -p "$out"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ibvae=./target/release/ibvae
largest='import json, sys; d = json.load(sys.stdin)["max_rel_error"]; k = max(d, key=d.get); print("largest relative error", k, d[k])'
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for f in tests/fixtures/*.safetensors "$(dirname "$ref")"/fixtures/*.safetensors; do
    [ -e "$f" ] || continue
    echo "== ibvae verify-torch $f --device cuda"
    "$ibvae" verify-torch "$f" --device cuda --json | python3 -c "$largest"
  done
  for preset in paper small; do
    echo "== ibvae bench-sample --preset $preset --n 16 --methods cached,naive --device cuda"
    "$ibvae" bench-sample --preset $preset --n 16 --methods cached,naive --device cuda | tail -n 3
  done
  for preset in paper small; do
    echo "== python3 hybrid_ref.py bench --preset $preset --bottleneck gd:0.15 --device cuda --steps $steps"
    python3 "$ref" bench --preset $preset --bottleneck gd:0.15 --device cuda --steps "$steps" | tail -n 1
    for precision in f32 tf32 bf16; do
      echo "== ibvae bench --preset $preset --bottleneck gd:0.15 --device cuda --steps $steps --precision $precision"
      "$ibvae" bench --preset $preset --bottleneck gd:0.15 --device cuda --steps "$steps" \
        --precision $precision | grep -E "median step|train_img_per_s"
    done
  done
} 2>&1 | tee "$out/gpu-check.txt"
