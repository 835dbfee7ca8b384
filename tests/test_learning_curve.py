"""The campaign's learning curve reads per-set validation rows and counts samples from the run's phases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from facenormals.training.learning_curve import main, samples_seen, validation_series
from facenormals.training.logs import FIELDS, SCALARS


def _run(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"phases": [{"steps": 100, "batch_size": 8},
                                                               {"steps": 100, "batch_size": 4}]}))
    with open(folder / SCALARS, "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerow({"step": 10, "kind": "paired", "i2n": 0.05})
        writer.writerow({"step": 50, "kind": "val", "val_mean_deg": 14.0})  # before per-set rows existed: skipped
        writer.writerow({"step": 100, "kind": "val", "val_mean_deg": 13.0, "val_sets": "a=15.5 b=10.5"})
        writer.writerow({"step": 150, "kind": "val", "val_mean_deg": 12.5, "val_sets": "a=15.0 b=10.0"})
    return folder


def test_samples_follow_the_phases() -> None:
    config = {"phases": [{"steps": 100, "batch_size": 8}, {"steps": 100, "batch_size": 4}]}
    assert samples_seen(config, 0) == 0
    assert samples_seen(config, 100) == 800
    assert samples_seen(config, 150) == 1000
    assert samples_seen(config, 250) == 1400  # past the last phase: its batch size continues


def test_curve_is_drawn_per_set_with_references(tmp_path: Path) -> None:
    run = _run(tmp_path / "run1")
    assert validation_series(run) == {"a": [(100, 15.5), (150, 15.0)], "b": [(100, 10.5), (150, 10.0)]}
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"shipped": {"a": 16.0, "b": 11.0}}))
    out = tmp_path / "curve.png"
    assert main([str(run), "--out", str(out), "--reference", str(refs), "--offset", "run1=5000"]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > 2 * image.shape[0]  # one panel per set, side by side


def test_sets_option_picks_the_panels_and_refuses_unknown_ones(tmp_path: Path) -> None:
    run = _run(tmp_path / "run1")
    both, one = tmp_path / "both.png", tmp_path / "one.png"
    assert main([str(run), "--out", str(both)]) == 0
    assert main([str(run), "--out", str(one), "--sets", "b"]) == 0
    assert cv2.imread(str(one)).shape[1] < 0.7 * cv2.imread(str(both)).shape[1]  # one panel, not two
    with pytest.raises(ValueError, match="no run validated on them"):
        main([str(run), "--out", str(tmp_path / "x.png"), "--sets", "b", "c"])
