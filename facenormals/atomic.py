"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

Also the checks every command makes on its outputs before the work starts (:func:`check_output`):
the location is writable, the output is not one of the inputs, an existing file is only replaced
when the user said so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

_UMASK_LOCK = threading.Lock()


class OutputError(ValueError):
    """An output path that cannot or must not be written: names the path and the reason."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), else set and restored."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (mkstemp would give 0o600)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` atomically.

    The temporary file keeps the target's suffix so that writers which pick a format from the
    extension (OpenCV, numpy) behave the same. On error the temporary file is removed. The result
    has the usual umask-respecting mode, as if written in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_writable_dir(folder: str | os.PathLike[str], what: str) -> None:
    """Raise OutputError unless ``folder`` (created if missing) accepts new files: probed with a real file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".facenormals-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{what} {folder}: cannot write there ({err.strerror or err})") from err


def check_output(target: str | os.PathLike[str], what: str, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Check an output file before any work: not an input, not a folder, its folder writable, and an existing
    file only replaced with ``overwrite``. Returns the path; raises :class:`OutputError` naming it."""
    target = Path(target)
    for source in inputs:
        if source is not None and _same_file(target, Path(source)):
            raise OutputError(f"{what} {target} is also an input: refusing to write over it; choose another name")
    if target.is_dir():
        raise OutputError(f"{what} {target}: is a folder; give a file name (e.g. {target / ('out' + target.suffix)})")
    if target.exists() and not overwrite:
        raise OutputError(f"{what} {target} already exists: pass --overwrite to replace it, or choose another name")
    parent = target.parent if str(target.parent) else Path(".")
    check_writable_dir(parent, f"{what} {target}: folder")
    if target.exists() and not os.access(target, os.W_OK) and not os.access(parent, os.W_OK):
        raise OutputError(f"{what} {target}: not writable")
    return target
