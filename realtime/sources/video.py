"""``video:PATH``: a video file read with OpenCV (FFmpeg backend), as fast as the consumer takes frames."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo

log = logging.getLogger(__name__)


class VideoSource(Source):
    """Frames of a video file, RGB. A file that ends before its header's frame count (truncated, damaged) ends the
    stream cleanly with a warning; ``frames_read`` and ``frames_expected`` tell how far it got."""

    live = False

    def __init__(self, path: str | Path, *, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found")
        self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        # a phone's portrait clip is stored sideways with a display rotation: frames (and the size below) upright
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"{self.path}: OpenCV cannot open this video (damaged, or a codec FFmpeg lacks)")
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.frames_expected: int | None = count if count > 0 else None
        self.frames_read = 0
        self._info = SourceInfo(
            name=f"video:{self.path}",
            width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=fps if fps > 0 else None,
            has_depth=False,
            live=False,
            frame_count=self.frames_expected,
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _read(self) -> Capture | None:
        ok, bgr = self._cap.read()
        if not ok and self.loop and self.frames_read > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            self._warn_if_short()
            return None
        self.frames_read += 1
        return Capture(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _warn_if_short(self) -> None:
        expected = self.frames_expected
        if expected is not None and not self.loop and self.frames_read < expected:
            log.warning("%s: ended after %d of %d frames (file truncated or damaged)", self.path, self.frames_read, expected)

    def _release(self) -> None:
        self._cap.release()
