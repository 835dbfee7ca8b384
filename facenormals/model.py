"""The cross-modal network of Abrevaya et al. (CVPR 2020) with deactivable skip connections.

    E_I  image encoder   (ResNet-18 + the official full-resolution branch)
    E_N  normal encoder  (ResNet-18)
    D_N  normal decoder  (five deactivable max-merge skips from E_I)
    D_I  image decoder   (no skips)

The layout follows the authors' released code (``ResNetUNet``): the latent is layer4's output,
D_N starts with a 1×1 conv+ReLU projection of it, every decoder stage is
"bilinear ×2 upsample (align_corners=True) → merge skip → 3×3 conv+ReLU", the four
lower skips pass a 1×1 conv+ReLU first, and the fifth skip is the full-resolution branch.
Active skip: ``cat(x[:, :C-m], max(x[:, C-m:], skip))``; inactive: x passes unchanged.

Widths are data (``WIDTHS``); variants (``VARIANTS``) drop parts for the paper's ablation (both, and ``ModelCfg``, in
:mod:`facenormals.model_config`, torch-free).
``create_model`` is the one constructor.

Mesh prior (``ModelCfg.prior``, issue 9): with ``"absolute"`` or ``"residual"``, E_I's input is
N×7×H×W = RGB, the MediaPipe mesh normals extended to the whole crop (each pixel beyond the mesh takes
the nearest mesh normal; all zero when there is no mesh) and the mesh's coverage (:func:`with_prior`).
``"residual"`` reads D_N's output as the normal in the prior's frame (rotated by the rotation taking +z
to the prior; identity where the prior is zero) and starts as exactly the prior (zero-initialised last
layer), so the network learns detail on top of the coarse geometry; its normal→normal path uses a
heavily smoothed copy of its input as the prior (:func:`coarse_prior`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from facenormals.model_config import COARSE_PRIOR_FACTOR, PRIOR_CHANS, VARIANTS, DecoderWidths, ModelCfg
from facenormals.resnet import ResNet18Encoder, conv_relu


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


def max_merge(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Merge a skip into the last m channels of x by element-wise max (m = skip channels)."""
    m = skip.shape[1]
    return torch.cat([x[:, :-m], torch.maximum(x[:, -m:], skip)], dim=1)


class SkipAdapters(nn.Module):
    """The 1×1 conv+ReLU on the four lower E_I stages (the official ``layerK_1x1``).

    The full-resolution skip needs none: E_I's full-resolution branch already has m_4 channels
    (a network without that branch has four skips).
    """

    def __init__(self, encoder_chs: tuple[int, ...], skip_chs: tuple[int, ...]) -> None:
        """Both fine to coarse: layer0, layer1, layer2, layer3."""
        super().__init__()
        self.convs = nn.ModuleList(conv_relu(c, m, 1) for c, m in zip(encoder_chs, skip_chs, strict=True))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """features: E_I outputs [full, layer0..layer4] → skips coarse to fine [l3, l2, l1, l0, full].

        Without the full-resolution branch ([layer0..layer4]) the last skip is absent.
        """
        full, lower = features[:-5], features[-5:-1]
        adapted = [conv(f) for conv, f in zip(self.convs, lower, strict=True)]
        return [*adapted[::-1], *full]


class Decoder(nn.Module):
    """Five upsampling stages from the H/32 latent to full resolution, then a 1×1 conv to 3 channels.

    With ``skip_chs`` set, stage i can merge skip i (active) or ignore it (inactive). With ``widths.head = 0``
    there are four stages (to H/2) and the 1×1 conv's output is upsampled ×2.
    """

    def __init__(self, in_chs: int, widths: DecoderWidths, skip_chs: tuple[int, ...] | None = None,
                 out_chs: int = 3) -> None:
        super().__init__()
        self.latent_proj = conv_relu(in_chs, widths.latent, 1) if widths.latent else None
        chs = widths.latent or in_chs
        blocks = []
        self.upsample_output = not widths.head
        for i, width in enumerate((*widths.stages, widths.head) if widths.head else widths.stages):
            if skip_chs is not None and skip_chs[i] > chs:
                raise ValueError(f"decoder stage {i}: skip has {skip_chs[i]} channels but the decoder only {chs}")
            blocks.append(conv_relu(chs, width, 3))
            chs = width
        self.blocks = nn.ModuleList(blocks)
        self.last = nn.Conv2d(chs, out_chs, 1)
        self.skip_chs = skip_chs

    def forward(self, latent: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.latent_proj(latent) if self.latent_proj is not None else latent
        for i, block in enumerate(self.blocks):
            x = upsample2x(x)
            if skips is not None:
                x = max_merge(x, skips[i])
            x = block(x)
        return upsample2x(self.last(x)) if self.upsample_output else self.last(x)


def l2_normalize(raw: torch.Tensor) -> torch.Tensor:
    return F.normalize(raw, dim=1, eps=1e-6)


def with_prior(image: torch.Tensor, prior_normals: torch.Tensor | None = None,
               coverage: torch.Tensor | None = None) -> torch.Tensor:
    """E_I's input for a prior model: N×7×H×W = RGB, prior normals, coverage.

    The prior normals are the mesh normals extended beyond the mesh (``mesh_prior.fill_prior``). No prior
    (``None``: MediaPipe found no mesh) gives zeros and coverage 0; training drops the prior of 10 % of its
    images the same way, so the network has learnt that case.
    """
    n, _, h, w = image.shape
    if prior_normals is None:
        prior_normals = image.new_zeros(n, 3, h, w)
        coverage = image.new_zeros(n, 1, h, w)
    elif coverage is None:
        raise ValueError("with_prior: prior normals given without their coverage")
    coverage = coverage.to(image.dtype).reshape(n, 1, h, w)
    return torch.cat([image, prior_normals.to(image.dtype), coverage], dim=1)


def rotate_from_prior(raw: torch.Tensor, prior_normals: torch.Tensor) -> torch.Tensor:
    """Rotate D_N's output by the rotation taking +z to the prior normal (identity where the prior is zero).

    Rodrigues for a = +z, b = p: R·r = r + v×r + v×(v×r) / (1 + p_z) with v = a×b = (−p_y, p_x, 0).
    Rotations keep length, so normalising before or after is the same.
    """
    has = (prior_normals.pow(2).sum(dim=1, keepdim=True) > 0.25).to(raw.dtype)
    p = prior_normals * has
    px, py = p[:, 0:1], p[:, 1:2]
    pz = p[:, 2:3] + (1.0 - has)  # no prior: p = +z, R = I
    rx, ry, rz = raw[:, 0:1], raw[:, 1:2], raw[:, 2:3]
    dot = px * rx + py * ry
    k = 1.0 / (1.0 + pz).clamp_min(1e-3)  # p_z > 0 for the front faces of a mesh
    return torch.cat([rx + px * rz - k * px * dot,
                      ry + py * rz - k * py * dot,
                      rz - dot - k * (px * px + py * py) * rz], dim=1)


def coarse_prior(normals: torch.Tensor, factor: int = COARSE_PRIOR_FACTOR) -> torch.Tensor:
    """A heavily smoothed copy of a normal map (zero = no normal, kept zero): the normal→normal prior.

    Averaging over factor×factor blocks, then bilinear upsampling, leaves roughly the detail the 468-point
    MediaPipe mesh has; it exists for every normal-only sample (no landmarks or MediaPipe run needed).
    """
    valid = (normals.abs().sum(dim=1, keepdim=True) > 0).to(normals.dtype)
    size = normals.shape[-2:]
    small = F.avg_pool2d(normals * valid, factor, ceil_mode=True)
    smooth = l2_normalize(F.interpolate(small, size=size, mode="bilinear", align_corners=False))
    coverage = valid * (smooth.abs().sum(dim=1, keepdim=True) > 0).to(normals.dtype)
    return smooth * coverage


class ImageToNormal(nn.Module):
    """The inference path E_I → D_N with skips active: what gets exported. Holds no D_I or E_N."""

    def __init__(self, image_encoder: ResNet18Encoder, skips: SkipAdapters | None, normal_decoder: Decoder,
                 cfg: ModelCfg) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.skip_connections = skips
        self.normal_decoder = normal_decoder
        self.cfg = cfg

    def forward_raw(self, image: torch.Tensor) -> torch.Tensor:
        features = self.image_encoder(image)
        skips = self.skip_connections(features) if self.skip_connections is not None else None
        return _apply_prior(self.cfg, self.normal_decoder(features[-1], skips), image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image N×C×H×W RGB in [0, 1] (C = 7 with a prior: :func:`with_prior`) → unit normals N×3×H×W."""
        return l2_normalize(self.forward_raw(image))


def _apply_prior(cfg: ModelCfg, raw: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """D_N's raw output → raw normals: rotated onto the prior for ``residual`` models, unchanged otherwise."""
    if cfg.prior != "residual":
        return raw
    chans = cfg.image_chans
    return rotate_from_prior(raw, image[:, chans:chans + 3])


class CrossModalNet(nn.Module):
    """E_I, E_N, D_N, D_I with the paper's four translation paths."""

    def __init__(self, cfg: ModelCfg) -> None:
        super().__init__()
        self.cfg = cfg
        has_normal_encoder, has_image_decoder, has_skips = VARIANTS[cfg.variant]
        spec = cfg.widths
        full_res = spec.skip_chs[4] if has_skips else 0
        self.image_encoder = ResNet18Encoder(cfg.in_chans, full_res_chs=full_res, width=spec.encoder_width)
        self.normal_encoder = ResNet18Encoder(3, width=spec.encoder_width) if has_normal_encoder else None
        enc_chs = tuple(info.num_chs for info in self.image_encoder.feature_info if info.reduction in (16, 8, 4, 2))
        latent = self.image_encoder.feature_info[-1].num_chs  # E_N's latent has the same width
        self.skip_connections = SkipAdapters(enc_chs, spec.skip_chs[3::-1]) if has_skips else None
        self.normal_decoder = Decoder(latent, spec.normal_decoder, spec.skip_chs if has_skips else None)
        self.image_decoder = (Decoder(latent, spec.image_decoder, out_chs=cfg.image_chans)
                              if has_image_decoder else None)
        if cfg.prior == "residual":  # start as the prior itself: D_N's output is +z in the prior's frame
            with torch.no_grad():
                self.normal_decoder.last.weight.zero_()
                self.normal_decoder.last.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))

    @property
    def image_to_normal_path(self) -> ImageToNormal:
        """The exportable E_I → D_N module, sharing this network's weights."""
        return ImageToNormal(self.image_encoder, self.skip_connections, self.normal_decoder, self.cfg)

    def image_to_normal(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_to_normal_path(image)

    def image_to_normal_and_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One E_I pass feeding D_N (skips active) and D_I: the paired step of the paper."""
        if self.image_decoder is None:
            raise RuntimeError(f"variant {self.cfg.variant!r} has no image decoder")
        features = self.image_encoder(image)
        skips = self.skip_connections(features) if self.skip_connections is not None else None
        normals = l2_normalize(_apply_prior(self.cfg, self.normal_decoder(features[-1], skips), image))
        return normals, self.image_decoder(features[-1])

    def image_to_image(self, image: torch.Tensor) -> torch.Tensor:
        if self.image_decoder is None:
            raise RuntimeError(f"variant {self.cfg.variant!r} has no image decoder")
        return self.image_decoder(self.image_encoder(image)[-1])

    def normal_to_normal_raw(self, normals: torch.Tensor) -> torch.Tensor:
        if self.normal_encoder is None:
            raise RuntimeError(f"variant {self.cfg.variant!r} has no normal encoder")
        raw = self.normal_decoder(self.normal_encoder(normals)[-1], None)  # skips inactive
        if self.cfg.prior == "residual":  # detail on top of a smoothed copy of the input
            return rotate_from_prior(raw, coarse_prior(normals))
        return raw

    def normal_to_normal(self, normals: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.normal_to_normal_raw(normals))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_to_normal(image)


def create_model(arch: str = "fast", variant: str = "full", **overrides: object) -> CrossModalNet:
    """The one constructor: ``create_model("paper", "no-skip", input_size=256)``.

    ``prior="absolute"|"residual"`` sets ``in_chans`` to 7 unless it is given.
    """
    if overrides.get("prior", "none") != "none":
        overrides.setdefault("in_chans", 3 + PRIOR_CHANS)
    return CrossModalNet(replace(ModelCfg(arch=arch, variant=variant), **overrides))
