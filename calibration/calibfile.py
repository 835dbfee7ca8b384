"""The one calibration file the realtime loop reads: colour + depth intrinsics, depth→colour extrinsics, depth scale.

A versioned JSON document, validated on load (every problem names the file and the field)::

    {
      "format": "facenormals-calibration", "version": 1,
      "source": "realsense:/path/rec.db3",            # where it came from (board, device, recording)
      "colour": {"width": 640, "height": 480, "fx": 615.2, "fy": 615.0, "cx": 320.1, "cy": 240.3,
                 "distortion": [k1, k2, p1, p2, k3]},  # OpenCV order; [] = none
      "depth":  {... same keys ...} | null,
      "depth_to_colour": {"rotation": [[...], [...], [...]], "translation_m": [tx, ty, tz]} | null,
      "depth_scale_m": 0.001 | null,                    # metres per raw depth unit
      "quality": {"rms_px": 0.21, ...}                  # optional, informative only
    }

Conventions: intrinsics in pixels of their own image, pixel centres at integer coordinates (OpenCV).
Extrinsics map depth-camera points to colour-camera points in the OpenCV/RealSense frame (x right, y down,
z forward, metres): ``X_colour = R · X_depth + t``. (Our normals use +y up, +z toward the camera; see
:mod:`facenormals.depth` for the conversion.)

Factory calibration: :func:`read_realsense` (a connected device, or a ``.bag``/``.db3`` recording played by
pyrealsense2) and :func:`read_azure_kinect` (needs the optional ``pyk4a``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facenormals.atomic import write_text_atomic
from facenormals.camera import Intrinsics

FORMAT = "facenormals-calibration"
VERSION = 1
DISTORTION_LENGTHS = (0, 4, 5, 8, 12, 14)  # what cv2.calibrateCamera / undistort accept


class CalibrationError(ValueError):
    """A calibration file or device calibration that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Calibration:
    """Colour camera, optional depth camera, their relative pose and the depth scale."""

    colour: Intrinsics
    depth: Intrinsics | None = None
    rotation: np.ndarray | None = None          # 3×3, depth → colour (OpenCV frame)
    translation_m: np.ndarray | None = None     # 3, metres
    depth_scale_m: float | None = None          # metres per raw depth unit
    source: str = ""
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def has_depth(self) -> bool:
        return self.depth is not None and self.rotation is not None and self.depth_scale_m is not None

    def to_json(self) -> dict[str, Any]:
        extrinsics = None
        if self.rotation is not None and self.translation_m is not None:
            extrinsics = {"rotation": np.asarray(self.rotation, float).round(12).tolist(),
                          "translation_m": np.asarray(self.translation_m, float).round(12).tolist()}
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "colour": _intrinsics_json(self.colour),
            "depth": _intrinsics_json(self.depth) if self.depth is not None else None,
            "depth_to_colour": extrinsics,
            "depth_scale_m": self.depth_scale_m,
            "quality": self.quality,
        }


def _intrinsics_json(intr: Intrinsics) -> dict[str, Any]:
    return {"width": intr.width, "height": intr.height, "fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy,
            "distortion": [float(k) for k in intr.distortion]}


def save_calibration(path: str | Path, calibration: Calibration) -> None:
    """Validate, then write atomically as indented JSON."""
    document = calibration.to_json()
    parse_calibration(json.loads(json.dumps(document)), str(path))  # never write what we would refuse to read
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found (make one with `facenormals calibrate camera|rgbd`)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CalibrationError(f"{path}: not valid JSON ({err})") from err
    return parse_calibration(document, str(path))


def parse_calibration(document: Any, where: str = "calibration") -> Calibration:
    """Validate a decoded document; every error names ``where`` and the offending field."""
    if not isinstance(document, dict):
        raise CalibrationError(f"{where}: expected a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT:
        raise CalibrationError(f"{where}: 'format' must be {FORMAT!r}, got {document.get('format')!r}")
    version = document.get("version")
    if version != VERSION:
        raise CalibrationError(f"{where}: unsupported 'version' {version!r} (this facenormals reads version {VERSION})")
    if "colour" not in document:
        raise CalibrationError(f"{where}: missing 'colour' intrinsics")
    colour = _parse_intrinsics(document["colour"], f"{where}: 'colour'")
    depth = None if document.get("depth") is None else _parse_intrinsics(document["depth"], f"{where}: 'depth'")
    rotation = translation = None
    if document.get("depth_to_colour") is not None:
        rotation, translation = _parse_extrinsics(document["depth_to_colour"], f"{where}: 'depth_to_colour'")
    scale = document.get("depth_scale_m")
    if scale is not None and not (_is_number(scale) and 0 < scale < 1):
        raise CalibrationError(f"{where}: 'depth_scale_m' must be metres per unit in (0, 1), got {scale!r}")
    if depth is not None and (rotation is None or scale is None):
        raise CalibrationError(f"{where}: a 'depth' camera needs 'depth_to_colour' and 'depth_scale_m' too")
    quality = document.get("quality") or {}
    if not isinstance(quality, dict):
        raise CalibrationError(f"{where}: 'quality' must be an object")
    return Calibration(colour, depth, rotation, translation, None if scale is None else float(scale),
                       str(document.get("source", "")), quality)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_intrinsics(block: Any, where: str) -> Intrinsics:
    if not isinstance(block, dict):
        raise CalibrationError(f"{where} must be an object with width, height, fx, fy, cx, cy, distortion")
    missing = [k for k in ("width", "height", "fx", "fy", "cx", "cy") if k not in block]
    if missing:
        raise CalibrationError(f"{where} is missing {', '.join(missing)}")
    for key in ("width", "height"):
        if not isinstance(block[key], int) or isinstance(block[key], bool) or block[key] <= 0:
            raise CalibrationError(f"{where}.{key} must be a positive integer, got {block[key]!r}")
    for key in ("fx", "fy", "cx", "cy"):
        if not _is_number(block[key]):
            raise CalibrationError(f"{where}.{key} must be a finite number, got {block[key]!r}")
    if block["fx"] <= 0 or block["fy"] <= 0:
        raise CalibrationError(f"{where}: focal lengths must be positive, got fx={block['fx']}, fy={block['fy']}")
    if not (0 <= block["cx"] <= block["width"] and 0 <= block["cy"] <= block["height"]):
        raise CalibrationError(f"{where}: principal point ({block['cx']}, {block['cy']}) lies outside the "
                               f"{block['width']}×{block['height']} image")
    distortion = block.get("distortion", [])
    if not isinstance(distortion, list) or not all(_is_number(k) for k in distortion):
        raise CalibrationError(f"{where}.distortion must be a list of numbers, got {distortion!r}")
    if len(distortion) not in DISTORTION_LENGTHS:
        raise CalibrationError(f"{where}.distortion has {len(distortion)} coefficients; OpenCV takes {DISTORTION_LENGTHS}")
    return Intrinsics(block["width"], block["height"], float(block["fx"]), float(block["fy"]), float(block["cx"]),
                      float(block["cy"]), tuple(float(k) for k in distortion))


def _parse_extrinsics(block: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(block, dict) or "rotation" not in block or "translation_m" not in block:
        raise CalibrationError(f"{where} must be an object with 'rotation' (3×3) and 'translation_m' (3)")
    try:
        rotation = np.array(block["rotation"], dtype=np.float64)
        translation = np.array(block["translation_m"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CalibrationError(f"{where}: rotation/translation must be numbers ({err})") from err
    if rotation.shape != (3, 3) or not np.isfinite(rotation).all():
        raise CalibrationError(f"{where}.rotation must be a finite 3×3 matrix, got shape {rotation.shape}")
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
        raise CalibrationError(f"{where}.rotation is not a rotation (RᵀR ≠ I or det < 0)")
    if translation.shape != (3,) or not np.isfinite(translation).all():
        raise CalibrationError(f"{where}.translation_m must be 3 finite numbers, got shape {translation.shape}")
    if np.abs(translation).max() > 10:
        raise CalibrationError(f"{where}.translation_m is {translation.tolist()}: metres expected (millimetres given?)")
    return rotation, translation


# ---------------------------------------------------------------------------------------------- factory calibration

def import_pyrealsense2():
    """pyrealsense2, loading libusb from the ``libusb-package`` wheel when the system has none."""
    try:
        import pyrealsense2 as rs
    except ImportError as err:
        if "libusb" not in str(err):
            raise CalibrationError("pyrealsense2 is not installed: pip install 'facenormals[rgbd]'") from err
        try:
            import ctypes

            import libusb_package

            ctypes.CDLL(str(libusb_package.get_library_path()), mode=ctypes.RTLD_GLOBAL)
        except (ImportError, OSError, TypeError) as usb_err:
            raise CalibrationError("pyrealsense2 needs libusb: pip install libusb-package, or "
                                   "apt-get install libusb-1.0-0") from usb_err
        import pyrealsense2 as rs
    return rs


def _rs_intrinsics(profile) -> Intrinsics:
    intr = profile.as_video_stream_profile().get_intrinsics()
    coeffs = [float(k) for k in intr.coeffs]
    # librealsense's Brown-Conrady is OpenCV's (k1, k2, p1, p2, k3); all-zero means none
    return Intrinsics(intr.width, intr.height, float(intr.fx), float(intr.fy), float(intr.ppx), float(intr.ppy),
                      tuple(coeffs) if any(coeffs) else ())


def read_realsense(recording: str | Path | None = None, serial: str | None = None) -> Calibration:
    """Factory calibration of a RealSense: from a ``.bag``/``.db3`` recording, or from a connected device.

    Reads the colour and depth stream intrinsics, the depth→colour extrinsics and the depth units.
    """
    rs = import_pyrealsense2()
    if recording is not None:
        return _read_realsense_recording(rs, Path(recording))
    config = rs.config()
    if serial:
        config.enable_device(serial)
    config.enable_stream(rs.stream.depth)
    config.enable_stream(rs.stream.color)
    pipeline = rs.pipeline()
    try:
        profile = pipeline.start(config)
    except RuntimeError as err:
        raise CalibrationError(f"device: pyrealsense2 could not open it ({err})") from err
    try:
        streams = {s.stream_type(): s for s in profile.get_streams()}
        return _realsense_calibration(rs, streams, profile.get_device(), f"realsense-device:{serial or 'first'}")
    finally:
        pipeline.stop()


def _read_realsense_recording(rs, recording: Path) -> Calibration:
    # The recorded stream profiles carry everything: loading the file as a playback device without streaming it
    # avoids librealsense's playback thread, whose end-of-file stop can race pipeline.stop() and abort the process.
    if not recording.is_file():
        raise CalibrationError(f"{recording}: RealSense recording not found")
    context = rs.context()
    try:
        device = context.load_device(str(recording))
    except RuntimeError as err:
        raise CalibrationError(f"{recording}: pyrealsense2 could not open it ({err})") from err
    try:
        streams = {}
        for sensor in device.query_sensors():
            for stream in sensor.get_stream_profiles():  # a recording holds one profile per stream; else the default
                if stream.stream_type() not in streams or stream.is_default():
                    streams[stream.stream_type()] = stream
        return _realsense_calibration(rs, streams, device, f"realsense:{recording}")
    finally:
        context.unload_device(str(recording))


def _realsense_calibration(rs, streams: dict, device, source: str) -> Calibration:
    if rs.stream.color not in streams:
        raise CalibrationError(f"{source}: no colour stream")
    colour = _rs_intrinsics(streams[rs.stream.color])
    depth = rotation = translation = scale = None
    if rs.stream.depth in streams:
        depth = _rs_intrinsics(streams[rs.stream.depth])
        extr = streams[rs.stream.depth].get_extrinsics_to(streams[rs.stream.color])
        rotation = np.array(extr.rotation, dtype=np.float64).reshape(3, 3).T  # librealsense: column-major
        translation = np.array(extr.translation, dtype=np.float64)
        scale = float(device.first_depth_sensor().get_depth_scale())
    return Calibration(colour, depth, rotation, translation, scale, source)


def read_azure_kinect(recording: str | Path | None = None, device_id: int = 0) -> Calibration:
    """Factory calibration of an Azure Kinect from an ``.mkv`` recording or a device (needs ``pyk4a``)."""
    try:
        import pyk4a
    except ImportError as err:
        raise CalibrationError("Azure Kinect calibration needs pyk4a and Microsoft's Azure Kinect SDK: "
                               "pip install 'facenormals[kinect]'") from err
    if recording is not None:
        playback = pyk4a.PyK4APlayback(str(recording))
        playback.open()
        try:
            calib, source = playback.calibration, f"kinect:{recording}"
        finally:
            playback.close()
    else:
        k4a = pyk4a.PyK4A(device_id=device_id)
        k4a.start()
        try:
            calib, source = k4a.calibration, f"kinect-device:{device_id}"
        finally:
            k4a.stop()
    return _from_k4a(pyk4a, calib, source)


def _from_k4a(pyk4a, calib, source: str) -> Calibration:
    colour_res = {1: (1280, 720), 2: (1920, 1080), 3: (2560, 1440), 4: (2048, 1536), 5: (3840, 2160), 6: (4096, 3072)}
    depth_res = {1: (320, 288), 2: (640, 576), 3: (512, 512), 4: (1024, 1024), 5: (1024, 1024)}
    types = pyk4a.CalibrationType

    def intrinsics(kind, size: tuple[int, int]) -> Intrinsics:
        k = calib.get_camera_matrix(kind)
        dist = [float(d) for d in np.ravel(calib.get_distortion_coefficients(kind))]
        return Intrinsics(size[0], size[1], float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                          tuple(dist[:8]) if len(dist) >= 8 else tuple(dist))

    colour = intrinsics(types.COLOR, colour_res[int(calib.color_resolution)])
    depth = intrinsics(types.DEPTH, depth_res[int(calib.depth_mode)])
    rotation, translation = calib.get_extrinsic_parameters(types.DEPTH, types.COLOR)
    # the Azure Kinect SDK reports translations in millimetres and depth in millimetres
    return Calibration(colour, depth, np.asarray(rotation, np.float64).reshape(3, 3),
                       np.asarray(translation, np.float64).reshape(3) / 1000.0, 0.001, source)


# ---------------------------------------------------------------------------------------------- use in the live loop

def apply_to_frame(frame, calibration: Calibration):
    """A :class:`~facenormals.frame.Frame` with the file's colour intrinsics and depth aligned to colour.

    For sources that deliver raw (unaligned) depth or no intrinsics (``rgbd:DIR`` folders, other sensors):
    the depth is reprojected with the file's extrinsics (:func:`facenormals.depth.depth_in_colour`) and stored
    back as uint16 in the same units. A colour image of another size than the calibration raises.
    """
    import dataclasses

    from facenormals.depth import depth_in_colour

    height, width = frame.rgb.shape[:2]
    if (width, height) != (calibration.colour.width, calibration.colour.height):
        raise CalibrationError(f"{calibration.source or 'calibration'}: made for {calibration.colour.width}×"
                               f"{calibration.colour.height} colour images, the source delivers {width}×{height}")
    if frame.depth is None:
        return dataclasses.replace(frame, intrinsics=calibration.colour)
    scale = frame.depth_scale_m or calibration.depth_scale_m
    depth_m = depth_in_colour(frame.depth, calibration, scale)
    if scale is None:  # float metres in, keep millimetres out
        scale = 0.001
    units = np.nan_to_num(np.round(depth_m / scale), nan=0.0)
    aligned = np.where((units > 0) & (units < 65536), units, 0).astype(np.uint16)
    return dataclasses.replace(frame, depth=aligned, depth_scale_m=scale, intrinsics=calibration.colour)
