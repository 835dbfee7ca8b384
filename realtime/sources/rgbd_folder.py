"""``rgbd:DIR``: recorded RGB-D sequences from any sensor (Kinect v1/v2, RealSense exports, …), in two layouts.

Plain layout::

    DIR/color/*.png|jpg     8-bit colour
    DIR/depth/*.png         16-bit depth, 0 = missing; paired with colour by sorted name (counts must match)
    DIR/intrinsics.json     the depth camera: {"width", "height", "fx", "fy", "cx", "cy", "depth_scale_m"}
                            optional "color": {"width", "height", "fx", "fy", "cx", "cy"[, "distortion"]} and
                            "depth_to_color": {"rotation": 3×3, "translation_m": [x, y, z]} (p_color = R·p_depth + t)

Without "color" the depth is taken as registered to colour (same pixels, same size). With it, each depth pixel is
back-projected, moved into the colour camera and projected there, nearest surface winning (z-buffer): the frame's
depth is then aligned to ``rgb`` as everywhere else in the pipeline. Lens distortion is not modelled (rectified
images are assumed); colour distortion coefficients are passed on in the frame's intrinsics.

TUM RGB-D layout (detected by ``rgb.txt``): ``rgb/``, ``depth/``, ``rgb.txt`` and ``depth.txt`` (``timestamp path``
lines), frames associated by nearest timestamp within ``max_dt_s`` (TUM's associate.py rule), depth 5000 units per
metre, registered to colour by the Kinect driver. Intrinsics: ``intrinsics.json`` when present, else the published
calibration of the sequence's Kinect (freiburg1/2/3 from the folder name; freiburg1 by default).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import Capture, Source, SourceError, SourceInfo

log = logging.getLogger(__name__)

TUM_DEPTH_SCALE_M = 1.0 / 5000.0
# Published TUM RGB-D colour calibrations (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats).
TUM_INTRINSICS = {
    "freiburg1": Intrinsics(640, 480, 517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "freiburg2": Intrinsics(640, 480, 520.9, 521.0, 325.1, 249.7, (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "freiburg3": Intrinsics(640, 480, 535.4, 539.2, 320.1, 247.6),
}
COLOUR_SUFFIXES = (".png", ".jpg", ".jpeg")
REQUIRED_KEYS = ("width", "height", "fx", "fy", "cx", "cy")


@dataclass(frozen=True)
class RGBDCalibration:
    """Depth camera intrinsics and scale; colour intrinsics and depth→colour pose when not registered."""

    depth: Intrinsics
    depth_scale_m: float
    colour: Intrinsics | None = None
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation_m: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def registered(self) -> bool:
        return self.colour is None

    @property
    def frame_intrinsics(self) -> Intrinsics:
        """Intrinsics of the frames this calibration yields (depth is aligned to colour)."""
        return self.colour if self.colour is not None else self.depth


def _number(meta: dict, key: str, where: str) -> float:
    """``meta[key]`` as a finite float, or SourceError naming the file, the key and the value."""
    value = meta[key]
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise SourceError(f"{where}: {key} must be a number, got {json.dumps(value)}") from None
    if not np.isfinite(number):
        raise SourceError(f"{where}: {key} must be finite, got {value}")
    return number


def _matrix(value: object, shape: tuple[int, ...], key: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        raise SourceError(f"{where}: depth_to_color {key} must be {'×'.join(map(str, shape))} numbers, "
                          f"got {json.dumps(value, default=str)}")
    return array


def _intrinsics(meta: object, where: str) -> Intrinsics:
    if not isinstance(meta, dict):
        raise SourceError(f"{where}: expected a JSON object with {', '.join(REQUIRED_KEYS)}, got {json.dumps(meta)}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise SourceError(f"{where}: missing {', '.join(missing)} (needs {', '.join(REQUIRED_KEYS)})")
    values = {k: _number(meta, k, where) for k in REQUIRED_KEYS}
    coefficients = meta.get("distortion", [])
    if not isinstance(coefficients, list):
        raise SourceError(f"{where}: distortion must be a list of numbers, got {json.dumps(coefficients)}")
    distortion = tuple(_number({"distortion": c}, "distortion", where) for c in coefficients)
    if values["width"] < 1 or values["height"] < 1 or values["fx"] <= 0 or values["fy"] <= 0:
        raise SourceError(f"{where}: width/height/fx/fy must be positive, got {meta}")
    return Intrinsics(int(values["width"]), int(values["height"]), values["fx"], values["fy"], values["cx"], values["cy"],
                      distortion)


def load_calibration(path: Path, default_scale_m: float | None = None) -> RGBDCalibration:
    """Read and validate ``intrinsics.json`` (schema in the module docstring); errors name the file and the key."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise SourceError(f"{path}: missing; write the depth camera's {', '.join(REQUIRED_KEYS)}, depth_scale_m") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: not valid JSON ({err})") from err
    depth = _intrinsics(meta, str(path))
    if meta.get("depth_scale_m", default_scale_m) is None:
        raise SourceError(f"{path}: depth_scale_m (metres per depth unit, e.g. 0.001) is missing")
    scale = _number({"depth_scale_m": default_scale_m, **meta}, "depth_scale_m", str(path))
    if not scale > 0:
        raise SourceError(f"{path}: depth_scale_m (metres per depth unit, e.g. 0.001) must be positive, got {scale}")
    colour_meta = meta.get("color", meta.get("colour"))
    if colour_meta is None:
        if "depth_to_color" in meta:
            raise SourceError(f"{path}: depth_to_color given without color intrinsics")
        return RGBDCalibration(depth, scale)
    colour = _intrinsics(colour_meta, f"{path} [color]")
    pose = meta.get("depth_to_color", {})
    if not isinstance(pose, dict):
        raise SourceError(f"{path}: depth_to_color must be an object with rotation and translation_m")
    rotation = _matrix(pose.get("rotation", np.eye(3).tolist()), (3, 3), "rotation", str(path))
    translation = _matrix(pose.get("translation_m", [0.0, 0.0, 0.0]), (3,), "translation_m", str(path))
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
        raise SourceError(f"{path}: depth_to_color rotation is not orthonormal")
    return RGBDCalibration(depth, scale, colour, rotation, translation)


def reproject_depth(
    depth: np.ndarray,
    depth_k: Intrinsics,
    colour_k: Intrinsics,
    rotation: np.ndarray,
    translation_m: np.ndarray,
    depth_scale_m: float,
) -> np.ndarray:
    """Depth (uint16 units, depth camera pixels) → depth in the colour camera's pixels and z, z-buffered.

    Each valid depth pixel is back-projected (pinhole), transformed by p_c = R·p_d + t, projected to the nearest
    colour pixel; where several land on one pixel the nearest surface wins. Unhit pixels are 0 (missing).

    >>> k = Intrinsics(4, 3, 2.0, 2.0, 1.5, 1.0)
    >>> d = np.full((3, 4), 1000, np.uint16)
    >>> reproject_depth(d, k, k, np.eye(3), np.zeros(3), 0.001).tolist() == d.tolist()
    True
    """
    rows, cols = np.nonzero(depth)
    z = depth[rows, cols].astype(np.float64) * depth_scale_m
    points = np.stack([(cols - depth_k.cx) / depth_k.fx * z, (rows - depth_k.cy) / depth_k.fy * z, z])
    moved = rotation @ points + np.asarray(translation_m, dtype=np.float64)[:, None]
    in_front = moved[2] > 1e-6
    x, y, zc = moved[0, in_front], moved[1, in_front], moved[2, in_front]
    u = np.round(colour_k.fx * x / zc + colour_k.cx).astype(np.int64)
    v = np.round(colour_k.fy * y / zc + colour_k.cy).astype(np.int64)
    inside = (u >= 0) & (u < colour_k.width) & (v >= 0) & (v < colour_k.height)
    u, v, zc = u[inside], v[inside], zc[inside]
    units = np.round(zc / depth_scale_m)
    keep = units <= 65535
    pixel = (v * colour_k.width + u)[keep]
    units = units[keep]
    order = np.argsort(units, kind="stable")  # nearest first; np.unique keeps each pixel's first occurrence
    pixel, first = np.unique(pixel[order], return_index=True)
    out = np.zeros(colour_k.height * colour_k.width, np.uint16)
    out[pixel] = units[order][first].astype(np.uint16)
    return out.reshape(colour_k.height, colour_k.width)


# -- folder layouts ------------------------------------------------------------------------------------------------


def _read_list(path: Path) -> list[tuple[float, str]]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            entries.append((float(parts[0]), parts[1]))
        except (ValueError, IndexError) as err:
            raise SourceError(f"{path}:{number}: expected 'timestamp filename', got {line!r}") from err
    return entries


def associate(first: list[tuple[float, str]], second: list[tuple[float, str]], max_dt_s: float) -> list[tuple[str, str]]:
    """TUM's association: candidate pairs closer than ``max_dt_s``, taken greedily by time difference, each entry
    used once; returned in the first list's time order.

    >>> associate([(0.0, "a"), (1.0, "b")], [(0.01, "x"), (0.5, "y"), (1.005, "z")], 0.02)
    [('a', 'x'), ('b', 'z')]
    """
    times_b = np.array([t for t, _ in second])
    order_b = np.argsort(times_b, kind="stable")
    sorted_b = times_b[order_b]
    candidates = []
    for i, (ta, _) in enumerate(first):  # only the entries inside the window: lists have thousands of lines
        lo, hi = np.searchsorted(sorted_b, [ta - max_dt_s, ta + max_dt_s])
        candidates.extend((abs(ta - sorted_b[k]), i, int(order_b[k])) for k in range(lo, hi) if abs(ta - sorted_b[k]) < max_dt_s)
    candidates.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return [(first[i][1], second[j][1]) for i, j in sorted(pairs)]


def _tum_default_intrinsics(folder: Path) -> Intrinsics:
    name = folder.resolve().name.lower()
    for key, intrinsics in TUM_INTRINSICS.items():
        if key in name:
            return intrinsics
    return TUM_INTRINSICS["freiburg1"]


class RGBDFolderSource(Source):
    """Frames of an RGB-D folder (plain or TUM layout, see the module docstring), depth aligned to colour."""

    live = False

    def __init__(self, folder: str | Path, *, fps: float | None = None, max_dt_s: float = 0.02) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: RGB-D folder not found")
        if (self.folder / "rgb.txt").is_file():
            self.layout = "tum"
            self.pairs, self.calibration, self._times_s = self._scan_tum(max_dt_s)
            fps = fps or 30.0
        elif (self.folder / "color").is_dir() and (self.folder / "depth").is_dir():
            self.layout = "plain"
            self.pairs, self.calibration = self._scan_plain()
            self._times_s = None  # by index / fps
        else:
            raise SourceError(f"{self.folder}: expected color/ + depth/ + intrinsics.json, or TUM (rgb.txt, depth.txt)")
        if not self.pairs:
            raise SourceError(f"{self.folder}: no colour/depth pairs")
        self._index = 0
        k = self.calibration.frame_intrinsics
        self._info = SourceInfo(f"rgbd:{self.folder}", k.width, k.height, fps, True, False, k, len(self.pairs))

    def _scan_plain(self) -> tuple[list[tuple[Path, Path]], RGBDCalibration]:
        colour = sorted(p for p in (self.folder / "color").iterdir() if p.suffix.lower() in COLOUR_SUFFIXES)
        depth = sorted(p for p in (self.folder / "depth").iterdir() if p.suffix.lower() == ".png")
        if len(colour) != len(depth):
            raise SourceError(f"{self.folder}: {len(colour)} colour images but {len(depth)} depth images (pairs by sorted name)")
        calibration = load_calibration(self.folder / "intrinsics.json")
        return list(zip(colour, depth, strict=True)), calibration

    def _scan_tum(self, max_dt_s: float) -> tuple[list[tuple[Path, Path]], RGBDCalibration, list[float]]:
        depth_list = self.folder / "depth.txt"
        if not depth_list.is_file():
            raise SourceError(f"{self.folder}: rgb.txt without depth.txt (TUM layout)")
        colour = _read_list(self.folder / "rgb.txt")
        pairs = associate(colour, _read_list(depth_list), max_dt_s)
        stamp = {name: t for t, name in colour}
        custom = self.folder / "intrinsics.json"
        if custom.is_file():
            calibration = load_calibration(custom, default_scale_m=TUM_DEPTH_SCALE_M)
        else:
            calibration = RGBDCalibration(_tum_default_intrinsics(self.folder), TUM_DEPTH_SCALE_M)
        # the colour stamps: the sequence's own clock (frames the association dropped leave their gap)
        return [(self.folder / a, self.folder / b) for a, b in pairs], calibration, [stamp[a] for a, _ in pairs]

    @property
    def info(self) -> SourceInfo:
        return self._info

    def _read(self) -> Capture | None:
        if self._index >= len(self.pairs):
            return None
        colour_path, depth_path = self.pairs[self._index]
        t_media_ns = None if self._times_s is None else round((self._times_s[self._index] - self._times_s[0]) * 1e9)
        self._index += 1
        rgb = _read_colour(colour_path)
        depth = _read_depth(depth_path)
        cal = self.calibration
        if depth.shape != (cal.depth.height, cal.depth.width):
            raise SourceError(f"{depth_path}: {depth.shape[1]}x{depth.shape[0]} but the depth intrinsics say "
                              f"{cal.depth.width}x{cal.depth.height}")
        k = cal.frame_intrinsics
        if rgb.shape[:2] != (k.height, k.width):
            what = "colour intrinsics" if cal.colour is not None else "depth (registered: no 'color' in intrinsics.json)"
            raise SourceError(f"{colour_path}: {rgb.shape[1]}x{rgb.shape[0]} does not match the {what}: {k.width}x{k.height}")
        if cal.colour is not None:
            depth = reproject_depth(depth, cal.depth, cal.colour, cal.rotation, cal.translation_m, cal.depth_scale_m)
        return Capture(rgb=rgb, depth=depth, depth_scale_m=cal.depth_scale_m, intrinsics=k, t_media_ns=t_media_ns)


def _imread(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise SourceError(f"{path}: file not found")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise SourceError(f"{path}: not a readable image")
    return image


def _read_colour(path: Path) -> np.ndarray:
    image = _imread(path)
    if image.dtype != np.uint8:
        raise SourceError(f"{path}: colour must be 8-bit, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)


def _read_depth(path: Path) -> np.ndarray:
    image = _imread(path)
    if image.dtype != np.uint16 or image.ndim != 2:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise SourceError(f"{path}: depth must be single-channel 16-bit PNG, got {image.dtype} with {channels} channel(s)")
    return image
