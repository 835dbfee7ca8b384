"""Start-up: the default routes on a CPU machine (the API on a photo, `facenormals run` on the sample) run ONNX
Runtime and never import torch (~3 s of start-up) or the onnx package (~0.9 s); torch is for training, export,
checkpoints and CUDA, onnx for building model files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from facenormals.runtime.machine import no_nvidia_driver

pytestmark = pytest.mark.skipif(not no_nvidia_driver(), reason="an NVIDIA driver is loaded: torch checks CUDA")


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('MODULES', ' '.join(sorted(m for m in sys.modules if '.' not in m)))\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.slow
def test_the_api_on_a_photo_does_not_import_torch():
    modules = _modules_after(
        "from skimage import data\nfrom facenormals import FaceNormals\n"
        "with FaceNormals() as fn:\n    faces = fn(data.astronaut())\nassert len(faces) == 1 and fn.backend.name == 'ort-cpu'")
    assert "onnxruntime" in modules and "torch" not in modules and "onnx" not in modules


@pytest.mark.slow
def test_the_live_loop_on_the_sample_does_not_import_torch(tmp_path: Path):
    out = tmp_path / "run.mp4"
    modules = _modules_after(
        "import sys\nfrom facenormals.cli import main\n"
        f"sys.argv = ['facenormals', 'run', '--source', 'sample', '--frames', '3', '--headless', '--out', {str(out)!r}]\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n")
    assert out.is_file() and "onnxruntime" in modules and "torch" not in modules and "onnx" not in modules


def test_an_onnx_header_is_read_once_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil

    import onnx
    import onnxruntime as ort

    from facenormals.runtime import onnx_info

    path = tmp_path / "twin.onnx"
    shutil.copyfile(Path(onnx_info.__file__).parents[1] / "weights" / "lite-prior.int8.onnx", path)
    sessions = []
    real_session = ort.InferenceSession

    def counting_session(*args, **kwargs):
        sessions.append(args[0])
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting_session)
    first = onnx_info.read_header(path)
    first.metadata["arch"] = "edited by a caller"  # a copy: the cache keeps the file's own
    second = onnx_info.read_header(path)
    assert len(sessions) == 1 and second.metadata["arch"] == "lite" and second.inputs == first.inputs
    model = onnx.load(str(path))  # the file rewritten with other metadata: its new version is read again
    onnx.helper.set_model_props(model, {**second.metadata, "arch": "rewritten"})
    onnx.save(model, str(path))
    assert onnx_info.read_header(path).metadata["arch"] == "rewritten" and len(sessions) == 2
