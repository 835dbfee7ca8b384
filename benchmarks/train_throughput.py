"""Training throughput of the default prior model on this machine's CPU cores (issue 14).

    python -m facenormals.benchmarks.train_throughput [--sizes 128 256] [--steps 8] [--configs ...] [--threads 1 2]
        [--data /work/datasets/ict_paired_v3] [--loader-count 24] [--json FILE]
    python -m facenormals.benchmarks.train_throughput --smoke        (a couple of tiny steps; what the test suite runs)

Model step: the trainer's paired batch (``training.schedule.StepLosses`` on a ``CrossModalNet`` with
``prior="residual"``, ``prior_source="ict-fit"``; normal→normal then image→normal+image, each one forward, one
backward, one Adam update) at the campaign's batch sizes (128²: 8, 256²: 4). Configurations:

    fp32        float32, NCHW                       (TrainConfig defaults)
    bf16        bf16 autocast of the forward pass    (precision = "bf16")
    cl          channels_last weights and batches    (channels_last = true)
    bf16+cl     both                                 (the campaign's setting)
    compile     bf16+cl with torch.compile(StepLosses) (inductor; its compile time is reported apart)

Per configuration: wall seconds per batch (median of the timed batches), samples/s, and CPU seconds per batch (less
sensitive than wall time to other jobs sharing the cores; on a shared machine wall figures are lower bounds).
``--threads`` repeats the fastest eager configuration with each intra-op thread count. A gradient check compares
one bf16 batch's gradient with fp32's (cosine similarity, relative loss difference) on the same weights and data.

Data loader: per sample of ``--data`` (CPU ms, one process): the PNG decode of ``load_sample`` split by file
(mask, image, normals, depth), ``loaders.load_item`` as the trainer calls it (augmentation, the stored-landmark
prior when the folder has one), the same from pre-decoded arrays in memory (a stand-in for a decoded shard), and
without the prior channels. Samples are drawn evenly over the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = Path("/work/datasets/ict_paired_v3")
BATCH_AT = {64: 2, 128: 8, 256: 4}  # the campaign's phases (training/configs/ict_prior.toml)
CONFIGS = ("fp32", "bf16", "cl", "bf16+cl", "compile")
WINDOW_AT_128 = (0.5, 1.0)  # the campaign's multi-scale 128² views


@dataclass
class StepTiming:
    config: str
    size: int
    batch: int
    threads: int
    wall_s: float  # median wall seconds per batch
    cpu_s: float  # mean CPU seconds per batch (all threads)
    loss: float
    compile_s: float | None = None
    error: str | None = None

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"config": self.config, "size": self.size, "batch": self.batch, "threads": self.threads,
                "wall_s_per_batch": round(self.wall_s, 4), "samples_per_s": round(self.samples_per_s, 3),
                "cpu_s_per_batch": round(self.cpu_s, 4), "loss": round(self.loss, 5), "compile_s": self.compile_s,
                "error": self.error}


def make_model(seed: int = 0) -> torch.nn.Module:
    from facenormals.model import create_model

    torch.manual_seed(seed)
    return create_model("fast", "full", prior="residual", prior_source="ict-fit")


def synthetic_batch(size: int, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A paired prior batch of the trainer's shapes: smooth unit normals, a face-like mask, prior + coverage."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r2 = (xx / 0.8) ** 2 + (yy / 0.95) ** 2
    mask = (r2 < 1).float()[None, None].expand(batch, 1, size, size).contiguous()
    z = torch.sqrt(torch.clamp(1 - r2, min=0.05))
    base = torch.stack([xx / 0.8, -yy / 0.95, z])
    normals = base[None] + 0.1 * torch.randn(batch, 3, size, size, generator=gen)
    normals = torch.nn.functional.normalize(normals, dim=1) * mask
    prior = torch.cat([torch.nn.functional.normalize(base[None].expand(batch, 3, size, size), dim=1) * mask, mask], 1)
    return {"image": torch.rand(batch, 3, size, size, generator=gen), "prior": prior.contiguous(),
            "normals": normals.contiguous(), "mask": mask}


def _to_channels_last(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}


def make_step(config: str, model: torch.nn.Module,
              example: dict[str, torch.Tensor]) -> tuple[Callable[[dict[str, torch.Tensor]], float], float | None]:
    """(one paired training batch → its summed loss, compile seconds or None) for ``config``.

    With ``compile`` the first call on ``example`` compiles (one graph per step kind) and is timed apart.
    """
    from facenormals.training.schedule import StepLosses, steps_for_batch

    bf16 = config in ("bf16", "bf16+cl", "compile")
    if config in ("cl", "bf16+cl", "compile"):
        model = model.to(memory_format=torch.channels_last)
    losses: torch.nn.Module = StepLosses(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    kinds = steps_for_batch("paired", "full")
    compile_s = None
    if config == "compile":
        losses = torch.compile(losses)

    def step(batch: dict[str, torch.Tensor]) -> float:
        total = 0.0
        for kind in kinds:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = losses(kind, batch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        return total

    if config == "compile":
        started = time.perf_counter()
        step(example)
        compile_s = time.perf_counter() - started
    return step, compile_s


def time_config(config: str, size: int, batch_size: int, threads: int, steps: int, warmup: int) -> StepTiming:
    torch.set_num_threads(threads)
    batch = synthetic_batch(size, batch_size)
    if config in ("cl", "bf16+cl", "compile"):
        batch = _to_channels_last(batch)
    try:
        step, compile_s = make_step(config, make_model(), batch)
        for _ in range(warmup):
            step(batch)
        walls, cpus, loss = [], [], 0.0
        for _ in range(steps):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            loss = step(batch)
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
    except Exception as err:  # torch.compile may be unavailable (no C++ compiler) or fail on this graph: reported
        return StepTiming(config, size, batch_size, threads, 0.0, 0.0, float("nan"), error=f"{type(err).__name__}: {err}"[:300])
    return StepTiming(config, size, batch_size, threads, statistics.median(walls), float(np.mean(cpus)), loss,
                      compile_s=round(compile_s, 1) if compile_s is not None else None)


def gradient_check(size: int, batch_size: int) -> dict[str, float]:
    """bf16 autocast vs fp32 on the same weights and batch: loss difference and gradient cosine (image→normal+image)."""
    from facenormals.training.schedule import StepKind, StepLosses

    batch = synthetic_batch(size, batch_size, seed=1)
    grads, losses = [], []
    for bf16 in (False, True):
        model = make_model(seed=3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = StepLosses(model)(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, batch)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        losses.append(float(loss.detach()))
    cosine = float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))
    return {"size": size, "loss_fp32": losses[0], "loss_bf16": losses[1],
            "loss_rel_diff": abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12), "grad_cosine": cosine}


# ---------------------------------------------------------------------------------------------------- data loader


@contextlib.contextmanager
def predecoded(samples: dict[str, object]) -> Iterator[None]:
    """``loaders.load_item`` reads its sample from ``samples`` (name → Sample) instead of decoding PNGs."""
    from facenormals.training import loaders

    original = loaders.load_sample
    loaders.load_sample = lambda files: samples[files.name]
    try:
        yield
    finally:
        loaders.load_sample = original


def _cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    cpu0 = time.process_time()
    for _ in range(repeat):
        fn()
    return 1000.0 * (time.process_time() - cpu0) / repeat


def loader_costs(folder: Path, count: int, sizes: list[int]) -> dict:
    """CPU ms per sample of the trainer's data path on ``count`` paired samples of ``folder``."""
    from facenormals.dataset import load_sample
    from facenormals.fileio import read_depth_mm, read_mask, read_normals, read_rgb
    from facenormals.mesh_prior import PRIOR_INDEX, PRIORS_DIR
    from facenormals.training.config import AugmentSection
    from facenormals.training.loaders import evenly_spaced, load_item, scan_by_kind

    torch.set_num_threads(1)
    files = evenly_spaced(scan_by_kind([str(folder)])["paired"], count)
    if not files:
        raise ValueError(f"{folder}: no paired samples to time the loader on")
    prior = "ict-fit" if (folder / PRIORS_DIR / PRIOR_INDEX).is_file() else None
    out: dict = {"folder": str(folder), "samples": len(files), "prior": prior, "decode_ms": {}, "load_item_ms": {}}
    readers = {"mask": lambda f: read_mask(f.mask), "image": lambda f: read_rgb(f.image),
               "normals": lambda f: read_normals(f.normals, check_unit=False),
               "depth": lambda f: read_depth_mm(f.depth) if f.depth else None}
    for label, reader in readers.items():
        out["decode_ms"][label] = sum(_cpu_ms(lambda f=f, r=reader: r(f), 1) for f in files) / len(files)
    out["decode_ms"]["load_sample"] = sum(_cpu_ms(lambda f=f: load_sample(f), 1) for f in files) / len(files)
    decoded = {f.name: load_sample(f) for f in files}
    sample = decoded[files[0].name]
    out["decoded_bytes_per_sample"] = int(sample.image.nbytes + sample.mask.nbytes + 3 * sample.mask.size * 2)  # fp16 normals
    augment = AugmentSection()
    load_item(files[0], sizes[0], np.random.default_rng(0), augment, prior)  # lazy imports, the ICT model, numba JIT
    for size in sizes:
        window = WINDOW_AT_128 if size == 128 else (1.0, 1.0)

        def run(f: object, with_prior: str | None, i: int, size: int = size, window: tuple = window) -> object:
            return load_item(f, size, np.random.default_rng([7, i]), augment, with_prior, window)

        def per_sample(with_prior: str | None) -> float:
            return sum(_cpu_ms(lambda f=f, i=i: run(f, with_prior, i), 1) for i, f in enumerate(files)) / len(files)

        entry: dict[str, float] = {}
        for _ in range(2):  # two interleaved rounds, the lower kept: a first pass pays one-off costs (allocator, caches)
            round_ms = {"png": per_sample(prior)}
            with predecoded(decoded):
                round_ms["predecoded"] = per_sample(prior)
                round_ms["predecoded_no_prior"] = per_sample(None)
            entry = {k: min(v, entry.get(k, v)) for k, v in round_ms.items()}
        out["load_item_ms"][str(size)] = {k: round(v, 2) for k, v in entry.items()}
    out["decode_ms"] = {k: round(v, 2) for k, v in out["decode_ms"].items()}
    return out


def smoke_dataset(root: Path, count: int = 3, size: int = 64) -> Path:
    """A tiny paired dataset (spheres with a rendered-looking image) for ``--smoke`` without ``--data``."""
    from facenormals.conventions import sphere_normals
    from facenormals.dataset import DatasetWriter

    writer = DatasetWriter(root)
    rng = np.random.default_rng(0)
    for i in range(count):
        normals, mask = sphere_normals(size, 0.3 + 0.05 * i)
        shade = np.clip(normals @ np.array([0.3, 0.3, 0.9]), 0, 1)
        image = (np.stack([shade] * 3, -1) * 200 + rng.uniform(0, 40, (size, size, 3))).astype(np.uint8)
        writer.write(f"s{i}", mask, image=image, normals=normals)
    return root


# ------------------------------------------------------------------------------------------------------------ main


def _print_steps(rows: list[StepTiming]) -> None:
    print(f"{'config':<10}{'size':>6}{'batch':>6}{'thr':>4}{'s/batch':>9}{'samples/s':>11}{'CPU s/batch':>13}  notes")
    for r in rows:
        note = r.error or (f"compile {r.compile_s:.0f} s" if r.compile_s is not None else "")
        print(f"{r.config:<10}{r.size:>5}²{r.batch:>6}{r.threads:>4}{r.wall_s:>9.3f}{r.samples_per_s:>11.2f}"
              f"{r.cpu_s:>13.3f}  {note}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--steps", type=int, default=8, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=None, help=f"default: all of {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts for the fastest eager configuration (the others run with the last one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="paired dataset folder for the loader timing")
    parser.add_argument("--loader-count", type=int, default=24, help="samples for the loader timing (0 = skip)")
    parser.add_argument("--no-grad-check", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a couple of steps at 64², tiny loader timing (tests)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    tmp = None
    if args.smoke:
        import tempfile

        args.sizes, args.steps, args.warmup = [64], 1, 1
        args.configs = args.configs or ["fp32", "bf16+cl"]
        args.threads = args.threads[-1:]
        if not args.data.is_dir() or args.data == DEFAULT_DATA:
            tmp = tempfile.TemporaryDirectory()
            args.data = smoke_dataset(Path(tmp.name) / "smoke")
        args.loader_count = min(args.loader_count, 3)

    args.configs = args.configs or list(CONFIGS)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "(on a shared machine wall figures are lower bounds)")
    report: dict = {"torch": torch.__version__, "load_average": os.getloadavg()[0], "steps": [], "threads": []}
    for size in args.sizes:
        batch = BATCH_AT.get(size, 4)
        rows = [time_config(c, size, batch, args.threads[-1], args.steps, args.warmup) for c in args.configs]
        eager = [r for r in rows if r.error is None and r.config != "compile"]
        best = min(eager, key=lambda r: r.wall_s) if eager else None
        thread_rows = [time_config(best.config, size, batch, t, args.steps, args.warmup)
                       for t in args.threads if best is not None and t != args.threads[-1]]
        _print_steps(rows + thread_rows)
        report["steps"] += [r.as_dict() for r in rows]
        report["threads"] += [r.as_dict() for r in thread_rows]
    if not args.no_grad_check:
        report["grad_check"] = gradient_check(args.sizes[0], BATCH_AT.get(args.sizes[0], 4))
        g = report["grad_check"]
        print(f"bf16 vs fp32 at {g['size']}²: loss {g['loss_fp32']:.5f} vs {g['loss_bf16']:.5f} "
              f"({100 * g['loss_rel_diff']:.2f} %), gradient cosine {g['grad_cosine']:.4f}")
    if args.loader_count > 0:
        loader = loader_costs(args.data, args.loader_count, args.sizes)
        report["loader"] = loader
        d = loader["decode_ms"]
        print(f"loader on {loader['folder']} ({loader['samples']} samples, prior {loader['prior']}), CPU ms per sample: "
              f"PNG decode {d['load_sample']:.1f} (mask {d['mask']:.1f}, image {d['image']:.1f}, normals {d['normals']:.1f}, "
              f"depth {d['depth']:.1f}); pre-decoded {loader['decoded_bytes_per_sample'] / 1e6:.2f} MB/sample")
        for size, e in loader["load_item_ms"].items():
            print(f"  load_item {size}²: from PNG {e['png']:.1f} ms, pre-decoded {e['predecoded']:.1f} ms, "
                  f"pre-decoded without prior {e['predecoded_no_prior']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
