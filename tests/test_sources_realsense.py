"""RealSense playback through pyrealsense2's real pipeline, on recordings made in the test by the SDK's recorder
(``rs.software_device`` + ``rs.recorder``): frames, depth alignment to colour, intrinsics and depth scale."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from media import decode_index, indexed_frame, record_realsense

from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import SourceError, open_source
from facenormals.realtime.sources.realsense import RealSenseSource, import_pyrealsense2
from facenormals.realtime.sources.realsense_recorder import record_source
from facenormals.realtime.sources.rgbd_folder import reproject_depth

pytestmark = pytest.mark.realsense

COLOUR_K = (50.0, 50.0, 31.5, 23.5)  # 64×48 colour
DEPTH_K = (26.0, 26.0, 16.0, 12.5)  # 32×24 depth, slightly different field of view and centre
UNITS = 0.0001  # 0.1 mm per unit, as D400 in high-accuracy setups: proves the scale comes from the file
TX = 0.015  # depth camera 15 mm beside the colour camera


@pytest.fixture(scope="module")
def rs():
    try:
        return import_pyrealsense2()
    except SourceError as err:
        pytest.skip(str(err))


def step_depth(index: int) -> np.ndarray:
    """A near box (0.5 m) on the left over a far wall (0.9 m), the box edge moving one column per frame."""
    depth = np.full((24, 32), round(0.9 / UNITS), np.uint16)
    depth[:, : 10 + index] = round(0.5 / UNITS)
    depth[0, 0] = 0
    return depth


def _take(tmp_path_factory: pytest.TempPathFactory, frames: int) -> Path:
    """A recording of ``frames`` indexed colour frames over the moving depth step."""
    path = tmp_path_factory.mktemp("rs") / "take.db3"
    colour = [indexed_frame(i) for i in range(frames)]
    depth = [step_depth(i) for i in range(frames)]
    return record_realsense(path, colour, depth, COLOUR_K, DEPTH_K, depth_units_m=UNITS, translation_m=(TX, 0.0, 0.0))


@pytest.fixture(scope="module")
def recording(rs, tmp_path_factory):
    return _take(tmp_path_factory, 8)


def test_playback_frames_intrinsics_and_scale(recording):
    with open_source(f"realsense:{recording}") as source:
        assert isinstance(source, RealSenseSource)
        assert not source.live and source.has_depth and source.size == (64, 48)
        assert source.intrinsics == Intrinsics(64, 48, *COLOUR_K)
        frames = list(source)
    indices = [decode_index(f.rgb) for f in frames]
    # every colour frame once, in order; the SDK's syncer may keep the file's last frameset
    assert indices == list(range(len(frames))) and len(frames) >= 7
    assert [f.id for f in frames] == list(range(len(frames)))
    assert all(b.t_capture_ns > a.t_capture_ns for a, b in itertools.pairwise(frames))
    for f in frames:
        assert f.depth.dtype == np.uint16 and f.depth.shape == (48, 64)  # aligned to colour
        assert f.depth_scale_m == pytest.approx(UNITS, rel=1e-6)
        assert f.intrinsics == source.intrinsics
        assert np.array_equal(f.rgb, indexed_frame(decode_index(f.rgb)))  # uncompressed recording: exact pixels


def test_alignment_matches_an_independent_reprojection(recording):
    with RealSenseSource(file=recording) as source:
        frames = list(source)
    depth_k = Intrinsics(32, 24, *DEPTH_K)
    colour_k = Intrinsics(64, 48, *COLOUR_K)

    def agreement(f, depth_index: int) -> float:
        expected = reproject_depth(step_depth(depth_index), depth_k, colour_k, np.eye(3), np.array([TX, 0, 0]), UNITS)
        both = (f.depth > 0) & (expected > 0)
        assert both.mean() > 0.2  # depth at half resolution: the point projection leaves gaps rs.align fills
        return float(np.mean(f.depth[both] == expected[both]))

    for f in frames:
        # the SDK's syncer pairs each colour frame with the depth frame nearest in time, which on a loaded machine
        # may be another one (seen: two frames apart, and most frames of a run while the suite shared 2 cores with a
        # training run): alignment is judged against the depth frame the set carries, pairing is the syncer's timing
        depth_index = max(range(8), key=lambda i: agreement(f, i))
        assert agreement(f, depth_index) > 0.9  # same surface everywhere but on the edge
        # the box edge moved by the baseline: colour column of the 0.5 m / 0.9 m boundary
        near_cols = np.nonzero((f.depth == round(0.5 / UNITS)).any(axis=0))[0]
        edge_depth_px = 10 + depth_index - 0.5
        x = (edge_depth_px - DEPTH_K[2]) / DEPTH_K[0] * 0.5 + TX
        assert abs(near_cols.max() - (COLOUR_K[0] * x / 0.5 + COLOUR_K[2])) <= 1.5


def test_file_as_an_option(recording):
    # the option's routing; how many frames the SDK's pipeline hands over is test_playback_frames_intrinsics_and_scale's
    # (under heavy load its non-real-time playback has been seen to lose colour frames: 1 of 8 once)
    with open_source("realsense", file=recording) as source:
        frames = list(source)
    assert isinstance(source, RealSenseSource) and not source.live and source.file == recording
    assert frames and all(f.rgb.shape == (48, 64, 3) and f.depth is not None for f in frames)


@pytest.fixture(scope="module")
def long_recording(rs, tmp_path_factory):
    """24 frames (the indices' period), three times the shared take: real-time playback drops frames when the reader
    is slow, and a loaded machine once got none of the 8-frame take."""
    return _take(tmp_path_factory, 24)


def test_real_time_playback_is_live(long_recording):
    with RealSenseSource(file=long_recording, real_time=True) as source:
        assert source.live
        frames = list(source)
    indices = [decode_index(f.rgb) for f in frames]
    assert frames and indices == sorted(set(indices)), indices  # may drop, never repeats or reorders


def test_errors(rs, tmp_path):
    with pytest.raises(SourceError, match=r"missing\.bag: RealSense recording not found"):
        open_source(f"realsense:{tmp_path / 'missing.bag'}")
    with pytest.raises(SourceError, match="option"):
        open_source(f"realsense:{tmp_path / 'missing.bag'}", exposure=3)
    with pytest.raises(SourceError, match=r"does not take option\(s\) file"):
        open_source(f"realsense:{tmp_path / 'a.bag'}", file="b.bag")  # the spec already names the file
    if len(rs.context().query_devices()) == 0:
        with pytest.raises(SourceError, match="no RealSense camera connected"):
            open_source("realsense")


def test_sample_rgbd_round_trip(rs, tmp_path):
    """The embedded RGB-D sample, recorded and played back: registered depth comes back unchanged through rs.align."""
    path = record_source("sample-rgbd", tmp_path / "sample.db3", 3, frames=3, width=160, height=120)
    with open_source("sample-rgbd", frames=3, width=160, height=120) as reference:
        expected = list(reference)
    with open_source(str(path)) as played:  # a bare .db3 path
        k, ref = played.intrinsics, reference.intrinsics
        assert (k.width, k.height) == (ref.width, ref.height)
        assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx((ref.fx, ref.fy, ref.cx, ref.cy), rel=1e-6)  # SDK stores float32
        frames = list(played)
    assert len(frames) >= 2
    for got, want in zip(frames, expected, strict=False):
        assert np.array_equal(got.rgb, want.rgb)
        assert got.depth_scale_m == pytest.approx(0.001)
        # the SDK's syncer may pair a colour frame with a neighbouring depth frame under load (as in the alignment
        # test): the depth must come back unchanged, whichever recorded frame it is
        assert max(np.mean(got.depth == other.depth) for other in expected) > 0.98
    with pytest.raises(ValueError, match=r"\.db3"):
        record_source("sample-rgbd", tmp_path / "x.bag", 1, frames=1)
