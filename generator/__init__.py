"""scaffold: create and maintain PyTorch research projects with a vendored, updatable engine."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def version() -> str:
    """The installed version (one version for package, template and engine)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("scaffold")
    except PackageNotFoundError:  # running from a source checkout
        from pathlib import Path

        from .history import read_version

        return read_version(Path(__file__).resolve().parents[1])
