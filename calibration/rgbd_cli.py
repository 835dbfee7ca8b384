"""``facenormals calibrate rgbd``: depth-to-colour extrinsics + depth scale → calibration JSON.

From a RealSense recording (``--recording rec.db3``/``.bag``), a connected RealSense (``--realsense [SERIAL]``),
an Azure Kinect (``--kinect [REC.mkv]``, needs pyk4a), or board views seen by both cameras (``--boards DIR --board SPEC``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facenormals.calibration.calibfile import (
    Calibration,
    load_calibration,
    read_azure_kinect,
    read_realsense,
    save_calibration,
)
from facenormals.calibration.camera import parse_board
from facenormals.calibration.rgbd import calibrate_rgbd, find_rgbd_views


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recording", type=Path, help="RealSense .bag/.db3 recording: read its factory calibration")
    source.add_argument("--realsense", nargs="?", const="", metavar="SERIAL", help="a connected RealSense (first if no serial)")
    source.add_argument("--kinect", nargs="?", const="", metavar="REC.mkv", help="Azure Kinect device or .mkv recording")
    source.add_argument("--boards", type=Path, help="folder with colour/, ir/, depth/ board views (same names)")
    parser.add_argument("--board", help="board spec for --boards (see `calibrate camera --help`)")
    parser.add_argument("--colour-calib", type=Path, help="with --boards: take the colour intrinsics from this file")
    parser.add_argument("--depth-calib", type=Path,
                        help="with --boards: take the depth (ir) intrinsics from this file's 'colour' entry")
    parser.add_argument("--out", type=Path, default=Path("calibration.json"), help="calibration file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def main(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output

    check_output(args.out, "--out", overwrite=args.overwrite,
                 inputs=[args.recording, args.colour_calib, args.depth_calib, args.kinect or None])
    if args.recording is not None:
        calibration = read_realsense(recording=args.recording)
    elif args.realsense is not None:
        calibration = read_realsense(serial=args.realsense or None)
    elif args.kinect is not None:
        calibration = read_azure_kinect(recording=args.kinect or None)
    else:
        if not args.board:
            raise SystemExit("calibrate rgbd --boards needs --board SPEC")
        colour = load_calibration(args.colour_calib).colour if args.colour_calib else None
        depth = load_calibration(args.depth_calib).colour if args.depth_calib else None
        calibration = calibrate_rgbd(parse_board(args.board), find_rgbd_views(parse_board(args.board), args.boards),
                                     colour, depth)
    report(calibration)
    save_calibration(args.out, calibration)
    print(f"wrote {args.out}")
    return 0


def report(calibration: Calibration) -> None:
    c = calibration.colour
    print(f"source: {calibration.source}")
    print(f"colour {c.width}×{c.height}: fx={c.fx:.2f} fy={c.fy:.2f} cx={c.cx:.2f} cy={c.cy:.2f}")
    if calibration.depth is not None:
        d = calibration.depth
        print(f"depth  {d.width}×{d.height}: fx={d.fx:.2f} fy={d.fy:.2f} cx={d.cx:.2f} cy={d.cy:.2f}")
        print(f"depth→colour translation (m): {[round(float(v), 5) for v in calibration.translation_m]}")
        print(f"depth scale: {calibration.depth_scale_m:.6g} m/unit")
    for key in ("colour_rms_px", "depth_rms_px", "stereo_rms_px"):
        if key in calibration.quality:
            print(f"{key}: {calibration.quality[key]:.3f}")
