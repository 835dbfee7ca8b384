"""A random-weight lite checkpoint (timing only): the shipped fast-prior's config with arch 'lite'."""
import sys
from dataclasses import replace

import torch

from facenormals.checkpoint import read_config, save_checkpoint
from facenormals.model import CrossModalNet


def main() -> None:
    torch.manual_seed(0)
    cfg = replace(read_config("facenormals/weights/fast-prior.safetensors"), arch=sys.argv[1])
    model = CrossModalNet(cfg).eval()
    with torch.no_grad():  # non-degenerate weights for calibration (zero-init BN / last layer otherwise)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(model, sys.argv[2], provenance={"note": "random weights, timing only"}, inference_only=True)


if __name__ == "__main__":
    main()
