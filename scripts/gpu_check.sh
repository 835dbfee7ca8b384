#!/usr/bin/env bash
# One prepared check of every CUDA/TensorRT path (issue 19): ≤ 10 minutes on one CUDA GPU, each step under its
# own timeout, errors recorded rather than fatal, everything in OUT_DIR/gpu_report.json plus a printed summary.
#
#   bash scripts/gpu_check.sh OUT_DIR [--dry-run] [--install WHEELHOUSE]
#
# --dry-run            environment only; every GPU step is recorded as "skipped: no CUDA" with its reason.
# --install DIR        first install the GPU stack offline from a folder of wheels (the GPU machines have no
#                      internet): CUDA torch, onnxruntime-gpu (never beside the CPU onnxruntime: both install
#                      into the same folder and the last one wins) and TensorRT 10.x (the TensorRT EP supports
#                      TensorRT 11 only from ORT 1.27). Fill the folder where there is internet with:
#   pip download -d DIR torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
#   pip download -d DIR "onnxruntime-gpu>=1.22,<1.27" "tensorrt-cu12>=10.9,<11"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bash scripts/gpu_check.sh OUT_DIR [--dry-run] [--install WHEELHOUSE]}"
shift
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) ARGS+=(--dry-run); shift ;;
    --install)
      WHEELS="${2:?--install needs a folder of wheels}"; shift 2
      mkdir -p "$OUT"
      {
        timeout 240 python -m pip install --no-index --find-links "$WHEELS" torch==2.13.0 &&
        timeout 60 python -m pip uninstall -y onnxruntime onnxruntime-gpu &&
        timeout 120 python -m pip install --no-index --find-links "$WHEELS" "onnxruntime-gpu>=1.22,<1.27" \
          "tensorrt-cu12>=10.9,<11"
      } >"$OUT/install.log" 2>&1 || echo "install failed (see $OUT/install.log); checking what is there"
      ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
# 570 s for the steps leaves room for start-up inside a 10-minute slot; the driver never exits non-zero on a
# failed step (the report says which), only on a broken invocation.
timeout 590 python scripts/gpu_check.py "$OUT" "${ARGS[@]}" --budget-s 570
status=$?
[ -f "$OUT/gpu_report.json" ] || { echo "no report written (exit $status)" >&2; exit 1; }
exit 0
