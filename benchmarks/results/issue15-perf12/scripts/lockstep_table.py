# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""Markdown table from lockstep.py's runs: per stage the mean over runs of p50 and min, before / after / saved."""


def main() -> None:
    import json
    import sys

    import numpy as np

    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    print(f"| stage | before p50 | after p50 | saved p50 | before min | after min | saved min |  (runs: {len(rows)}, 130 frames each)")
    print("|---|---|---|---|---|---|---|")
    for stage in ("detect", "crop", "paste", "render", "total"):
        b = np.array([r[f"before {stage}"] for r in rows]); a = np.array([r[f"after {stage}"] for r in rows])
        print(f"| {stage} | {b[:, 0].mean():.2f} | {a[:, 0].mean():.2f} | {b[:, 0].mean() - a[:, 0].mean():.2f} | "
              f"{b[:, 1].mean():.2f} | {a[:, 1].mean():.2f} | {b[:, 1].mean() - a[:, 1].mean():.2f} |")


if __name__ == "__main__":
    main()
