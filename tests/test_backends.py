"""Inference backends: one contract across torch and ONNX Runtime; real providers reported; honest fallbacks."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from facenormals.checkpoint import save_checkpoint
from facenormals.export.parity import angular_deviation_deg, load_face_crops
from facenormals.export.prepare import create_backend, fp16_onnx, onnx_for_checkpoint
from facenormals.model import create_model
from facenormals.runtime.backends import Backend, BackendError, engine_cache_key, ort_errors, provider_options, warm_up
from facenormals.runtime.machine import physical_cores
from facenormals.zoo import model_path

SIZE = 64
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.getbasetemp() / "backend-cache"
    monkeypatch.setenv("FACENORMALS_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("backends") / "fast64.safetensors"
    save_checkpoint(create_model("fast", "full", input_size=SIZE), path)
    return path


@pytest.fixture(scope="module")
def crops() -> object:
    return load_face_crops(None, size=SIZE)


def test_torch_and_ort_cpu_agree_on_a_real_face(checkpoint: Path, crops: object) -> None:
    reference = create_backend("torch", checkpoint, device="cpu")
    candidate = create_backend("ort-cpu", checkpoint)
    for backend in (reference, candidate):
        assert isinstance(backend, Backend)
        assert (backend.in_chans, backend.input_size) == (3, SIZE)
    assert reference.providers == ["torch-cpu"]
    assert candidate.providers == ["CPUExecutionProvider"]
    expected, got = reference(crops.images), candidate(crops.images)
    assert got.shape == expected.shape == (len(crops), 3, SIZE, SIZE) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert angular_deviation_deg(expected, got, crops.masks).max() <= 0.1


def test_checkpoint_export_is_cached_by_content(checkpoint: Path, private_cache: Path) -> None:
    first = onnx_for_checkpoint(checkpoint)
    assert first.is_relative_to(private_cache) and first.suffix == ".onnx"
    stamp = first.stat().st_mtime_ns
    backend = create_backend("ort-cpu", checkpoint)
    assert backend.model_path == first and first.stat().st_mtime_ns == stamp  # reused, not re-exported


def test_the_runtime_runs_files_and_never_builds_them(checkpoint: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """facenormals.runtime alone: ONNX Runtime on a checkpoint is refused with the fix, auto runs it on torch, and
    nothing is written to the cache; the export layer's create_backend builds the ONNX and runs it."""
    from facenormals.runtime import create_backend as run_only

    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("FACENORMALS_CACHE", str(cache))
    with pytest.raises(BackendError, match="facenormals export onnx"):
        run_only("ort-cpu", checkpoint)
    assert run_only("auto", checkpoint, threads=1).name == "torch"
    assert not list(cache.rglob("*.onnx"))
    assert create_backend("ort-cpu", checkpoint, threads=1).model_path.is_relative_to(cache)


def test_onnx_file_loads_directly_with_threads_for_this_machine(checkpoint: Path) -> None:
    onnx_path = onnx_for_checkpoint(checkpoint)
    backend = create_backend("ort-cpu", onnx_path)
    options = backend.session.get_session_options()
    assert options.intra_op_num_threads == physical_cores() >= 1
    assert backend.metadata["arch"] == "fast"
    assert create_backend("ort-cpu", onnx_path, threads=1).session.get_session_options().intra_op_num_threads == 1
    warm_up(backend, batch_sizes=(1, 2))


def test_input_channels_come_from_the_model(tmp_path: Path) -> None:
    """A model with extra input channels (e.g. a prior) is served without code changes."""
    path = tmp_path / "four.safetensors"
    save_checkpoint(create_model("fast", "plain", input_size=SIZE, in_chans=4), path, inference_only=True)
    for name in ("torch", "ort-cpu"):
        backend = create_backend(name, path)
        assert backend.in_chans == 4
        assert backend(np.random.default_rng(0).random((2, 4, SIZE, SIZE), dtype=np.float32)).shape == (2, 3, SIZE, SIZE)
        with pytest.raises(ValueError, match=f"expected a batch N×4×{SIZE}×{SIZE}"):
            backend(np.zeros((1, 3, SIZE, SIZE), np.float32))


@pytest.mark.skipif(HAS_CUDA_EP, reason="checks the fallback where the CUDA execution provider is absent")
@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt"])
def test_missing_gpu_provider_warns_and_reports_what_really_runs(name: str, checkpoint: Path) -> None:
    with pytest.warns(RuntimeWarning, match="not in this onnxruntime build.*falling back to CPUExecutionProvider"):
        backend = create_backend(name, checkpoint)
    assert backend.providers == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="install the 'gpu' extra"):
        create_backend(name, checkpoint, strict=True)


def test_auto_picks_a_backend_that_really_runs(checkpoint: Path, crops: object) -> None:
    gpu_listed = bool(set(ort.get_available_providers()) - {"CPUExecutionProvider"})
    with warnings.catch_warnings():
        # On a CPU-only build auto must not need a fallback; where a GPU EP is listed, its libraries may be missing
        # (onnxruntime-gpu without TensorRT): falling back with a warning is then the correct behaviour.
        warnings.simplefilter("default" if gpu_listed else "error", RuntimeWarning)
        backend = create_backend("auto", checkpoint)
    if not HAS_CUDA_EP and not torch.cuda.is_available():
        assert backend.name == "ort-cpu" and backend.providers == ["CPUExecutionProvider"]
    assert backend(crops.images).shape == (len(crops), 3, SIZE, SIZE)


def test_bad_requests_fail_clearly(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        create_backend("onnx", checkpoint)
    with pytest.raises(TypeError, match="unknown options"):
        create_backend("ort-cpu", checkpoint, precision="int4")
    with pytest.raises(ValueError, match=r"needs a \.safetensors checkpoint"):
        create_backend("torch", onnx_for_checkpoint(checkpoint))
    with pytest.raises(ValueError, match="needs an engine"):
        create_backend("tensorrt", checkpoint)
    weird = tmp_path / "model.pt"
    weird.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown model format"):
        create_backend("ort-cpu", weird)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        create_backend("ort-cpu", tmp_path / "absent.onnx")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="checks the message without TensorRT")
def test_tensorrt_backend_without_tensorrt_says_so(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        create_backend("tensorrt", engine)


def test_default_model_is_the_shipped_one_or_a_clear_error() -> None:
    try:
        shipped = model_path()
    except FileNotFoundError:
        with pytest.raises(FileNotFoundError, match="no shipped model"):
            create_backend("ort-cpu", None)
        return
    backend = create_backend("ort-cpu", None)
    assert backend.metadata["source_name"] == shipped.name


def test_default_prefers_the_mesh_prior_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facenormals import zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped: none"):
        zoo.resolve_model(None)
    (tmp_path / "fast.safetensors").write_bytes(b"rgb")
    assert zoo.resolve_model(None) == zoo.resolve_model("auto") == tmp_path / "fast.safetensors"
    (tmp_path / "fast-prior.safetensors").write_bytes(b"prior")
    assert zoo.resolve_model(None) == tmp_path / "fast-prior.safetensors"
    assert zoo.resolve_model("fast") == tmp_path / "fast.safetensors"  # still reachable by name


def test_the_live_loop_prefers_the_lite_model_and_stills_keep_the_default(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from facenormals import zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    (tmp_path / "fast-prior.safetensors").write_bytes(b"prior")
    assert zoo.resolve_model(None, live=True) == tmp_path / "fast-prior.safetensors"  # no lite shipped: the default
    (tmp_path / "lite-prior.safetensors").write_bytes(b"lite")
    assert zoo.resolve_model(None, live=True) == zoo.resolve_model("auto", live=True) == tmp_path / "lite-prior.safetensors"
    assert zoo.resolve_model(None) == tmp_path / "fast-prior.safetensors"  # photos, the API, eval, export
    assert zoo.resolve_model("fast-prior", live=True) == tmp_path / "fast-prior.safetensors"  # a name always wins


def test_auto_takes_a_shipped_int8_twin_only_when_made_from_that_checkpoint(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    from facenormals import zoo
    from facenormals.export.onnx_export import export_onnx, set_metadata
    from facenormals.fileio import file_sha256

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    shipped = tmp_path / "fast.safetensors"
    shipped.write_bytes(checkpoint.read_bytes())
    twin = tmp_path / "fast.int8.onnx"
    model = onnx.load(str(export_onnx(shipped, tmp_path / "fp32.onnx", check_parity=False).path))
    set_metadata(model, {"precision": "int8", "source_sha256": file_sha256(shipped)})  # labelled: selection only
    onnx.save(model, str(twin))
    assert zoo.int8_twin(shipped) == twin
    assert zoo.int8_twin(checkpoint) is None  # not a shipped model
    backend = create_backend("auto", None, threads=1)
    if backend.name == "ort-cpu":  # CPU-only machine: the twin serves
        assert backend.metadata["precision"] == "int8"
    assert create_backend("ort-cpu", None, threads=1).metadata["precision"] == "fp32"  # asked by name: as is
    set_metadata(model, {"source_sha256": "0" * 64})  # a twin of another (older) checkpoint
    onnx.save(model, str(twin))
    assert zoo.int8_twin(shipped) is None


def test_shipped_int8_twin_matches_its_checkpoint() -> None:
    from facenormals import zoo
    from facenormals.prior import network_inputs

    shipped = zoo.model_path()
    twin = zoo.int8_twin(shipped)
    if twin is None:
        pytest.skip(f"no INT8 twin shipped for {shipped.name}")
    fp32, int8 = create_backend("ort-cpu", shipped), create_backend("ort-cpu", twin)
    faces = load_face_crops(None, size=fp32.input_size)
    inputs = network_inputs(faces.images, fp32.in_chans, fp32.prior_source)
    deviation = angular_deviation_deg(fp32(inputs), int8(inputs), faces.masks)
    assert deviation.mean() < 1.0 and np.percentile(deviation, 99) < 5.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_torch_cuda_fp16_matches_cpu(checkpoint: Path, crops: object) -> None:
    cpu = create_backend("torch", checkpoint, device="cpu")
    gpu = create_backend("torch", checkpoint, device="cuda", fp16=True)
    assert gpu.providers == ["torch-cuda-fp16"]
    assert angular_deviation_deg(cpu(crops.images), gpu(crops.images), crops.masks).max() <= 0.5


def test_provider_options_carry_precision_and_caches(tmp_path: Path) -> None:
    trt = provider_options("TensorrtExecutionProvider", fp16=True, int8=False, device_id=1, cache=tmp_path / "trt",
                           model_key="0123abcd-fp16")
    assert trt["trt_fp16_enable"] is True and trt["trt_int8_enable"] is False and trt["device_id"] == 1
    assert trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "trt" / "engines" / "0123abcd-fp16")
    assert trt["trt_timing_cache_path"] == str(tmp_path / "trt" / "timing")
    assert Path(trt["trt_engine_cache_path"]).is_dir() and Path(trt["trt_timing_cache_path"]).is_dir()
    profiled = provider_options("TensorrtExecutionProvider", cache=tmp_path / "trt", input_shape=("image", 3, 256))
    assert profiled["trt_profile_min_shapes"] == "image:1x3x256x256"
    assert profiled["trt_profile_max_shapes"] == "image:8x3x256x256"
    assert provider_options("CUDAExecutionProvider")["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert provider_options("CPUExecutionProvider") == {}


# ---------------------------------------------------------------------------------------------- issue 19


def test_onnx_runtime_errors_are_caught_not_only_runtime_errors() -> None:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    caught = ort_errors()
    for error in (state.Fail, state.EPFail, state.InvalidGraph, state.InvalidArgument):
        assert issubclass(error, caught) and not issubclass(error, RuntimeError)  # why a RuntimeError catch missed them


def test_auto_falls_back_when_onnx_runtime_refuses_a_model(checkpoint: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 (2): ONNX Runtime's Fail at session creation (here: a twin with an IR version it cannot load, as a
    TensorRT EP build failure raises EPFail) moves auto to the next backend instead of ending it."""
    import onnx

    from facenormals import zoo
    from facenormals.export.onnx_export import export_onnx, set_metadata
    from facenormals.fileio import file_sha256

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    shipped = tmp_path / "fast.safetensors"
    shipped.write_bytes(checkpoint.read_bytes())
    model = onnx.load(str(export_onnx(shipped, tmp_path / "fp32.onnx", check_parity=False).path))
    set_metadata(model, {"precision": "int8", "source_sha256": file_sha256(shipped)})
    model.ir_version = 99  # ONNX Runtime raises its own Fail, which is not a RuntimeError
    onnx.save(model, str(tmp_path / "fast.int8.onnx"))
    with pytest.raises(BackendError, match=r"could not create a session.*Fail"):
        create_backend("ort-cpu", tmp_path / "fast.int8.onnx")
    with pytest.warns(RuntimeWarning, match=r"auto: ort-cpu on fast\.int8\.onnx does not run here"):
        backend = create_backend("auto", None, threads=1)
    if backend.name == "ort-cpu":  # CPU-only machine: the fp32 export of the checkpoint serves
        assert backend.metadata["precision"] == "fp32" and backend.providers == ["CPUExecutionProvider"]


def test_trt_ep_engine_cache_is_keyed_by_content_and_precision(checkpoint: Path, tmp_path: Path) -> None:
    """Issue 19 (3): the same file name with other weights gets another engine folder."""
    first = onnx_for_checkpoint(checkpoint)
    renamed = tmp_path / first.name
    renamed.write_bytes(first.read_bytes())
    assert engine_cache_key(renamed, "fp32") == engine_cache_key(first, "fp32") != engine_cache_key(first, "fp16")
    torch.manual_seed(11)
    retrained = tmp_path / "retrained.safetensors"
    save_checkpoint(create_model("fast", "full", input_size=SIZE), retrained)
    renamed.write_bytes(onnx_for_checkpoint(retrained).read_bytes())  # same name, new weights
    assert engine_cache_key(renamed, "fp32") != engine_cache_key(first, "fp32")


def test_fp16_for_gpu_providers_is_the_cast_graph_and_runs_on_cpu(checkpoint: Path, crops: object) -> None:
    """Issue 19 (4): ort-trt/ort-cuda fp16 get the fp16-cast graph (fp32 head) rather than a precision flag; the
    same graph runs here under ONNX Runtime's CPU provider within the fp16 tolerance."""
    fp32_path = onnx_for_checkpoint(checkpoint)
    cast = fp16_onnx(fp32_path)
    assert cast != fp32_path and fp16_onnx(cast) == cast and fp16_onnx(fp32_path) == cast  # cached, idempotent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no GPU provider here: falls back to the CPU
        backend = create_backend("ort-trt", fp32_path, fp16=True)
    assert backend.model_path == cast and backend.precision == "fp16"
    reference = create_backend("ort-cpu", fp32_path)
    assert angular_deviation_deg(reference(crops.images), backend(crops.images), crops.masks).max() <= 0.5


def test_providers_are_live_and_warm_up_reports_them(checkpoint: Path) -> None:
    """Issue 19 (5): providers are re-read from the session (not a snapshot); warm_up returns them."""
    backend = create_backend("ort-cpu", checkpoint)
    assert warm_up(backend, batch_sizes=(1, 2)) == backend.providers == backend.session.get_providers()
    assert backend.max_batch is None  # no TensorRT profile on the CPU: any batch


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif("TensorrtExecutionProvider" not in ort.get_available_providers(), reason="no TensorRT EP")
def test_ort_trt_refuses_batches_beyond_its_profile_and_matches_cpu(checkpoint: Path, crops: object) -> None:
    backend = create_backend("ort-trt", checkpoint, fp16=True, strict=True)
    providers = warm_up(backend, batch_sizes=(1, 8))
    assert providers[0] == "TensorrtExecutionProvider" and backend.max_batch == 8
    with pytest.raises(ValueError, match="exceeds the TensorRT profile maximum 8"):
        backend(np.zeros((9, backend.in_chans, SIZE, SIZE), np.float32))
    reference = create_backend("ort-cpu", checkpoint)
    assert angular_deviation_deg(reference(crops.images), backend(crops.images), crops.masks).max() <= 0.5


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA EP")
@pytest.mark.parametrize("fp16", [False, True])
def test_ort_cuda_matches_cpu(checkpoint: Path, crops: object, fp16: bool) -> None:
    backend = create_backend("ort-cuda", checkpoint, fp16=fp16, strict=True)
    assert warm_up(backend)[0] == "CUDAExecutionProvider"
    reference = create_backend("ort-cpu", checkpoint)
    deviation = angular_deviation_deg(reference(crops.images), backend(crops.images), crops.masks)
    assert deviation.max() <= (0.5 if fp16 else 0.1) and np.isfinite(deviation).all()


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif("TensorrtExecutionProvider" not in ort.get_available_providers(), reason="no TensorRT EP")
def test_ort_trt_on_the_shipped_prior_model() -> None:
    from facenormals.prior import network_inputs

    try:
        shipped = model_path()
    except FileNotFoundError:
        pytest.skip("no shipped model")
    gpu, cpu = create_backend("ort-trt", shipped, fp16=True, strict=True), create_backend("ort-cpu", shipped)
    faces = load_face_crops(None, size=cpu.input_size)
    inputs = network_inputs(faces.images, cpu.in_chans, cpu.prior_source)
    deviation = angular_deviation_deg(cpu(inputs), gpu(inputs), faces.masks)
    assert gpu.providers[0] == "TensorrtExecutionProvider" and deviation.max() <= 0.5


def test_doctor_reports_what_runs_here(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19 (6): the report reads the real installation (ORT wheels, providers, torch)."""
    import json

    from facenormals.cli import main as cli_main
    from facenormals.runtime.machine import system_report

    report = system_report()
    assert report["onnxruntime"] == ort.__version__ and report["providers"] == ort.get_available_providers()
    assert "onnxruntime" in report["onnxruntime_wheels"] or "onnxruntime-gpu" in report["onnxruntime_wheels"]
    assert report["torch"] == torch.__version__
    code = cli_main(["export", "doctor", "--json"])
    assert json.loads(capsys.readouterr().out)["providers"] == report["providers"] and code == 0


@pytest.mark.parametrize(("changes", "message"), [
    ({"onnxruntime_wheels": {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"}}, "share one folder"),
    ({"gpus": ["NVIDIA L4"]}, "no GPU providers"),
    ({"providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"], "tensorrt": {"tensorrt": "11.0.0"},
      "gpus": ["NVIDIA L4"]}, "TensorRT 11 only from onnxruntime 1.27"),
    ({"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"], "gpus": ["NVIDIA L4"]},
     "no tensorrt wheel"),
])
def test_doctor_names_the_bad_combinations(changes: dict[str, object], message: str) -> None:
    from facenormals.runtime.machine import runtime_problems

    clean = {"onnxruntime": "1.22.0", "onnxruntime_wheels": {"onnxruntime-gpu": "1.22.0"}, "tensorrt": {},
             "providers": ["CPUExecutionProvider"], "gpus": []}
    assert runtime_problems(clean) == []
    assert any(message in p for p in runtime_problems({**clean, **changes}))
