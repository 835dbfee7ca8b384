"""The threaded pipeline end to end on real components: OpenCV videos, MediaPipe, the torch and ONNX Runtime
backends on a real (random-weight) network, real sinks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pipeline_media import count_video_frames, face_photo, moving_face_frames, small_checkpoint, two_faces, write_video

from facenormals.faces import create_detector
from facenormals.fileio import read_normals
from facenormals.frame import Frame
from facenormals.realtime.pipeline import Pipeline, PipelineError, StageQueue, _Stopped
from facenormals.realtime.render import FrameRenderer, RenderState
from facenormals.realtime.sinks import SaveDirSink, VideoSink
from facenormals.realtime.sources.base import SourceError, open_source


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("model") / "small.safetensors")


@pytest.fixture(scope="module")
def backend(checkpoint):
    from facenormals.export.prepare import create_backend

    return create_backend("torch", checkpoint, device="cpu")


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("media") / "face.mp4", moving_face_frames(8))


class CountingBackend:
    """The real backend, recording the batch shape of each call."""

    def __init__(self, backend, fail_on_call: int | None = None) -> None:
        self.backend, self.fail_on_call = backend, fail_on_call
        self.input_size = backend.input_size
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        if self.fail_on_call is not None and len(self.shapes) == self.fail_on_call:
            raise RuntimeError("device lost")
        return self.backend(batch)


def frames_of(images: list[np.ndarray], start_ns: int = 0) -> Iterator[Frame]:
    for i, rgb in enumerate(images):
        yield Frame(id=i, t_capture_ns=start_ns + i * 33_000_000, rgb=rgb)


def make_pipeline(frames, backend, sinks=(), max_faces: int = 1, **kwargs) -> Pipeline:
    return Pipeline(frames, create_detector(max_faces), backend, FrameRenderer(RenderState(), "torch"), sinks,
                    handle_signals=False, **kwargs)


def assert_accounted(report, stopped: bool = False) -> None:
    """Every captured frame is written, dropped or skipped as corrupt; only a stop request leaves a few
    in flight (one per queue slot and stage at most)."""
    assert report.frames_in == report.frames_out + report.dropped_total + report.corrupt + report.unfinished
    assert 0 <= report.unfinished <= (6 if stopped else 0)


def test_video_file_every_frame_in_order(face_video, backend, tmp_path):
    results = []
    out = tmp_path / "out.mp4"
    with open_source(f"video:{face_video}") as source:
        pipeline = make_pipeline(source, backend, [VideoSink(out, fps=15), SaveDirSink(tmp_path / "save", "png")],
                                 on_result=results.append)
        report = pipeline.run()
    assert not pipeline.live and report.stopped_by == "end"
    assert report.frames_out == 8 and report.dropped_total == 0
    assert [r.id for r in report.records] == list(range(8))
    assert all(r.faces == 1 for r in report.records)
    for record in report.records:
        t = record.timings
        assert {"capture", "detect", "crop", "infer", "paste", "render", "sink", "total"} <= set(t)
        assert t["total"] >= t["detect"] + t["infer"] + t["render"]
        assert record.t_done_ns > record.t_capture_ns
    assert count_video_frames(out) == 8
    assert not list(tmp_path.glob(".*partial*"))  # the partial file was renamed into place
    saved = sorted((tmp_path / "save" / "normals").glob("*.png"))
    assert [p.stem for p in saved] == [f"{i:06d}" for i in range(8)]
    normals = read_normals(saved[0])  # 16-bit PNG, unit length where valid
    valid = np.any(normals != 0, axis=2)
    assert 1000 < valid.sum() < 0.6 * valid.size
    # Pasted normals are unit vectors, exactly where the face's hull mask lands.
    face = results[0].normals[0]
    np.testing.assert_allclose(np.linalg.norm(face.normals[face.valid], axis=1), 1.0, atol=1e-4)
    assert np.isnan(face.normals[~face.valid]).all()


def test_frames_without_faces_skip_inference(backend):
    blank = np.full((240, 320, 3), 60, np.uint8)
    photo = face_photo()[40:280, :]
    counting = CountingBackend(backend)
    report = make_pipeline(frames_of([blank, photo, blank, photo, blank]), counting).run()
    assert [r.faces for r in report.records] == [0, 1, 0, 1, 0]
    assert counting.shapes == [(1, 3, 64, 64)] * 2  # no call for empty frames
    assert report.frames_out == 5


def test_several_faces_in_one_batch(backend):
    counting = CountingBackend(backend)
    results = []
    report = make_pipeline(frames_of([two_faces()] * 3), counting, max_faces=2, on_result=results.append).run()
    assert counting.shapes == [(2, 3, 64, 64)] * 3  # both faces of a frame in one call
    assert all(len(r.normals) == 2 for r in results)
    xs = sorted(face.x0 for face in results[-1].normals)
    assert xs[0] < 320 <= xs[1]  # one face each side
    assert report.frames_out == 3


def test_corrupt_frame_is_skipped_and_counted(backend):
    frames = moving_face_frames(4)
    broken = [frames[0], frames[1], np.frombuffer(b"\x89PNG\r\n\x1a\n broken", np.uint8), frames[2], frames[3]]
    report = make_pipeline(frames_of(broken), backend).run()
    assert report.corrupt == 1 and report.frames_out == 4
    assert [r.id for r in report.records] == [0, 1, 3, 4]
    assert_accounted(report)


def test_source_dying_mid_stream_is_reported_and_video_finalised(face_video, backend, tmp_path):
    def dying() -> Iterator[Frame]:
        with open_source(f"video:{face_video}") as source:
            for frame in source:
                if frame.id == 3:
                    raise SourceError("camera 0: read failed (device unplugged)")
                yield frame

    out = tmp_path / "partial-run.mp4"
    with pytest.raises(PipelineError, match=r"'capture' failed on frame 3.*unplugged") as caught:
        make_pipeline(dying(), backend, [VideoSink(out, fps=15)]).run()
    err = caught.value
    assert err.stage == "capture" and err.frame_id == 3 and isinstance(err.__cause__, SourceError)
    assert err.report is not None and err.report.frames_out == 3 and err.report.stopped_by == "error"
    assert count_video_frames(out) == 3
    assert not [t for t in threading.enumerate() if t.name.startswith("facenormals-")]


def test_stage_exception_stops_every_stage(backend, tmp_path):
    failing = CountingBackend(backend, fail_on_call=3)
    out = tmp_path / "run.mp4"
    with pytest.raises(PipelineError, match="'infer' failed on frame 2: RuntimeError: device lost") as caught:
        make_pipeline(frames_of(moving_face_frames(30)), failing, [VideoSink(out, fps=15)]).run()
    assert caught.value.frame_id == 2
    # run() returned and no stage thread is left: nothing hangs waiting on the dead stage (no clock needed)
    assert not [t for t in threading.enumerate() if t.name.startswith("facenormals-")]
    assert count_video_frames(out) == caught.value.report.frames_out == 2


class SlowSink:
    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.frames = delay_s, 0

    def write(self, result, image) -> None:
        time.sleep(self.delay_s)
        self.frames += 1

    def close(self) -> None:
        pass


def test_slow_sink_drops_stale_frames_and_latency_stays_bounded(backend):
    """Frames released at 30 FPS into a sink that takes 0.12 s: blocking queues would let latency grow by
    ~90 ms per frame (≈ 3.5 s by frame 40); latest-frame queues drop instead and keep it flat."""
    delay = 0.12
    sink = SlowSink(delay)
    report = make_pipeline(frames_of(moving_face_frames(8) * 5), backend, [sink], pace_fps=30).run()
    assert report.dropped_total > 10
    assert_accounted(report)
    totals = [r.timings["total"] / 1000.0 for r in report.records]
    stage_s = max(r.timings["detect"] + r.timings["infer"] for r in report.records) / 1000.0
    bound = 3 * delay + 3 * stage_s + 0.1  # queue slot + sink + the frame's own stages, with margin
    assert max(totals) < bound, (totals, bound)
    assert np.mean(totals[-3:]) < np.mean(totals[:3]) + bound  # no growth over the run


class BusyBackend:
    """The real backend, slower than the frame rate (a loaded or small device), saying when a call is in flight."""

    def __init__(self, backend, delay_s: float) -> None:
        self.backend, self.delay_s = backend, delay_s
        self.input_size = backend.input_size
        self.busy = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.busy = True
        try:
            time.sleep(self.delay_s)
            return self.backend(batch)
        finally:
            self.busy = False


class WatchedDetector:
    """The real face mesh, recording for each call whether the backend was running at that moment."""

    def __init__(self, detector, backend: BusyBackend) -> None:
        self.detector, self.backend = detector, backend
        self.max_faces = detector.max_faces
        self.during_inference: list[bool] = []

    def detect(self, rgb: np.ndarray, t_capture_ns: int):
        self.during_inference.append(self.backend.busy)
        return self.detector.detect(rgb, t_capture_ns)

    def close(self) -> None:
        self.detector.close()


@pytest.mark.parametrize("overlap", [False, True])
def test_live_run_drops_stale_frames_before_any_work(backend, overlap):
    """Live (frames released at 60 FPS into a backend that takes 50 ms). By default (just in time) every detected
    frame is inferred: all drops happen before detection. Detecting every frame as it comes (``overlap``) runs
    detection during inference and throws detected frames away."""
    busy = BusyBackend(backend, delay_s=0.05)
    detector = WatchedDetector(create_detector(1), busy)
    pipeline = Pipeline(frames_of(moving_face_frames(8) * 4), detector, busy, FrameRenderer(RenderState(), "torch"),
                        handle_signals=False, pace_fps=60, overlap=None if not overlap else True)
    assert pipeline.live and pipeline.overlap is overlap
    report = pipeline.run()
    assert_accounted(report)
    assert report.frames_in == 32 and report.dropped_total > 0
    if not overlap:
        assert report.dropped["batches"] == 0 and report.dropped["results"] == 0
        assert report.frames_out == len(detector.during_inference)  # nothing detected was thrown away
        assert report.frames_out < report.frames_in
    else:
        assert report.dropped["batches"] > 0 and any(detector.during_inference)


def test_file_runs_overlap_detection_and_inference(backend):
    """Files (blocking queues, every frame) keep the overlap: throughput, not latency."""
    pipeline = make_pipeline(frames_of(moving_face_frames(2)), backend)
    assert not pipeline.live and pipeline.overlap
    assert pipeline.run().frames_out == 2


def test_stop_request_from_another_thread_ends_the_run(face_video, backend):
    with open_source(f"video:{face_video}", loop=True) as source:
        pipeline = make_pipeline(source, backend, pace_fps=30)
        timer = threading.Timer(1.0, pipeline.stop, kwargs={"reason": "signal"})
        timer.start()
        report = pipeline.run()
    assert report.stopped_by == "signal" and report.frames_out > 0
    assert_accounted(report, stopped=True)


def test_max_frames(face_video, backend):
    with open_source(f"video:{face_video}") as source:
        report = make_pipeline(source, backend, max_frames=3).run()
    assert report.frames_out == 3 and report.stopped_by == "max-frames"


def test_latest_queue_keeps_the_newest_and_counts():
    stop = threading.Event()
    queue = StageQueue("frames", 1, latest=True, stop=stop)
    for i in range(5):
        queue.put(i)
    assert queue.get() == 4 and queue.dropped == 4
    stop.set()
    with pytest.raises(_Stopped):
        queue.get()  # stopped and empty: raises instead of blocking


def test_backend_parity_torch_vs_onnxruntime(checkpoint, backend, monkeypatch, tmp_path):
    """The same crops through torch and ONNX Runtime CPU give the same normals."""
    from facenormals.conventions import angular_error_deg
    from facenormals.crops import CropBatcher
    from facenormals.export.prepare import create_backend

    monkeypatch.setenv("FACENORMALS_CACHE", str(tmp_path / "cache"))
    ort = create_backend("ort-cpu", checkpoint)
    assert ort.providers == ["CPUExecutionProvider"]
    detector = create_detector(2)
    try:
        faces = detector.detect(two_faces(), 0)
    finally:
        detector.close()
    batch = CropBatcher(ort.input_size, 2)(two_faces(), faces)
    a, b = backend(batch.inputs), ort(batch.inputs)
    assert a.shape == b.shape == (2, 3, 64, 64)
    error = angular_error_deg(a.transpose(0, 2, 3, 1), b.transpose(0, 2, 3, 1))
    assert float(error.mean()) < 0.05 and float(error.max()) < 1.0


def test_depth_and_intrinsics_reach_the_views(backend):
    """RGB-D frames keep their aligned depth and intrinsics through every stage (what ``--view fusion`` uses)."""
    from facenormals.realtime import render

    seen = []

    @render.register_view("test-rgbd")
    def record(result, state):
        seen.append((result.frame.depth, result.frame.intrinsics, len(result.normals)))
        return render.render_normals(result, state)

    try:
        with open_source("sample-rgbd", frames=3) as source:
            pipeline = Pipeline(source, create_detector(1), backend, FrameRenderer(RenderState(view="test-rgbd")),
                                handle_signals=False)
            report = pipeline.run()
    finally:
        render._VIEWS.pop("test-rgbd")
    assert report.frames_out == 3 and len(seen) == 3
    for depth, intrinsics, faces in seen:
        assert depth is not None and depth.dtype == np.uint16 and depth.shape == (480, 640)
        assert intrinsics is not None and intrinsics.width == 640
        assert faces == 1


@pytest.mark.parametrize("pace_fps", [None, 30.0])
def test_queue_waits_are_recorded_and_partition_the_latency(face_video, backend, pace_fps):
    """Each frame says how long it waited before the detect, infer and main threads; with the stage times they
    are disjoint parts of its capture-to-screen time (so they cannot add up to more)."""
    with open_source(f"video:{face_video}") as source:
        pipeline = make_pipeline(source, backend, pace_fps=pace_fps)
        report = pipeline.run()
    assert report.records
    for record in report.records:
        waits = {name: ms for name, ms in record.timings.items() if name.startswith("wait_")}
        assert set(waits) == {"wait_detect", "wait_infer", "wait_render"}
        assert all(ms >= 0.0 for ms in waits.values())
        assert "_queued_at_ms" not in record.timings  # the hand-over stamp does not leak into the figures
        parts = sum(ms for name, ms in record.timings.items() if name not in ("total", "capture"))
        assert parts <= record.timings["total"] + 1e-6, record.timings


# -- motion-adaptive inference rate (facenormals.reuse, ``--infer-every``) -------------------------------------------
def run_collecting(images: list[np.ndarray], backend, reuse=None, defer: bool = False,
                   max_faces: int = 1) -> tuple[list, object, dict]:
    """Every frame through the loop (file queues); (results, report, the engine's face counts). The face mesh in
    still-image mode: equal frames give equal landmarks (tracking mode drifts by ~2 px over a still image's first
    frames), so a carried output can be compared with the network's own. ``defer``: deferred keyframes."""
    results: list = []
    detector = create_detector(max_faces, smooth=False, still=True)
    pipeline = Pipeline(frames_of(images), detector, backend, FrameRenderer(RenderState(), "torch"), live=False,
                        handle_signals=False, on_result=results.append, reuse=reuse, defer_keyframes=defer)
    try:
        report = pipeline.run()
    finally:
        detector.close()
    return results, report, pipeline.engine.counts


def mean_angle_deg(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    cos = np.clip(np.einsum("chw,chw->hw", a, b)[mask], -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def test_still_face_reuses_an_inference_equal_to_a_fresh_one(backend):
    from facenormals.reuse import ReusePolicy

    still = [face_photo()] * 7
    counting = CountingBackend(backend)
    reused, report, counts = run_collecting(still, counting, ReusePolicy(every=3))
    fresh, _, fresh_counts = run_collecting(still, backend, None)
    assert report.frames_out == 7 and report.faces_inferred == 3 and report.faces_reused == 4
    assert counts == {"inferred": 3, "reused": 4} and len(counting.shapes) == 3  # the backend ran on frames 0, 3, 6
    assert [r.reused for r in reused] == [(False,), (True,), (True,), (False,), (True,), (True,), (False,)]
    assert fresh_counts == {"inferred": 7, "reused": 0}
    for a, b in zip(reused, fresh, strict=True):
        assert np.allclose(a.crops[0].matrix, b.crops[0].matrix, atol=1e-6)
        assert mean_angle_deg(a.crop_normals[0], b.crop_normals[0], b.crops[0].mask) < 0.02
        np.testing.assert_allclose(np.linalg.norm(a.normals[0].normals[a.normals[0].valid], axis=1), 1.0, atol=1e-4)


def test_motion_beyond_the_threshold_triggers_inference(backend):
    """A still face, then the same face turned 12° in the image (the crop does not turn with it): the turn is
    inferred at once, the still frames around it are reused; with thresholds of a whole face size it is reused too."""
    from facenormals.reuse import ReusePolicy

    photo = face_photo()
    frames = [photo] * 3 + [rotated(photo, 12.0)] * 3
    results, _, counts = run_collecting(frames, backend, ReusePolicy(every=100))
    assert [r.reused for r in results] == [(False,), (True,), (True,), (False,), (True,), (True,)]
    assert counts == {"inferred": 2, "reused": 4}
    loose, _, counts = run_collecting(frames, backend, ReusePolicy(every=100, max_nonrigid=1.0, max_rigid=1.0))
    assert [r.reused for r in loose] == [(False,)] + [(True,)] * 5 and counts == {"inferred": 1, "reused": 5}


def test_every_bounds_the_reuse_and_one_infers_every_frame(backend):
    from facenormals.reuse import ReusePolicy

    still = [face_photo()] * 6
    results, _, counts = run_collecting(still, backend, ReusePolicy(every=2))
    assert [r.reused[0] for r in results] == [False, True] * 3 and counts == {"inferred": 3, "reused": 3}
    for off in (None, ReusePolicy(every=1)):
        counting = CountingBackend(backend)
        results, report, counts = run_collecting(still, counting, off)
        assert counts == {"inferred": 6, "reused": 0} and len(counting.shapes) == 6
        assert report.faces_reused == 0 and all(not any(r.reused) for r in results)


def test_a_reuse_whose_keyframe_never_reached_the_backend_is_inferred(backend):
    """A live queue may drop the keyframe's batch: the next frame, scheduled to reuse it, is inferred after all (its
    input made then) and equals the engine's fresh inference of it."""
    from facenormals.engine import FrameEngine
    from facenormals.reuse import ReusePolicy

    photo = face_photo()
    detector = create_detector(1)
    try:
        engine = FrameEngine(backend, detector, ring=4, reuse=ReusePolicy(every=4))
        engine.detect_and_crop(Frame(0, 0, photo))  # the keyframe, dropped before inference
        faces, batch = engine.detect_and_crop(Frame(1, 33_000_000, photo))
        assert batch.reuse == (0,)
        result = engine.infer(Frame(1, 33_000_000, photo), faces, batch)
    finally:
        detector.close()
    assert engine.counts == {"inferred": 1, "reused": 0} and result.reused == (False,)
    np.testing.assert_allclose(batch.inputs[0, :3], batch.crops[0].image.transpose(2, 0, 1) / 255.0, atol=1e-6)
    direct = backend(np.ascontiguousarray(batch.inputs))  # the input filled by the fallback
    np.testing.assert_allclose(result.crop_normals, direct, atol=1e-6)


def test_infer_every_auto_reuses_on_video_only(tmp_path):
    import cv2

    from facenormals.realtime.runner import AUTO_INFER_EVERY, default_infer_every, inference_threads
    from facenormals.reuse import parse_infer_every

    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(face_photo(), cv2.COLOR_RGB2BGR))
    with open_source("sample", frames=2) as video, open_source(f"images:{tmp_path}") as images:
        video_still, images_still = (bool(getattr(s, "still_images", False)) for s in (video, images))
    assert default_infer_every(video_still, "normals") == AUTO_INFER_EVERY > 1
    assert default_infer_every(video_still, "normals", live=False) == 1  # a file processed frame by frame
    assert default_infer_every(images_still, "normals") == 1  # unrelated photos: nothing to carry
    assert default_infer_every(video_still, "fit") == default_infer_every(video_still, "3d") == 1  # each frame's fit
    assert default_infer_every(video_still, "normals", needs_fits=True) == 1  # --save-mesh
    assert inference_threads("auto", None, 3) == 1 and inference_threads("ort-cpu", None, 2) == 1
    assert inference_threads("auto", None, 1) is None and inference_threads("torch", None, 3) is None
    assert inference_threads("auto", 2, 3) == 2  # --threads wins
    assert parse_infer_every("auto") is None and parse_infer_every("1") == 1
    with pytest.raises(ValueError, match="--infer-every"):
        parse_infer_every("often")


def test_deferred_keyframes_show_the_previous_keyframe_and_serve_the_frames_after(backend):
    """The live loop's latency (``defer_keyframes``): a keyframe of a track that has one is shown with that earlier
    output carried into its crop; its own inference runs after the frame is handed on and is what the following
    frames carry, so every other frame equals the synchronous loop's exactly."""
    from facenormals.reuse import KeyframeStore, ReusePolicy

    photo = face_photo()
    frames = [photo] * 3 + [rotated(photo, 12.0)] * 3  # the turn (frame 3) is a keyframe
    counting = CountingBackend(backend)
    deferred, report, counts = run_collecting(frames, counting, ReusePolicy(every=100), defer=True)
    sync, sync_report, _ = run_collecting(frames, backend, ReusePolicy(every=100))
    assert counts == {"inferred": 2, "reused": 4} and len(counting.shapes) == 2  # frame 0 now, frame 3 deferred
    assert len(report.deferred_ms) == 1 and sync_report.deferred_ms == []
    assert [r.reused for r in deferred] == [(False,)] + [(True,)] * 5
    for i in (0, 1, 2, 4, 5):  # frames 4 and 5 carry frame 3's own inference, as in the synchronous loop
        np.testing.assert_array_equal(deferred[i].crop_normals, sync[i].crop_normals)
    first, turn = sync[0], deferred[3]
    store = KeyframeStore()
    store.keep(first.faces[0].track_id, 0, first.crop_normals[0], first.crops[0].matrix, first.faces[0].landmarks)
    expected = store.carried(turn.faces[0].track_id, turn.crops[0].matrix, turn.faces[0].landmarks)
    np.testing.assert_array_equal(turn.crop_normals[0], expected)  # frame 0's output, carried into the turned crop
    assert not np.array_equal(turn.crop_normals, sync[3].crop_normals)


def test_deferred_keyframes_of_two_faces_run_in_one_batch_after_the_frame(backend):
    """Two faces held still, a keyframe every 2 frames: frame 0 infers both now (new tracks), frame 2 shows both
    carried and runs them as one deferred batch of 2; frame 3 carries frame 2's outputs, as the synchronous loop."""
    from facenormals.reuse import ReusePolicy

    frames = [two_faces()] * 4
    counting = CountingBackend(backend)
    deferred, report, counts = run_collecting(frames, counting, ReusePolicy(every=2), defer=True, max_faces=2)
    sync, _, _ = run_collecting(frames, backend, ReusePolicy(every=2), max_faces=2)
    assert [len(r.faces) for r in deferred] == [2] * 4
    assert [shape[0] for shape in counting.shapes] == [2, 2] and len(report.deferred_ms) == 1
    assert counts == {"inferred": 4, "reused": 4}
    assert [r.reused for r in deferred] == [(False, False)] + [(True, True)] * 3
    np.testing.assert_array_equal(deferred[3].crop_normals, sync[3].crop_normals)


def test_keyframes_are_deferred_by_default_only_in_live_loops_that_reuse(backend):
    from facenormals.reuse import ReusePolicy

    detector = create_detector(1, smooth=False, still=True)
    try:
        def defers(**options) -> bool:
            return Pipeline([], detector, backend, FrameRenderer(RenderState(), "torch"), handle_signals=False,
                            **options).defer_keyframes

        assert defers(live=True, reuse=ReusePolicy(every=3))
        assert not defers(live=False, reuse=ReusePolicy(every=3))
        assert not defers(live=True, reuse=None) and not defers(live=True, reuse=ReusePolicy(every=1))
        assert not defers(live=True, reuse=ReusePolicy(every=3), defer_keyframes=False)
        assert not defers(live=True, reuse=None, defer_keyframes=True)  # nothing to carry without reuse
    finally:
        detector.close()
