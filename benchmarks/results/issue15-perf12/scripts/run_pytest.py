# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""pytest with facenormals.realtime taken from the worktree (see use_worktree_realtime.py): python run_pytest.py ARGS"""


def main() -> None:
    import sys

    import pytest
    import use_worktree_realtime  # noqa: F401

    sys.exit(pytest.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
