#!/usr/bin/env bash
# Set up and run the main job: live normals on the webcam, or on the embedded sample without one.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
exec facenormals run "$@"
