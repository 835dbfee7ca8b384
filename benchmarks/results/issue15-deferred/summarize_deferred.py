"""One line per `facenormals bench` JSON: deferred vs synchronous keyframes (session 15).

    python summarize_deferred.py bench-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def line(path: str) -> str:
    result = json.loads(Path(path).read_text())
    lat = result["latency_ms"]
    frames = result["per_frame"]
    # the ICT prior is made on keyframes only (on the detect thread with synchronous keyframes and, until the prior
    # moved to the deferred run, with deferred ones too): none such with the prior made after the frame
    keyframes = [f["total"] for f in frames if f.get("crop", 0.0) > 3.0] or [float("nan")]
    net = result.get("deferred_infer_ms", {})
    deviation = result.get("stability", {}).get("photo", {}).get("deviation_from_median_deg", {}).get("mean")
    return (f"{path:28s} {result['fps']:5.1f} FPS  e2e p50/p95/p99 {lat['p50']:.1f}/{lat['p95']:.1f}/{lat['p99']:.1f}  "
            f"CPU {result['cpu_ms_per_frame']:.1f}  dropped {result['dropped']}  "
            f"keyframes n={len(keyframes)} p50 {np.median(keyframes):.1f} p95 {np.percentile(keyframes, 95):.1f}  "
            f"deferred net p50 {net.get('p50', float('nan')):.1f}  photo dev {deviation}  "
            f"load {result['machine']['load_avg_1m_before']}→{result['machine']['load_avg_1m']}")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(line(name))
