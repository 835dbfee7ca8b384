"""Webcam source and reconnect-with-backoff, driven by real OpenCV captures.

No camera exists on CI, so the reconnect loop runs on ``stream:PATH`` (a cv2.VideoCapture on a video file): at
the end of the file a read fails exactly as an unplugged camera's does, the file is deleted so reopening fails,
and restored so a later attempt succeeds.
"""

from __future__ import annotations

import threading

import pytest
from media import decode_index, write_video

from facenormals.realtime.sources.base import SourceError, open_source
from facenormals.realtime.sources.reconnect import Backoff
from facenormals.realtime.sources.webcam import WebcamSource, webcam_available


def test_stream_reconnects_after_failure(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=4)
    with WebcamSource(str(path), backoff=Backoff(initial_s=0.01, max_attempts=3)) as source:
        assert source.live and source.size == (64, 48)
        frames = [f for _, f in zip(range(10), source, strict=False)]
        # 4 frames, the read fails, the capture is reopened, 4 more, again: ids keep increasing across reconnects
        assert [decode_index(f.rgb) for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
        assert [f.id for f in frames] == list(range(10))
        assert source.failures == 2 and source.reconnects == 2


def test_stream_gives_up_when_the_device_stays_gone(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=3)
    backoff = Backoff(initial_s=0.01, factor=2.0, max_delay_s=0.03, max_attempts=4)
    source = WebcamSource(str(path), backoff=backoff)
    stream = iter(source)
    got = [next(stream) for _ in range(3)]
    path.unlink()  # the "camera" disappears
    with pytest.raises(SourceError, match=r"cam\.avi.*lost; 4 reconnect attempts failed"):
        next(stream)
    stats = source.reconnect_stats
    assert stats.failures == 1 and stats.attempts == 4 and stats.reconnects == 0
    assert stats.waits_s == [0.01, 0.02, 0.03, 0.03]  # exponential, capped
    assert len(got) == 3
    source.close()


def test_stream_comes_back_when_the_device_returns(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=3)
    data = path.read_bytes()
    source = WebcamSource(str(path), backoff=Backoff(initial_s=0.02, max_attempts=8))
    stream = iter(source)
    for _ in range(3):
        next(stream)
    path.unlink()
    restore = threading.Timer(0.1, path.write_bytes, args=(data,))
    restore.start()
    frame = next(stream)  # blocks through failed attempts until the file is back
    restore.join()
    assert decode_index(frame.rgb) == 0 and frame.id == 3
    assert source.reconnect_stats.attempts >= 2 and source.reconnects == 1
    source.close()


def test_stop_interrupts_a_reconnect_wait(tmp_path):
    path = write_video(tmp_path / "cam.avi", frames=2)
    source = WebcamSource(str(path), backoff=Backoff(initial_s=30.0, max_attempts=2))
    stream = iter(source)
    next(stream), next(stream)
    path.unlink()
    threading.Timer(0.05, source.stop).start()
    assert list(stream) == []  # ends cleanly instead of waiting 30 s
    source.close()


def test_a_stale_first_frame_is_not_handed_out(tmp_path):
    from facenormals.realtime.sources.webcam import STALE_FIRST_FRAME_NS

    path = write_video(tmp_path / "cam.avi", frames=4)
    with WebcamSource(str(path)) as source:  # the first frame is read at open time
        threading.Event().wait(STALE_FIRST_FRAME_NS / 1e9 + 0.1)  # e.g. a model loading before the loop starts
        first = next(iter(source))
    assert decode_index(first.rgb) == 1 and first.id == 0


def test_missing_camera_fails_at_open_and_releases():
    with pytest.raises(SourceError, match="webcam:63: cannot open"):
        open_source("webcam:63")
    with pytest.raises(SourceError, match="camera index"):
        open_source("webcam:front")


def test_real_webcam_when_present():
    if not webcam_available(0):
        pytest.skip("no camera at index 0")
    with open_source("webcam:0", width=640, height=480, fps=30) as source:
        frames = [f for _, f in zip(range(5), source, strict=False)]
    assert len(frames) == 5 and frames[0].rgb.ndim == 3
