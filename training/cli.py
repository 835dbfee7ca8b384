"""``facenormals train --config FILE``: one training run, resumable (rerun the same command to continue).

Under torchrun the same command scales out:
``torchrun --standalone --nproc_per_node N -m facenormals.training.cli --config FILE``.
"""

from __future__ import annotations

import argparse
import sys

from facenormals.training import ddp
from facenormals.training.config import DEVICES, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML or JSON training config (see training/configs/)")
    parser.add_argument("--run-dir", help="override run_dir of the config (checkpoints, logs, PNGs)")
    parser.add_argument("--steps", type=int, help="override: stop after this many steps of the last phase's shape")
    parser.add_argument("--device", choices=DEVICES, help="override device of the config")
    parser.add_argument("--max-minutes", type=float,
                        help="override max_minutes: validate, checkpoint and stop after this many minutes")


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from facenormals.training.config import Phase
    from facenormals.training.trainer import train

    if args.steps is not None and args.steps < 1:  # 0 once meant "not given" and trained the config's full run
        raise ValueError(f"--steps must be at least 1, got {args.steps} (leave it out to train the config's phases)")
    cfg = load_config(args.config)
    if args.run_dir:
        cfg = replace(cfg, run_dir=args.run_dir)
    if args.steps is not None:
        last = cfg.phases[-1]
        cfg = replace(cfg, phases=(Phase(args.steps, last.size, last.batch_size),))
    if args.device:
        cfg = replace(cfg, device=args.device)
    if args.max_minutes is not None:
        cfg = replace(cfg, max_minutes=args.max_minutes)
    info = ddp.init_from_env()
    try:
        result = train(cfg, info)
    finally:
        ddp.shutdown(info)
    if info.is_main:
        best = f"{result.best_val_deg:.2f}°" if result.best_val_deg is not None else "n/a (no validation set)"
        print(f"done: {result.steps} steps, best validation mean {best}, model {result.run_dir / 'best.safetensors'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="facenormals train")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
