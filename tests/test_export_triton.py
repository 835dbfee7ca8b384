"""Triton model repository: layout, config.pbtxt contents against the model, validation catching mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facenormals.checkpoint import save_checkpoint
from facenormals.cli import main as cli_main
from facenormals.export.onnx_export import export_onnx
from facenormals.export.triton import parse_pbtxt, validate_repository, write_repository
from facenormals.fileio import file_sha256
from facenormals.model import create_model
from facenormals.runtime.engine_header import EngineHeader, write_header

SIZE = 64


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("triton")
    torch.manual_seed(3)
    checkpoint = folder / "fast64.safetensors"
    save_checkpoint(create_model("fast", "plain", input_size=SIZE), checkpoint, inference_only=True)
    export_onnx(checkpoint, folder / "fast64.onnx", check_parity=False)
    return folder / "fast64.onnx"


def _engine(tmp_path: Path, batch: tuple[int, int, int] = (1, 4, 8), size: int = SIZE) -> Path:
    """A plan file with its sidecar: the repository writer copies both and reads only the sidecar."""
    engine = tmp_path / "fast64.engine"
    engine.write_bytes(b"plan bytes")
    write_header(engine, EngineHeader("10.13.3.9", "NVIDIA H100", "9.0", "fp16", False, batch, 3, size, "image",
                                      "normals", "0" * 64, file_sha256(engine), {"arch": "fast"}))
    return engine


def test_onnx_repository_layout_and_config(fp32_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    written = write_repository(fp32_onnx, repo, max_batch=8, instances=2)
    assert sorted(p.relative_to(repo).as_posix() for p in written) == ["facenormals/1/model.onnx",
                                                                       "facenormals/config.pbtxt"]
    assert (repo / "facenormals/1/model.onnx").read_bytes() == fp32_onnx.read_bytes()
    config = parse_pbtxt((repo / "facenormals/config.pbtxt").read_text())
    assert config["platform"] == ["onnxruntime_onnx"] and config["max_batch_size"] == [8]
    assert config["input"][0]["dims"] == [3, SIZE, SIZE] and config["input"][0]["name"] == ["image"]
    assert config["output"][0]["dims"] == [3, SIZE, SIZE] and config["output"][0]["name"] == ["normals"]
    batching = config["dynamic_batching"][0]
    assert batching["preferred_batch_size"] == [4, 8] and batching["max_queue_delay_microseconds"][0] > 0
    assert config["instance_group"][0] == {"count": [2], "kind": ["KIND_GPU"]}
    assert validate_repository(repo) == []


def test_tensorrt_plan_model_is_added_with_its_sidecar(fp32_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repository(fp32_onnx, repo, engine=_engine(tmp_path), max_batch=8, trt_ep=True)
    trt_config = parse_pbtxt((repo / "facenormals_trt/config.pbtxt").read_text())
    assert trt_config["platform"] == ["tensorrt_plan"] and trt_config["name"] == ["facenormals_trt"]
    assert (repo / "facenormals_trt/1/model.plan").read_bytes() == b"plan bytes"
    assert (repo / "facenormals_trt/1/model.plan.json").is_file()
    accelerator = parse_pbtxt((repo / "facenormals/config.pbtxt").read_text())["optimization"][0]
    trt_ep = accelerator["execution_accelerators"][0]["gpu_execution_accelerator"][0]
    assert trt_ep["name"] == ["tensorrt"]
    params = {p["key"][0]: p["value"][0] for p in trt_ep["parameters"]}
    # Issue 19 (4, 7): types from the fp16-cast graph (no FP16 mode that casts the head), one profile for 1..8,
    # persistent engine and timing caches.
    assert params["precision_mode"] == "FP32"
    assert params["trt_profile_min_shapes"] == f"image:1x3x{SIZE}x{SIZE}"
    assert params["trt_profile_max_shapes"] == f"image:8x3x{SIZE}x{SIZE}"
    assert params["trt_engine_cache_enable"] == "1" and params["trt_engine_cache_path"].endswith("/facenormals")
    assert params["trt_timing_cache_enable"] == "1"
    import onnx

    served = onnx.load(str(repo / "facenormals/1/model.onnx"))
    assert {p.key: p.value for p in served.metadata_props}["precision"] == "fp16"
    assert served.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # clients still send fp32
    assert validate_repository(repo) == []


def test_validation_catches_a_trt_ep_block_that_rebuilds_while_serving(fp32_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repository(fp32_onnx, repo, max_batch=8, trt_ep=True)
    config_path = repo / "facenormals/config.pbtxt"
    good = config_path.read_text()
    config_path.write_text(good.replace(f"image:8x3x{SIZE}x{SIZE}", f"image:4x3x{SIZE}x{SIZE}"))
    assert any("profile max batch 4 < max_batch_size 8" in p for p in validate_repository(repo))
    config_path.write_text("\n".join(line for line in good.splitlines() if "trt_engine_cache_path" not in line))
    assert any("without trt_engine_cache_path" in p for p in validate_repository(repo))


def test_engine_that_cannot_serve_the_config_is_refused(fp32_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="profile max batch 4 < --max-batch 8"):
        write_repository(fp32_onnx, tmp_path / "a", engine=_engine(tmp_path, batch=(1, 2, 4)), max_batch=8)
    with pytest.raises(ValueError, match="differs from"):
        write_repository(fp32_onnx, tmp_path / "b", engine=_engine(tmp_path, size=128))


def test_validation_catches_layout_and_config_mistakes(fp32_onnx: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repository(fp32_onnx, repo)
    config_path = repo / "facenormals/config.pbtxt"
    good = config_path.read_text()
    config_path.write_text(good.replace(f"dims: [ 3, {SIZE}, {SIZE} ] }}\n]\noutput", "dims: [ 3, 32, 32 ] }\n]\noutput"))
    assert any("input dims [3, 32, 32] vs model [3, 64, 64]" in p for p in validate_repository(repo))
    config_path.write_text(good.replace('name: "facenormals"', 'name: "other"'))
    assert any("differs from its folder" in p for p in validate_repository(repo))
    config_path.write_text(good.replace("max_queue_delay_microseconds: 2000\n}", "max_queue_delay_microseconds: 2000\n"))
    assert any("config.pbtxt:" in p for p in validate_repository(repo))  # unbalanced braces
    config_path.write_text(good)
    (repo / "facenormals/1/model.onnx").rename(repo / "facenormals/1/other.onnx")
    assert validate_repository(repo) == ["facenormals: facenormals/1/model.onnx missing"]
    assert validate_repository(tmp_path / "absent") == [f"{tmp_path / 'absent'}: not a folder"]


def test_cli_writes_a_repository_and_rejects_bad_options(fp32_onnx: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert cli_main(["export", "triton", "--onnx", str(fp32_onnx), "--repo", str(repo), "--kind", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out and validate_repository(repo) == []
    assert cli_main(["export", "triton", "--onnx", str(fp32_onnx), "--repo", str(repo), "--kind", "cpu",
                     "--trt-ep"]) == 1
    assert "GPU instances" in capsys.readouterr().err
    assert cli_main(["export", "triton", "--onnx", str(fp32_onnx), "--repo", str(repo), "--name", "a/b"]) == 1
    assert "model name" in capsys.readouterr().err
