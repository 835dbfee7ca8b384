"""``rgbd:DIR`` on folders written by the test: registered, with extrinsics (z-buffered reprojection), TUM layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from media import decode_index, write_rgbd_folder, write_tum_folder

from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import SourceError, open_source
from facenormals.realtime.sources.rgbd_folder import TUM_INTRINSICS, RGBDFolderSource, reproject_depth


def test_registered_folder(tmp_path):
    root = write_rgbd_folder(tmp_path / "seq", frames=4)
    with open_source(f"rgbd:{root}") as source:
        assert source.has_depth and not source.live and source.info.frame_count == 4
        assert source.intrinsics == Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
        frames = list(source)
    assert [decode_index(f.rgb) for f in frames] == [0, 1, 2, 3]
    for i, f in enumerate(frames):
        assert f.depth.dtype == np.uint16 and f.depth.shape == (48, 64)
        assert f.depth[10, 10] == 1000 + 10 * i and f.depth[0, 0] == 0  # 0 stays "missing"
        assert f.depth_scale_m == 0.001 and f.id == i


def test_unregistered_folder_is_reprojected_into_colour(tmp_path):
    meta = {
        "width": 32, "height": 24, "fx": 25.0, "fy": 25.0, "cx": 15.5, "cy": 11.5, "depth_scale_m": 0.001,
        "color": {"width": 64, "height": 48, "fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5},
        "depth_to_color": {"rotation": np.eye(3).tolist(), "translation_m": [0.04, 0.0, 0.0]},
    }
    root = write_rgbd_folder(tmp_path / "seq", frames=1, intrinsics=meta)
    depth = np.full((24, 32), 2000, np.uint16)  # wall at 2 m
    depth[8:16, 8:16] = 1000  # a box at 1 m in front of it
    cv2.imwrite(str(root / "depth" / "0000.png"), depth)
    with RGBDFolderSource(root) as source:
        frame = next(iter(source))
    assert frame.intrinsics.width == 64 and frame.depth.shape == (48, 64)
    # a point at depth z moves by fx·t/z colour pixels: 2 px at 1 m, 1 px at 2 m (doubled resolution: ×2 positions)
    box_cols = np.nonzero((frame.depth == 1000).any(axis=0))[0]
    expected_first = round(50.0 * ((8 - 15.5) / 25.0 * 1.0 + 0.04) / 1.0 + 31.5)
    assert box_cols.min() == expected_first
    # z-buffer: where box and wall land on the same colour pixel, the box (nearer) wins
    wall_hidden = (frame.depth == 2000)[:, box_cols.min():box_cols.max() + 1]
    rows = np.nonzero((frame.depth == 1000).any(axis=1))[0]
    assert not wall_hidden[rows.min():rows.max() + 1].any()


def test_reprojection_keeps_the_nearest_surface():
    k = Intrinsics(8, 1, 4.0, 4.0, 3.5, 0.0)
    depth = np.array([[0, 0, 0, 2000, 1000, 0, 0, 0]], np.uint16)  # column 3 at 2 m, column 4 at 1 m
    assert reproject_depth(depth, k, k, np.eye(3), np.zeros(3), 0.001).tolist() == depth.tolist()
    # colour camera 0.5 m to the left of the depth camera: u' = u + fx·0.5/z, +1 px at 2 m, +2 px at 1 m
    apart = reproject_depth(depth, k, k, np.eye(3), np.array([0.5, 0.0, 0.0]), 0.001)
    assert apart.tolist() == [[0, 0, 0, 0, 2000, 0, 1000, 0]]
    # 0.5 m to the right: −1 px and −2 px, both land on column 2, the nearer one is kept
    collide = reproject_depth(depth, k, k, np.eye(3), np.array([-0.5, 0.0, 0.0]), 0.001)
    assert collide.tolist() == [[0, 0, 1000, 0, 0, 0, 0, 0]]


def test_tum_layout_associates_by_timestamp(tmp_path):
    root = write_tum_folder(tmp_path / "rgbd_dataset_freiburg2_desk", frames=4, width=640, height=480)
    with open_source(f"rgbd:{root}") as source:
        assert source.layout == "tum"
        assert source.intrinsics == TUM_INTRINSICS["freiburg2"]  # from the folder name
        frames = list(source)
    assert len(frames) == 4  # the extra depth frame has no colour partner within 20 ms
    for i, f in enumerate(frames):
        assert decode_index(f.rgb) == i
        assert f.depth_scale_m == pytest.approx(1 / 5000)
        assert f.depth[10, 10] == 5000 + 10 * i  # 1 m + i·2 mm
        assert f.depth[10, 10] * f.depth_scale_m == pytest.approx(1.0 + 0.002 * i)


def test_tum_frames_carry_the_sequences_own_clock(tmp_path):
    """A colour frame missing from rgb.txt leaves its gap in ``t_media_ns`` (the stamps, not index / 30 FPS)."""
    root = write_tum_folder(tmp_path / "seq", frames=4, width=640, height=480)
    listing = root / "rgb.txt"
    lines = listing.read_text().splitlines(keepends=True)
    listing.write_text("".join(line for line in lines if not line.startswith(lines[4].split()[0])))  # frame 1
    with open_source(f"rgbd:{root}") as source:
        frames = list(source)
    assert [decode_index(f.rgb) for f in frames] == [0, 2, 3]
    assert [f.t_stream_ns for f in frames] == pytest.approx([0, 2e9 / 30, 3e9 / 30], abs=2e3)  # µs stamps


def test_tum_defaults_to_freiburg1_and_honours_intrinsics_json(tmp_path):
    root = write_tum_folder(tmp_path / "seq", frames=2, width=640, height=480)
    with RGBDFolderSource(root) as source:
        assert source.intrinsics == TUM_INTRINSICS["freiburg1"]
    (root / "intrinsics.json").write_text(json.dumps({"width": 640, "height": 480, "fx": 600, "fy": 610, "cx": 320, "cy": 240}))
    with RGBDFolderSource(root) as source:
        assert source.intrinsics == Intrinsics(640, 480, 600.0, 610.0, 320.0, 240.0)
        assert next(iter(source)).depth_scale_m == pytest.approx(1 / 5000)


def test_validation_errors_are_clear(tmp_path):
    root = write_rgbd_folder(tmp_path / "a", frames=2)
    (root / "intrinsics.json").unlink()
    with pytest.raises(SourceError, match=r"intrinsics\.json: missing"):
        open_source(f"rgbd:{root}")

    root = write_rgbd_folder(tmp_path / "b", frames=3)
    (root / "depth" / "0002.png").unlink()
    with pytest.raises(SourceError, match="3 colour images but 2 depth images"):
        open_source(f"rgbd:{root}")

    root = write_rgbd_folder(tmp_path / "c", frames=2)
    cv2.imwrite(str(root / "depth" / "0001.png"), np.full((48, 64), 200, np.uint8))  # 8-bit depth
    with RGBDFolderSource(root) as source, pytest.raises(SourceError, match=r"0001\.png: depth must be single-channel 16-bit"):
        list(source)

    root = write_rgbd_folder(tmp_path / "d", frames=1)
    cv2.imwrite(str(root / "color" / "0000.png"), np.full((48, 64, 3), 300, np.uint16))
    with RGBDFolderSource(root) as source, pytest.raises(SourceError, match="colour must be 8-bit"):
        list(source)

    root = write_rgbd_folder(tmp_path / "e", frames=1)
    (root / "intrinsics.json").write_text(json.dumps({"width": 64, "height": 48, "fx": 50, "fy": 50, "cx": 31.5}))
    with pytest.raises(SourceError, match="missing cy"):
        open_source(f"rgbd:{root}")

    root = write_rgbd_folder(tmp_path / "f", frames=1, intrinsics={"width": 80, "height": 60, "fx": 50, "fy": 50,
                                                                    "cx": 40, "cy": 30, "depth_scale_m": 0.001})
    with RGBDFolderSource(root) as source, pytest.raises(SourceError, match="64x48 but the depth intrinsics say 80x60"):
        list(source)

    (tmp_path / "g").mkdir()
    with pytest.raises(SourceError, match="expected color/"):
        open_source(f"rgbd:{tmp_path / 'g'}")
