"""The campaign's gate (training/gate.py): eval's numbers from cached coarse faces, paired differences, the verdict."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import facenormals
from facenormals.checkpoint import save_checkpoint
from facenormals.model import create_model
from facenormals.training import gate
from facenormals.training.evaluation import evaluate_predictor, load_predictor, paired_samples
from tests.synthetic import write_ellipsoids


def _prior_model(path: Path, seed: int, moved: bool = False) -> Path:
    """A lite prior model; ``moved``: one that adds to its coarse face (a fresh one returns it, mirror or not)."""
    torch.manual_seed(seed)
    model = create_model("lite", "full", prior="residual", prior_source="ict-blend")
    if moved:
        with torch.no_grad():
            model.normal_decoder.last.weight.normal_(std=0.2)
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate")
    return {"set": write_ellipsoids(root / "val_ellipsoids", count=3, size=256, seed=3),
            "reference": _prior_model(root / "reference.safetensors", 0),
            "candidate": _prior_model(root / "candidate.safetensors", 1), "cache": root / "cache"}


def test_scores_equal_eval_and_the_cache_is_reused(setup: dict[str, Path]):
    report = gate.run_gate([setup["candidate"]], setup["reference"], [setup["set"]], setup["cache"])
    eval_scores = evaluate_predictor(load_predictor(setup["candidate"]), paired_samples(setup["set"])).per_image_deg
    gated = report["candidates"][str(setup["candidate"])]["sets"]["val_ellipsoids"]["per_image"]
    assert gated.keys() == eval_scores.keys()
    assert all(abs(gated[n] - eval_scores[n]) < 1e-4 for n in gated)
    entries = list(setup["cache"].glob("val_ellipsoids-ict-blend-*.npy"))
    assert len(entries) == 1 and np.load(entries[0]).shape == (3, 7, 256, 256)
    again = gate.run_gate([setup["candidate"]], setup["reference"], [setup["set"]], setup["cache"])
    assert again["candidates"] == report["candidates"]
    assert list(setup["cache"].glob("*.npy")) == entries  # drawn once


def test_one_pass_per_crop_scores_as_eval_without_the_mirror(setup: dict[str, Path], tmp_path: Path):
    """``--no-mirror`` (the live loop's model): eval's one-pass numbers, the reference cached apart from its mirror
    pass's."""
    cache = tmp_path / "cache"
    reference, candidate = (_prior_model(tmp_path / f"moved{seed}.safetensors", seed, moved=True) for seed in (4, 5))
    mirrored = gate.run_gate([candidate], reference, [setup["set"]], cache)
    single = gate.run_gate([candidate], reference, [setup["set"]], cache, mirror=False)
    eval_scores = evaluate_predictor(load_predictor(candidate, mirror=False), paired_samples(setup["set"])).per_image_deg
    gated = single["candidates"][str(candidate)]["sets"]["val_ellipsoids"]["per_image"]
    assert all(abs(gated[n] - eval_scores[n]) < 1e-4 for n in eval_scores)
    assert single["reference_per_image"] != mirrored["reference_per_image"]
    assert len(list(cache.glob("val_ellipsoids-*-reference-*.json"))) == 2
    assert "one pass per crop" in gate.format_report(single)


def test_a_copy_of_the_reference_does_not_pass(setup: dict[str, Path], tmp_path: Path, capsys):
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(setup["reference"].read_bytes())
    out = tmp_path / "gate.json"
    code = gate.main([str(copy), "--data", str(setup["set"]), "--reference", str(setup["reference"]),
                      "--cache", str(setup["cache"]), "--json", str(out)])
    assert code == 1 and "fail" in capsys.readouterr().out
    row = json.loads(out.read_text())["candidates"][str(copy)]["sets"]["val_ellipsoids"]
    assert row["delta_deg"] == 0.0 and row["better_share"] == 0.0


def test_the_reference_scores_are_cached_by_its_hash(setup: dict[str, Path], tmp_path: Path):
    cache = tmp_path / "cache"
    first = gate.run_gate([setup["candidate"]], setup["reference"], [setup["set"]], cache)
    entries = list(cache.glob("val_ellipsoids-*-reference-*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text()) == first["reference_per_image"]["val_ellipsoids"]
    planted = {name: deg + 1.0 for name, deg in first["reference_per_image"]["val_ellipsoids"].items()}
    entries[0].write_text(json.dumps(planted))  # a second gate must read the entry, not re-score
    second = gate.run_gate([setup["candidate"]], setup["reference"], [setup["set"]], cache)
    assert second["reference_per_image"]["val_ellipsoids"] == planted
    other = _prior_model(tmp_path / "other.safetensors", 2)  # another reference file: its own entry
    gate.run_gate([setup["candidate"]], other, [setup["set"]], cache)
    assert len(list(cache.glob("val_ellipsoids-*-reference-*.json"))) == 2


def test_a_new_crop_makes_a_new_cache_entry(setup: dict[str, Path], tmp_path: Path):
    grown = write_ellipsoids(tmp_path / "val_ellipsoids", count=4, size=256, seed=3)
    samples = paired_samples(grown)
    assert gate.cache_key(samples, "ict-blend") != gate.cache_key(samples[:3], "ict-blend")
    assert gate.cache_key(samples, "ict-blend") != gate.cache_key(samples, "ict-fit")


def test_new_landmark_points_make_a_new_cache_entry(tmp_path: Path):
    """The coarse face depends on the fit's asset as much as on its code: a re-derived asset is not served stale."""
    package = Path(facenormals.__file__).resolve().parent
    for name in gate.COARSE_FACE_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / name, tmp_path / name)
    assert gate.coarse_face_fingerprint(tmp_path) == gate.coarse_face_fingerprint()
    with np.load(tmp_path / "assets" / "ict_face.npz") as z:
        arrays = dict(z)
    arrays["landmark_barycentric"] = arrays["landmark_barycentric"][:, ::-1].copy()  # other points, same shapes
    np.savez(tmp_path / "assets" / "ict_face.npz", **arrays)
    assert gate.coarse_face_fingerprint(tmp_path) != gate.coarse_face_fingerprint()


def test_compare_pairs_crops():
    reference = {"a": 10.0, "b": 12.0, "c": 11.0, "d": 9.0}
    candidate = {"a": 9.0, "b": 12.5, "c": 10.0, "d": 8.5}
    row = gate.compare(candidate, reference)
    diffs = np.array([-1.0, 0.5, -1.0, -0.5])
    assert row.delta_deg == pytest.approx(diffs.mean())
    assert row.delta_se_deg == pytest.approx(diffs.std(ddof=1) / math.sqrt(4))
    assert row.better_share == 0.75 and row.passes
    with pytest.raises(ValueError, match="different crops"):
        gate.compare({"a": 1.0}, reference)


def test_an_rgb_model_is_refused(tmp_path: Path):
    rgb = tmp_path / "rgb.safetensors"
    save_checkpoint(create_model("lite", "full"), rgb)
    with pytest.raises(ValueError, match="RGB model"):
        gate.network(rgb)
