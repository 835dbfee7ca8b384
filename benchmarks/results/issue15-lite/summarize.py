"""One line per bench JSON: FPS, end-to-end p50/p95/p99, CPU ms/frame, inferred frames' total p50/p95 and network p50."""
import json
import sys

import numpy as np


def main() -> None:
    for path in sys.argv[1:]:
        with open(path) as f:
            d = json.load(f)
        lat = d["latency_ms"]
        inferred = [f for f in d["per_frame"] if f.get("infer", 0) > 3.0]
        tot = np.array([f["total"] for f in inferred])
        net = np.array([f["infer"] for f in inferred])
        rest = tot - net
        print(f"{path.split('/')[-1]:<22} {d['fps']:5.1f} FPS  e2e {lat['p50']:.0f}/{lat['p95']:.1f}/{lat['p99']:.1f}  "
              f"CPU {d['cpu_ms_per_frame']:.1f}  inferred n={len(inferred)} total p50 {np.median(tot):.1f} p95 "
              f"{np.percentile(tot, 95):.1f} net p50 {np.median(net):.1f} p95 {np.percentile(net, 95):.1f} "
              f"rest p50 {np.median(rest):.1f}"
              f"  load {d['machine']['load_avg_1m_before']}→{d['machine']['load_avg_1m']}")


if __name__ == "__main__":
    main()
