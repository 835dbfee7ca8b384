"""``images:DIR``: the images of a folder in sorted name order; unreadable files are skipped, counted and logged."""

from __future__ import annotations

import logging
from pathlib import Path

from facenormals.fileio import DataError, read_rgb
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolderSource(Source):
    """Each image file of ``folder`` (not recursive) once, sorted by name. ``skipped`` lists the unreadable ones."""

    live = False

    def __init__(self, folder: str | Path, *, fps: float | None = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: image folder not found")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise SourceError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.skipped: list[Path] = []
        self._index = 0
        first = self._next_image()  # read eagerly: the size is known before the first frame is asked for
        if first is None:
            raise SourceError(f"{self.folder}: none of the {len(self.paths)} images could be read")
        self._pending: Capture | None = Capture(rgb=first)
        self._info = SourceInfo(
            name=f"images:{self.folder}",
            width=first.shape[1],
            height=first.shape[0],
            fps=fps,
            has_depth=False,
            live=False,
            frame_count=len(self.paths),
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _next_image(self):
        while self._index < len(self.paths):
            path = self.paths[self._index]
            self._index += 1
            try:
                return read_rgb(path)
            except DataError as err:
                self.skipped.append(path)
                log.warning("skipping %s (%d skipped so far)", err, len(self.skipped))
        return None

    def _read(self) -> Capture | None:
        if self._pending is not None:
            capture, self._pending = self._pending, None
            return capture
        rgb = self._next_image()
        return None if rgb is None else Capture(rgb=rgb)
