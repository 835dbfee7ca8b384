"""scripts/gpu_check.sh: the prepared GPU check runs end to end here in --dry-run and writes its report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_dry_run_records_every_gpu_step_as_skipped_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out), "--dry-run"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "gpu_report.json").read_text())
    steps = report["steps"]
    assert report["dry_run"] is True and steps["environment"]["status"] == "ok"
    assert steps["environment"]["result"]["onnxruntime"]  # the environment is read even in a dry run
    gpu_steps = {name: step for name, step in steps.items() if name != "environment"}
    assert set(gpu_steps) == {"exports", "tensorrt", "ort_gpu", "torch_cuda", "realtime", "pytest_gpu"}
    for step in gpu_steps.values():
        assert step["status"] == "skipped: no CUDA" and step["reason"].startswith("--dry-run")
    assert "report:" in proc.stdout and "skipped: no CUDA" in proc.stdout
