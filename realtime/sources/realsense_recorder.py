"""Write RealSense recordings (``.db3``, ROS 2; SDK 2.59 no longer writes ``.bag``) from any frames, with the SDK's
own recorder.

An ``rs.software_device`` with two sensors shaped like a D400 (a depth sensor with ``depth_units`` and a colour
sensor, rgb8) is recorded by ``rs.recorder``; played back through ``rs.pipeline`` the file behaves like a camera's
recording. Used by the tests, and to turn the embedded ``sample-rgbd`` (or any RGB-D source) into a file for
``facenormals run --source realsense:FILE``::

    python -m facenormals.realtime.sources.realsense_recorder sample-rgbd sample.db3 --frames 90
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facenormals.atomic import atomic_path
from facenormals.camera import Intrinsics
from facenormals.realtime.sources.base import SourceError, open_source
from facenormals.realtime.sources.realsense import import_pyrealsense2


def write_realsense_recording(
    path: str | Path,
    colour: Sequence[np.ndarray],
    depth: Sequence[np.ndarray],
    colour_k: Intrinsics,
    depth_k: Intrinsics,
    depth_units_m: float = 0.001,
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
    fps: int = 30,
) -> Path:
    """Record colour (RGB uint8 H×W×3) and depth (uint16 h×w) frame pairs; the depth camera sits ``translation_m``
    from the colour camera (depth→colour extrinsics, no rotation). Written atomically (a partial file never appears)."""
    rs = import_pyrealsense2()
    path = Path(path)
    if len(colour) != len(depth) or not colour:
        raise ValueError(f"{path}: need as many colour as depth frames (≥ 1), got {len(colour)} and {len(depth)}")
    for name, image, k in (("colour", colour[0], colour_k), ("depth", depth[0], depth_k)):
        if image.shape[:2] != (k.height, k.width):
            raise ValueError(f"{path}: {name} frames are {image.shape[1]}x{image.shape[0]}, intrinsics say {k.width}x{k.height}")

    def video_stream(kind: object, uid: int, fmt: object, bpp: int, k: Intrinsics) -> object:
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = k.width, k.height, k.fx, k.fy, k.cx, k.cy
        intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid, stream.fps, stream.bpp, stream.fmt = kind, 0, uid, fps, bpp, fmt
        stream.width, stream.height, stream.intrinsics = k.width, k.height, intr
        return stream

    device = rs.software_device()
    depth_sensor, colour_sensor = device.add_sensor("Depth"), device.add_sensor("Color")
    depth_sensor.add_read_only_option(rs.option.depth_units, depth_units_m)
    depth_profile = depth_sensor.add_video_stream(video_stream(rs.stream.depth, 0, rs.format.z16, 2, depth_k))
    colour_profile = colour_sensor.add_video_stream(video_stream(rs.stream.color, 1, rs.format.rgb8, 3, colour_k))
    extrinsics = rs.extrinsics()
    extrinsics.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    extrinsics.translation = [float(t) for t in translation_m]
    depth_profile.register_extrinsics_to(colour_profile, extrinsics)

    if path.suffix.lower() != ".db3":
        raise ValueError(f"{path}: the RealSense SDK records .db3 files (ROS 2 bag); .bag is playback-only")
    with atomic_path(path) as tmp:  # keeps the .db3 suffix the SDK's writer insists on
        tmp.unlink()  # the recorder creates its own file
        recorder = rs.recorder(str(tmp), device, False)  # uncompressed: exact pixels back
        depth_sensor.open(depth_profile)
        colour_sensor.open(colour_profile)
        syncer = rs.syncer()
        depth_sensor.start(syncer)
        colour_sensor.start(syncer)
        alive = []  # the SDK reads pixel buffers after on_video_frame returns: keep them until the sensors stop
        for i, (rgb, dep) in enumerate(zip(colour, depth, strict=True)):
            for sensor, profile, image, bpp in ((depth_sensor, depth_profile, dep, 2), (colour_sensor, colour_profile, rgb, 3)):
                pixels = np.ascontiguousarray(image, dtype=np.uint16 if bpp == 2 else np.uint8)
                alive.append(pixels)
                frame = rs.software_video_frame()  # a fresh one per call: reusing one corrupts the SDK's heap
                frame.pixels, frame.bpp, frame.stride = pixels, bpp, image.shape[1] * bpp
                frame.timestamp, frame.frame_number = (i + 1) * 1000.0 / fps, i
                frame.domain, frame.profile = rs.timestamp_domain.hardware_clock, profile.as_video_stream_profile()
                sensor.on_video_frame(frame)
        for sensor in (depth_sensor, colour_sensor):
            sensor.stop()
            sensor.close()
        recorder.pause()
        del recorder  # flushes and closes the file
    return path


def record_source(spec: str, path: str | Path, count: int, **options: object) -> Path:
    """Record ``count`` frames of an RGB-D source (registered depth: colour intrinsics for both streams)."""
    with open_source(spec, **options) as source:
        if not source.has_depth or source.intrinsics is None:
            raise SourceError(f"{spec}: a RealSense recording needs depth and intrinsics")
        colour, depth, scale = [], [], None
        for frame, _ in zip(source, range(count), strict=False):
            colour.append(frame.rgb)
            depth.append(frame.depth)
            scale = frame.depth_scale_m
        k = source.intrinsics
    return write_realsense_recording(path, colour, depth, k, k, depth_units_m=scale or 0.001, fps=round(source.fps or 30))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an RGB-D source spec, e.g. sample-rgbd or rgbd:DIR")
    parser.add_argument("out", type=Path, help="output .db3 (ROS 2 bag)")
    parser.add_argument("--frames", type=int, default=90)
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".db3":
        parser.error(f"{args.out}: the suffix must be .db3")
    options = {"frames": args.frames} if args.source.startswith("sample") else {}
    record_source(args.source, args.out, args.frames, **options)
    print(f"wrote {args.frames} frames to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
