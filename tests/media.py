"""Test media made on the spot: videos written with OpenCV, image folders, RGB-D folders (plain and TUM layout) and a
RealSense ``.db3`` recorded through ``rs.software_device`` + ``rs.recorder``. Nothing is downloaded or committed.

Frames carry their index so tests can check order and completeness after lossy coding: frame i is a uniform image
of grey level ``level(i)`` (MJPG keeps a flat image's mean within a grey level or two).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np


def level(index: int) -> int:
    """Grey level of frame ``index`` (indices repeat every 24 frames)."""
    return 20 + 9 * (index % 24)


def indexed_frame(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """RGB uint8 frame whose mean is ``level(index)``, with a little texture so codecs treat it as an image."""
    frame = np.full((height, width, 3), level(index), np.uint8)
    frame[::8, :, 1] += 2
    return frame


def decode_index(rgb: np.ndarray) -> int:
    return round((float(rgb[..., 0].mean()) - 20) / 9)


def write_video(path: Path, frames: int = 12, width: int = 64, height: int = 48, fps: float = 30.0) -> Path:
    """An MJPG AVI (readable by every OpenCV FFmpeg build) of ``frames`` indexed frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(frames):
        writer.write(cv2.cvtColor(indexed_frame(i, width, height), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_sideways_video(path: Path, frames: list[np.ndarray], fps: float = 15.0) -> Path:
    """An MP4 as a phone stores a portrait clip: each RGB frame turned a quarter turn clockwise, and a display matrix
    in the track header (ISO/IEC 14496-12 ``tkhd``) that turns it back, which every player applies."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (height, width))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(np.ascontiguousarray(np.rot90(frame, -1)), cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd") - 4  # the box starts with its 4-byte size
    assert box >= 0 and data[box + 8] == 0, f"{path}: expected one version-0 tkhd box"
    matrix = box + 48  # size, type, version+flags, 2 times, track id, reserved, duration, 8 reserved, 4 shorts
    data[matrix:matrix + 36] = struct.pack(">9i", 0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000)  # display: ¼ turn back
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, fraction: float) -> Path:
    """Cut a file to ``fraction`` of its bytes, as an interrupted copy or a full disk would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_image_folder(folder: Path, frames: int = 5, corrupt: tuple[int, ...] = (), width: int = 64, height: int = 48) -> Path:
    """``000.png``, ``001.png``, …; the indices in ``corrupt`` hold bytes that are not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        path = folder / f"{i:03d}.png"
        if i in corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n truncated, not an image")
        else:
            cv2.imwrite(str(path), cv2.cvtColor(indexed_frame(i, width, height), cv2.COLOR_RGB2BGR))
    return folder


def plane_depth(index: int, width: int, height: int, base_units: int = 1000) -> np.ndarray:
    """uint16 depth whose value encodes the frame index, with a 0 (missing) corner."""
    depth = np.full((height, width), base_units + 10 * index, np.uint16)
    depth[:2, :2] = 0
    return depth


def write_rgbd_folder(
    root: Path, frames: int = 4, width: int = 64, height: int = 48, intrinsics: dict | None = None
) -> Path:
    """``color/*.png``, ``depth/*.png`` (uint16) and ``intrinsics.json`` of a registered sensor (depth_scale 1 mm)."""
    (root / "color").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        cv2.imwrite(str(root / "color" / f"{i:04d}.png"), cv2.cvtColor(indexed_frame(i, width, height), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{i:04d}.png"), plane_depth(i, width, height))
    meta = intrinsics or {"width": width, "height": height, "fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5,
                          "depth_scale_m": 0.001}
    (root / "intrinsics.json").write_text(json.dumps(meta))
    return root


def write_tum_folder(root: Path, frames: int = 4, width: int = 64, height: int = 48) -> Path:
    """The TUM RGB-D layout: rgb/ and depth/ named by timestamp, rgb.txt/depth.txt lists (depth 5000 units per metre,
    stamps offset by 7 ms as the real dataset's are), plus one extra depth frame with no colour partner."""
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    header = "# timestamp filename\n# made by tests/media.py\n# \n"
    rgb_lines, depth_lines = [header], [header]
    for i in range(frames):
        t_rgb = 1305031102.175304 + i / 30.0
        t_depth = t_rgb + 0.007
        cv2.imwrite(str(root / "rgb" / f"{t_rgb:.6f}.png"), cv2.cvtColor(indexed_frame(i, width, height), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{t_depth:.6f}.png"), plane_depth(i, width, height, base_units=5000))
        rgb_lines.append(f"{t_rgb:.6f} rgb/{t_rgb:.6f}.png\n")
        depth_lines.append(f"{t_depth:.6f} depth/{t_depth:.6f}.png\n")
    t_extra = 1305031102.175304 + frames / 30.0 + 0.5
    cv2.imwrite(str(root / "depth" / f"{t_extra:.6f}.png"), plane_depth(99, width, height, base_units=5000))
    depth_lines.append(f"{t_extra:.6f} depth/{t_extra:.6f}.png\n")
    (root / "rgb.txt").write_text("".join(rgb_lines))
    (root / "depth.txt").write_text("".join(depth_lines))
    return root


def record_realsense(
    path: Path,
    colour: list[np.ndarray],
    depth: list[np.ndarray],
    colour_k: tuple[float, float, float, float],
    depth_k: tuple[float, float, float, float],
    depth_units_m: float = 0.001,
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """A real RealSense ``.db3`` (the SDK's recorder on an ``rs.software_device``) of these frames; intrinsics are
    (fx, fy, cx, cy) of each stream, sizes from the first frames."""
    from facenormals.camera import Intrinsics
    from facenormals.realtime.sources.realsense_recorder import write_realsense_recording

    ck = Intrinsics(colour[0].shape[1], colour[0].shape[0], *colour_k)
    dk = Intrinsics(depth[0].shape[1], depth[0].shape[0], *depth_k)
    return write_realsense_recording(path, colour, depth, ck, dk, depth_units_m, translation_m)


def render_ict_profiles(shared_data: Path, out: Path, count: int, seed: int, size: int,
                        yaw_deg: tuple[float, float]) -> Path:
    """A dataset folder of ICT-FaceKit faces turned by |yaw| in ``yaw_deg``, made by ``facenormals data render``."""
    import argparse

    from facenormals.training.data import cli as data_cli

    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    args = parser.parse_args(["render", "--source", "ict", "--count", str(count), "--out", str(out), "--seed",
                              str(seed), "--size", str(size), "--workers", "1", "--yaw-deg", *map(str, yaw_deg),
                              "--backgrounds", "--ict", str(shared_data / "ict-facekit" / "ict_facekit.npz"),
                              "--no-contact-sheet"])
    assert data_cli.main(args) == 0
    return out


def frontal_renders_with_priors(shared_data: Path, out: Path) -> list:
    """Two near-frontal 128² ICT renders with their stored MediaPipe landmarks (``facenormals data render`` and
    ``data prior``): the samples where MediaPipe found the face."""
    import argparse

    from facenormals.dataset import scan_dataset
    from facenormals.training.data import cli as data_cli
    from facenormals.training.data.prior_cli import compute_priors, read_index

    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    assert data_cli.main(parser.parse_args([
        "render", "--source", "ict", "--count", "2", "--out", str(out), "--seed", "7", "--size", "128",
        "--workers", "1", "--max-angle-deg", "10", "--ict", str(shared_data / "ict-facekit" / "ict_facekit.npz"),
        "--no-contact-sheet"])) == 0
    compute_priors(out)
    found = [f for f in scan_dataset(out) if read_index(out)[f.name]]
    assert found, "MediaPipe should find near-frontal ICT faces"
    return found
