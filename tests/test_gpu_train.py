"""scripts/gpu_train.sh: the GPU recipe's whole chain (render, landmarks, baseline, two training stages, export) runs
tiny on the CPU with --dry-run; without CUDA a real run stops at once, saying why, before rendering anything."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facenormals.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_train.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_a_real_run_stops_before_rendering_and_says_why(tmp_path: Path) -> None:
    ict = tmp_path / "ict_facekit.npz"
    ict.write_bytes(b"")  # only its presence is checked before the CUDA check
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "--ict", str(ict), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 1
    assert "sees no CUDA GPU" in proc.stdout
    report = json.loads((tmp_path / "out" / "gpu_train_report.json").read_text())
    assert report["steps"]["environment"]["status"].startswith("failed: torch")
    assert report["environment"]["cuda"] is False
    assert not (tmp_path / "w" / "data").exists()


@pytest.mark.slow
@pytest.mark.shared
def test_dry_run_renders_trains_in_two_stages_and_brings_back_a_loadable_checkpoint(shared_data: Path,
                                                                                    tmp_path: Path) -> None:
    if not (shared_data / "ict-facekit" / "ict_facekit.npz").is_file():
        pytest.skip("no ICT-FaceKit model in the shared data")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--shared", str(shared_data),
                           "--work", str(tmp_path / "work"), "--anchor-weight", "30", "--mix", "0.5", "0.35", "0.15"],
                          capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_train_report.json").read_text())
    assert report["dry_run"] is True
    assert {name: step["status"] for name, step in report["steps"].items() if step["status"] != "ok"} == {}
    # a few renders per folder, landmarks stored for every folder with images
    samples = report["data"]["samples"]
    assert samples["paired_00"] == samples["profile_00"] == 2 and samples["normal_only"] == 2
    for name in ("paired_00", "profile_00", "val_ict", "val_profile", "val_james", "val_ict_v5"):
        assert (tmp_path / "work" / "data" / name / "priors" / "index.csv").is_file(), name
    configs = sorted((tmp_path / "work").glob("config_*.json"))  # one per training stage
    assert len(configs) == 2
    for config in configs:  # the recipe's anchor and batch mix as asked
        written = json.loads(config.read_text())
        assert written["anchor"]["weight"] == 30.0, config
        assert written["data"]["mix"] == {"paired": 0.5, "image-only": 0.35, "normal-only": 0.15}, config
    training = report["training"]
    assert [s["steps"] for s in training["stages"]] == [[0, 3], [3, 5]]
    assert training["steps"] == 5 and training["samples_seen"] == 10
    validation = report["validation"]
    sets = {"val_ict", "val_profile", "val_james", "val_ict_v5"}
    assert sets < set(validation["baseline"]) and sets < set(validation["final"])
    assert [step for step, _ in validation["curve"]] == [3, 5]  # each stage's closing validation
    # the checkpoint comes back in parts the device tool brings back (≤ 8 files, ≤ 16 MiB each) and reassembles
    files = sorted(p for p in out.iterdir() if p.is_file())
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    checkpoint = report["checkpoint"]
    whole = b"".join((out / name).read_bytes() for name in checkpoint["files"])
    assert hashlib.sha256(whole).hexdigest() == checkpoint["sha256"]
    (tmp_path / "best.safetensors").write_bytes(whole)
    model = load_checkpoint(tmp_path / "best.safetensors")
    # the settle stage's snapshot mean, a full network; kind and prior from the starting weights' own metadata
    assert checkpoint["files"][0].startswith("mean.fp16.safetensors")
    assert training["settle_snapshots"] == ["step_000004", "step_000005"]
    assert model.cfg.prior_source == "ict-blend" and model.image_decoder is not None
    # a second invocation refuses to replace the report
    again = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--shared", str(shared_data)],
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode != 0 and "--overwrite" in again.stderr
