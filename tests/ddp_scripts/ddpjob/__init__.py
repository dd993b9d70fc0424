"""A tiny training project for the DDP tests, laid out like a generated one.

Run it as ``python -m ddpjob KEY=VALUE ...`` (``trainer.devices=2`` launches two processes)
or under ``torchrun ... -m ddpjob``, with ``tests/ddp_scripts`` on PYTHONPATH. The repository's
``engine/`` is loaded as ``ddpjob.engine``, as a project vendors it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_ENGINE = Path(__file__).resolve().parents[3] / "engine"


def _load_engine() -> None:
    name = f"{__name__}.engine"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        name, _ENGINE / "__init__.py", submodule_search_locations=[str(_ENGINE)]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load_engine()
