"""scripts/gpu_pack.sh hide/restore: what the device tool copies (tracked + untracked-not-ignored files) loses the
hidden paths, the starting weights stay, and restore leaves the checkout as it was — on a small git repository laid
out like this one, with this repository's .gitignore (its "!facenormals/weights/*.onnx" outranks a file pattern)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None, reason="needs git, bash")

FILES = ("facenormals/weights/fast-prior.safetensors", "facenormals/weights/fast.safetensors",
         "facenormals/weights/fast-prior.int8.onnx", "benchmarks/results/a.json", "docs/figure.png",
         "tests/test_x.py", "training/trainer.py", "README.md")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _travels(repo: Path) -> set[str]:
    """The files the device tool sends: tracked ones and untracked ones git does not ignore."""
    return set(_git(repo, "ls-files").split()) | set(_git(repo, "ls-files", "--others", "--exclude-standard").split())


def test_hide_leaves_the_big_paths_behind_and_restore_undoes_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "gpu_pack.sh", repo / "scripts" / "gpu_pack.sh")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    for name in FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-f", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    before = _travels(repo)
    assert set(FILES) <= before

    subprocess.run(["bash", "scripts/gpu_pack.sh", "hide"], cwd=repo, check=True, capture_output=True)
    after = _travels(repo)
    assert "facenormals/weights/fast-prior.safetensors" in after  # the starting point travels
    assert {"training/trainer.py", "README.md", "scripts/gpu_pack.sh"} <= after
    hidden = {"facenormals/weights/fast.safetensors", "facenormals/weights/fast-prior.int8.onnx",
              "benchmarks/results/a.json", "docs/figure.png", "tests/test_x.py"}
    assert not hidden & after
    assert all((repo / name).is_file() for name in FILES)  # nothing deleted from the disk

    subprocess.run(["bash", "scripts/gpu_pack.sh", "restore"], cwd=repo, check=True, capture_output=True)
    assert _travels(repo) == before
    assert _git(repo, "status", "--porcelain") == ""
