"""``facenormals model-info``: parameters and GMAC of each path, per width or checkpoint."""

from __future__ import annotations

import argparse

from facenormals.checkpoint import read_config
from facenormals.complexity import path_costs
from facenormals.model import CrossModalNet, create_model
from facenormals.model_config import VARIANTS, WIDTHS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=sorted(WIDTHS), action="append",
                        help="decoder width (repeatable; default: all)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="full")
    parser.add_argument("--model", help="a checkpoint to describe instead of --arch")
    parser.add_argument("--size", type=int, default=256, help="input size (multiple of 32)")


def main(args: argparse.Namespace) -> int:
    if args.model:
        # costs depend on the architecture only: rebuilding from the config also covers inference-only files
        models = [(args.model, CrossModalNet(read_config(args.model)))]
    else:
        models = [(arch, create_model(arch, args.variant, input_size=args.size)) for arch in args.arch or sorted(WIDTHS)]
    for label, model in models:
        print(f"{label}: arch={model.cfg.arch} variant={model.cfg.variant} input={args.size}×{args.size}")
        print(f"  {'path':<16}{'params (M)':>12}{'GMAC':>10}")
        for cost in path_costs(model, args.size):
            gmac = "" if cost.gmac != cost.gmac else f"{cost.gmac:10.2f}"
            print(f"  {cost.path:<16}{cost.params_m:12.2f}{gmac}")
    return 0
