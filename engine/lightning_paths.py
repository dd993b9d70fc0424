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
    "accelerators": "distributed",
    "callbacks.callback": "callbacks",
    "callbacks.finetuning": "callbacks",
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
    "core.hooks": "module",
    "core.optimizer": "optim",
    "core.saving": "checkpoint",
    "cli": "run",
    "demos.boring_classes": "demos",
    "demos.lstm": "demos",
    "demos.mnist_datamodule": "demos",
    "demos.transformer": "demos",
    "loggers.comet": "loggers",
    "loggers.csv_logs": "loggers",
    "loggers.litlogger": "loggers",
    "loggers.logger": "loggers",
    "loggers.mlflow": "loggers",
    "loggers.tensorboard": "loggers",
    "loggers.wandb": "loggers",
    "plugins": "precision",
    "plugins.environments": "distributed",
    "profilers.advanced": "profilers",
    "profilers.profiler": "profilers",
    "profilers.pytorch": "profilers",
    "profilers.simple": "profilers",
    "profilers.xla": "profilers",
    "strategies": "strategy",
    "strategies.model_parallel": "strategy",
    "trainer.states": "states",
    "trainer.trainer": "trainer",
    "tuner.lr_finder": "tuner",
    "tuner.tuning": "tuner",
    "utilities.combined_loader": "utilities",
    "utilities.deepspeed": "utilities",
    "utilities.grads": "utilities",
    "utilities.imports": "utilities",
    "utilities.model_helpers": "utilities",
    "utilities.model_summary": "summary",
    "utilities.rank_zero": "utilities",
    "utilities.seed": "utilities",
    "utilities.types": "hints",
}
"""Lightning 2.6's paths that appear in its documentation and examples (and their parents).

A path whose names the engine lacks (``strategies.DDPStrategy``, ``cli.LightningCLI`` ...) still
resolves, to the module that owns that concern here, so an import names the missing class itself.
Only ``lightning.pytorch.serve`` and ``lightning.fabric`` have no counterpart."""

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
        parent: ModuleType = sys.modules[f"{package}.{parent_path}"] if parent_path else root
        if not hasattr(parent, leaf):  # so `import pkg.a.b` then `pkg.a.b.X` works too
            setattr(parent, leaf, target)


def engine_module(lightning_path: str) -> str | None:
    """The engine module (relative to the engine) for a Lightning module path, None if there is none.

    ``lightning_path`` is relative to ``lightning.pytorch`` ("" for the package itself).
    """
    if lightning_path in ("", "pytorch"):
        return ""
    if lightning_path in TOP_LEVEL:  # engine modules of the same name
        return lightning_path
    return PATHS.get(lightning_path)
