"""The campaign's learning curve: validation error of every run against training samples seen (issue 14).

Each run folder holds ``scalars.csv`` (validation rows carry ``val_sets``: ``NAME=deg`` per set) and ``config.json``
(its phases, hence the batch size at every step). Samples seen count the images drawn per step across the
campaign; a run that started from another's weights continues that run's count (``--offset RUN=SAMPLES``).
Reference lines (the shipped model, the coarse-face baselines, on the same validation subsets) come from a JSON file
``{LABEL: {SET: deg}}``.

    python -m facenormals.training.learning_curve /work/runs/ict_prior_c1 --reference refs.json \\
        --out docs/learning_curve.png
"""

from __future__ import annotations

import argparse
import json
from itertools import cycle
from pathlib import Path

from facenormals.atomic import atomic_path
from facenormals.training.logs import SCALARS, read_scalars


def samples_seen(config: dict, step: int) -> int:
    """Images drawn by the first ``step`` steps of a run with this config's phases.

    >>> samples_seen({"phases": [{"steps": 2, "batch_size": 8}, {"steps": 3, "batch_size": 4}]}, 4)
    24
    """
    total, start = 0, 0
    for phase in config["phases"]:
        n = max(0, min(step, start + phase["steps"]) - start)
        total += n * phase["batch_size"]
        start += phase["steps"]
    return total + max(0, step - start) * config["phases"][-1]["batch_size"]


def validation_series(run: Path) -> dict[str, list[tuple[int, float]]]:
    """{set: [(step, deg)]} from a run's per-set validation rows."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in read_scalars(run / SCALARS):
        if row.get("kind") != "val" or not row.get("val_sets"):
            continue
        for item in row["val_sets"].split():
            name, deg = item.split("=")
            series.setdefault(name, []).append((int(row["step"]), float(deg)))
    return series


REFERENCE_STYLES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2, 2, 2)))
LEGEND_COLUMNS = 4


def plot(runs: list[Path], out: Path, references: dict[str, dict[str, float]], offsets: dict[str, int],
         only_sets: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    per_run = {run: validation_series(run) for run in runs}
    sets = sorted({name for series in per_run.values() for name in series})
    if only_sets:  # the panels asked for, in their order (a set no run validated on is an error, not a blank panel)
        missing = [name for name in only_sets if name not in sets]
        if missing:
            raise ValueError(f"--sets {missing}: no run validated on them (sets found: {sets})")
        sets = list(only_sets)
    if not sets:
        raise ValueError(f"no per-set validation rows in {[str(r) for r in runs]}")
    labels = len(runs) + len(references)
    legend_rows = -(-labels // LEGEND_COLUMNS)
    legend_in = 0.2 * legend_rows + 0.2  # one legend under the panels: inside them it hid the curves
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6 + legend_in), squeeze=False)
    palette = [plt.get_cmap("tab20")(i) for i in (*range(0, 20, 2), *range(1, 20, 2))]  # 20 runs before a repeat
    colour_of = {run: palette[i % len(palette)] for i, run in enumerate(runs)}  # one colour per run in every panel
    for ax, name in zip(axes[0], sets, strict=True):
        for run, series in per_run.items():
            config = json.loads((run / "config.json").read_text())
            points = series.get(name, [])
            if points:
                x = [offsets.get(run.name, 0) + samples_seen(config, step) for step, _ in points]
                ax.plot(x, [deg for _, deg in points], "o-", ms=3, label=run.name, color=colour_of[run])
        for (label, values), style, colour in zip(references.items(), cycle(REFERENCE_STYLES), cycle(("grey", "black")),
                                                  strict=False):  # the references set the length; styles repeat
            if name in values:
                ax.axhline(values[name], color=colour, linestyle=style, lw=1, label=label)
        ax.set_title(name)
        ax.set_xlabel("training samples seen")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))  # full numbers overlapped
        ax.set_ylabel("mean angular error (°)")
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=LEGEND_COLUMNS, fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, legend_in / (3.6 + legend_in), 1, 1))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of the campaign, in order")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", type=Path, default=None, help="JSON {LABEL: {SET: deg}} drawn as lines")
    parser.add_argument("--offset", action="append", default=[], help="RUN=SAMPLES seen before this run started")
    parser.add_argument("--sets", nargs="+", default=None, metavar="SET",
                        help="only these validation sets' panels, in this order (default: every set any run has)")
    args = parser.parse_args(argv)
    references = json.loads(args.reference.read_text()) if args.reference else {}
    offsets = {k: int(v) for k, v in (item.split("=", 1) for item in args.offset)}
    plot(args.runs, args.out, references, offsets, args.sets)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

