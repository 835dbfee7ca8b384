"""The stability benchmark with the blend at 0.65 everywhere (session 40's coarse face), for an A/B:
``python benchmarks/results/stability-blend-yaw/blend_065.py --source sample --json OUT``."""
import runpy
import sys

from facenormals import prior


def main() -> None:
    prior.BLEND_ICT_WEIGHT = prior.BLEND_PROFILE_ICT_WEIGHT = 0.65
    sys.argv = ["stability", *sys.argv[1:]]
    runpy.run_module("facenormals.benchmarks.stability", run_name="__main__")


if __name__ == "__main__":
    main()
