"""``images:DIR``: the images of a folder in sorted name order; unreadable files are skipped, counted and logged."""

from __future__ import annotations

import logging
from pathlib import Path

from facenormals.fileio import DataError, read_rgb
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolderSource(Source):
    """Each image file of ``folder`` (not recursive) once, sorted by name. ``skipped`` lists the unreadable ones.

    The images are unrelated stills, not a video (``still_images``): detect each on its own, no tracking.
    ``name_of(frame_id)`` is the input file a frame came from (its stem; the full name where two stems
    collide), so outputs are named after inputs and a skipped file shifts nothing.
    """

    live = False
    still_images = True

    def __init__(self, folder: str | Path, *, fps: float | None = None) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: image folder not found")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise SourceError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.skipped: list[Path] = []
        stems = [p.stem for p in self.paths]
        self._names = {p: p.stem if stems.count(p.stem) == 1 else p.name for p in self.paths}
        self._frame_names: dict[int, str] = {}
        self._index = 0
        first = self._next_image()  # read eagerly: the size is known before the first frame is asked for
        if first is None:
            raise SourceError(f"{self.folder}: none of the {len(self.paths)} images could be read")
        self._pending: Capture | None = Capture(rgb=first)
        self._frame_names[0] = self._names[self.paths[self._index - 1]]
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
        if rgb is None:
            return None
        self._frame_names[self._next_id] = self._names[self.paths[self._index - 1]]  # the id this frame gets
        return Capture(rgb=rgb)

    def name_of(self, frame_id: int) -> str:
        """The input file (stem) of frame ``frame_id``."""
        return self._frame_names[frame_id]
