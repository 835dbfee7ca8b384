"""TensorRT export: build plans for TRT 10 and 11, the engine sidecar and its mismatch errors, CLI errors.

Everything here but the last test runs without TensorRT or a GPU; the engine build itself is marked
``trt``/``gpu`` and skips with the reason where either is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from facenormals.checkpoint import save_checkpoint
from facenormals.cli import main as cli_main
from facenormals.export.onnx_export import export_onnx, set_metadata
from facenormals.export.tensorrt_build import BuildPlan, build_engine, default_timing_cache, plan_build, trt_major
from facenormals.fileio import file_sha256
from facenormals.model import create_model
from facenormals.runtime.engine_header import (
    EngineHeader,
    EngineMismatchError,
    check_engine,
    read_header,
    sidecar_path,
    write_header,
)
from facenormals.runtime.onnx_info import read_metadata

SIZE = 64
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.parametrize(("major", "precision", "source", "expected"), [
    (10, "fp32", "fp32", BuildPlan(False, True, ())),
    (10, "fp16", "fp32", BuildPlan(True, True, ())),  # issue 19 (4): the cast graph, not the FP16 flag (head in fp32)
    (10, "fp16", "fp16", BuildPlan(False, True, ())),  # an fp16-cast graph builds strongly typed on 10 too
    (10, "int8", "int8", BuildPlan(False, True, ())),  # not INT8+FP16 weak typing: that casts the fp32 head
    (11, "fp32", "fp32", BuildPlan(False, True, ())),
    (11, "fp16", "fp32", BuildPlan(True, True, ())),  # no FP16 flag in 11: cast the graph
    (11, "fp16", "fp16", BuildPlan(False, True, ())),
    (11, "int8", "int8", BuildPlan(False, True, ())),  # explicit quantisation through Q/DQ
])
def test_build_plan_for_trt10_and_trt11(major: int, precision: str, source: str, expected: BuildPlan) -> None:
    assert plan_build({"precision": source}, [], precision, major) == expected


@pytest.mark.parametrize(("precision", "source", "problems", "major", "message"), [
    ("int8", "fp32", [], 10, "needs the Q/DQ model"),
    ("int8", "int8", ["Q: zero point of type UINT8"], 11, "not TensorRT-compatible"),
    ("fp16", "int8", [], 11, "build it with --int8"),
    ("fp32", "fp16", [], 10, "needs the fp32 ONNX"),
    ("bf16", "fp32", [], 10, "unknown precision"),
    ("fp16", "fp32", [], 8, "not supported"),
])
def test_build_plan_refuses_what_tensorrt_would_misbuild(precision: str, source: str, problems: list[str],
                                                         major: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_build({"precision": source}, problems, precision, major)


def test_no_build_plan_uses_weak_typing_precision_flags() -> None:
    """Issue 19 (4): every plan on 10 and 11 is strongly typed, so the normalisation head's fp32 is kept."""
    plans = [plan_build({"precision": source}, [], precision, major) for major in (10, 11)
             for precision, source in (("fp32", "fp32"), ("fp16", "fp32"), ("fp16", "fp16"), ("int8", "int8"))]
    assert all(p.strongly_typed and not p.builder_flags for p in plans)


def test_timing_cache_is_keyed_by_gpu_capability_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 (3): tactics timed on an L4 must not seed an H100 build of the same compute capability family."""
    monkeypatch.setenv("FACENORMALS_CACHE", str(tmp_path))
    h100 = default_timing_cache("NVIDIA H100 80GB HBM3", "9.0", "10.13.3.9")
    h200 = default_timing_cache("NVIDIA H200", "9.0", "10.13.3.9")
    assert h100 != h200 and "nvidia-h100-80gb-hbm3" in h100.name and "sm90" in h100.name and "10.13.3.9" in h100.name
    assert default_timing_cache("NVIDIA H100 80GB HBM3", "9.0", "11.0.0") != h100
    assert h100.is_relative_to(tmp_path)


def test_trt_major_parses_versions() -> None:
    assert (trt_major("10.13.3.9"), trt_major("11.4.1")) == (10, 11)
    with pytest.raises(ValueError, match="unparseable"):
        trt_major("ten")


def _header(engine: Path, **changes: object) -> EngineHeader:
    values = dict(trt_version="10.13.3.9", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                  precision="fp16", strongly_typed=False, batch=(1, 4, 8), in_chans=3, size=SIZE,
                  input_name="image", output_name="normals", onnx_sha256="ab" * 32,
                  engine_sha256=file_sha256(engine), model={"arch": "fast"})
    values.update(changes)
    return EngineHeader(**values)


@pytest.fixture
def engine_file(tmp_path: Path) -> Path:
    """Stand-in plan bytes: the sidecar logic hashes files and never parses them."""
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized plan " + bytes(range(256)))
    return path


def test_sidecar_round_trip_and_accepting_a_matching_machine(engine_file: Path) -> None:
    header = _header(engine_file)
    written = write_header(engine_file, header)
    assert written == sidecar_path(engine_file) == engine_file.with_name("model.engine.json")
    assert json.loads(written.read_text())["compute_capability"] == "9.0"
    assert read_header(engine_file) == header
    assert check_engine(engine_file, "10.13.3.9", "9.0", "NVIDIA H100 80GB HBM3") == header


@pytest.mark.parametrize(("trt_version", "capability", "message"), [
    ("10.14.1.48", "9.0", "built with TensorRT 10.13.3.9, this is TensorRT 10.14.1.48"),
    ("11.4.1", "9.0", "this is TensorRT 11.4.1"),
    ("10.13.3.9", "8.9", "built for compute capability 9.0 .*this GPU is 8.9"),
])
def test_engine_for_another_trt_or_gpu_is_refused_with_the_fix(engine_file: Path, trt_version: str,
                                                               capability: str, message: str) -> None:
    write_header(engine_file, _header(engine_file))
    with pytest.raises(EngineMismatchError, match=message) as err:
        check_engine(engine_file, trt_version, capability)
    assert "facenormals export trt" in str(err.value) and "rebuild_from" in str(err.value)


def test_same_capability_other_gpu_runs_with_a_warning(engine_file: Path) -> None:
    write_header(engine_file, _header(engine_file))
    with pytest.warns(RuntimeWarning, match="built on NVIDIA H100"):
        check_engine(engine_file, "10.13.3.9", "9.0", "NVIDIA H200")


def test_missing_corrupt_or_stale_sidecar(engine_file: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineMismatchError, match="no build sidecar"):
        read_header(engine_file)
    sidecar_path(engine_file).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="corrupt engine sidecar"):
        read_header(engine_file)
    sidecar_path(engine_file).write_text(json.dumps({"format": 1, "trt_version": "10.0"}))
    with pytest.raises(EngineMismatchError, match="lacks"):
        read_header(engine_file)
    write_header(engine_file, _header(engine_file))
    engine_file.write_bytes(b"another engine")
    with pytest.raises(EngineMismatchError, match="does not match its sidecar"):
        read_header(engine_file)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_header(tmp_path / "absent.engine")


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trt")
    torch.manual_seed(2)
    checkpoint = folder / "fast64.safetensors"
    save_checkpoint(create_model("fast", "plain", input_size=SIZE), checkpoint, inference_only=True)
    export_onnx(checkpoint, folder / "fast64.onnx", check_parity=False)
    return folder / "fast64.onnx"


def test_cli_rejects_bad_batch_and_missing_onnx(fp32_onnx: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.engine"
    assert cli_main(["export", "trt", "--onnx", str(fp32_onnx), "--out", str(out), "--batch", "4,2,8"]) == 1
    assert "1 ≤ MIN ≤ OPT ≤ MAX" in capsys.readouterr().err
    assert cli_main(["export", "trt", "--onnx", str(fp32_onnx), "--out", str(out), "--batch", "1,x,8"]) == 1
    assert "MIN,OPT,MAX integers" in capsys.readouterr().err
    assert cli_main(["export", "trt", "--onnx", str(tmp_path / "none.onnx"), "--out", str(out)]) == 1
    assert "none.onnx" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is absent")
def test_cli_without_tensorrt_says_how_to_get_it(fp32_onnx: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["export", "trt", "--onnx", str(fp32_onnx), "--out", str(tmp_path / "m.engine"), "--fp16"]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_fp16_precision_is_recorded_for_the_strongly_typed_path(fp32_onnx: Path, tmp_path: Path) -> None:
    """What TensorRT 11 parses for --fp16: the cast graph made from the fp32 export, valid and fp32 at the edges."""
    from facenormals.export.fp16 import to_fp16

    cast = to_fp16(onnx.load(str(fp32_onnx)))
    onnx.checker.check_model(cast, full_check=True)
    set_metadata(cast, {"precision": "fp16"})
    path = tmp_path / "cast.onnx"
    onnx.save(cast, str(path))
    assert plan_build(read_metadata(path), [], "fp16", 11) == BuildPlan(False, True, ())
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": np.random.default_rng(0).random((2, 3, SIZE, SIZE), dtype=np.float32)})[0]
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (needs the 'gpu' extra and an NVIDIA GPU)")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_engine_builds_runs_and_matches_onnx_runtime(fp32_onnx: Path, tmp_path: Path) -> None:
    from facenormals.export.parity import angular_deviation_deg, load_face_crops
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import OrtBackend

    engine = tmp_path / "fast64.engine"
    header = build_engine(fp32_onnx, engine, precision="fp16", batch=(1, 2, 4), timing_cache=tmp_path / "timing.cache")
    assert (tmp_path / "timing.cache").is_file() and header.precision == "fp16"
    crops = load_face_crops(None, size=SIZE)
    trt_backend = create_backend("tensorrt", engine)
    got, ref = trt_backend(crops.images), OrtBackend("ort-cpu", fp32_onnx)(crops.images)
    assert angular_deviation_deg(ref, got, crops.masks).max() <= 0.5


def _trt_ready() -> tuple[bool, str]:
    if not HAS_TRT:
        return False, "TensorRT is not installed (needs the 'gpu' extra and an NVIDIA GPU)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    return True, ""


TRT_READY, TRT_REASON = _trt_ready()


@pytest.fixture(scope="module")
def face_crops() -> object:
    from facenormals.export.parity import load_face_crops

    return load_face_crops(None, size=SIZE)


def _deviation_vs_cpu(onnx_path: Path, engine: Path, crops: object) -> np.ndarray:
    from facenormals.export.parity import angular_deviation_deg
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import OrtBackend

    got = create_backend("tensorrt", engine)(crops.images)
    assert np.isfinite(got).all()
    return angular_deviation_deg(OrtBackend("ort-cpu", onnx_path)(crops.images), got, crops.masks)


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not TRT_READY, reason=TRT_REASON or "TensorRT and CUDA present")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_strongly_typed_engine_matches_cpu(precision: str, fp32_onnx: Path, tmp_path: Path, face_crops: object) -> None:
    """fp32 and fp16 (the cast graph, strongly typed on TensorRT 10 and 11) against ORT-CPU fp32."""
    engine = tmp_path / f"{precision}.engine"
    header = build_engine(fp32_onnx, engine, precision=precision, batch=(1, 4, 8), timing_cache=tmp_path / "t.cache")
    assert header.strongly_typed and header.precision == precision and header.batch == (1, 4, 8)
    assert _deviation_vs_cpu(fp32_onnx, engine, face_crops).max() <= (0.1 if precision == "fp32" else 0.5)


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not TRT_READY, reason=TRT_REASON or "TensorRT and CUDA present")
def test_int8_qdq_engine_stays_close_to_fp32(fp32_onnx: Path, tmp_path: Path, face_crops: object) -> None:
    """INT8 explicit quantisation from the --target trt Q/DQ model (calibrated on the same real crops)."""
    from facenormals.export.int8 import quantize_int8

    qdq = tmp_path / "int8.onnx"
    quantize_int8(fp32_onnx, qdq, face_crops.images, target="trt")
    engine = tmp_path / "int8.engine"
    header = build_engine(qdq, engine, precision="int8", batch=(1, 4, 8))
    assert header.strongly_typed and header.precision == "int8"
    deviation = _deviation_vs_cpu(fp32_onnx, engine, face_crops)
    assert deviation.mean() <= 2.0


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not TRT_READY, reason=TRT_REASON or "TensorRT and CUDA present")
def test_engine_refuses_a_batch_beyond_its_profile(fp32_onnx: Path, tmp_path: Path) -> None:
    from facenormals.export.prepare import create_backend

    engine = tmp_path / "small.engine"
    build_engine(fp32_onnx, engine, precision="fp16", batch=(1, 2, 4))
    backend = create_backend("tensorrt", engine)
    assert backend.max_batch == 4
    with pytest.raises(ValueError, match=r"outside the engine's profile 1\.\.4"):
        backend(np.zeros((5, 3, SIZE, SIZE), np.float32))


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not TRT_READY, reason=TRT_REASON or "TensorRT and CUDA present")
def test_engine_on_the_last_gpu_stays_there(fp32_onnx: Path, tmp_path: Path, face_crops: object) -> None:
    """Issue 19 (8): deserialised and run on the selected device while device 0 is current."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    from facenormals.runtime.tensorrt import TensorRTRunner

    last = torch.cuda.device_count() - 1
    engine = tmp_path / "last.engine"
    build_engine(fp32_onnx, engine, precision="fp16", device=last)
    runner = TensorRTRunner(engine, device=last)
    out = runner.run(torch.from_numpy(face_crops.images).to(f"cuda:{last}"))
    assert out.device.index == last and torch.isfinite(out).all()

