"""Scratch (session 24): render with the James texture on every ICT face while leaving the sample's random stream
untouched, so that the set matches a procedural-albedo render of the same seed sample for sample (same face, pose,
light). ``python render_matched.py data render ... --james DIR --p-transfer 1.0 --workers 1`` (one process: the patch
does not reach worker processes)."""
import copy
import sys


def main(argv: list[str]) -> int:
    from facenormals.cli import main as cli_main
    from facenormals.training.data import transfer

    original = transfer.JamesTransfer.sample

    def sample_off_stream(self, layout, rng, base):
        return original(self, layout, copy.deepcopy(rng), base)

    transfer.JamesTransfer.sample = sample_off_stream
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
