"""Fingerprints of data-engine renders: a SHA-256 per output array of a few seeded samples per setting.

    python -m facenormals.benchmarks.render_fingerprint [--json FILE]

Why: speed work on the renderer must not change what it renders. The same code, seed and numeric stack
(numpy, OpenCV, OpenBLAS, CPU) give the same bytes; ``benchmarks/results/render_fingerprints.json`` holds the
fingerprints of the code before the 2026-12-03 speed-up, one record per numeric stack it was run on, and
``tests/test_data_render_identity.py`` checks that today's code reproduces the record of the stack it runs on
(elsewhere BLAS and the JIT may round differently, and the test skips with the reason). A record for a new stack
comes from running the code before the speed-up there (``--code`` names it): never from today's code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as in the data engine's workers: one BLAS thread per process

SEED = 7
YAW_40_90 = (0.6981317007977318, 1.5707963267948966)


def _settings(shared: Path) -> dict[str, dict]:
    """The settings fingerprinted: the CLI's default, v4 (ict_paired_v4), a validation-like set with photo
    backgrounds, texture transfer and hard poses, normal-only, and the James scan through the any-mesh path."""
    from facenormals.training.data.synth import RenderSettings

    data = shared / "data"
    scene = {"backgrounds": [data / "photos", data / "video"], "james_dir": data / "james"}
    return {
        "default": {"settings": RenderSettings(), "count": 3},
        "v4": {"settings": RenderSettings(yaw_range=YAW_40_90, profile_fraction=0.3), "identity_scale": (1.0, 1.6),
               "detail_mm": 2.0, "count": 3},
        "scene": {"settings": RenderSettings(hard_fraction=0.3), **scene, "p_transfer": 0.5, "count": 4},
        "normal-only": {"settings": RenderSettings(kind="normal-only"), "kind": "normal-only", "count": 2},
        "james-mesh": {"settings": RenderSettings(), "source": str(data / "james"), "count": 2},
    }


def platform_key() -> dict[str, str]:
    """What decides the rounding of the BLAS and vector code: library versions and the CPU."""
    import cv2
    import numpy as np

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"numpy": np.__version__, "opencv": cv2.__version__, "machine": platform.machine(), "cpu": cpu,
            "cpu_target": _jit_target()}


def _jit_target() -> str:
    """The CPU generation numba compiles the renderer's kernels for (e.g. 'znver4'): one "model name" (say "AMD
    EPYC") covers several, and their vector code rounds differently (seen: Zen 5 against the Zen 4 record)."""
    import llvmlite.binding

    return str(llvmlite.binding.get_host_cpu_name())


def record_for(recorded: dict, here: dict[str, str]) -> dict | None:
    """The record of ``recorded`` (the results file's content) made on the stack ``here``, or None."""
    return next((r for r in recorded["records"] if r["platform"] == here), None)


def fingerprints(shared: Path, tmp: Path) -> dict[str, list[dict[str, str]]]:
    """{setting: [per sample {array name: sha256 of its bytes, 'params': sha256 of the params JSON}]}."""
    from facenormals.training.data import synth
    from facenormals.training.data.jobs import sample_rng
    from facenormals.training.data.render_job import RenderJob

    out: dict[str, list[dict[str, str]]] = {}
    for name, spec in _settings(shared).items():
        spec = dict(spec)
        count = spec.pop("count")
        source = spec.pop("source", "ict")
        job = RenderJob(out=tmp / name, source=source, seed=SEED, **spec)
        job.setup()
        paired = job.kind == "paired"
        samples = []
        for index in range(count):
            rng = sample_rng(SEED, index)
            mesh = (job._source.sample(rng, with_albedo=paired) if source == "ict"
                    else job._source.sample(rng, index, with_albedo=paired))
            result = synth.render(mesh, job.settings, rng, job._backgrounds)
            digest = {key: hashlib.sha256(getattr(result, key).tobytes()).hexdigest()
                      for key in ("mask", "normals", "image", "depth_mm") if getattr(result, key) is not None}
            digest["params"] = hashlib.sha256(json.dumps(result.params, sort_keys=True).encode()).hexdigest()
            samples.append(digest)
        out[name] = samples
    return out


def main() -> None:
    import tempfile

    from facenormals.training.data.cli import DEFAULT_SHARED

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="write {seed, records: [this stack's]} here")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder (data/ inside)")
    parser.add_argument("--code", default="", help="which code rendered (a commit and a few words), kept in the record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = {"code": args.code, "platform": platform_key(), "fingerprints": fingerprints(args.shared, Path(tmp))}
    result = {"seed": SEED, "records": [record]}
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    if args.json:
        from facenormals.atomic import write_text_atomic

        write_text_atomic(args.json, text)
    print(text)


if __name__ == "__main__":
    main()
