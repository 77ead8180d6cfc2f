#!/usr/bin/env bash
# The GPU checks of docs/performance.md in one go, for a machine with an NVIDIA GPU and
# PyTorch 2.11 installed for `python3`: the binary built elsewhere (target/release/ibvae)
# uses that machine's LibTorch. Logs go to $OUT (default ./gpu-logs).
#   verify-torch --device cuda on every fixture, then `bench` of paper and small in f32
#   and bf16, each beside the reference's `hybrid_ref.py bench --device cuda`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ibvae=./target/release/ibvae
ref=../shared/reference/hybrid_ref.py
steps=${STEPS:-20}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
for f in tests/fixtures/*.safetensors ../shared/reference/fixtures/*.safetensors; do
  echo "== $f"
  "$ibvae" verify-torch "$f" --device cuda --json
done > "$out/verify.log" 2>&1
for preset in paper small; do
  python3 "$ref" bench --preset $preset --bottleneck gd:0.15 --device cuda --steps "$steps" \
    > "$out/torch_$preset.log" 2>&1
  for precision in f32 bf16; do
    "$ibvae" bench --preset $preset --bottleneck gd:0.15 --device cuda --steps "$steps" \
      --precision $precision > "$out/ibvae_${preset}_$precision.log" 2>&1
  done
done
for f in "$out"/torch_*.log "$out"/ibvae_*.log; do
  echo "$(basename "$f" .log): $(grep -h train_img_per_s "$f" | tail -1)"
done | tee "$out/summary.txt"
