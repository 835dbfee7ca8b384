"""Distillation (issue 15, optional): a smaller student follows a frozen teacher's normals.

Why: the "lite" network (half-width encoders, 0.74 GMAC) is for the live loop's latency; the shipped ``fast-prior``
knows more than the labels say, above all about real faces — the image-only real photos have no normal labels, and
there the teacher's output is the only normal target there is. Every step with an image (paired and image-only)
adds the masked cosine distance between the student's image→normal output and the teacher's, on the same input.

With ``real_photos_only`` only the image-only steps do: a network continued from the shipped weights keeps their
behaviour on real faces (the one thing no label says is right or wrong) while the renders' labels train it freely —
the real-photo anchor (:mod:`facenormals.training.anchor`) instead pulls real photos to the coarse face.

With ``mirror`` the target is the teacher's mirror-averaged output (:mod:`facenormals.mirror_average`: the teacher
on the crop and on its mirror image, averaged), what the API and ``facenormals eval`` get from it: better than its
one pass on every validation set. The live loop runs its network once a frame, never mirrored, so a live student
learns the averaged teacher's answer for the price of one pass.

With a list of ``teacher`` checkpoints the target is their ensemble: the members' normals (each mirror-averaged
with ``mirror``) summed, weighted by ``teacher_weights``, and renormalised. Networks that sit at different points of
the campaign's one trade (the real scan against the procedural ICT sets) err differently, and their mean can lead a
single network on every set where no single network, nor any average of their weights, does.

Configured by ``[distill]`` in the training TOML (``teacher`` = a checkpoint, full or inference-only, with the
student's input, or a list of them; ``weight``; ``mirror``); off (``weight = 0``) by default. Costs one teacher
forward (no gradient) per member and image step (two with ``mirror``), and on image-only steps without the anchor one
student image→normal forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from facenormals.checkpoint import load_image_to_normal
from facenormals.mirror_average import NORMAL_X_CHANNEL
from facenormals.model import ImageToNormal, ModelCfg
from facenormals.training.losses import masked_cosine_distance


@dataclass(frozen=True)
class DistillSection:
    # checkpoint whose image→normal output the student follows, or a list of them: their ensemble
    teacher: str | tuple[str, ...] | None = None
    teacher_weights: tuple[float, ...] | None = None  # one per listed teacher (equal when absent)
    weight: float = 0.0
    # only the image-only steps (the unlabelled real photos) follow the teacher: what it does on real faces is kept
    # while the labelled renders teach the rest
    real_photos_only: bool = False
    mirror: bool = False  # the target is the teacher's mirror-averaged output (the API's), not its one pass

    def __post_init__(self) -> None:
        if not self.weight >= 0.0:
            raise ValueError(f"distill.weight must be ≥ 0, got {self.weight}")
        if self.weight > 0 and not self.teacher:
            raise ValueError("distill.weight > 0 needs distill.teacher (a checkpoint)")
        if self.teacher_weights is not None and (len(self.teacher_weights) != len(self.teachers)
                                                 or not all(w > 0 for w in self.teacher_weights)):
            raise ValueError(f"distill.teacher_weights must be one weight > 0 per teacher ({len(self.teachers)}), "
                             f"got {list(self.teacher_weights)}")

    @property
    def teachers(self) -> tuple[str, ...]:
        if not self.teacher:
            return ()
        return (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)


class MirrorAveragedTeacher(torch.nn.Module):
    """A teacher answering with the mean of its normals on the input and on the input's mirror image (brought back:
    columns flipped, x negated), renormalised — :func:`facenormals.mirror_average.mirror_averaged` in torch."""

    def __init__(self, teacher: ImageToNormal) -> None:
        super().__init__()
        self.teacher = teacher

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mirrored = inputs.flip(-1)
        if mirrored.shape[1] > NORMAL_X_CHANNEL:  # the coarse face's normals turn with the crop
            mirrored[:, NORMAL_X_CHANNEL] = -mirrored[:, NORMAL_X_CHANNEL]
        back = self.teacher(mirrored).flip(-1)
        back = torch.cat([-back[:, :1], back[:, 1:]], dim=1)
        return torch.nn.functional.normalize(self.teacher(inputs) + back, dim=1)


class EnsembleTeacher(torch.nn.Module):
    """Several teachers answering together: the weighted sum of their (unit) normals, renormalised."""

    def __init__(self, members: list[torch.nn.Module], weights: tuple[float, ...]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.weights = weights

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        total = sum(weight * member(inputs) for weight, member in zip(self.weights, self.members, strict=True))
        return torch.nn.functional.normalize(total, dim=1)


def _load_member(path: str, student: ModelCfg, mirror: bool, device: torch.device) -> torch.nn.Module:
    if not Path(path).is_file():
        raise FileNotFoundError(f"distill.teacher not found: {path}")
    teacher = load_image_to_normal(path, map_location=device)
    cfg = teacher.cfg
    if (cfg.in_chans, cfg.prior, cfg.prior_source) != (student.in_chans, student.prior, student.prior_source):
        raise ValueError(f"distill.teacher {path}: input {cfg.in_chans} channels, prior {cfg.prior!r}/"
                         f"{cfg.prior_source!r}; the student takes {student.in_chans}, {student.prior!r}/"
                         f"{student.prior_source!r}")
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return MirrorAveragedTeacher(teacher).eval() if mirror else teacher


def load_teacher(section: DistillSection, student: ModelCfg, device: torch.device) -> torch.nn.Module | None:
    """The frozen teacher (eval mode, no gradients; mirror-averaged with ``section.mirror``; the ensemble of several
    when ``section.teacher`` lists them), or None when distillation is off."""
    if section.weight <= 0:
        return None
    members = [_load_member(path, student, section.mirror, device) for path in section.teachers]
    if len(members) == 1:
        return members[0]
    return EnsembleTeacher(members, section.teacher_weights or (1.0,) * len(members)).eval()


def distill_loss(student_normals: torch.Tensor, teacher: torch.nn.Module, image: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Masked cosine distance from the student's normals to the frozen teacher's on the same input."""
    with torch.no_grad():
        target = teacher(image).to(student_normals.dtype)
    return masked_cosine_distance(student_normals, target, mask)
