"""``facenormals calibrate camera``: intrinsics + distortion from board images → calibration JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from facenormals.calibration.calibfile import Calibration, load_calibration, save_calibration
from facenormals.calibration.camera import calibrate_camera, list_images, parse_board


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, type=Path, help="folder of board images (one camera)")
    parser.add_argument("--board", required=True,
                        help="checkerboard:COLSxROWS:SIZE_MM (inner corners) or charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT")
    parser.add_argument("--out", type=Path, default=Path("calibration.json"), help="calibration file to write")
    parser.add_argument("--update", action="store_true",
                        help="replace only the colour intrinsics of an existing --out file (keep its depth part)")
    parser.add_argument("--rational", action="store_true", help="8-coefficient rational distortion model (wide lenses)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def main(args: argparse.Namespace) -> int:
    from facenormals.atomic import check_output

    # --update rewrites the file it reads: that is the point; otherwise an existing file needs --overwrite
    check_output(args.out, "--out", overwrite=args.overwrite or args.update, inputs=[args.images])
    board = parse_board(args.board)
    result = calibrate_camera(list_images(args.images), board, rational=args.rational)
    print(f"board found in {len(result.per_image_px)} images"
          + (f", not in {len(result.rejected)}: {', '.join(result.rejected)}" if result.rejected else ""))
    worst = sorted(result.per_image_px.items(), key=lambda item: -item[1])
    for name, error in worst:
        print(f"  {name}: {error:.3f} px")
    intr = result.intrinsics
    print(f"RMS reprojection error {result.rms_px:.3f} px; fx={intr.fx:.2f} fy={intr.fy:.2f} "
          f"cx={intr.cx:.2f} cy={intr.cy:.2f} distortion={[round(k, 5) for k in intr.distortion]}")
    quality = {"rms_px": result.rms_px, "per_image_px": result.per_image_px, "rejected": result.rejected,
               "board": args.board}
    calibration = Calibration(intr, source=f"board:{args.images}", quality=quality)
    if args.update and args.out.is_file():
        old = load_calibration(args.out)
        calibration = Calibration(intr, old.depth, old.rotation, old.translation_m, old.depth_scale_m,
                                  f"{old.source}; colour from board:{args.images}", {**old.quality, "colour": quality})
    save_calibration(args.out, calibration)
    print(f"wrote {args.out}")
    return 0
