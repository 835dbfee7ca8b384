import subprocess
import sys

import pytest

from facenormals.cli import main


def test_model_info_reports_both_widths(capsys):
    assert main(["model-info", "--size", "128"]) == 0
    out = capsys.readouterr().out
    assert "fast:" in out and "paper:" in out and "lite:" in out and "image→normal" in out


@pytest.mark.slow  # a subprocess
def test_unknown_verb_suggests():
    result = subprocess.run([sys.executable, "-m", "facenormals.cli", "model-inf"], capture_output=True, text=True)
    assert result.returncode == 2 and "model-info" in result.stderr


def test_bad_checkpoint_error_names_file(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert main(["model-info", "--model", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_model_info_on_inference_only_checkpoint(tmp_path, capsys):
    from facenormals.checkpoint import save_checkpoint
    from facenormals.model import create_model

    path = tmp_path / "infer.safetensors"
    save_checkpoint(create_model("fast"), path, inference_only=True)
    assert main(["model-info", "--model", str(path), "--size", "64"]) == 0
    assert "arch=fast" in capsys.readouterr().out
