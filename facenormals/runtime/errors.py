"""The runtime's one error type."""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend cannot run here (missing provider, wrong model file, incompatible engine, a file it would have to
    build first)."""
