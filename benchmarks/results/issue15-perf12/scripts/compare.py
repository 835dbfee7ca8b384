# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""Max differences between two dumps (dump.py): python compare.py BASE NEW."""


def main() -> None:
    import glob
    import sys
    from pathlib import Path

    import numpy as np

    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    sa, sb = np.load(a / "sample.npz"), np.load(b / "sample.npz")
    rows = []
    for k in sa.files:
        x, y = sa[k], sb[k]
        if x.shape != y.shape:
            rows.append((k, f"SHAPE {x.shape} vs {y.shape}")); continue
        if k == "inputs":
            rows.append(("inputs rgb max|d|", float(np.abs(x[:, :3] - y[:, :3]).max())))
            rows.append(("inputs prior normals max|d|", float(np.abs(x[:, 3:6] - y[:, 3:6]).max())))
            rows.append(("inputs prior normals bit-identical", bool(np.array_equal(x[:, 3:6], y[:, 3:6]))))
            rows.append(("inputs coverage differing px", int((x[:, 6] != y[:, 6]).sum())))
            continue
        if x.dtype.kind == "f":
            both = np.isnan(x) & np.isnan(y)
            d = np.where(both, 0, np.abs(x - y))
            rows.append((f"{k} max|d| (NaN-aware)", float(np.nanmax(d)) if np.isfinite(d).all() else "NaN MISMATCH"))
            rows.append((f"{k} bit-identical", bool(np.array_equal(x, y, equal_nan=True))))
        else:
            rows.append((f"{k} differing", int((x != y).sum())))
    for r in rows:
        print(f"sample  {r[0]:40s} {r[1]}")
    for fa in sorted(glob.glob(str(a / "val_*.npz"))):
        x, y = np.load(fa), np.load(b / Path(fa).name)
        d = float(np.abs(x["normals"] - y["normals"]).max())
        cov = int((x["coverage"] != y["coverage"]).sum())
        print(f"{Path(fa).stem:28s} n={len(x['names']):4d} normals max|d| {d:.3g} bit-identical {np.array_equal(x['normals'], y['normals'])} coverage differing px {cov}")


if __name__ == "__main__":
    main()
