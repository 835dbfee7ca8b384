"""``facenormals calibrate {int8,camera,rgbd}``: each sub-verb lives in its own module."""

from __future__ import annotations

import argparse
import importlib

SUBVERBS: dict[str, tuple[str, str]] = {
    "int8": ("facenormals.export.int8_cli", "static INT8 Q/DQ quantisation of an ONNX model on face crops"),
    "camera": ("facenormals.calibration.camera_cli", "camera intrinsics and distortion from board images"),
    "rgbd": ("facenormals.calibration.rgbd_cli", "depth-to-colour extrinsics and depth scale"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="subverb", required=True, metavar="{" + ",".join(SUBVERBS) + "}")
    for name, (module_name, summary) in SUBVERBS.items():
        child = sub.add_parser(name, help=summary, description=summary)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                child.set_defaults(_missing=module_name)
                continue
            raise
        module.add_arguments(child)
        child.set_defaults(_module=module)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "_missing", None):
        raise RuntimeError(f"calibrate {args.subverb}: not available in this version yet ({args._missing} missing)")
    return int(args._module.main(args) or 0)
