# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""Import helper: make ``facenormals.realtime`` resolve to the worktree's realtime/ (the editable install maps it to
/work/main/realtime). Import this module before anything imports facenormals.realtime."""
import os

if os.environ.get("PERF12_REALTIME_SHIM"):  # set by lockstep.py for its workers; nothing on a plain import
    import facenormals

    facenormals.__path__.insert(0, "/work/scratch/s12/perf12/rt_shim")

