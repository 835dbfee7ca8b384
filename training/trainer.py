"""The training loop: the paper's schedule over a batch plan, with exact resume and rank-0 bookkeeping."""

from __future__ import annotations

import json
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facenormals.atomic import write_text_atomic
from facenormals.checkpoint import init_from_image_to_normal, is_inference_only, load_checkpoint, read_config
from facenormals.dataset import SampleFiles
from facenormals.fileio import write_rgb
from facenormals.metrics import MetricAccumulator
from facenormals.model import CrossModalNet, create_model
from facenormals.training import checkpointing, ddp
from facenormals.training.batchnorm import freeze_batchnorm, recompute_statistics, training_mix_inputs
from facenormals.training.config import TrainConfig
from facenormals.training.device import resolve_device, to_device
from facenormals.training.distill import load_teacher
from facenormals.training.loaders import (
    fixed_samples,
    load_item,
    require_stored_priors,
    scan_by_kind,
    train_batches,
)
from facenormals.training.logs import ScalarLog, normals_to_rgb, plot_curves, prediction_grid
from facenormals.training.schedule import StepLosses, image_input, steps_for_batch

VAL_SIZE = 256  # validation follows the evaluation protocol: full-size crops


@dataclass
class TrainResult:
    steps: int
    best_val_deg: float | None
    run_dir: Path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, load_init: bool = True) -> CrossModalNet:
    # coarse-face prior input (issues 9, 13)
    prior = {"prior": cfg.model.prior, "prior_source": cfg.model.prior_source} if cfg.model.prior != "none" else {}
    model = create_model(cfg.model.arch, cfg.model.variant, **prior)
    if cfg.model.init and load_init:
        source_cfg = read_config(cfg.model.init)
        if source_cfg.arch != cfg.model.arch or source_cfg.variant != cfg.model.variant:
            raise ValueError(f"model.init {cfg.model.init}: is {source_cfg.arch}/{source_cfg.variant}, "
                             f"config asks for {cfg.model.arch}/{cfg.model.variant}")
        if is_inference_only(cfg.model.init):  # a shipped model: E_N, D_I derived/fresh
            fresh = init_from_image_to_normal(model, cfg.model.init)
            print(f"model.init {cfg.model.init}: inference-only; fresh {fresh}, E_N copied from E_I", flush=True)
            if fresh and not (cfg.phases[0].train_only and set(cfg.phases[0].train_only) <= set(fresh)):
                print(f"warning: the first phase trains more than the fresh {fresh}: their random first gradients "
                      f"reach the shared encoder (session 40: val_profile +0.4 to +0.8 deg); warm them up first with a "
                      f"phase of train_only = {fresh}", flush=True)
        else:
            model.load_state_dict(load_checkpoint(cfg.model.init).state_dict())
    if cfg.model.freeze_batchnorm:
        if load_init and cfg.model.batchnorm_crops > 0:  # a fresh run: population statistics of its own mix
            seen = recompute_statistics(model.image_encoder, training_mix_inputs(cfg, cfg.model.batchnorm_crops, cfg.seed))
            print(f"E_I BatchNorm statistics recomputed over {seen} crops of the training mix, then frozen", flush=True)
        freeze_batchnorm(model.image_encoder)
    check_part_names(model, cfg.model.frozen, "model.frozen")
    for index, phase in enumerate(cfg.phases):
        check_part_names(model, phase.train_only, f"phases[{index}].train_only")
    set_trainable_parts(model, (), cfg.model.frozen)  # every phase's parts are registered (DDP); each step narrows
    return model


def check_part_names(model: torch.nn.Module, names: tuple[str, ...], where: str) -> None:
    """Refuse a sub-network name the model does not have, naming the ones it has."""
    parts = sorted(n for n, _ in model.named_children())
    for name in names:
        if name not in parts:
            raise ValueError(f"{where}: {name!r} is not a part of the network (its parts: {parts})")


def set_trainable_parts(model: torch.nn.Module, train_only: tuple[str, ...], frozen: tuple[str, ...]) -> None:
    """A phase's learning parts: those in ``train_only`` (all when empty), never those in ``frozen``."""
    for name, part in model.named_children():
        part.requires_grad_(name not in frozen and (not train_only or name in train_only))


def validate(model: CrossModalNet, samples: list[SampleFiles], batch_size: int = 8) -> float:
    """Mean angular error (°) of the image→normal path on ``samples`` at 256², no augmentation."""
    accumulator = MetricAccumulator()
    path = model.image_to_normal_path
    was_training = model.training
    model.eval()
    prior = model.cfg.input_prior
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            items = [load_item(f, VAL_SIZE, None, None, prior) for f in samples[start:start + batch_size]]
            batch = {k: torch.from_numpy(np.stack([i[k] for i in items])) for k in ("image", "prior") if k in items[0]}
            preds = path(image_input(batch).to(device)).cpu().numpy()
            for item, pred in zip(items, preds, strict=True):
                accumulator.add(pred.transpose(1, 2, 0), item["normals"].transpose(1, 2, 0), item["mask"][0] > 0.5)
    model.train(was_training)
    return accumulator.result().mean_deg


def write_preview(model: torch.nn.Module, samples: list[SampleFiles], path: Path) -> None:
    """One row per sample: input crop, predicted normals, ground truth (when it has one).

    ``model``: a CrossModalNet or an ImageToNormal (the shipped, inference-only form).
    """
    if not samples:
        return
    was_training = model.training
    model.eval()
    predict = model.image_to_normal if isinstance(model, CrossModalNet) else model
    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for files in samples:
            item = load_item(files, VAL_SIZE, None, None, model.cfg.input_prior)
            if "image" not in item:
                continue
            batch = {k: torch.from_numpy(item[k][None]) for k in ("image", "prior") if k in item}
            pred = predict(image_input(batch).to(device))[0].cpu().numpy().transpose(1, 2, 0)
            mask = item["mask"][0] > 0.5
            row = [np.round(item["image"].transpose(1, 2, 0) * 255).astype(np.uint8), normals_to_rgb(pred)]
            if "normals" in item:
                row.append(normals_to_rgb(item["normals"].transpose(1, 2, 0), mask))
            rows.append(row)
    model.train(was_training)
    if rows:
        write_rgb(path, prediction_grid(rows))


class _Stop(Exception):
    """SIGTERM: finish the current step, checkpoint, exit."""


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def train(cfg: TrainConfig, info: ddp.DistInfo | None = None) -> TrainResult:
    info = info or ddp.DistInfo()
    deadline = time.monotonic() + 60.0 * cfg.max_minutes if cfg.max_minutes > 0 else math.inf
    device = resolve_device(cfg.device, info)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + info.rank)
    if cfg.model.prior != "none":
        require_stored_priors(cfg.data.train + cfg.data.val + cfg.data.preview)
    groups = scan_by_kind(cfg.data.train, cfg.data.exclude)
    # each validation set weighs the same in "best" (a large synthetic set must not drown the real-scan one)
    per_set = max(1, cfg.data.val_max_images // max(1, len(cfg.data.val)))
    val_sets = {Path(folder).name: fixed_samples((folder,), "paired", per_set) for folder in cfg.data.val}
    val_samples = [s for samples in val_sets.values() for s in samples]
    preview_samples = (fixed_samples(cfg.data.preview, "image-only", cfg.data.preview_max_images)
                       if cfg.data.preview else []) + val_samples[:2]

    # a resumed run takes its weights from last.pt: reading model.init first would only be overwritten
    model = build_model(cfg, load_init=not (run_dir / checkpointing.LAST).is_file()).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                 weight_decay=cfg.optim.weight_decay)
    config_dict = cfg.to_dict()
    progress = checkpointing.load_state(run_dir, model, optimizer) or checkpointing.Progress()
    for group in optimizer.param_groups:  # a resumed run takes the optimiser settings of its (possibly edited) config
        group["betas"], group["weight_decay"] = cfg.optim.betas, cfg.optim.weight_decay
    if progress.step == 0:
        seed_everything(cfg.seed + info.rank)
    if info.is_main:
        write_text_atomic(run_dir / "config.json", json.dumps(config_dict, indent=2) + "\n")
        counts = {k: len(v) for k, v in groups.items()}
        print(f"run {run_dir}: {cfg.model.arch}/{cfg.model.variant}, samples per kind {counts}, "
              f"{len(val_samples)} validation images, resuming at step {progress.step}/{cfg.total_steps}", flush=True)
    teacher = load_teacher(cfg.distill, model.cfg, device)
    wrapped = ddp.wrap(StepLosses(model, cfg.consistency, cfg.anchor, teacher, cfg.distill.weight, cfg.shading,
                                     cfg.detail, cfg.angle, cfg.distill.real_photos_only), info)
    model.train()

    log = ScalarLog(run_dir, progress.step) if info.is_main else None
    previous = signal.signal(signal.SIGTERM, _raise_stop) if info.is_main and not info.distributed else None
    last_save = time.monotonic()
    started = time.monotonic() - progress.elapsed_s
    bar = tqdm(total=cfg.total_steps, initial=progress.step, desc="train", unit="step", disable=not info.is_main,
               dynamic_ncols=True)

    def checkpoint() -> None:
        nonlocal last_save
        if info.is_main:
            progress.elapsed_s = time.monotonic() - started
            checkpointing.save_state(run_dir, model, optimizer, progress, config_dict)
        last_save = time.monotonic()

    def run_validation(step: int) -> None:
        if not info.is_main:
            return
        if val_samples:
            by_set = {name: validate(model, samples) for name, samples in val_sets.items()}
            val = float(np.mean(list(by_set.values())))
            if progress.best_val_deg is None or val < progress.best_val_deg:
                progress.best_val_deg, progress.best_step = val, step
                checkpointing.save_best(run_dir, model, progress, config_dict)
            sets_text = " ".join(f"{name}={deg:.3f}" for name, deg in by_set.items())
            log.write(step=step, kind="val", val_mean_deg=f"{val:.4f}", val_sets=sets_text,
                      elapsed_s=f"{time.monotonic() - started:.1f}")
            bar.write(f"step {step}: validation mean of sets {val:.2f}° ({sets_text}; best {progress.best_val_deg:.2f}° "
                      f"at {progress.best_step})")
        write_preview(model, preview_samples, run_dir / "predictions.png")
        plot_curves(run_dir)

    try:
        tick = time.monotonic()
        out_of_time = False
        trained_parts: tuple[str, ...] = ()  # build_model leaves every part not in model.frozen learning
        for step, kind, batch in train_batches(cfg, groups, progress.step, info.world, info.rank,
                                               pin_memory=device.type == "cuda"):
            batch = to_device(batch, device)
            phase = cfg.phase_at(step)
            set_learning_rate(optimizer, phase.lr or cfg.optim.lr)
            if phase.train_only != trained_parts:  # only where a phase changes what learns
                trained_parts = phase.train_only
                set_trainable_parts(model, trained_parts, cfg.model.frozen)
            parts: dict[str, float] = {}
            for step_kind in steps_for_batch(kind, cfg.model.variant):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                    loss, terms = wrapped(step_kind, batch)
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(f"step {step} ({step_kind.value}): loss is {float(loss.detach())}")
                if loss.requires_grad:  # a step kind that reaches no part this phase trains has nothing to learn
                    loss.backward()
                    optimizer.step()
                parts.update({k: float(v) for k, v in terms.items()})
            progress.step = step + 1
            now = time.monotonic()
            rate = len(next(iter(batch.values()))) * info.world / max(now - tick, 1e-9)
            tick = now
            bar.update(1)
            if info.is_main and (step % cfg.log_every == 0 or progress.step == cfg.total_steps):
                bar.set_postfix({**{k: f"{v:.4f}" for k, v in parts.items()}, "img/s": f"{rate:.1f}"})
                log.write(step=step, kind=kind, samples_per_s=f"{rate:.2f}",
                          elapsed_s=f"{now - started:.1f}", **{k: f"{v:.5f}" for k, v in parts.items()})
            if deadline < math.inf and ddp.any_rank(time.monotonic() >= deadline, info, device):
                out_of_time = True  # max_minutes: validate and checkpoint below, as at the end of the run
                if info.is_main:
                    bar.write(f"max_minutes {cfg.max_minutes:g} reached at step {progress.step}: stopping")
                break
            if info.is_main and cfg.snapshot_every and progress.step % cfg.snapshot_every == 0:
                checkpointing.save_snapshot(run_dir, model, progress.step, config_dict)
            if cfg.val_every and progress.step % cfg.val_every == 0 and progress.step < cfg.total_steps:
                run_validation(progress.step)
            due_time = time.monotonic() - last_save >= cfg.checkpoint_every_s
            due_step = cfg.checkpoint_every_steps and progress.step % cfg.checkpoint_every_steps == 0
            if due_time or due_step:
                checkpoint()
        if progress.step >= cfg.total_steps or out_of_time:
            run_validation(progress.step)
        checkpoint()
        ddp.check_replicas_in_sync(model, info)
    except (KeyboardInterrupt, _Stop):
        checkpoint()
        if info.is_main:
            bar.write(f"interrupted: state saved at step {progress.step} in {run_dir / checkpointing.LAST}")
        raise KeyboardInterrupt from None
    finally:
        bar.close()
        if log is not None:
            log.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if info.is_main and not val_samples:  # no validation: the final weights are the run's model
        progress.best_step = progress.step
        checkpointing.save_best(run_dir, model, progress, config_dict)
    return TrainResult(progress.step, progress.best_val_deg, run_dir)


