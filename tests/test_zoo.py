"""The model registry describes the shipped files as they are (hash, channels, prior, size, INT8 twin)."""

from __future__ import annotations

import pytest

from facenormals import zoo
from facenormals.checkpoint import read_config
from facenormals.fileio import file_sha256
from facenormals.runtime.onnx_info import onnx_model_info


@pytest.mark.parametrize("name", list(zoo.REGISTRY))
def test_registry_matches_the_shipped_files(name: str) -> None:
    entry = zoo.REGISTRY[name]
    if not entry.path.is_file():
        pytest.skip(f"{entry.file} is not shipped in this install")
    assert zoo.model_path(name) == entry.path
    assert file_sha256(entry.path) == entry.sha256, f"{entry.file} changed: update zoo.REGISTRY and MODEL_CARD.md"
    cfg = read_config(entry.path)
    assert (cfg.in_chans, cfg.input_prior, cfg.input_size) == (entry.in_chans, entry.prior_source, entry.input_size)
    assert entry.accuracy_deg and entry.speed_ms  # measured figures, not blanks
    if entry.int8_file is not None:
        twin = zoo.WEIGHTS_DIR / entry.int8_file
        assert file_sha256(twin) == entry.int8_sha256
        assert zoo.int8_twin(entry.path) == twin
        in_chans, size, meta = onnx_model_info(twin)
        assert (in_chans, size, meta.get("prior_source")) == (entry.in_chans, entry.input_size, entry.prior_source)


def test_the_default_is_the_first_shipped_entry() -> None:
    shipped = [name for name, entry in zoo.REGISTRY.items() if entry.path.is_file()]
    assert zoo.default_model_name() == (shipped[0] if shipped else zoo.DEFAULT_MODEL)
