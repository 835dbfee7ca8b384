"""The paper's training schedule: which optimisation steps each kind of mini-batch triggers.

    paired batch       → normal→normal (skips inactive), then image→normal + image→image
                         (skips active, the two losses summed with equal weights)
    image-only batch   → image→image
    normal-only batch  → normal→normal

Each step is one forward, one backward and one optimiser update. Ablation variants use the same
schedule; a step that needs a module the variant lacks is skipped (``plain`` has no D_I, so its
paired step is image→normal alone; ``no-normal-encoder`` has no normal→normal step).

>>> [s.value for s in steps_for_batch("paired", "full")]
['normal->normal', 'image->normal+image']
>>> [s.value for s in steps_for_batch("paired", "plain")]
['image->normal']
>>> steps_for_batch("image-only", "plain")
()
"""

from __future__ import annotations

import enum

import torch
from torch import nn

from facenormals.model import VARIANTS, CrossModalNet
from facenormals.training.anchor import AnchorSection, anchor_loss
from facenormals.training.angle_loss import AngleSection, masked_mean_angle
from facenormals.training.consistency import ConsistencySection, consistency_loss, draw_view, second_view_input
from facenormals.training.detail_loss import DetailSection, detail_loss
from facenormals.training.distill import distill_loss
from facenormals.training.losses import masked_cosine_distance, masked_l2
from facenormals.training.shading import ShadingSection, shading_loss


class StepKind(str, enum.Enum):
    NORMAL_TO_NORMAL = "normal->normal"
    IMAGE_TO_NORMAL_AND_IMAGE = "image->normal+image"
    IMAGE_TO_NORMAL = "image->normal"  # the paired step of variants without D_I
    IMAGE_TO_IMAGE = "image->image"


def steps_for_batch(batch_kind: str, variant: str) -> tuple[StepKind, ...]:
    """The ordered optimisation steps for one batch of ``batch_kind`` under ``variant``."""
    has_normal_encoder, has_image_decoder, _ = VARIANTS[variant]
    if batch_kind == "paired":
        steps = [StepKind.NORMAL_TO_NORMAL] if has_normal_encoder else []
        steps.append(StepKind.IMAGE_TO_NORMAL_AND_IMAGE if has_image_decoder else StepKind.IMAGE_TO_NORMAL)
        return tuple(steps)
    if batch_kind == "image-only":
        return (StepKind.IMAGE_TO_IMAGE,) if has_image_decoder else ()
    if batch_kind == "normal-only":
        return (StepKind.NORMAL_TO_NORMAL,) if has_normal_encoder else ()
    raise ValueError(f"unknown batch kind {batch_kind!r}")


def image_input(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """E_I's input: the RGB image, followed by the mesh prior's 4 channels when the batch has them."""
    if "prior" in batch:
        return torch.cat([batch["image"], batch["prior"].to(batch["image"].dtype)], dim=1)
    return batch["image"]


def normal_encoder_input(normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """E_N's input: the ground-truth normal map with zeros outside the mask."""
    return normals * mask.to(normals.dtype)


class StepLosses(nn.Module):
    """Wraps the network so that each step is one ``forward`` call (what DistributedDataParallel needs).

    ``forward(kind, batch)`` returns ``(total, parts)``: the loss to back-propagate and its named terms.
    ``batch`` holds ``image`` (N×3×H×W in [0, 1]), ``normals`` (N×3×H×W), ``mask`` (N×1×H×W).
    ``consistency`` (optional, weight > 0): every step with an image adds the two-view consistency term
    (:mod:`facenormals.training.consistency`) as ``cons``.
    ``anchor`` (optional, weight > 0): image-only steps with a coarse face add the real-photo anchor
    (:mod:`facenormals.training.anchor`) as ``anchor``.
    ``teacher`` (optional, with ``distill_weight`` > 0): every step with an image (only image→image steps, the real
    photos, with ``distill_real_only``) adds the distance to the frozen teacher's normals
    (:mod:`facenormals.training.distill`) as ``distill``.
    ``shading`` (optional, weight > 0): image-only steps add the shape-from-shading term
    (:mod:`facenormals.training.shading`) as ``shading``, from the anchor's image→normal forward.
    ``detail`` (optional, weight > 0): image→normal steps add the high-pass term
    (:mod:`facenormals.training.detail_loss`) as ``detail``.
    ``angle`` (optional, weight > 0): image→normal steps add the mean angle to the truth
    (:mod:`facenormals.training.angle_loss`) as ``angle``.
    """

    def __init__(self, net: CrossModalNet, consistency: ConsistencySection | None = None,
                 anchor: AnchorSection | None = None, teacher: nn.Module | None = None,
                 distill_weight: float = 0.0, shading: ShadingSection | None = None,
                 detail: DetailSection | None = None, angle: AngleSection | None = None,
                 distill_real_only: bool = False) -> None:
        super().__init__()
        self.net = net
        self.consistency = consistency if consistency is not None and consistency.weight > 0 else None
        self.anchor = anchor if anchor is not None and anchor.weight > 0 else None
        # a tuple: the frozen teacher is neither a submodule (state dict, DDP) nor trained
        self._teacher = (teacher,) if teacher is not None and distill_weight > 0 else ()
        self.distill_weight = distill_weight
        self.distill_real_only = distill_real_only
        self.shading = shading if shading is not None and shading.weight > 0 else None
        self.detail = detail if detail is not None and detail.weight > 0 else None
        self.angle = angle if angle is not None and angle.weight > 0 else None

    def forward(self, kind: StepKind, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms, normals = self._paper_step(kind, batch)
        distil = bool(self._teacher) and (kind is StepKind.IMAGE_TO_IMAGE or not self.distill_real_only)
        if kind is StepKind.NORMAL_TO_NORMAL or (self.consistency is None and not distil):
            return loss, terms
        if normals is None:  # image→image: no normal output to reuse
            normals = self.net.image_to_normal(image_input(batch))
        if distil:
            term = distill_loss(normals, self._teacher[0], image_input(batch), batch["mask"])
            loss, terms = loss + self.distill_weight * term, {**terms, "distill": term.detach()}
        if self.consistency is None:
            return loss, terms
        view = draw_view(len(batch["image"]), self.consistency)
        second = self.net.image_to_normal(second_view_input(batch["image"], batch.get("prior"), view))
        term = consistency_loss(normals, second, batch["mask"], view)
        return loss + self.consistency.weight * term, {**terms, "cons": term.detach()}

    def _normal_terms(self, normals: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """An image→normal output's loss against its ground truth: the paper's cosine, plus the detail and angle
        terms."""
        loss = masked_cosine_distance(normals, target, mask)
        terms = {"i2n": loss.detach()}
        if self.detail is not None:
            term = detail_loss(normals, target, mask, self.detail)
            loss, terms = loss + self.detail.weight * term, {**terms, "detail": term.detach()}
        if self.angle is not None:
            term = masked_mean_angle(normals, target, mask)
            loss, terms = loss + self.angle.weight * term, {**terms, "angle": term.detach()}
        return loss, terms

    def _paper_step(self, kind: StepKind, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """The paper's loss of one step, its named terms, and the image→normal output when the step made one."""
        mask = batch["mask"]
        if kind is StepKind.NORMAL_TO_NORMAL:
            target = batch["normals"]
            pred = self.net.normal_to_normal(normal_encoder_input(target, mask))
            loss = masked_cosine_distance(pred, target, mask)
            return loss, {"n2n": loss.detach()}, None
        if kind is StepKind.IMAGE_TO_NORMAL_AND_IMAGE:
            image = batch["image"]
            normals, recon = self.net.image_to_normal_and_image(image_input(batch))
            normal_loss, terms = self._normal_terms(normals, batch["normals"], mask)
            image_loss = masked_l2(recon, image, mask)
            return normal_loss + image_loss, {**terms, "i2i": image_loss.detach()}, normals
        if kind is StepKind.IMAGE_TO_NORMAL:
            normals = self.net.image_to_normal(image_input(batch))
            loss, terms = self._normal_terms(normals, batch["normals"], mask)
            return loss, terms, normals
        anchored = self.anchor is not None and "prior" in batch
        if kind is StepKind.IMAGE_TO_IMAGE and (anchored or self.shading is not None):
            # one E_I forward feeds image→image and the normal terms on real photos
            image = batch["image"]
            normals, recon = self.net.image_to_normal_and_image(image_input(batch))
            image_loss = masked_l2(recon, image, mask)
            loss, terms = image_loss, {"i2i": image_loss.detach()}
            if anchored:
                term = anchor_loss(normals, batch["prior"], mask, self.anchor)
                loss, terms = loss + self.anchor.weight * term, {**terms, "anchor": term.detach()}
            if self.shading is not None:
                term = shading_loss(normals, image, mask, self.shading)
                loss, terms = loss + self.shading.weight * term, {**terms, "shading": term.detach()}
            return loss, terms, normals
        if kind is StepKind.IMAGE_TO_IMAGE:
            image = batch["image"]
            loss = masked_l2(self.net.image_to_image(image_input(batch)), image, mask)
            return loss, {"i2i": loss.detach()}, None
        raise ValueError(f"unknown step kind {kind!r}")
