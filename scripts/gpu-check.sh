#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one go, for a machine with an NVIDIA GPU and
# PyTorch 2.11 installed for `python3`: the binary built elsewhere (target/release/ibvae)
# uses that machine's LibTorch. Everything goes to one file, $OUT/gpu-check.txt, section by
# section as it runs (a run cut short keeps what it had).
#   verify  verify-torch --device cuda on every fixture (float32, TF32 off);
#   graph   20 training steps of `small` in float32 with --cuda-graph off, again off, and
#           on: the per-step losses of each pair and their largest relative difference
#           (off against off is the yardstick: cuDNN's algorithms are not bit-exact);
#   train   bench of paper and small in f32, tf32 and bf16 with graphs on and off, and
#           tf32 with graphs in both layouts, each preset beside the reference's
#           `hybrid_ref.py bench --device cuda` (TF32 convolutions, PyTorch's default);
#   tuned   the reference as an expert runs it, paper only: `bench --tuned` (torch.compile,
#           fused Adam, channels-last) with and without `--amp bf16`, compiling in its
#           warm-up steps (minutes each);
#   profile `paper` in bf16 with graphs off, 5 steps under LibTorch's profiler: the kernels
#           by GPU time, the GPU's busy time against the wall time (the gaps between
#           kernels), and the Chrome trace in $OUT/paper-bf16.trace.json;
#   sample  bench-sample (cached against naive, 16 images) of paper and small.
# SECTIONS [verify graph train tuned]: which to run, in that order (profile and sample too
# when named). STEPS [20]: timed
# steps of each bench. REF: the reference script [../shared/reference/hybrid_ref.py]; its
# fixtures are taken from the `fixtures` folder beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
ref=${REF:-../shared/reference/hybrid_ref.py}
steps=${STEPS:-20}
sections=${SECTIONS:-verify graph train tuned}
mkdir -p "$out"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ibvae=./target/release/ibvae
largest='import json, sys; d = json.load(sys.stdin)["max_rel_error"]; k = max(d, key=d.get); print("largest relative error", k, d[k])'
# The per-step losses of a bench log (warm-up steps included), one per line.
losses() { sed -n 's/^step *\([0-9]*\).* loss \([-0-9.eE+naif]*\) bpd.*/\2/p'; }
compare='import sys
a, b = ([float(x) for x in open(f)] for f in sys.argv[1:3])
print("steps", len(a), len(b), "largest relative difference",
      max(abs(x - y) / abs(y) for x, y in zip(a, b)) if a and len(a) == len(b) else "n/a")'
bench() { "$ibvae" bench --bottleneck gd:0.15 --device cuda --steps "$steps" "$@"; }
has() { case " $sections " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  if has verify; then
    for f in tests/fixtures/*.safetensors "$(dirname "$ref")"/fixtures/*.safetensors; do
      [ -e "$f" ] || continue
      echo "== ibvae verify-torch $f --device cuda"
      "$ibvae" verify-torch "$f" --device cuda --json | python3 -c "$largest"
    done
  fi
  if has graph; then
    for tag in off-1 off-2 on; do
      echo "== ibvae bench --preset small --precision f32 --steps 20 --cuda-graph ${tag%-*}"
      "$ibvae" bench --bottleneck gd:0.15 --device cuda --preset small --precision f32 --steps 20 \
        --cuda-graph "${tag%-*}" 2>&1 | tee "$out/graph-$tag.log" | grep -E "median step|train_img_per_s"
      losses < "$out/graph-$tag.log" > "$out/graph-$tag.losses"
    done
    echo "== eager against eager"; python3 -c "$compare" "$out/graph-off-1.losses" "$out/graph-off-2.losses"
    echo "== graphed against eager"; python3 -c "$compare" "$out/graph-on.losses" "$out/graph-off-1.losses"
  fi
  if has train; then
    for preset in paper small; do
      echo "== python3 hybrid_ref.py bench --preset $preset --bottleneck gd:0.15 --device cuda --steps $steps"
      python3 "$ref" bench --preset $preset --bottleneck gd:0.15 --device cuda --steps "$steps" | tail -n 1
      for precision in f32 tf32 bf16; do
        for graph in off on; do
          echo "== ibvae bench --preset $preset --precision $precision --cuda-graph $graph"
          bench --preset $preset --precision $precision --cuda-graph $graph | grep -E "median step|train_img_per_s"
        done
      done
      for layout in nchw channels-last; do
        echo "== ibvae bench --preset $preset --precision tf32 --cuda-graph on --layout $layout"
        bench --preset $preset --precision tf32 --cuda-graph on --layout $layout | grep -E "train_img_per_s"
      done
    done
  fi
  if has tuned; then
    for amp in off bf16; do
      echo "== python3 hybrid_ref.py bench --preset paper --device cuda --tuned --amp $amp --warmup 5 --steps $steps"
      python3 "$ref" bench --preset paper --bottleneck gd:0.15 --device cuda --tuned --amp $amp \
        --warmup 5 --steps "$steps" | tail -n 1
    done
  fi
  if has profile; then
    echo "== ibvae bench --preset paper --precision bf16 --cuda-graph off --steps 5 --profile"
    "$ibvae" bench --preset paper --bottleneck gd:0.15 --device cuda --precision bf16 \
      --cuda-graph off --steps 5 --profile "$out/paper-bf16.trace.json" | sed -n '/^profile of/,$p'
  fi
  if has sample; then
    for preset in paper small; do
      echo "== ibvae bench-sample --preset $preset --n 16 --methods cached,naive --device cuda"
      "$ibvae" bench-sample --preset $preset --n 16 --methods cached,naive --device cuda | tail -n 3
    done
  fi
} 2>&1 | tee "$out/gpu-check.txt"
