# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""Before/after in lockstep: two worker processes (PYTHONPATH base copy / worktree) take turns frame by frame, so both
see the same machine load; the order within each pair alternates. python lockstep.py RUNS OUT.jsonl
Each run: frames 0..149 through both engines, frames 20..149 timed; per run and stage: p50 and min of each side."""


def main() -> None:
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    runs, out = int(sys.argv[1]), sys.argv[2]
    paths = {"before": "/work/scratch/s12/perf12/base:/work/scratch/s12/perf12/base_rt_shim",
             "after": "/work/wt_perf12:/work/scratch/s12/perf12/rt_shim"}
    worker = "/work/scratch/s12/perf12/lockstep_worker.py"
    for run in range(runs):
        procs = {}
        for label, path in paths.items():
            env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PERF12_REALTIME_SHIM="1")
            procs[label] = subprocess.Popen([sys.executable, worker], cwd="/work/wt_perf12", env=env, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for p in procs.values():
            assert p.stdout.readline().strip() == "ready"
        times = {label: [] for label in paths}
        for i in range(150):
            order = ("before", "after") if (i + run) % 2 == 0 else ("after", "before")
            for label in order:
                p = procs[label]
                p.stdin.write(f"{i}\n"); p.stdin.flush()
                t = json.loads(p.stdout.readline())
                if i >= 20:
                    times[label].append(t)
        for p in procs.values():
            p.stdin.close(); p.wait()
        row = {"run": run}
        for label, ts in times.items():
            for stage in ("detect", "crop", "paste", "render"):
                v = [t[stage] for t in ts]
                row[f"{label} {stage}"] = (round(float(np.median(v)), 3), round(float(np.min(v)), 3))
            tot = [t["detect"] + t["crop"] + t["paste"] + t["render"] for t in ts]
            row[f"{label} total"] = (round(float(np.median(tot)), 3), round(float(np.min(tot)), 3))
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
