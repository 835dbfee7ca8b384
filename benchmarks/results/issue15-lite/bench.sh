#!/usr/bin/env bash
# usage: bench.sh ROUND [NAMES...] — one round: shipped default vs lite models, each run with the trainer paused
export PYTHONPATH=/work/wt_lite11_pkgs OMP_NUM_THREADS=1
cd /work/wt_lite11
S=/work/scratch/lite11; B=$S/bench
round=$1; shift
declare -A M=([fast]=facenormals/weights/fast-prior.int8.onnx [lite50]=$S/lite50.int8.onnx [lite50d]=$S/lite50d.int8.onnx [lite375]=$S/lite375.int8.onnx [lite25]=$S/lite25.int8.onnx [lite50p]=$S/lite50p.int8.onnx)
for name in ${@:-fast lite50}; do
  tag=$name-r$round
  echo "$tag start $(date -u +%T) $(uptime)" >> $B/bench.log
  /work/scratch/with_trainer_paused.sh timeout 180 python -m facenormals.cli bench --source sample --backend auto \
     --model ${M[$name]} --frames 300 --json $B/bench-$tag.json > $B/bench-$tag.log 2>&1
  echo "$tag end $(date -u +%T) rc=$? $(uptime)" >> $B/bench.log
done
