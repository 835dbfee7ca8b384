"""Deterministic, resumable, parallel sample generation.

Each sample's random stream is derived from (seed, index) only, so a run gives the same files whatever the
number of workers, the order they finish in, or how often it was interrupted. A sample counts as done once
its mask exists (facenormals.dataset.DatasetWriter writes the mask last and every file atomically).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facenormals.atomic import write_text_atomic
from facenormals.fileio import DataError

# one BLAS thread per worker: the workers already use every core
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of a run with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


@dataclass
class RunReport:
    written: int = 0
    existing: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        text = f"{self.written} written, {self.existing} already present, {self.failed} skipped"
        if self.failures:
            text += " (" + "; ".join(f"{n}× {msg}" for msg, n in self.failures.most_common(5)) + ")"
        return text


class SampleJob:
    """Base of picklable jobs: ``setup()`` once per worker, then ``run(index)`` → 'written'|'exists'|error."""

    def setup(self) -> None:  # pragma: no cover - overridden
        pass

    def run(self, index: int) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


_JOB: SampleJob | None = None
_SETUP_ERROR: str | None = None


def _init_worker(job: SampleJob) -> None:
    # an initializer that raises makes multiprocessing respawn workers forever: report it per sample instead
    global _JOB, _SETUP_ERROR
    import cv2

    # one OpenCV thread per worker too: its pthreads pool ignores OMP_NUM_THREADS, and two workers with two
    # threads each on two cores spin against each other (same pixels: OpenCV splits rows, not sums)
    cv2.setNumThreads(1)
    _JOB = job
    try:
        job.setup()
    except Exception as err:  # any setup failure becomes a counted, reported skip
        _SETUP_ERROR = f"worker setup failed: {err}"


def _run_index(index: int) -> tuple[int, str]:
    if _SETUP_ERROR is not None or _JOB is None:
        return index, _SETUP_ERROR or "worker not set up"
    return index, _JOB.run(index)


def run_parallel(job: SampleJob, indices: Iterable[int], workers: int, desc: str,
                 on_result: Callable[[int, str], None] | None = None) -> RunReport:
    """Run ``job`` over ``indices`` with a progress bar; failures are counted, never raised mid-run."""
    indices = list(indices)
    report = RunReport()
    bar = tqdm(total=len(indices), desc=desc, unit="sample", dynamic_ncols=True)

    def record(index: int, status: str) -> None:
        if status == "written":
            report.written += 1
        elif status == "exists":
            report.existing += 1
        else:
            report.failed += 1
            report.failures[status] += 1
        if on_result:
            on_result(index, status)
        bar.update(1)

    try:
        if workers <= 1 or len(indices) <= 1:
            job.setup()
            for index in indices:
                record(index, job.run(index))
        else:
            saved = {k: os.environ.get(k) for k in _THREAD_VARS}
            os.environ.update({k: "1" for k in _THREAD_VARS})
            try:
                ctx = mp.get_context("spawn")  # fresh interpreters: BLAS reads the thread limit at import
                pool = ctx.Pool(workers, initializer=_init_worker, initargs=(job,))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            try:
                for index, status in pool.imap_unordered(_run_index, indices, chunksize=2):
                    record(index, status)
                pool.close()
            except BaseException:
                pool.terminate()  # Ctrl-C: files are atomic, a rerun resumes
                raise
            finally:
                pool.join()
    finally:
        bar.close()
    return report


def write_params(root: Path, name: str, params: dict) -> None:
    write_text_atomic(root / "params" / f"{name}.json", json.dumps(params, sort_keys=True))


def read_params(root: Path, name: str) -> dict | None:
    """Sample ``name``'s params as :func:`write_params` wrote them, None where it has none; a broken file is an
    error naming it."""
    path = root / "params" / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not a sample's params (JSON): {error}") from None


CSV_COLUMNS = ("name", "kind", "source", "mesh", "rotation_angle_deg", "yaw_deg", "pitch_deg", "roll_deg",
               "light_intensity", "ambient", "light_dir", "rotation_axis", "hard", "albedo", "background",
               "profile", "identity_scale", "identity_norm", "detail_mm", "relief_deg")


def collect_params_csv(root: Path) -> Path | None:
    """Gather params/*.json into params.csv (one row per sample) for evaluation by pose and light."""
    folder = root / "params"
    if not folder.is_dir():
        return None
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        row = {"name": path.stem}
        for col in CSV_COLUMNS[1:]:
            value = data.get(col, "")
            row[col] = " ".join(str(v) for v in value) if isinstance(value, list) else value
        rows.append(row)
    out = root / "params.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out, text.getvalue())
    return out


def remove_stale_temporaries(root: Path) -> int:
    """Delete temporary files left by a killed run (facenormals.atomic names them '.TARGET.xxxx')."""
    removed = 0
    for sub in ("images", "normals", "masks", "depth", "params"):
        folder = root / sub
        if folder.is_dir():
            for path in folder.glob(".*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
    return removed
