"""The one per-frame engine: the API and the realtime loop give the same normals for the same frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenormals.checkpoint import save_checkpoint
from facenormals.engine import FrameResult
from facenormals.export.prepare import onnx_for
from facenormals.faces import StillFaceDetector
from facenormals.frame import Frame
from facenormals.model import create_model

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from facenormals import FaceNormals

    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("engine") / "fast-random.safetensors"
    save_checkpoint(create_model("fast"), checkpoint, inference_only=True, provenance={"note": "random init, tests only"})
    with pytest.MonkeyPatch.context() as patch:  # the ONNX export cache stays inside the test's tmp dir
        patch.setenv("FACENORMALS_CACHE", str(tmp_path_factory.mktemp("cache")))
        # one network pass, as the live loop (the API's default mirror averaging is for photos)
        with FaceNormals(model=checkpoint, backend="ort-cpu", prepare=onnx_for, mirror=False) as fn:
            yield fn


def test_api_and_realtime_loop_give_identical_normals(api):
    from facenormals.realtime.pipeline import Pipeline

    photo = skimage_data.astronaut()
    expected = api(photo)
    assert len(expected) == 1
    results: list[FrameResult] = []
    detector = StillFaceDetector(api.detector.max_faces)  # what the API detects with
    try:
        Pipeline([Frame(0, 0, photo)], detector, api.backend, lambda result, stats: np.zeros((4, 4, 3), np.uint8),
                 on_result=results.append, handle_signals=False).run()
    finally:
        detector.close()
    (live,) = results[0].face_results()
    np.testing.assert_array_equal(live.landmarks, expected[0].landmarks)
    np.testing.assert_array_equal(live.crop_normals, expected[0].crop_normals)
    np.testing.assert_array_equal(live.mask, expected[0].mask)
    np.testing.assert_array_equal(live.normals, expected[0].normals)  # NaN outside the face on both sides



def test_reused_frames_skip_the_prior_and_match_the_network_on_the_still_sample():
    """The shipped default (ICT prior, INT8) on the sample's photo held still (one sensor-noise draw: equal frames):
    with ``every=2`` every other frame reuses the last inference — no network call, no ICT fit — and equals the
    network's own output on that frame."""
    from facenormals.benchmarks.stability import synthetic_frames
    from facenormals.engine import FrameEngine
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.realtime.sources.sample import sample_pose
    from facenormals.reuse import ReusePolicy

    backend = create_backend("auto", None, threads=1)
    assert backend.prior_source is not None  # the shipped default is a prior model
    frames = synthetic_frames([sample_pose(0)] * 4, noise_index=0)
    outputs = {}
    for label, reuse in (("reuse", ReusePolicy(every=2)), ("fresh", None)):
        detector = create_detector(1, smooth=False, still=True)  # equal landmarks for equal images
        try:
            # fits from scratch: a warm-started ICT fit keeps converging over equal frames (0.2–0.3° of output)
            engine = FrameEngine(backend, detector, warm_start=False, reuse=reuse)
            outputs[label] = [engine.process(frame) for frame in frames]
        finally:
            detector.close()
        assert engine.counts == ({"inferred": 2, "reused": 2} if reuse else {"inferred": 4, "reused": 0})
    for i, (a, b) in enumerate(zip(outputs["reuse"], outputs["fresh"], strict=True)):
        assert a.reused == ((i % 2 == 1),)
        assert (a.fits[0] is None) == a.reused[0] and b.fits[0] is not None  # the ICT prior only where inferred
        cos = np.einsum("chw,chw->hw", a.crop_normals[0], b.crop_normals[0])[b.crops[0].mask]
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean()
        assert angle < 0.02


def test_a_deferred_keyframe_gets_its_prior_after_its_frame_and_serves_the_next():
    """The shipped default (ICT prior, INT8), the sample's photo held still, a keyframe every 2 frames. With deferred
    keyframes, frame 2 (a keyframe of a track that has one) leaves the detect thread with no network input and no ICT
    fit, is shown with frame 0's output carried, and its deferred run makes the input and infers it: frame 3 then
    carries exactly what the synchronous engine's frame 3 carries."""
    from facenormals.benchmarks.stability import synthetic_frames
    from facenormals.engine import FrameEngine
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.realtime.sources.sample import sample_pose
    from facenormals.reuse import DEFERRED, ReusePolicy

    backend = create_backend("auto", None, threads=1)
    frames = synthetic_frames([sample_pose(0)] * 4, noise_index=0)
    runs = {}
    for defer in (False, True):
        detector = create_detector(1, smooth=False, still=True)  # equal landmarks for equal images
        try:
            engine = FrameEngine(backend, detector, warm_start=False, reuse=ReusePolicy(every=2))
            engine.defer_keyframes = defer
            results, keys = [], []
            for frame in frames:
                faces, batch = engine.detect_and_crop(frame)
                keys.append(batch.reuse)
                result, deferred = engine.infer_deferred(frame, faces, batch) if defer else (
                    engine.infer(frame, faces, batch), None)
                results.append(engine.paste(result))
                if deferred is not None:
                    deferred()
            runs[defer] = results, keys, dict(engine.counts)
        finally:
            detector.close()
    (sync, sync_keys, sync_counts), (late, late_keys, late_counts) = runs[False], runs[True]
    assert sync_keys == [(None,), (0,), (None,), (2,)] and late_keys == [(None,), (0,), (DEFERRED,), (2,)]
    assert sync_counts == late_counts == {"inferred": 2, "reused": 2}
    assert sync[2].fits[0] is not None and late[2].fits == (None,)  # no ICT prior on the detect thread
    assert late[2].reused == (True,)  # shown from frame 0's output
    np.testing.assert_array_equal(late[3].crop_normals, sync[3].crop_normals)


def test_a_files_landmarks_do_not_depend_on_how_fast_it_is_read():
    """The engine's detector smooths over ``Frame.t_stream_ns``: a moving face read from a file (media times) gives
    the same landmarks whether this machine reads it in real time or ten times slower; on the capture clock alone the
    slow read filters differently (what made runs of one video differ under load)."""
    import dataclasses

    from facenormals.benchmarks.stability import synthetic_frames
    from facenormals.engine import FrameEngine
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.realtime.sources.sample import sample_pose

    backend = create_backend("auto", None, threads=1)
    frames = synthetic_frames([sample_pose(i) for i in range(0, 24, 4)], noise_index=0)

    def landmarks(capture_step_ns: int, media: bool) -> np.ndarray:
        detector = create_detector(1)  # tracking mode, One-Euro smoothing following the face's motion
        try:
            engine = FrameEngine(backend, detector)
            out = []
            for i, frame in enumerate(frames):
                read = dataclasses.replace(frame, t_capture_ns=10**12 + i * capture_step_ns,
                                           t_media_ns=frame.t_capture_ns if media else None)
                (face,), _ = engine.detect_and_crop(read)
                out.append(face.landmarks)
            return np.stack(out)
        finally:
            detector.close()

    real_time = landmarks(33_333_333, media=True)
    np.testing.assert_array_equal(landmarks(333_333_333, media=True), real_time)
    assert np.abs(landmarks(333_333_333, media=False) - real_time).max() > 0.05  # px: the clock matters
