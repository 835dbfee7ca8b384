"""Where rendered frames go: a window, an MP4 file, a folder of per-frame normal maps.

Every sink has ``write(result, image)`` (``image`` BGR uint8, from :mod:`facenormals.realtime.render`)
and ``close()``; the pipeline closes all sinks on every exit path (end, error, Ctrl-C, SIGTERM), so
videos are always finalised. A window sets ``wants_stop`` when the user presses ``q`` or Esc.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from facenormals.fileio import write_normals
from facenormals.realtime.crops import full_normal_map
from facenormals.realtime.pipeline import FrameResult
from facenormals.realtime.render import RenderState, registered_views

log = logging.getLogger(__name__)

LIGHT_STEP_DEG = 8.0


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
    size are resized to it."""

    def __init__(self, path: str | Path, fps: float = 30.0) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"--out {self.path}: only .mp4 output is supported")
        if not fps or fps <= 0 or not np.isfinite(fps):
            raise ValueError(f"video frame rate must be positive, got {fps}")
        self.fps = float(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self._writer, self._size = writer, (width, height)

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
        os.replace(self._partial, self.path)  # the file appears complete or not at all
        log.info("wrote %s (%d frames)", self.path, self.frames)


class SaveDirSink:
    """Per-frame normal maps in frame coordinates: ``DIR/normals/{id:06d}.png`` (16-bit, 0 = no normal) or
    ``.npy`` (float32, zero outside); frames without a face are skipped."""

    def __init__(self, folder: str | Path, fmt: str = "png") -> None:
        if fmt not in ("png", "npy"):
            raise ValueError(f"--save-format must be png or npy, got {fmt!r}")
        self.folder = Path(folder) / "normals"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.frames = 0

    def write(self, result: FrameResult, image: np.ndarray) -> None:
        if not result.normals:
            return
        normals, valid = full_normal_map(result.normals, result.frame.rgb.shape[:2])
        write_normals(self.folder / f"{result.frame.id:06d}.{self.fmt}", normals, valid)
        self.frames += 1

    def close(self) -> None:
        pass


class WindowSink:
    """An OpenCV window. Keys: q/Esc quit, v next view, h HUD, w/a/s/d move the light; dragging with the
    left mouse button points the light at the cursor."""

    def __init__(self, state: RenderState, title: str = "facenormals") -> None:
        self.state, self.title = state, title
        self.wants_stop = False
        self._size = (1, 1)
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        cv2.setMouseCallback(title, self._on_mouse)

    def _on_mouse(self, event: int, x: int, y: int, flags: int, _param: object) -> None:
        if event == cv2.EVENT_LBUTTONDOWN or (event == cv2.EVENT_MOUSEMOVE and flags & cv2.EVENT_FLAG_LBUTTON):
            self.state.light_from_pointer(x, y, *self._size)

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

    v: next loaded view; h: HUD on/off; a/d: light left/right; w/s: light up/down.
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
    return False
