"""The stability metric on sequences with known answers, and the temporal filter (issue 16).

Synthetic sequences: a smooth normal field fixed on the sample photo, seen through the clip's exact motion (a
ground-truth-following system), with and without injected per-frame flicker of known size; steps of known size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from facenormals.conventions import angular_error_deg, normalize
from facenormals.engine import FrameResult
from facenormals.faces import Face
from facenormals.frame import Frame
from facenormals.geometry import Crop, crop_matrix, hull_mask, square_box, transform_points
from facenormals.realtime.sources.sample import PHOTO_FACE_CENTRE, frame_from_photo_matrix, sample_pose
from facenormals.realtime.stability import StabilityProbe, sample_photo_of
from facenormals.stability import deviation_from_median, fast_slow, frame_to_frame, step_lag
from facenormals.temporal import (
    TemporalFilter,
    TemporalParams,
    align_previous,
    compose,
    rotate_normals_xy,
    similarity,
    warp_normals,
)

SIZE = 128
W, H = 640, 480


def photo_field(points: np.ndarray) -> np.ndarray:
    """A smooth, face-sized bump of normals (+y up) at photo pixels ``points`` (…×2)."""
    x = (points[..., 0] - PHOTO_FACE_CENTRE[0]) / 120.0
    y = -(points[..., 1] - PHOTO_FACE_CENTRE[1]) / 140.0
    return normalize(np.stack([x, y, np.ones_like(x)], axis=-1))


def photo_landmarks(rng: np.random.Generator) -> np.ndarray:
    angles = rng.uniform(0, 2 * math.pi, 478)
    radius = 55.0 * np.sqrt(rng.uniform(0, 1, 478))
    return np.column_stack([PHOTO_FACE_CENTRE[0] + radius * np.cos(angles), PHOTO_FACE_CENTRE[1] + radius * np.sin(angles)])


def truth_frame(index: int, landmarks_photo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``index`` of the sample motion as a perfect system sees it: (crop normals 3×S×S, crop matrix, crop mask,
    frame landmarks)."""
    photo_to_frame = frame_from_photo_matrix(sample_pose(index), W, H)
    landmarks = transform_points(landmarks_photo, photo_to_frame)
    matrix = crop_matrix(square_box(landmarks), SIZE)
    crop_to_photo = compose(np.linalg.inv(np.vstack([compose(matrix, photo_to_frame), [0, 0, 1]]))[:2])
    cols, rows = np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64))
    photo_points = transform_points(np.stack([cols, rows], -1).reshape(-1, 2), crop_to_photo).reshape(SIZE, SIZE, 2)
    normals = photo_field(photo_points).transpose(2, 0, 1)
    normals = rotate_normals_xy(normals, photo_to_frame[:, :2])  # the image turned: so did the normals' x/y
    return normals.astype(np.float32), matrix, hull_mask(transform_points(landmarks, matrix), (SIZE, SIZE)), landmarks


def flicker(normals: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Each normal tilted by exactly ``degrees`` in a random direction (3×H×W)."""
    n = normals.transpose(1, 2, 0)
    axis = normalize(np.cross(n, rng.standard_normal(n.shape)))
    theta = math.radians(degrees)
    tilted = n * math.cos(theta) + np.cross(axis, n) * math.sin(theta)
    return normalize(tilted).transpose(2, 0, 1).astype(np.float32)


def result_for(index: int, normals, matrix, mask, landmarks) -> FrameResult:
    box = square_box(landmarks)
    face = Face(landmarks.astype(np.float32), landmarks.astype(np.float32), 0, box)
    crop = Crop(np.zeros((SIZE, SIZE, 3), np.uint8), mask, matrix, box)
    return FrameResult(Frame(index, int(index * 1e9 / 30), np.zeros((H, W, 3), np.uint8)), [face], (crop,),
                       normals[None].copy())


def sequence(frames: int, noise_deg: float, rng, temporal: TemporalFilter | None = None):
    """The probe fed the sample motion (``frames`` frames) with ``noise_deg`` flicker; also the per-frame error
    against the truth."""
    landmarks_photo = photo_landmarks(rng)
    probe = StabilityProbe(photo_of=sample_photo_of(W, H, 30.0))
    errors = []
    for i in range(frames):
        truth, matrix, mask, landmarks = truth_frame(i, landmarks_photo)
        result = result_for(i, flicker(truth, noise_deg, rng) if noise_deg else truth, matrix, mask, landmarks)
        if temporal is not None:
            temporal(result)
        errors.append(float(angular_error_deg(result.crop_normals[0].transpose(1, 2, 0),
                                              truth.transpose(1, 2, 0))[mask].mean()))
        probe(result)
    return probe, np.array(errors)


def test_similarity_and_normal_rotation_are_consistent(rng):
    points = rng.uniform(0, 100, (50, 2))
    motion = frame_from_photo_matrix(sample_pose(10), W, H)
    assert np.allclose(similarity(points, transform_points(points, motion)), motion)
    n = normalize(rng.standard_normal((3, 4, 4)), axis=0).astype(np.float32)
    back = rotate_normals_xy(rotate_normals_xy(n, motion[:, :2]), np.linalg.inv(motion[:, :2]))
    assert np.allclose(back, n, atol=1e-6)
    # a surface facing image-right, turned 90° clockwise on screen (x → y down), faces image-down: n_y = -1
    turned = rotate_normals_xy(np.array([1.0, 0, 0], np.float32).reshape(3, 1, 1), np.array([[0.0, -1], [1, 0]]))
    assert np.allclose(turned.ravel(), [0, -1, 0], atol=1e-6)


def test_static_map_with_known_noise():
    rng = np.random.default_rng(1)
    n = np.zeros((40, 16, 16, 3), np.float32)
    n[..., 2] = 1
    deviation, median = deviation_from_median(n, np.ones(n.shape[:3], bool))
    assert deviation.max() == 0 and frame_to_frame(n, np.ones(n.shape[:3], bool)).max() == 0
    noisy = np.stack([flicker(frame.transpose(2, 0, 1), 4.0, rng).transpose(1, 2, 0) for frame in n])
    deviation, median = deviation_from_median(noisy, np.ones(n.shape[:3], bool))
    assert deviation.mean() == pytest.approx(4.0, rel=0.1)  # the median is the clean map: each pixel is 4° off it
    assert angular_error_deg(median, n[0]).mean() < 2.0  # a median of 40 draws on a 4° ring
    assert 4.0 < frame_to_frame(noisy, np.ones(n.shape[:3], bool)).mean() < 8.0  # two independent 4° tilts


def test_metric_is_zero_for_the_truth_and_positive_for_flicker(rng):
    clean, _ = sequence(24, 0.0, rng)
    figures = clean.summary()
    assert figures["photo"]["deviation_from_median_deg"]["mean"] < 0.05  # interpolation only
    assert figures["photo"]["frame_to_frame_deg"]["mean"] < 0.1
    assert figures["aligned_frame_to_frame_deg"]["mean"] < 0.1
    assert figures["landmark_motion_rigid"]["mean"] > 1.0  # the sample moves; the metric does not count it
    noisy, _ = sequence(24, 3.0, rng)
    figures = noisy.summary()
    assert figures["photo"]["deviation_from_median_deg"]["mean"] > 1.0  # per-pixel noise, partly averaged by resampling
    assert figures["aligned_frame_to_frame_deg"]["mean"] > 3.0


def test_filter_reduces_flicker_and_never_increases_error(rng):
    off, errors_off = sequence(40, 3.0, np.random.default_rng(2))
    on, errors_on = sequence(40, 3.0, np.random.default_rng(2), TemporalFilter())
    dev_off = off.summary()["photo"]["deviation_from_median_deg"]["mean"]
    dev_on = on.summary()["photo"]["deviation_from_median_deg"]["mean"]
    assert dev_on < 0.6 * dev_off
    assert on.summary()["aligned_frame_to_frame_deg"]["mean"] < 0.5 * off.summary()["aligned_frame_to_frame_deg"]["mean"]
    assert errors_on.mean() < errors_off.mean() and (errors_on <= errors_off + 0.05).all()
    _, errors_clean = sequence(40, 0.0, np.random.default_rng(2), TemporalFilter())
    assert errors_clean.max() < 0.3  # the truth, moving with the sample, is not smeared by the alignment


@pytest.mark.parametrize(("step_deg", "max_lag"), [(25.0, 0), (10.0, 1)])
def test_filter_follows_a_step(step_deg, max_lag):
    """A surface turning by ``step_deg`` (about the vertical axis) between two frames, landmarks unchanged: the
    output is nearer the new normals than the old within ``max_lag`` frames."""
    rng = np.random.default_rng(3)
    x, y = np.meshgrid(np.linspace(-0.5, 0.5, SIZE), np.linspace(0.4, -0.4, SIZE))
    before = normalize(np.stack([x, y, np.ones_like(x)]), axis=0)
    c, s = math.cos(math.radians(step_deg)), math.sin(math.radians(step_deg))
    after = np.stack([c * before[0] + s * before[2], before[1], -s * before[0] + c * before[2]])
    landmarks = rng.uniform(100, 200, (478, 2))
    matrix = crop_matrix(square_box(landmarks), SIZE)
    temporal = TemporalFilter()
    outputs = [temporal.filter_face(0, (before if i < 10 else after).astype(np.float32), matrix, landmarks, i / 30)
               for i in range(30)]
    to_new = [float(angular_error_deg(o.transpose(1, 2, 0), after.transpose(1, 2, 0)).mean()) for o in outputs[10:]]
    to_old = [float(angular_error_deg(o.transpose(1, 2, 0), before.transpose(1, 2, 0)).mean()) for o in outputs[10:]]
    assert step_lag(np.array(to_new), np.array(to_old)) <= max_lag
    assert to_new[-1] < 0.1 * step_deg  # and settles on it


def test_frame_weight_rises_with_nonrigid_motion():
    temporal = TemporalFilter(TemporalParams())
    still = temporal.frame_weight(1 / 30, 0.0, 0.0)
    assert 0.1 < still < 0.4
    assert temporal.frame_weight(1 / 30, 0.0, 0.01) > 0.5  # 1 % of the face per frame: a turn, mostly the new frame
    assert temporal.frame_weight(1 / 30, 0.01, 0.0) < temporal.frame_weight(1 / 30, 0.0, 0.01)


def test_new_and_stale_tracks_start_from_the_network():
    temporal = TemporalFilter()
    n = normalize(np.random.default_rng(4).standard_normal((3, 8, 8)), axis=0).astype(np.float32)
    landmarks = np.random.default_rng(5).uniform(0, 50, (478, 2))
    matrix = crop_matrix(square_box(landmarks), 8)
    assert np.array_equal(temporal.filter_face(7, n, matrix, landmarks, 0.0), n)
    assert np.array_equal(temporal.filter_face(7, -n, matrix, landmarks, 2.0), -n)  # unseen for 2 s
    assert np.allclose(warp_normals(n, np.array([[1.0, 0, 0], [0, 1, 0]]), (8, 8)), n)


def test_bench_reports_stability_on_the_sample_with_the_shipped_model():
    """The real loop (sample clip, MediaPipe, the shipped default through ONNX Runtime), filter on: the bench's
    stability block has the photo-space figures and the filter's stage time."""
    from facenormals.realtime.bench import BenchConfig, run_benchmark

    result = run_benchmark(BenchConfig(source="sample", backend="auto", frames=16, warmup=2, pace="max"))
    stability = result["stability"]
    assert result["temporal"] and "temporal" in result["stages"]
    assert stability["photo"]["frames"] >= 14 and stability["photo"]["deviation_from_median_deg"]["mean"] > 0
    assert stability["aligned_frame_to_frame_deg"]["n"] >= 13 and stability["landmark_motion_rigid"]["mean"] > 0


def test_fused_blend_matches_the_reference_steps():
    """The filter's one-pass kernel equals its definition: align (warp + rotate x/y), per-pixel weight, blend,
    renormalise — written with the module's own numpy/OpenCV helpers."""
    rng = np.random.default_rng(6)
    x, y = np.meshgrid(np.linspace(-0.6, 0.6, SIZE), np.linspace(0.6, -0.6, SIZE))
    base = normalize(np.stack([x, y, np.ones_like(x)]), axis=0).astype(np.float32)
    landmarks = rng.uniform(100, 200, (478, 2))
    motion = np.array([[math.cos(0.2), -math.sin(0.2), 15.0], [math.sin(0.2), math.cos(0.2), -4.0]]) * [[1.05], [1.05]]
    moved = transform_points(landmarks, motion)
    m0, m1 = crop_matrix(square_box(landmarks), SIZE), crop_matrix(square_box(moved), SIZE)
    new = normalize(base + rng.normal(0, 0.1, base.shape).astype(np.float32), axis=0).astype(np.float32)
    temporal = TemporalFilter()
    temporal.filter_face(0, base, m0, landmarks, 0.0)
    out = temporal.filter_face(0, new, m1, moved, 1 / 30)
    aligned, _ = align_previous(base, m0, landmarks, m1, moved)
    lo, hi = (math.cos(math.radians(d)) for d in TemporalParams().snap_deg)
    weight = np.clip((lo - np.einsum("chw,chw->hw", aligned, new)) / (lo - hi), 0, 1)
    alpha = temporal.last_alpha[0]
    weight = alpha + (1 - alpha) * weight
    expected = normalize(aligned + weight * (new - aligned), axis=0)
    assert 0 < alpha < 1 and (weight < 1).mean() > 0.5  # both branches of the weight are exercised
    assert float(angular_error_deg(out.transpose(1, 2, 0), expected.transpose(1, 2, 0)).max()) < 0.01


def test_fast_slow_split_tells_flicker_from_drift():
    rng = np.random.default_rng(7)
    still = np.zeros((30, 12, 12, 3), np.float32)
    still[..., 2] = 1
    valid = np.ones(still.shape[:3], bool)
    noisy = np.stack([flicker(frame.transpose(2, 0, 1), 3.0, rng).transpose(1, 2, 0) for frame in still])
    fast, slow = fast_slow(noisy, valid)
    assert fast.mean() == pytest.approx(3.0, rel=0.15) and slow.mean() < 1.5  # the 7-frame average leaves ~3/√7
    t = np.linspace(0, math.pi, 30)[:, None, None]
    drift = normalize(np.stack(np.broadcast_arrays(0.1 * np.sin(t), 0.1 * np.cos(t), np.ones_like(t)), -1)
                      * np.ones((1, 12, 12, 1), np.float32))
    fast, slow = fast_slow(drift, valid)
    assert fast.mean() < 0.5 and slow.mean() > 3.0  # half a slow swing of ±5.7°: nearly all slow


def test_benchmark_replay_gives_what_the_loop_gives():
    """The stability benchmark keeps the network's raw outputs of one pass and replays them through the filter: the
    same normals as the filter in the real loop (MediaPipe, the shipped default on ONNX Runtime), frame for frame."""
    from facenormals.benchmarks.stability import factor_poses, record_outputs, replay, synthetic_frames
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.realtime.pipeline import Pipeline

    poses = factor_poses("all", 8)
    assert {p.angle_deg for p in factor_poses("shift", 8)} == {0.0} and len({p.shift for p in factor_poses("shift", 8)}) == 8
    backend = create_backend("auto", None, threads=1)
    looped = StabilityProbe()
    detector = create_detector(1)
    try:
        Pipeline(synthetic_frames(poses), detector, backend, lambda result, stats: result.frame.rgb, live=False,
                 queue_size=2, on_result=looped, handle_signals=False, temporal=TemporalFilter()).run()
    finally:
        detector.close()
    replayed, cpu_ms, _ = replay(record_outputs(synthetic_frames(poses), backend), TemporalFilter())
    a, b = max(looped.tracks.values(), key=len), max(replayed.tracks.values(), key=len)
    assert len(a) == len(b) == 8 and len(cpu_ms) == 8 and all(ms > 0 for ms in cpu_ms)
    for x, y in zip(a, b, strict=True):
        assert x.frame_id == y.frame_id and np.allclose(x.matrix, y.matrix)
        assert np.abs(x.normals.astype(np.float32) - y.normals.astype(np.float32)).max() < 2e-3  # float16 storage
