"""Lightning's deeper import paths, each an alias of the engine module that holds those names.

Lightning's code imports from paths such as ``lightning.pytorch.callbacks.progress`` or
``lightning.pytorch.utilities.types``. Each such path is registered in ``sys.modules`` as the
engine module that provides its names (the way ``os.path`` is), so porting stays "rewrite the
package name" and nothing is copied or moved. ``port.py`` reads `PATHS` to list, before anything
runs, the imported names the engine does not provide.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

PATHS: dict[str, str] = {
    # Lightning's module below lightning.pytorch -> the engine module holding its public names.
    "callbacks.callback": "callbacks",
    "callbacks.early_stopping": "callbacks",
    "callbacks.model_checkpoint": "callbacks",
    "callbacks.lr_monitor": "callbacks",
    "callbacks.model_summary": "callbacks",
    "callbacks.rich_model_summary": "callbacks",
    "callbacks.progress": "callbacks",
    "callbacks.progress.progress_bar": "callbacks",
    "callbacks.progress.tqdm_progress": "callbacks",
    "callbacks.progress.rich_progress": "callbacks",
    "callbacks.throughput_monitor": "callbacks",
    "callbacks.timer": "callbacks",
    "core.module": "core",
    "core.datamodule": "core",
    "core.optimizer": "optim",
    "demos.boring_classes": "demos",
    "demos.lstm": "demos",
    "demos.transformer": "demos",
    "loggers.csv_logs": "loggers",
    "loggers.logger": "loggers",
    "loggers.wandb": "loggers",
    "profilers.profiler": "profilers",
    "profilers.pytorch": "profilers",
    "profilers.simple": "profilers",
    "trainer.states": "states",
    "trainer.trainer": "trainer",
    "tuner.lr_finder": "tuner",
    "tuner.tuning": "tuner",
    "utilities.model_summary": "summary",
    "utilities.rank_zero": "utilities",
    "utilities.seed": "utilities",
    "utilities.types": "hints",
}
"""Lightning 2.6's paths that appear in its documentation and examples (and their parents)."""

TOP_LEVEL = ("callbacks", "core", "demos", "loggers", "profilers", "trainer", "tuner", "utilities")
"""Lightning's subpackages that are engine modules of the same name."""


def install(package: str) -> None:
    """Register every path of `PATHS` under ``package`` (the engine's own name, e.g. ``my_research.engine``)."""
    root = sys.modules[package]
    sys.modules.setdefault(f"{package}.pytorch", root)  # `lightning.pytorch` left after rewriting `lightning`
    if not hasattr(root, "pytorch"):
        root.pytorch = root  # type: ignore[attr-defined]  # `import lightning as L; L.pytorch.callbacks`
    for path in sorted(PATHS, key=lambda p: p.count(".")):  # parents first
        target = importlib.import_module(f".{PATHS[path]}", package)
        sys.modules.setdefault(f"{package}.{path}", target)
        parent_path, _, leaf = path.rpartition(".")
        parent: ModuleType = sys.modules[f"{package}.{parent_path}"]
        if not hasattr(parent, leaf):  # so `import pkg.a.b` then `pkg.a.b.X` works too
            setattr(parent, leaf, target)


def engine_module(lightning_path: str) -> str | None:
    """The engine module (relative to the engine) for a Lightning module path, None if there is none.

    ``lightning_path`` is relative to ``lightning.pytorch`` ("" for the package itself).
    """
    if lightning_path in ("", "pytorch"):
        return ""
    if lightning_path in TOP_LEVEL:
        return lightning_path
    return PATHS.get(lightning_path)
