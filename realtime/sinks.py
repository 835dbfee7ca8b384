"""Where rendered frames go: a window, an MP4 file, a folder of per-frame normal maps.

Every sink has ``write(result, image)`` (``image`` BGR uint8, from :mod:`facenormals.realtime.render`)
and ``close()``; the pipeline closes all sinks on every exit path (end, error, Ctrl-C, SIGTERM), so
videos are always finalised. A window sets ``wants_stop`` when the user presses ``q`` or Esc.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facenormals.crops import full_normal_map
from facenormals.engine import FrameResult
from facenormals.fileio import write_normals
from facenormals.realtime.render import RenderState, registered_views

log = logging.getLogger(__name__)

LIGHT_STEP_DEG = 8.0
TURN_PER_PX_DEG = 0.5  # --view 3d: degrees the mesh turns per pixel of a right-button drag
MP4V_MAX_SIDE = 8191  # MPEG-4 Part 2 stores width and height in 13 bits
MAP_SUFFIXES = (".png", ".npy")


def has_display() -> bool:
    """True when an OpenCV window can open: a GUI build and, on Linux, an X11/Wayland display."""
    gui = any(line.strip().startswith("GUI:") and not line.strip().endswith("NONE")
              for line in cv2.getBuildInformation().splitlines())
    if not gui:
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class VideoSink:
    """MP4 (``mp4v``) written to a hidden partial file, renamed to ``path`` on close: a file at ``path``
    is always complete and playable. The size is taken from the first frame; later frames of another
    size are resized to it. ``finished`` is True once ``path`` holds the video."""

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"--out {self.path}: only .mp4 output is supported")
        if not fps or fps <= 0 or not np.isfinite(fps):
            raise ValueError(f"video frame rate must be positive, got {fps}")
        if self.path.is_dir():
            raise ValueError(f"--out {self.path}: is a folder; give a file name ending in .mp4")
        self.fps = float(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        self.finished = False

    def _new_writer(self, width: int, height: int) -> cv2.VideoWriter:
        if max(width, height) > MP4V_MAX_SIDE:
            raise OSError(f"--out {self.path}: frames of {width}×{height} are too large for an MPEG-4 (mp4v) video, "
                          f"which allows at most {MP4V_MAX_SIDE} pixels a side; use a smaller source or --save-dir")
        writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            writer.release()
            self._partial.unlink(missing_ok=True)
            raise OSError(f"--out {self.path}: OpenCV cannot write a {width}×{height} mp4v video to "
                          f"{self._partial.parent} (folder not writable, or the size is not supported)")
        return writer

    def check(self, width: int, height: int) -> None:
        """Open and discard a writer of this size: a run fails before its first frame, not on it."""
        self._new_writer(width, height).release()
        self._partial.unlink(missing_ok=True)

    def _open(self, width: int, height: int) -> None:
        self._writer, self._size = self._new_writer(width, height), (width, height)

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if self._writer is None:
            self._open(width, height)
        if (width, height) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        try:
            os.replace(self._partial, self.path)  # the file appears complete or not at all
        except OSError as err:
            raise OSError(f"--out {self.path}: could not move the finished video into place ({err.strerror or err}); "
                          f"its {self.frames} frames are in {self._partial}") from err
        self.finished = True
        log.info("wrote %s (%d frames)", self.path, self.frames)


def frame_number(result: FrameResult) -> str:
    return f"{result.frame.id:06d}"


class SaveDirSink:
    """Per-frame normal maps in frame coordinates: ``DIR/normals/{name}.png`` (16-bit, 0 = no normal) or
    ``.npy`` (float32, zero outside); frames without a face are skipped. ``name`` is the frame id (6 digits)
    unless ``name_of`` gives one (an image folder names each map after its input file).

    Maps of an earlier run in the folder are refused (they would mix with this run's) unless
    ``overwrite``, which removes them first; ``replaced`` counts them."""

    def __init__(self, folder: str | Path, fmt: str = "png", *, overwrite: bool = False,
                 name_of: Callable[[FrameResult], str] = frame_number) -> None:
        if fmt not in ("png", "npy"):
            raise ValueError(f"--save-format must be png or npy, got {fmt!r}")
        self.folder = Path(folder) / "normals"
        self.replaced = clear_output_folder(Path(folder), self.folder, stale_maps, "--save-dir", "normal maps", overwrite)
        self.fmt, self.name_of = fmt, name_of
        self.frames = 0

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        if not result.normals:
            return
        normals, valid = full_normal_map(result.normals, result.frame.rgb.shape[:2])
        write_normals(self.folder / f"{self.name_of(result)}.{self.fmt}", normals, valid)
        self.frames += 1

    def close(self) -> None:
        pass


def clear_output_folder(given: Path, folder: Path, stale: Callable[[Path], list[Path]], option: str, what: str,
                        overwrite: bool) -> int:
    """Create ``folder`` (inside the ``given`` one); an earlier run's outputs there are refused unless ``overwrite``,
    then removed. Returns how many were removed."""
    if given.exists() and not given.is_dir():
        raise ValueError(f"{option} {given}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    old = stale(folder)
    if old and not overwrite:
        raise ValueError(f"{option} {given}: {folder} already holds {len(old)} {what} from an earlier run; pass "
                         "--overwrite to remove them first, or choose another folder")
    for path in old:
        path.unlink()
    return len(old)


def stale_maps(folder: Path) -> list[Path]:
    """The normal maps (``.png``/``.npy``) already in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MAP_SUFFIXES)


class WindowSink:
    """An OpenCV window. Keys: q/Esc quit, v next view, h HUD, w/a/s/d move the light, j/l/i/k turn the 3-D
    view; dragging with the left mouse button points the light at the cursor, with the right one turns the 3-D view."""

    def __init__(self, state: RenderState, title: str = "facenormals") -> None:
        self.state, self.title = state, title
        self.wants_stop = False
        self._size = (1, 1)
        self._drag: tuple[int, int] | None = None  # the pointer at the last right-button event
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        cv2.setMouseCallback(title, self._on_mouse)

    def _on_mouse(self, event: int, x: int, y: int, flags: int, _param: object) -> None:
        if event == cv2.EVENT_LBUTTONDOWN or (event == cv2.EVENT_MOUSEMOVE and flags & cv2.EVENT_FLAG_LBUTTON):
            self.state.light_from_pointer(x, y, *self._size)
        elif event == cv2.EVENT_MOUSEMOVE and flags & cv2.EVENT_FLAG_RBUTTON and self._drag is not None:
            self.state.turn_view(TURN_PER_PX_DEG * (x - self._drag[0]), TURN_PER_PX_DEG * (y - self._drag[1]))
        self._drag = (x, y) if flags & cv2.EVENT_FLAG_RBUTTON or event == cv2.EVENT_RBUTTONDOWN else None

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        self._size = (image.shape[1], image.shape[0])
        cv2.imshow(self.title, image)
        self.handle_key(cv2.waitKey(1) & 0xFF)
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.wants_stop = True  # closed with the window manager's button

    def handle_key(self, key: int) -> None:
        if apply_key(self.state, key):
            self.wants_stop = True

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


def apply_key(state: RenderState, key: int) -> bool:
    """A window key press applied to the render state; True when it asks to quit (q or Esc).

    v: next loaded view; h: HUD on/off; a/d: light left/right; w/s: light up/down; j/l, i/k: turn the 3-D view.
    """
    if key in (ord("q"), 27):
        return True
    if key == ord("v"):
        names = registered_views()
        position = names.index(state.view) if state.view in names else -1
        state.view = names[(position + 1) % len(names)]
    elif key == ord("h"):
        state.show_hud = not state.show_hud
    elif key in (ord("a"), ord("d")):
        state.move_light(LIGHT_STEP_DEG if key == ord("d") else -LIGHT_STEP_DEG, 0.0)
    elif key in (ord("w"), ord("s")):
        state.move_light(0.0, LIGHT_STEP_DEG if key == ord("w") else -LIGHT_STEP_DEG)
    elif key in (ord("j"), ord("l")):
        state.turn_view(LIGHT_STEP_DEG if key == ord("l") else -LIGHT_STEP_DEG, 0.0)
    elif key in (ord("i"), ord("k")):
        state.turn_view(0.0, LIGHT_STEP_DEG if key == ord("k") else -LIGHT_STEP_DEG)
    return False
