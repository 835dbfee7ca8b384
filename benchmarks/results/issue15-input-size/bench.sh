#!/usr/bin/env bash
# usage: bench.sh ROUND  — one round of the latency configs, each run with the trainer paused
export PYTHONPATH=/work/wt_lat11_pkgs
cd /work/wt_lat11
S=/work/scratch/lat11; W=/work/wt_lat11/facenormals/weights
round=$1
declare -A M=([256]=$W/fast-prior.int8.onnx [224]=$S/fast-prior-224.int8.onnx [192]=$S/fast-prior-192.int8.onnx [160]=$S/fast-prior-160.int8.onnx)
for cfg in ${CONFIGS:-256:auto 192:auto 160:auto 192:1 160:1}; do
  size=${cfg%%:*}; every=${cfg#*:}
  tag=$size-e$every${TAGX}-r$round
  echo "$tag start $(date -u +%T) $(uptime)" >> $S/bench.log
  /work/scratch/with_trainer_paused.sh timeout 180 python -m facenormals.cli bench --source sample --backend auto \
     --model ${M[$size]} --frames 300 --infer-every $every $EXTRA --json $S/bench-$tag.json > $S/bench-$tag.log 2>&1
  echo "$tag end $(date -u +%T) rc=$? $(uptime)" >> $S/bench.log
done
