"""Shared test setup: the repository's engine/ is importable as the package ``engine``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_engine() -> None:
    # The engine uses relative imports only, so any parent name works; tests use `engine`.
    if "engine" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "engine", ROOT / "engine" / "__init__.py", submodule_search_locations=[str(ROOT / "engine")]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine"] = module
    spec.loader.exec_module(module)


_load_engine()
