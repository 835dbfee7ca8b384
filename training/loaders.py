"""Training batches from dataset folders: each batch holds one kind of data (paired, image-only, normal-only).

The batch plan is a pure function of (seed, step, rank): the kind of step ``s`` is drawn from the
mixing ratio with ``default_rng([seed, s])``, each kind walks its own ``DistributedSampler``
order epoch after epoch, and each sample's augmentation is seeded with (seed, step, rank, slot).
So a resumed run sees exactly the batches the uninterrupted run would have seen, with any number
of loader workers, and no loader state needs saving beyond the step.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from facenormals.dataset import Sample, SampleFiles, SampleKind, load_sample, scan_dataset
from facenormals.fileio import DataError
from facenormals.mesh_prior import empty_prior
from facenormals.prior import stored_prior
from facenormals.training.augment import (
    geometric_matrix,
    jitter_landmarks,
    photometric,
    warp_image,
    warp_mask,
    warp_normals,
)
from facenormals.training.config import BATCH_KINDS, AugmentSection, TrainConfig
from facenormals.training.schedule import steps_for_batch
from facenormals.training.truth_prior import truth_prior

KIND_OF_SAMPLE = {SampleKind.PAIRED: "paired", SampleKind.IMAGE_ONLY: "image-only", SampleKind.NORMAL_ONLY: "normal-only"}


def _scan_settled(folder: str, tries: int = 30) -> list[SampleFiles]:
    """scan_dataset, retried while a writer is mid-sample (its mask lands last)."""
    for attempt in range(tries):
        try:
            return scan_dataset(folder)
        except DataError as err:
            if "have no mask" not in str(err) or attempt == tries - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def excluded_names(folder: str | Path, exclude: dict[str, list[str]]) -> set[str]:
    """Names of the samples whose ``params.csv`` row holds an excluded value (none where the file or column is absent)."""
    path = Path(folder) / "params.csv"
    if not exclude or not path.is_file():
        return set()
    with path.open(newline="") as f:
        return {row["name"] for row in csv.DictReader(f)
                if any(row.get(column) in values for column, values in exclude.items())}


def scan_by_kind(folders: tuple[str, ...] | list[str],
                 exclude: dict[str, list[str]] | None = None) -> dict[str, list[SampleFiles]]:
    """All samples of ``folders`` grouped by batch kind (sorted, so the order is reproducible), less ``exclude``'s."""
    groups: dict[str, list[SampleFiles]] = {kind: [] for kind in BATCH_KINDS}
    for folder in folders:
        left_out = excluded_names(folder, exclude or {})
        for files in _scan_settled(folder):
            if files.name not in left_out:
                groups[KIND_OF_SAMPLE[files.kind]].append(files)
    return groups


@dataclass(frozen=True)
class SampleKey:
    kind: str
    index: int
    size: int
    seed: tuple[int, ...] | None  # None: no augmentation (validation, previews)
    window: tuple[float, float] = (1.0, 1.0)


PRIOR_DROPOUT = AugmentSection().prior_dropout  # default share of training images shown without their prior


def load_item(files: SampleFiles, size: int, rng: np.random.Generator | None,
              augment: AugmentSection | None, prior: str | None = None,
              window: tuple[float, float] = (1.0, 1.0)) -> dict[str, np.ndarray]:
    """Load one sample, warp it to ``size`` (with random geometry when ``rng`` is set), augment its image.

    Returns channel-first float32 arrays: ``image`` 3×S×S, ``normals`` 3×S×S (zero outside the mask),
    ``mask`` 1×S×S; with ``prior`` (a source of :mod:`facenormals.prior`), samples with an image also get
    ``prior`` 4×S×S (coarse-face normals, coverage) from the folder's stored MediaPipe landmarks
    (``facenormals data prior``), warped like the normals.
    """
    sample = load_sample(files)
    src = sample.mask.shape[0]
    matrix = geometric_matrix(src, size, rng, augment, window)
    out: dict[str, np.ndarray] = {}
    mask = warp_mask(sample.mask, matrix, size)
    if sample.normals is not None:
        normals, mask = warp_normals(sample.normals, sample.mask, matrix, size)
        out["normals"] = normals.transpose(2, 0, 1)
    if sample.image is not None:
        image = warp_image(sample.image, matrix, size).astype(np.float32) / np.float32(255.0)
        if rng is not None and augment is not None:
            image = photometric(image, mask, rng, augment)
        out["image"] = image.transpose(2, 0, 1)
        if prior:
            out["prior"] = _prior_channels(files, sample, matrix, size, rng, prior, augment)
    out["mask"] = mask[None].astype(np.float32)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def require_stored_priors(folders: tuple[str, ...]) -> None:
    """A prior model trains on stored MediaPipe priors: a folder with images but no ``priors/index.csv`` would
    silently train (or validate) on the no-mesh fallback, so it is an error naming the fix."""
    from facenormals.mesh_prior import PRIOR_INDEX, PRIORS_DIR

    for folder in folders:
        root = Path(folder)
        if (root / "images").is_dir() and not (root / PRIORS_DIR / PRIOR_INDEX).is_file():
            raise ValueError(f"{root}: no stored mesh priors ({PRIORS_DIR}/{PRIOR_INDEX}) for a prior model; "
                             f"run `facenormals data prior --in {root}` first")


def _landmark_jitter(size: int, rng: np.random.Generator | None,
                     augment: AugmentSection | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The landmark move for this sample's prior, or None (no draw at all when the jitter is off)."""
    if rng is None or augment is None or augment.prior_jitter <= 0.0 or rng.random() >= augment.prior_jitter:
        return None
    return lambda points: jitter_landmarks(points, size, rng, augment)


def _from_truth(sample: Sample, rng: np.random.Generator | None, augment: AugmentSection | None) -> bool:
    """Whether this paired sample's coarse face is drawn from its truth (no draw at all when that is off)."""
    if rng is None or augment is None or augment.prior_from_truth <= 0.0 or sample.normals is None:
        return False
    return bool(rng.random() < augment.prior_from_truth)


def _prior_channels(files: SampleFiles, sample: Sample, matrix: np.ndarray, size: int,
                    rng: np.random.Generator | None, source: str, augment: AugmentSection | None) -> np.ndarray:
    shape = sample.image.shape
    dropout = augment.prior_dropout if augment is not None else PRIOR_DROPOUT
    if rng is not None and rng.random() < dropout:  # drawn whatever the rate: the augmentation stream stays put
        normals, coverage = empty_prior(shape[0])
    else:
        normals, coverage = stored_prior(files.image.parent.parent, files.name, shape, source,
                                         _landmark_jitter(shape[0], rng, augment))
        if _from_truth(sample, rng, augment):
            normals = truth_prior(normals, coverage, sample.normals, sample.mask, rng, augment.prior_truth_tilt_deg,
                                  augment.prior_truth_scales_px)
    warped, _ = warp_normals(normals, np.full(coverage.shape, coverage.any()), matrix, size)
    return np.concatenate([warped.transpose(2, 0, 1), warp_mask(coverage, matrix, size)[None].astype(np.float32)])


class KindDatasets(Dataset):
    """Map-style dataset keyed by :class:`SampleKey` over the samples of every kind."""

    def __init__(self, groups: dict[str, list[SampleFiles]], augment: AugmentSection | None,
                 prior: str | None = None) -> None:
        self.groups = groups
        self.augment = augment
        self.prior = prior

    def __len__(self) -> int:
        return sum(len(v) for v in self.groups.values())

    def __getitem__(self, key: SampleKey) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(list(key.seed)) if key.seed is not None else None
        return load_item(self.groups[key.kind][key.index], key.size, rng, self.augment, self.prior, key.window)


def collate(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([item[k] for item in items])) for k in items[0]}


class _IndexOnly(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class KindStream:
    """Endless sample order of one kind for one rank: DistributedSampler's permutation, epoch after epoch."""

    def __init__(self, n: int, world: int, rank: int, seed: int) -> None:
        if n < world:
            raise ValueError(f"{n} samples cannot be shared by {world} processes")
        self.sampler = DistributedSampler(_IndexOnly(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.epoch, self.order, self.pos = -1, [], 0

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.pos >= len(self.order):
                self.epoch += 1
                self.sampler.set_epoch(self.epoch)
                self.order, self.pos = list(self.sampler), 0
            take = min(count - len(out), len(self.order) - self.pos)
            out.extend(self.order[self.pos:self.pos + take])
            self.pos += take
        return out


def active_mix(cfg: TrainConfig, groups: dict[str, list[SampleFiles]]) -> dict[str, float]:
    """Mixing weights of the kinds that have data, a positive weight and at least one step for the variant."""
    mix = {k: float(w) for k, w in cfg.data.mix.items()
           if w > 0 and groups.get(k) and steps_for_batch(k, cfg.model.variant)}
    if not mix:
        counts = {k: len(v) for k, v in groups.items()}
        raise ValueError(f"no trainable batch kind: mix {cfg.data.mix}, samples per kind {counts}, "
                         f"variant {cfg.model.variant!r}")
    total = sum(mix.values())
    return {k: w / total for k, w in mix.items()}


class BatchPlan:
    """Yields (step, kind, keys) from ``start_step`` on; the same sequence whatever the start."""

    def __init__(self, cfg: TrainConfig, groups: dict[str, list[SampleFiles]], world: int = 1, rank: int = 0) -> None:
        self.cfg, self.world, self.rank = cfg, world, rank
        self.mix = active_mix(cfg, groups)
        self.kinds = list(self.mix)
        self.probs = np.array([self.mix[k] for k in self.kinds])
        self.sizes = {k: len(groups[k]) for k in self.kinds}
        for phase in cfg.phases:
            if phase.batch_size % world:
                raise ValueError(f"batch_size {phase.batch_size} is not divisible by {world} processes")

    def kind_at(self, step: int) -> str:
        return self.kinds[int(np.random.default_rng([self.cfg.seed, step]).choice(len(self.kinds), p=self.probs))]

    def iterate(self, start_step: int) -> Iterator[tuple[int, str, list[SampleKey]]]:
        streams = {k: KindStream(n, self.world, self.rank, self.cfg.seed + 1000 * i)
                   for i, (k, n) in enumerate(self.sizes.items())}
        for step in range(self.cfg.total_steps):
            phase = self.cfg.phase_at(step)
            kind = self.kind_at(step)
            indices = streams[kind].take(phase.batch_size // self.world)
            if step < start_step:
                continue  # replay the order without loading anything
            keys = [SampleKey(kind, idx, phase.size, (self.cfg.seed, step, self.rank, slot), phase.window)
                    for slot, idx in enumerate(indices)]
            yield step, kind, keys


class _PlanBatches:
    """A batch sampler over the plan: DataLoader workers load, the main process keeps the order."""

    def __init__(self, plan: BatchPlan, start_step: int) -> None:
        self.plan, self.start_step = plan, start_step

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for _, _, keys in self.plan.iterate(self.start_step):
            yield keys

    def __len__(self) -> int:
        return self.plan.cfg.total_steps - self.start_step


def train_batches(cfg: TrainConfig, groups: dict[str, list[SampleFiles]], start_step: int, world: int = 1,
                  rank: int = 0, pin_memory: bool = False) -> Iterator[tuple[int, str, dict[str, torch.Tensor]]]:
    """(step, batch kind, batch tensors) from ``start_step`` to the end of the run (in pinned memory with
    ``pin_memory``, for asynchronous copies to a GPU)."""
    plan = BatchPlan(cfg, groups, world, rank)
    dataset = KindDatasets(groups, cfg.augment, prior=cfg.model.input_prior)
    loader = DataLoader(dataset, batch_sampler=_PlanBatches(plan, start_step), collate_fn=collate,
                        num_workers=cfg.data.num_workers, persistent_workers=False, pin_memory=pin_memory)
    steps = ((step, kind) for step, kind, _ in plan.iterate(start_step))
    for (step, kind), batch in zip(steps, loader, strict=True):
        yield step, kind, batch


def evenly_spaced(items: list, limit: int) -> list:
    """At most ``limit`` items spread over the list (deterministic)."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


def fixed_samples(folders: tuple[str, ...], kind: str, limit: int) -> list[SampleFiles]:
    """A fixed, deterministic subset of one kind from ``folders`` (for validation and previews)."""
    found: list[SampleFiles] = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"dataset folder not found: {folder}")
        found += scan_by_kind([folder])[kind]
    return evenly_spaced(found, limit)
