"""The ``facenormals`` command: one verb per job, each a thin call into its package.

Verb modules are imported only when their verb runs (importing torch, MediaPipe and ONNX Runtime
for ``--help`` would take seconds). Each verb module provides ``add_arguments(parser)`` and
``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    module: str
    summary: str


VERBS: dict[str, Verb] = {
    "run": Verb("facenormals.realtime.run_cli", "live normals: webcam, video, RGB-D sensor or the embedded sample"),
    "bench": Verb("facenormals.realtime.bench_cli", "latency benchmark of the realtime pipeline"),
    "train": Verb("facenormals.training.cli", "cross-modal training from a config file"),
    "eval": Verb("facenormals.training.eval_cli", "paper metrics on dataset folders, with the MediaPipe baseline"),
    "data": Verb("facenormals.training.data.cli", "render synthetic faces and crop real photos into datasets"),
    "export": Verb("facenormals.export.cli", "ONNX, TensorRT and Triton exports of the image→normal path"),
    "calibrate": Verb("facenormals.calibration.cli", "INT8 calibration, camera and RGB-D calibration"),
    "model-info": Verb("facenormals.model_info", "parameters and GMAC of each path of a model"),
    "convert-official": Verb("facenormals.official", "convert the authors' model.pth into a facenormals checkpoint"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<17} {verb.summary}" for name, verb in VERBS.items())
    return argparse.ArgumentParser(
        prog="facenormals",
        description="Real-time surface normals of human faces (Abrevaya et al., CVPR 2020).",
        epilog=f"verbs:\n{lines}\n\n'facenormals VERB --help' shows a verb's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="facenormals VERB [options]",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in VERBS:
        close = difflib.get_close_matches(name, VERBS, n=1)
        top.error(f"unknown verb {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    verb = VERBS[name]
    try:
        module = importlib.import_module(verb.module)
    except ModuleNotFoundError as err:
        if err.name and verb.module.startswith(err.name):
            print(f"facenormals {name}: not available in this version yet ({verb.module} missing)", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"facenormals {name}", description=verb.summary)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        print(f"facenormals {name}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as err:  # OSError: disk full, permissions, a video too large
        # Library errors carry the file or value at fault; show them without a traceback.
        print(f"facenormals {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
