"""`run`: turn a Config into a Trainer with its callbacks and logger, fit, and report."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import distributed as D
from .callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ThroughputMonitor
from .checkpoint import CheckpointError
from .config import Config, ConfigError, dump_yaml, resolve_path
from .module import DataModule, Module
from .trainer import PREEMPTED_EXIT_CODE, Trainer


def default_run_name() -> str:
    """Stable across SLURM requeues (so resume=auto finds the run), else a timestamp."""
    import os

    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else time.strftime("%Y-%m-%d_%H-%M-%S")


def build_logger(cfg: Config, run_name: str) -> Any:
    from .loggers import NullLogger, WandbLogger

    if cfg.wandb.mode == "disabled":
        return NullLogger()  # wandb is not even imported
    keys = asdict(cfg.wandb) | {"name": cfg.wandb.name or run_name}
    return WandbLogger(**keys, save_dir=cfg.project_root or ".")  # wandb/ sits in the project, like runs/


def build_trainer(cfg: Config, run_dir: Path, callbacks: list[Any] | None = None, logger: Any = None) -> Trainer:
    """The Trainer for `cfg`: the config sections map one to one onto the callbacks' arguments."""
    checkpoint = asdict(cfg.checkpoint) | {"monitor": cfg.checkpoint.monitor or None}
    all_callbacks: list[Any] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", **checkpoint),
        LearningRateMonitor(),
        ThroughputMonitor(warn_fraction=cfg.trainer.bottleneck_warn_fraction),
    ]
    if cfg.early_stopping.monitor:
        all_callbacks.append(EarlyStopping(**asdict(cfg.early_stopping)))
    all_callbacks += callbacks or []
    return Trainer(**asdict(cfg.trainer), callbacks=all_callbacks, logger=logger, default_root_dir=run_dir, config=cfg)


def run(cfg: Config, module: Module, datamodule: DataModule, callbacks: list[Any] | None = None) -> int:
    """Fit `module` on `datamodule` as `cfg` says; returns the process exit code.

    0: finished; 75: preempted (checkpoint saved, requeue and resume); 1: stopped on a
    non-finite loss. With ``trainer.devices > 1`` outside torchrun, starts the processes.
    """
    if cfg.trainer.devices > 1 and not D.under_launcher():
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is None:
            raise RuntimeError("trainer.devices > 1 needs `python -m <package>.train`, or launch with torchrun")
        return D.launch(cfg.trainer.devices, spec.name, sys.argv[1:])

    env = D.setup(cfg.trainer.accelerator)
    run_dir: Path | None = None
    created = False
    trainer: Trainer | None = None
    try:
        run_name = env.broadcast_object(cfg.run_name or default_run_name())
        cfg.run_name = run_name
        run_dir = resolve_path(cfg.output_dir, cfg.project_root) / run_name
        if env.is_global_zero and not cfg.trainer.fast_dev_run:  # a dry run leaves no files
            created = not run_dir.exists()
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        logger = build_logger(cfg, run_name) if not cfg.trainer.fast_dev_run else None
        trainer = build_trainer(cfg, run_dir, callbacks, logger)
        trainer.fit(module, datamodule=datamodule, ckpt_path=_resume_path(cfg))
        if env.is_global_zero:
            report(trainer, run_dir)
        code = 1 if trainer.stop_reason == "nonfinite_loss" else 0
        code = PREEMPTED_EXIT_CODE if trainer.stop_reason == "preempted" else code
        if env.is_global_zero:
            record_exit_code(code)
        return code
    except BaseException:
        # A run that failed before its first step leaves no folder behind (a resumed one keeps its own).
        if created and run_dir is not None and (trainer is None or trainer.global_step == 0):
            if not any(run_dir.rglob("*.ckpt")):
                shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        D.teardown()


def _resume_path(cfg: Config) -> str | None:
    """`resume` as given; a relative checkpoint path is looked up in the working directory, then the project."""
    resume = cfg.resume
    if resume in (None, "last", "auto") or Path(resume).expanduser().exists():
        return resume
    in_project = resolve_path(resume, cfg.project_root)
    return str(in_project) if in_project.exists() else resume


def run_main(main: Callable[[], int]) -> int:
    """Call a command-line entry point; an expected failure is one ``error:`` line on stderr.

    Expected failures are a bad config (`ConfigError`: exit code 2) and an unusable checkpoint
    (`CheckpointError`: exit code 1); their message says what to change, so no traceback is
    printed unless ``SCAFFOLD_DEBUG=1``. Anything else is a bug and keeps its traceback.
    """
    try:
        return main()
    except (ConfigError, CheckpointError) as exc:
        if os.environ.get("SCAFFOLD_DEBUG") == "1":
            raise
        if int(os.environ.get("RANK", "0")) == 0:  # every process of a multi-process run fails alike
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1


def record_exit_code(code: int) -> None:
    """Write the run's exit code where SCAFFOLD_EXIT_FILE says (scripts/slurm.sbatch reads it).

    torchrun turns a worker's 75 ("preempted: requeue me") into its own 1, and a signal that
    arrives after the last step does not mean the run is unfinished: the job script decides
    whether to requeue from this file, not from exit codes or signals.
    """
    path = os.environ.get("SCAFFOLD_EXIT_FILE")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"{code}\n")


def report(trainer: Trainer, run_dir: Path) -> None:
    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val")}
    print("final validation metrics: " + (", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())) or "none"))
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if ckpt is not None:
        score = (
            f", {ckpt.monitor}={ckpt.best_model_score:.4f}"
            if ckpt.monitor and ckpt.best_model_score is not None
            else ""
        )
        best = f" (best: {ckpt.best_model_path}{score})" if ckpt.best_model_path else ""
        print(f"checkpoints: {ckpt.dirpath}{best}")
    print(f"run folder: {run_dir} (summary.json, config.yaml)")
    run_id = getattr(trainer.logger, "run_id", None)
    if run_id:
        print(f"W&B run: {run_id} (files under wandb/)")
