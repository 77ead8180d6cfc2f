#!/usr/bin/env bash
# The CPU figures of docs/performance.md: training speed of ibvae against the PyTorch
# reference as a plain user runs it (`hybrid_ref.py bench`) and as an expert does
# (`bench --tuned`: torch.compile, fused Adam, channels-last), in rounds that alternate
# the three on the same machine. Prints one `preset round program img/s` line each.
#   PYTHON: a Python with torch 2.11.0, numpy and safetensors
#           [~/.cache/ibvae/torch-2.11.0/bin/python, the venv of ./setup.sh]
#   REF: the reference script [../shared/reference/hybrid_ref.py]
#   ROUNDS [3], STEPS [10], THREADS [2], PRESETS ["small tiny"], TUNED [1]: 0 skips --tuned
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$HOME/.cache/ibvae/torch-2.11.0/bin/python}
ref=${REF:-../shared/reference/hybrid_ref.py}
data=${DATA:-../shared/data/cifar10}
rounds=${ROUNDS:-3}
steps=${STEPS:-10}
threads=${THREADS:-2}
presets=${PRESETS:-small tiny}
tuned=${TUNED:-1}
ibvae=./target/release/ibvae
common=(--bottleneck gd:0.15 --threads "$threads" --steps "$steps" --data "$data")
speed() { grep -E '^train_img_per_s' | awk '{print $2}'; }
for round in $(seq 1 "$rounds"); do
  for preset in $presets; do
    echo "$preset $round reference $("$python" "$ref" bench --preset "$preset" "${common[@]}" | speed)"
    if [ "$tuned" = 1 ]; then
      echo "$preset $round reference-tuned $("$python" "$ref" bench --preset "$preset" "${common[@]}" --tuned | speed)"
    fi
    echo "$preset $round ibvae $("$ibvae" bench --preset "$preset" "${common[@]}" | speed)"
  done
done
