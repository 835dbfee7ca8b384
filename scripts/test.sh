#!/usr/bin/env bash
# Set up (CPU torch first, then the package with its dev extra) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0            # CPU build; an unpinned torch pulls a multi-GB CUDA build
python -m pip install -q -e ".[dev]"
python -m ruff check .
python -m pytest -q
