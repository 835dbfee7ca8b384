"""benchmarks/train_throughput.py in its smoke mode (issue 14): it runs the real training step and loader, end to end.

No timing is asserted (the suite shares its cores); the report must hold finite figures for every configuration.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from facenormals.benchmarks import train_throughput


def test_smoke_runs_the_training_step_and_the_loader(tmp_path: Path):
    out = tmp_path / "throughput.json"
    data = train_throughput.smoke_dataset(tmp_path / "data")
    report = train_throughput.main(["--smoke", "--data", str(data), "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {row["config"]: row for row in report["steps"]}
    assert set(rows) == {"fp32", "bf16+cl"}
    for row in rows.values():
        assert row["error"] is None, row["error"]
        assert row["size"] == 64 and row["batch"] == 2
        assert row["wall_s_per_batch"] > 0 and row["samples_per_s"] > 0 and math.isfinite(row["loss"]) and row["loss"] > 0
    # bf16 autocast follows fp32: same loss to within bf16 rounding, nearly the same gradient
    grad = report["grad_check"]
    assert grad["loss_rel_diff"] < 0.05 and grad["grad_cosine"] > 0.95
    loader = report["loader"]
    assert loader["samples"] == 3 and loader["prior"] is None  # no stored landmarks in the smoke set
    assert set(loader["load_item_ms"]["64"]) == {"png", "predecoded", "predecoded_no_prior"}
    assert all(v >= 0 for v in loader["decode_ms"].values())


def test_synthetic_batch_has_the_trainer_layout():
    batch = train_throughput.synthetic_batch(64, 3)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "image": (3, 3, 64, 64), "prior": (3, 4, 64, 64), "normals": (3, 3, 64, 64), "mask": (3, 1, 64, 64)}
    inside = batch["mask"][:, 0] > 0
    norms = batch["normals"].norm(dim=1)[inside]
    assert float((norms - 1).abs().max()) < 1e-5
