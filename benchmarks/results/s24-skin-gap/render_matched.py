"""Scratch: render with the James texture on every ICT face while leaving the sample's random stream untouched,
so that the set matches a procedural-albedo render of the same seed sample for sample (same face, pose, light)."""
import copy
import sys

from facenormals.training.data import transfer

_orig = transfer.JamesTransfer.sample


def _sample(self, layout, rng, base):
    return _orig(self, layout, copy.deepcopy(rng), base)


transfer.JamesTransfer.sample = _sample
from facenormals.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
