"""What a model is, without the network: widths, variants, the prior's modes and sources, and :class:`ModelCfg`,
stored in every checkpoint and exported file.

Torch-free, so that the per-frame path (crops, the coarse-face prior, ONNX Runtime backends) and tools that only read
a model's metadata do not import torch (~3 s). :mod:`facenormals.model` builds the network from these and re-exports
them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from facenormals.conventions import CONVENTION_VERSION


@dataclass(frozen=True)
class DecoderWidths:
    """Channels of a decoder: optional 1×1 latent projection, four 3×3 stages, the full-resolution head.

    ``head = 0``: no full-resolution stage; the 1×1 output conv runs at H/2 and its 3 channels are
    upsampled ×2 (the "lite" network: few-channel convs at full resolution cost far more than their MACs on a CPU).
    """

    latent: int | None
    stages: tuple[int, int, int, int]
    head: int


@dataclass(frozen=True)
class WidthSpec:
    normal_decoder: DecoderWidths
    image_decoder: DecoderWidths
    # m_i of the five skips, coarse to fine: layer3, layer2, layer1, layer0, full resolution (0: no full-res branch)
    skip_chs: tuple[int, int, int, int, int]
    encoder_width: float = 1.0  # channel multiplier of both ResNet-18 encoders (resnet.scaled_chs)


WIDTHS: dict[str, WidthSpec] = {
    # The official widths: 512→768 latent projection, 640/320/320/192, 64 at full resolution.
    "paper": WidthSpec(
        normal_decoder=DecoderWidths(768, (640, 320, 320, 192), 64),
        image_decoder=DecoderWidths(None, (512, 256, 256, 128), 64),
        skip_chs=(256, 128, 64, 64, 64),
    ),
    # ~8× fewer decoder MACs: the image→normal path is dominated by the ResNet-18 encoder.
    "fast": WidthSpec(
        normal_decoder=DecoderWidths(256, (128, 64, 32, 32), 16),
        image_decoder=DecoderWidths(None, (128, 64, 32, 32), 16),
        skip_chs=(64, 32, 32, 16, 16),
    ),
    # Issue 15: half-width encoders (32/32/64/128/256), a decoder halved to fit and nothing at full resolution
    # (no full-res branch or stage: output upsampled from H/2), for ~10 ms on one CPU thread in INT8.
    "lite": WidthSpec(
        normal_decoder=DecoderWidths(128, (64, 32, 16, 16), 0),
        image_decoder=DecoderWidths(None, (64, 32, 16, 16), 0),
        skip_chs=(32, 16, 16, 8, 0),
        encoder_width=0.5,
    ),
}

# ModelCfg.prior: how E_I uses the coarse-face prior (facenormals.model's docstring, "Mesh prior")
PRIOR_MODES = ("none", "absolute", "residual")
PRIOR_SOURCES = ("mediapipe-mesh", "ict-fit", "ict-blend")  # ModelCfg.prior_source: which coarse face (facenormals.prior)
PRIOR_CHANS = 4  # prior normals (3, zero where uncovered) + coverage (1), after the RGB channels
COARSE_PRIOR_FACTOR = 16  # normal→normal prior: the input averaged over 16×16 blocks (~ the mesh's resolution)

# variant → (has normal encoder E_N, has image decoder D_I, has skips)
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "full": (True, True, True),
    "no-skip": (True, True, False),
    "no-normal-encoder": (False, True, True),
    "plain": (False, False, True),  # E_I + D_N, skips always active: an ordinary U-Net
}


@dataclass(frozen=True)
class ModelCfg:
    """Everything needed to rebuild a model; stored in every checkpoint and exported file."""

    arch: str = "fast"
    variant: str = "full"
    input_size: int = 256
    in_chans: int = 3
    convention_version: int = CONVENTION_VERSION
    extra: dict[str, str] = field(default_factory=dict)  # provenance notes, e.g. licence of converted weights
    prior: str = "none"  # "none" | "absolute" | "residual": the mesh-prior input (PRIOR_MODES)
    prior_source: str = "mediapipe-mesh"  # the coarse face drawn in the prior channels (PRIOR_SOURCES)

    def __post_init__(self) -> None:
        if self.arch not in WIDTHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {sorted(WIDTHS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {sorted(VARIANTS)}")
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if self.prior not in PRIOR_MODES:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of {list(PRIOR_MODES)}")
        if self.prior_source not in PRIOR_SOURCES:
            raise ValueError(f"unknown prior_source {self.prior_source!r}; choose one of {list(PRIOR_SOURCES)}")
        if self.prior != "none" and self.in_chans != 3 + PRIOR_CHANS:
            raise ValueError(f"prior {self.prior!r} needs in_chans = {3 + PRIOR_CHANS} (RGB + prior normals + "
                             f"coverage), got {self.in_chans}")

    @property
    def input_prior(self) -> str | None:
        """The prior source the input carries (:mod:`facenormals.prior`), None for an RGB model."""
        return self.prior_source if self.prior != "none" else None

    @property
    def image_chans(self) -> int:
        """Channels D_I reconstructs: the input minus the prior channels."""
        return self.in_chans - PRIOR_CHANS if self.prior != "none" else self.in_chans

    @property
    def widths(self) -> WidthSpec:
        return WIDTHS[self.arch]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCfg:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"model config has unknown keys {sorted(unknown)}")
        return cls(**data)
