"""The training run's typed configuration, read from one TOML or JSON file.

Every field has a default; unknown keys fail loudly with a near-miss suggestion. The run writes
the fully resolved config next to its checkpoints (``config.json``), so a run is reproducible from
its folder alone.

>>> cfg = config_from_dict({"model": {"arch": "fast"}, "phases": [{"steps": 10, "size": 64}]})
>>> cfg.total_steps, cfg.phase_at(9).size
(10, 64)
"""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from facenormals.model_config import PRIOR_MODES, PRIOR_SOURCES, VARIANTS, WIDTHS
from facenormals.training.anchor import AnchorSection
from facenormals.training.angle_loss import AngleSection
from facenormals.training.consistency import ConsistencySection
from facenormals.training.detail_loss import DetailSection
from facenormals.training.distill import DistillSection
from facenormals.training.shading import ShadingSection

BATCH_KINDS = ("paired", "image-only", "normal-only")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelSection:
    arch: str = "fast"
    variant: str = "full"
    init: str | None = None  # a full checkpoint to start from (weights only; a fresh optimiser)
    prior: str = "none"  # coarse-face prior input (issue 9): "none" | "absolute" | "residual"
    prior_source: str = "mediapipe-mesh"  # which coarse face (issue 13): "mediapipe-mesh" | "ict-fit" | "ict-blend"
    # E_I's BatchNorm statistics fixed during training (training/batchnorm.py): recomputed at the start of a fresh
    # run over ``batchnorm_crops`` crops of the training mix (0: the init's as they are), then never updated
    freeze_batchnorm: bool = False
    batchnorm_crops: int = 400
    # sub-networks left as the init has them (e.g. ["image_encoder"]: E_I fixed, the decoders adapt)
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in WIDTHS:
            raise ValueError(f"model.arch {self.arch!r} unknown; choose one of {sorted(WIDTHS)}")
        if self.prior not in PRIOR_MODES:
            raise ValueError(f"model.prior {self.prior!r} unknown; choose one of {list(PRIOR_MODES)}")
        if self.prior_source not in PRIOR_SOURCES:
            raise ValueError(f"model.prior_source {self.prior_source!r} unknown; choose one of {list(PRIOR_SOURCES)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant {self.variant!r} unknown; choose one of {sorted(VARIANTS)}")
        if self.batchnorm_crops < 0:
            raise ValueError(f"model.batchnorm_crops must be ≥ 0 (0 = keep the init's statistics), "
                             f"got {self.batchnorm_crops}")

    @property
    def input_prior(self) -> str | None:
        """The prior source the model's input carries, None for an RGB model."""
        return self.prior_source if self.prior != "none" else None


@dataclass(frozen=True)
class DataSection:
    train: tuple[str, ...] = ()  # dataset folders; each sample's kind comes from its files
    val: tuple[str, ...] = ()  # paired dataset folders scored for "best" (mean angular error)
    preview: tuple[str, ...] = ()  # folders of real crops drawn in the sample-prediction PNG
    # relative frequency of each batch kind; kinds with no data or no step for the variant are dropped
    mix: dict[str, float] = field(default_factory=lambda: {"paired": 0.5, "image-only": 0.25, "normal-only": 0.25})
    # training samples left out by their params.csv: column → values, e.g. {albedo = ["james-transfer"]} (the ICT faces
    # that wore the James scan's texture: that scan is the real-scan validation set)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    num_workers: int = 0
    val_max_images: int = 64
    preview_max_images: int = 6

    def __post_init__(self) -> None:
        bad = set(self.mix) - set(BATCH_KINDS)
        if bad:
            raise ValueError(f"data.mix has unknown batch kinds {sorted(bad)}; use {list(BATCH_KINDS)}")
        if any(w < 0 for w in self.mix.values()) or not any(w > 0 for w in self.mix.values()):
            raise ValueError(f"data.mix weights must be ≥ 0 with at least one > 0, got {self.mix}")
        for column, values in self.exclude.items():
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"data.exclude.{column} must be a list of strings, got {values!r}")


@dataclass(frozen=True)
class AugmentSection:
    """Image-side augmentations (sim-to-real) and geometric ones applied to image, normals and mask alike."""

    flip: float = 0.5  # horizontal flip probability (normal x is negated)
    rotate_deg: float = 10.0  # in-plane rotation range ± (normal xy rotated with it)
    scale: float = 0.12  # zoom range ±
    shift: float = 0.04  # translation range ± (fraction of the side)
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.4
    hue_gain: float = 0.15  # per-channel gain range ± (white balance / tint)
    gamma: float = 0.35  # log-uniform gamma range ±
    grayscale: float = 0.1
    blur: float = 0.25  # probability of a Gaussian blur
    blur_sigma: float = 1.5
    noise: float = 0.3  # probability of Gaussian noise
    noise_std: float = 0.04
    jpeg: float = 0.3  # probability of JPEG re-encoding
    jpeg_quality: tuple[int, int] = (30, 95)
    occluder: float = 0.3  # probability of one random occluder (ellipse/rectangle, flat or textured)
    # prior models: share of training images shown without their coarse face (the no-face fallback), on top
    # of the images where MediaPipe found none (README "Training data": how often that is, by yaw)
    prior_dropout: float = 0.1
    # prior models: share of training images whose stored landmarks are moved before the coarse face is fitted,
    # so that the network learns to correct a prior that sits slightly off the face (live landmarks move 0.2–0.5 px
    # with the light alone; README "Training data": landmark jitter). 0 = off (no random draws: older runs replay).
    prior_jitter: float = 0.0
    prior_shift_px: float = 1.0  # std of the whole face's shift, pixels of a 256² crop
    prior_rotate_deg: float = 1.0  # std of its in-plane rotation about the landmarks' centroid
    prior_scale: float = 0.015  # std of its relative scale about the centroid
    prior_point_px: float = 0.5  # std of each landmark's own noise (x, y), pixels of a 256² crop
    # prior models: share of paired samples whose coarse face is pulled toward their ground truth and turned by a
    # smooth random tilt (training/truth_prior.py: a gap the shading must close, not the ICT population). 0 = off
    # (no random draws: older runs replay).
    prior_from_truth: float = 0.0
    prior_truth_tilt_deg: float = 12.0  # the tilt's RMS angle over the face is uniform in [0, this]
    # the tilt field's scales (Gaussian σ, pixels of a 256² crop): coarser ones are close to a turn of the whole face,
    # which shading under an unknown light cannot tell (run c15 used the default; c16 the finer 6/12/24)
    prior_truth_scales_px: tuple[float, ...] = (12.0, 24.0, 48.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prior_dropout <= 1.0:
            raise ValueError(f"augment.prior_dropout must be in [0, 1], got {self.prior_dropout}")
        if not 0.0 <= self.prior_jitter <= 1.0:
            raise ValueError(f"augment.prior_jitter must be in [0, 1], got {self.prior_jitter}")
        if not 0.0 <= self.prior_from_truth <= 1.0:
            raise ValueError(f"augment.prior_from_truth must be in [0, 1], got {self.prior_from_truth}")
        if not 0.0 <= self.prior_truth_tilt_deg <= 45.0:
            raise ValueError(f"augment.prior_truth_tilt_deg must be in [0, 45]°, got {self.prior_truth_tilt_deg}")
        if not self.prior_truth_scales_px or not all(0.0 < v <= 256.0 for v in self.prior_truth_scales_px):
            raise ValueError(f"augment.prior_truth_scales_px must be 1+ scales in (0, 256] px, "
                             f"got {self.prior_truth_scales_px}")
        spreads = {"prior_shift_px": self.prior_shift_px, "prior_rotate_deg": self.prior_rotate_deg,
                   "prior_scale": self.prior_scale, "prior_point_px": self.prior_point_px}
        bad = {k: v for k, v in spreads.items() if not v >= 0.0}
        if bad:
            raise ValueError(f"augment: landmark jitter spreads must be ≥ 0, got {bad}")


@dataclass(frozen=True)
class Phase:
    steps: int
    size: int = 256
    batch_size: int = 16
    # fraction of the crop's side shown in the size×size training view, drawn uniformly in [lo, hi]:
    # 1 = the whole crop resized; size/256 = a window at the crop's native scale (like 256² at test time)
    window: tuple[float, float] = (1.0, 1.0)
    lr: float | None = None  # this phase's learning rate; None = [optim] lr (a step-down schedule without new code)
    # the sub-networks this phase trains (e.g. ["image_decoder"]: a warm-up of the parts an inference-only init leaves
    # fresh, before their random gradients can reach the shared encoder); () = every part not in model.frozen
    train_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.lr is not None and not self.lr > 0.0:
            raise ValueError(f"phase lr must be > 0, got {self.lr}")
        if not 0.0 < self.window[0] <= self.window[1] <= 1.0:
            raise ValueError(f"phase window must satisfy 0 < lo ≤ hi ≤ 1, got {self.window}")
        if self.steps <= 0:
            raise ValueError(f"phase steps must be > 0, got {self.steps}")
        if self.size % 32:
            raise ValueError(f"phase size must be a multiple of 32, got {self.size}")
        if self.batch_size <= 0:
            raise ValueError(f"phase batch_size must be > 0, got {self.batch_size}")


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-4  # the paper: Adam, 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    consistency: ConsistencySection = field(default_factory=ConsistencySection)  # two-view term, off by default
    anchor: AnchorSection = field(default_factory=AnchorSection)  # real-photo anchor, off by default
    distill: DistillSection = field(default_factory=DistillSection)  # follow a frozen teacher, off by default
    shading: ShadingSection = field(default_factory=ShadingSection)  # shape from shading on real photos, off by default
    detail: DetailSection = field(default_factory=DetailSection)  # high-pass term on labelled steps, off by default
    angle: AngleSection = field(default_factory=AngleSection)  # mean-angle term on labelled steps, off by default
    phases: tuple[Phase, ...] = (Phase(steps=1000),)
    log_every: int = 10
    val_every: int = 200  # steps (0 = only at the end)
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int = 0  # 0 = time-based only
    # steps between weight snapshots RUN/snapshots/step_NNNNNN.safetensors, for weight averaging
    # (python -m facenormals.training.average); 0 = none
    snapshot_every: int = 0
    preview_every: int = 0  # steps between sample-prediction PNGs (0 = with each validation)
    # Step speed (benchmarks/train_throughput.py): bf16 autocast and channels_last were 2.5× fp32 NCHW on Zen 4.
    precision: str = "fp32"  # "fp32" | "bf16" (autocast of the forward pass; weights, optimiser, losses fp32)
    channels_last: bool = False  # NHWC memory layout for weights and batches
    # "cpu" | "cuda" | "auto" (CUDA when torch sees a GPU); bf16 autocast runs on the chosen device type
    device: str = "cpu"
    # wall-clock budget of one invocation (a GPU slot): past it the run validates, checkpoints and stops; a rerun
    # continues. 0 = none
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} unknown; choose one of {list(PRECISIONS)}")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} unknown; choose one of {list(DEVICES)}")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be ≥ 0 (0 = no limit), got {self.max_minutes}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be ≥ 0 (0 = no snapshots), got {self.snapshot_every}")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def phase_at(self, step: int) -> Phase:
        """The phase that step ``step`` (0-based) belongs to."""
        end = 0
        for phase in self.phases:
            end += phase.steps
            if step < end:
                return phase
        return self.phases[-1]

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    """Recursively build dataclass ``cls`` from plain data, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table/object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, names, n=1)
        raise ValueError(f"{where}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        label = f"{where}.{name}" if where else name
        if is_dataclass(hint):
            kwargs[name] = _build(hint, value, label)
        elif name == "phases":
            kwargs[name] = tuple(_build(Phase, item, f"{label}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(data: dict) -> TrainConfig:
    cfg = _build(TrainConfig, data, "")
    if not cfg.phases:
        raise ValueError("phases: at least one phase is needed")
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``.toml`` or ``.json`` config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"{path}: config must be .toml or .json")
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot parse config ({err})") from err
    try:
        return config_from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
