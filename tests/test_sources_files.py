"""File-like sources on media written by the test: video, image folder, the embedded sample; spec parsing."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
from media import decode_index, truncate, write_image_folder, write_sideways_video, write_video

from facenormals.realtime.sources.base import SourceError, open_source, parse_spec
from facenormals.realtime.sources.images import ImageFolderSource
from facenormals.realtime.sources.sample import render_sample_rgb
from facenormals.realtime.sources.video import VideoSource


def test_video_frames_in_order_with_ids_and_times(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=12)
    with open_source(f"video:{path}") as source:
        assert not source.live
        assert source.size == (64, 48)
        assert source.fps == pytest.approx(30.0)
        assert source.info.frame_count == 12
        frames = list(source.frames())
    assert [decode_index(f.rgb) for f in frames] == list(range(12))
    assert [f.id for f in frames] == list(range(12))
    stamps = [f.t_capture_ns for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert frames[0].rgb.dtype == np.uint8 and frames[0].rgb.shape == (48, 64, 3)
    assert frames[0].depth is None


def test_video_is_rgb_not_bgr(tmp_path):
    import cv2

    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for _ in range(3):
        writer.write(np.dstack([np.zeros((32, 32)), np.zeros((32, 32)), np.full((32, 32), 250)]).astype(np.uint8))  # BGR red
    writer.release()
    with open_source(str(path)) as source:  # a bare path with a video suffix
        rgb = next(iter(source)).rgb
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 40


def test_a_phone_video_stored_sideways_is_read_upright(tmp_path):
    # phones store portrait clips as landscape frames plus a display rotation; a face lying on its side would go
    # through detection, the fit and the network a quarter turn off
    upright = [render_sample_rgb(i, 240, 320) for i in range(0, 8, 2)]  # portrait frames of the sample's real face
    path = write_sideways_video(tmp_path / "portrait.mp4", upright)
    with open_source(f"video:{path}") as source:
        assert source.size == (240, 320)
        frames = [f.rgb for f in source]
    assert len(frames) == len(upright)
    for got, want in zip(frames, upright, strict=True):
        assert got.shape == want.shape
        error = np.abs(got.astype(np.int16) - want).mean()
        assert error < 8, f"mean error {error:.1f} grey levels against the upright frame"
        assert np.abs(np.rot90(got, 2).astype(np.int16) - want).mean() > 5 * error  # upright, not upside down


def test_truncated_video_ends_cleanly_with_a_warning(tmp_path, caplog):
    path = truncate(write_video(tmp_path / "cut.avi", frames=20), 0.7)  # 0.5 would cut into the AVI header
    with caplog.at_level(logging.WARNING), VideoSource(path) as source:
        frames = list(source)
    assert 0 < len(frames) < 20
    assert [decode_index(f.rgb) for f in frames] == list(range(len(frames)))
    assert source.frames_read == len(frames)
    assert "truncated" in caplog.text and "cut.avi" in caplog.text


def test_video_errors_name_the_file(tmp_path):
    with pytest.raises(SourceError, match=r"missing\.mp4"):
        open_source(f"video:{tmp_path / 'missing.mp4'}")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        open_source(str(junk))


def test_video_loop_repeats(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=3)
    with VideoSource(path, loop=True) as source:
        frames = [f for _, f in zip(range(7), source, strict=False)]
    assert [decode_index(f.rgb) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.id for f in frames] == list(range(7))
    # the file's clock runs on through the loop (a motion filter must never see time go back)
    assert [f.t_stream_ns for f in frames] == [round(i * 1e9 / 30.0) for i in range(7)]


def test_file_frames_carry_the_files_clock_and_cameras_their_capture_clock(tmp_path):
    """Motion filters follow ``t_stream_ns``: a file's frame times (index / rate, however slowly it is read), a
    camera's capture times; a folder without a rate falls back to the capture clock."""
    with open_source(f"video:{write_video(tmp_path / 'clip.avi', frames=4)}") as source:
        frames = list(source)
    assert [f.t_media_ns for f in frames] == [round(i * 1e9 / 30.0) for i in range(4)]
    assert all(f.t_stream_ns == f.t_media_ns for f in frames)
    with open_source("sample", frames=3, width=64, height=48, fps=200.0, real_time=True) as source:
        live = list(source)
    assert all(f.t_media_ns is None and f.t_stream_ns == f.t_capture_ns for f in live)
    folder = write_image_folder(tmp_path / "frames", 3)
    with ImageFolderSource(folder) as source:
        assert [f.t_media_ns for f in source] == [None] * 3
    with ImageFolderSource(folder, fps=10.0) as source:
        assert [f.t_media_ns for f in source] == [0, 100_000_000, 200_000_000]


def test_image_folder_skips_corrupt_frames(tmp_path, caplog):
    folder = write_image_folder(tmp_path / "imgs", frames=6, corrupt=(2, 4))
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    with caplog.at_level(logging.WARNING), open_source(f"images:{folder}") as source:
        assert isinstance(source, ImageFolderSource)
        assert source.size == (64, 48)
        frames = list(source)
    assert [decode_index(f.rgb) for f in frames] == [0, 1, 3, 5]
    assert [f.id for f in frames] == [0, 1, 2, 3]
    assert [p.name for p in source.skipped] == ["002.png", "004.png"]
    assert "002.png" in caplog.text and "004.png" in caplog.text


def test_image_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        open_source(f"images:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(f"images:{tmp_path / 'empty'}")
    folder = write_image_folder(tmp_path / "bad", frames=2, corrupt=(0, 1))
    with pytest.raises(SourceError, match="none of the 2"):
        open_source(f"images:{folder}")


def test_sample_is_deterministic_and_moves():
    options = {"frames": 12, "width": 160, "height": 120}
    with open_source("sample", **options) as a, open_source("sample", **options) as b:
        first, second = list(a), list(b)
    assert len(first) == 12 and first[-1].id == 11
    assert all(np.array_equal(x.rgb, y.rgb) for x, y in zip(first, second, strict=True))
    assert first[0].rgb.shape == (120, 160, 3)
    # head motion and lighting: consecutive frames differ, and the clip is not one static picture
    diffs = [np.abs(x.rgb.astype(int) - y.rgb.astype(int)).mean() for x, y in itertools.pairwise(first)]
    assert min(diffs) > 1.0
    assert a.intrinsics is not None and a.intrinsics.width == 160


def test_sample_shows_a_face_mediapipe_finds():
    import mediapipe as mp

    with open_source("sample", frames=30) as source:
        frames = list(source)
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        found = [bool(detector.process(f.rgb).detections) for f in frames[::10]]
    assert all(found)


def test_spec_parsing_and_option_checking(tmp_path):
    assert parse_spec("webcam").arg is None
    assert parse_spec("rec.db3").kind == "realsense"
    assert parse_spec("kinect:take.mkv").kind == "kinect"
    with pytest.raises(SourceError, match="unknown source"):
        parse_spec("telescope:1")
    with pytest.raises(SourceError, match="nothing after"):
        parse_spec("video:")
    with pytest.raises(SourceError, match=r"accepts: .*frames"):
        open_source("sample", colour="blue")


def test_image_removed_mid_stream_is_skipped(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", frames=4)
    with open_source(f"images:{folder}") as source:
        stream = iter(source)
        first = next(stream)
        (folder / "002.png").unlink()  # disappears after the listing, before it is read
        rest = list(stream)
    assert [decode_index(f.rgb) for f in [first, *rest]] == [0, 1, 3]
    assert [p.name for p in source.skipped] == ["002.png"]


def test_stop_ends_a_stream_from_another_thread(tmp_path):
    import threading

    path = write_video(tmp_path / "clip.avi", frames=3)
    with VideoSource(path, loop=True) as source:
        seen = []
        for frame in source:
            seen.append(frame)
            if len(seen) == 5:
                threading.Thread(target=source.stop).start()
                threading.Event().wait(0.05)
        assert 5 <= len(seen) <= 6  # the frame being read when stop() came may still be delivered


def test_sample_real_time_behaves_like_a_camera():
    with open_source("sample", frames=3, width=64, height=48, fps=200.0, real_time=True) as source:
        assert source.live and source.info.live
        assert len(list(source)) == 3
    with open_source("sample", frames=3, width=64, height=48) as source:
        assert not source.live
