"""``facenormals bench`` on a real video, a real (random-weight) network and real MediaPipe."""

from __future__ import annotations

import json

import pytest
from pipeline_media import moving_face_frames, small_checkpoint, write_video

from facenormals.cli import main as cli_main
from facenormals.realtime.bench import BenchConfig, latency_summary, run_benchmark
from facenormals.realtime.pipeline import FrameRecord


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return small_checkpoint(root / "small.safetensors"), write_video(root / "face.mp4", moving_face_frames(10))


def test_bench_cli_writes_json_and_plot(media, tmp_path, capsys):
    ckpt, video = media
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    code = cli_main(["bench", "--source", f"video:{video}", "--backend", "torch", "--model", str(ckpt),
                     "--frames", "8", "--warmup", "2", "--pace", "max", "--json", str(out), "--plot", str(plot)])
    assert code == 0
    result = json.loads(out.read_text())
    assert {"fps", "latency_ms", "stages", "dropped", "frames", "backend", "machine"} <= set(result)
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"}
    for stage in ("detect", "crop", "infer", "paste", "render", "overhead"):
        assert {"p50", "p95"} <= set(result["stages"][stage])
    assert result["frames"] == 8 and result["backend"] == "torch" and result["dropped"] == 0
    assert result["faces_per_frame"] == 1.0 and result["fps"] > 0
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"]
    assert result["jitter"]["tracks"] == 1 and result["jitter"]["raw"] > 0
    assert result["machine"]["cpus_usable"] >= 1 and result["preloaded"]
    assert result["cpu_ms_per_frame"] > 0
    by_thread = result["cpu_ms_per_frame_by_thread"]  # Linux: where the CPU goes, the stage threads by name
    assert {"infer", "detect", "main (paste, render, sinks)"} <= set(by_thread)
    assert all(ms >= 0 for ms in by_thread.values())
    assert result["flow"] is True and result["temporal"] is True  # the defaults of `run` for video
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FPS" in capsys.readouterr().out


def test_no_flow_switch_reaches_the_detector(media):
    """``--no-flow`` (run, bench) keeps the One-Euro smoothing but stops it following the image; ``--no-smoothing``
    turns off both; image folders get neither."""
    from facenormals.realtime.runner import LoopParts
    from facenormals.realtime.sources.base import open_source
    from facenormals.runtime import create_backend

    ckpt, video = media
    backend = create_backend("torch", ckpt)
    with open_source(f"video:{video}") as source:
        for flow, smooth, expected in ((True, True, True), (False, True, False), (True, False, False)):
            with LoopParts.build(source, backend, flow=flow, smooth=smooth) as parts:
                assert (parts.detector.flow is not None) is expected, (flow, smooth)
    result = run_benchmark(BenchConfig(source=f"video:{video}", backend="torch", model=str(ckpt), frames=4, warmup=1,
                                       pace="max", flow=False, stability=False))
    assert result["flow"] is False and result["frames"] == 4


def test_realtime_pace_replays_at_the_source_rate(media):
    ckpt, video = media
    result = run_benchmark(BenchConfig(source=f"video:{video}", backend="torch", model=str(ckpt), frames=12,
                                       warmup=2, pace="realtime"))
    assert result["live_queues"] and result["source_fps"] == pytest.approx(15.0)
    assert result["duration_s"] >= 13 / 15.0  # 14 frames released on a 15 FPS clock
    assert result["fps"] <= 15.0 * 1.5  # completions may bunch a little, but cannot outpace the arrivals
    assert result["frames"] + result["dropped"] >= 12 - 1


def test_latency_summary_percentiles():
    records = [FrameRecord(i, 0, 1, 1, {"detect": float(i), "infer": 10.0, "total": 20.0 + i}) for i in range(101)]
    summary = latency_summary(records)
    assert summary["latency_ms"] == {"p50": 70.0, "p95": 115.0, "p99": 119.0}
    assert summary["stages"]["detect"]["p50"] == 50.0
    assert summary["stages"]["overhead"]["p95"] == 95.0  # everything but inference (and capture)


def test_bench_rejects_bad_settings(media):
    ckpt, video = media
    with pytest.raises(ValueError, match="pace"):
        run_benchmark(BenchConfig(source=f"video:{video}", backend="torch", model=str(ckpt), pace="fast"))


def test_loop_runs_opencv_on_one_thread_and_restores_it(media):
    """The loop's stages have threads of their own: OpenCV's pool is off while the loop's parts are open (crops,
    priors and pasted normals are bit-identical either way) and back to what it was after."""
    import cv2

    from facenormals.realtime.runner import LoopParts
    from facenormals.realtime.sources.base import open_source
    from facenormals.runtime import create_backend

    ckpt, video = media
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        with open_source(f"video:{video}") as source, LoopParts.build(source, create_backend("torch", ckpt)):
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
