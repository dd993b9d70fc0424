"""`run`: turn a Config into a Trainer with its callbacks and logger, fit, and report."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import console
from . import distributed as D
from .callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, ThroughputMonitor
from .checkpoint import CheckpointError
from .config import Config, ConfigError, dump_yaml, resolve_path
from .module import DataModule, Module
from .sweep import trial_callbacks
from .trainer import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, Trainer

_log = logging.getLogger(__name__)


def default_run_name() -> str:
    """Stable across SLURM requeues (so resume=auto finds the run), else a timestamp."""
    env = os.environ
    job = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):  # each array task its own run
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return f"slurm-{job}" if job else time.strftime("%Y-%m-%d_%H-%M-%S")


def build_logger(cfg: Config, run_name: str, run_dir: Path | None = None) -> Any:
    """The W&B logger; a run started from another run's checkpoint gets a W&B run of its own.

    Only a checkpoint inside this run's folder (``resume=last``/``auto``, or a path under
    ``runs/<run_name>/``) continues the W&B run it recorded. Any other checkpoint is a parent:
    its run name, W&B run id and path go into the new run's config under ``parent``.
    """
    from .loggers import NullLogger, WandbLogger, _new_run_id

    if cfg.wandb.mode == "disabled":
        return NullLogger()  # wandb is not even imported
    keys = asdict(cfg.wandb) | {"name": cfg.wandb.name or run_name}
    resume, extra = _resume_path(cfg), {}
    if resume not in (None, "last", "auto") and run_dir is not None and not _inside(Path(resume), run_dir):
        ckpt = Path(resume)
        parent = {"run_name": ckpt.parent.parent.name} if ckpt.parent.name == "checkpoints" else {}
        extra = {"run_id": os.environ.get("WANDB_RUN_ID") or _new_run_id(), "config": {"parent": parent}}
    # wandb/ sits in the project, like runs/, or in $WANDB_DIR; the end-of-run block prints the sync command
    save_dir = os.path.expanduser(os.environ.get("WANDB_DIR") or "") or cfg.project_root or "."
    return WandbLogger(**keys, **extra, save_dir=save_dir, print_sync_command=False)


def _inside(path: Path, folder: Path) -> bool:
    return path.expanduser().resolve().is_relative_to(folder.resolve())


def build_trainer(cfg: Config, run_dir: Path, callbacks: list[Any] | None = None, logger: Any = None) -> Trainer:
    """The Trainer for `cfg`: the config sections map one to one onto the callbacks' arguments.

    The project's own choices, where they differ from Lightning's defaults, are made here and in
    the config: W&B (`logger`) rather than a CSV log (no logger: none), `last.ckpt` (save_last),
    the monitored value in checkpoint names, checkpoints in ``<run>/checkpoints``, and the config's
    log_every_n_steps.
    """
    checkpoint = asdict(cfg.checkpoint) | {"monitor": cfg.checkpoint.monitor or None}
    if not checkpoint["filename"]:  # e.g. epoch=3-step=120-val_acc=0.9612.ckpt
        checkpoint["filename"] = "{epoch}-{step}" + (
            f"-{{{checkpoint['monitor']}:.4f}}" if checkpoint["monitor"] else ""
        )
    all_callbacks: list[Any] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", **checkpoint),
        LearningRateMonitor(),
        ThroughputMonitor(warn_fraction=cfg.trainer.bottleneck_warn_fraction),
    ]
    if cfg.early_stopping.monitor:
        all_callbacks.append(EarlyStopping(**asdict(cfg.early_stopping)))
    all_callbacks += callbacks or []
    return Trainer(
        **asdict(cfg.trainer),
        callbacks=all_callbacks,
        logger=logger if logger is not None else False,
        default_root_dir=run_dir,
        config=cfg,
    )


def run(cfg: Config, module: Module, datamodule: DataModule, callbacks: list[Any] | None = None) -> int:
    """Fit `module` on `datamodule` as `cfg` says; returns the process exit code.

    0: finished; 75: preempted (checkpoint saved, requeue and resume); 130: interrupted by
    Ctrl-C (checkpoint saved); 1: stopped on a non-finite loss. With ``trainer.devices > 1``
    outside torchrun, starts the processes. The console output is also appended to
    ``<output_dir>/<run_name>/train.log``.
    """
    if cfg.trainer.devices > 1 and not D.under_launcher():
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is None:
            raise RuntimeError("trainer.devices > 1 needs `python -m <package>.train`, or launch with torchrun")
        if cfg.trainer.accelerator in ("auto", "cuda") and torch.cuda.is_available():
            D.gpu_index(cfg.trainer.devices - 1, torch.cuda.device_count())  # enough GPUs, before any process starts
        return D.launch(cfg.trainer.devices, spec.name, sys.argv[1:])

    callbacks = [*(callbacks or []), *trial_callbacks()]  # a sweep's trial reports to its sweep
    started = time.monotonic()
    offload = cfg.trainer.strategy == "fsdp" and cfg.trainer.fsdp.cpu_offload  # clipping then reduces on the CPU
    env = D.setup(cfg.trainer.accelerator, cpu_collectives=offload)
    console.setup(env.rank)
    run_dir: Path | None = None
    created = False
    trainer: Trainer | None = None
    try:
        dry = bool(cfg.trainer.fast_dev_run)  # a dry run leaves no files
        name = cfg.run_name or default_run_name()
        # Rank 0 looks before any process can create the folder (the others wait in the broadcast).
        created = (
            env.is_global_zero and not dry and not (resolve_path(cfg.output_dir, cfg.project_root) / name).exists()
        )
        run_name = env.broadcast_object(name)
        cfg.run_name = run_name
        run_dir = resolve_path(cfg.output_dir, cfg.project_root) / run_name
        with console.session(None if dry else run_dir / "train.log", env.rank, env.world_size):
            if env.is_global_zero and not dry:
                (run_dir / "config.yaml").write_text(dump_yaml(cfg))
            logger = build_logger(cfg, run_name, run_dir) if not dry else None
            trainer = build_trainer(cfg, run_dir, callbacks, logger)
            trainer.resume_command = resume_command(run_name, env.world_size)
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=_resume_path(cfg))
            except KeyboardInterrupt:  # a Ctrl-C before the loop handles them (setup, data loading)
                trainer.stop_reason = "interrupted"
            if env.is_global_zero:
                report(trainer, run_dir, time.monotonic() - started)
        codes = {"preempted": PREEMPTED_EXIT_CODE, "interrupted": INTERRUPTED_EXIT_CODE, "nonfinite_loss": 1}
        code = codes.get(trainer.stop_reason or "", 0)
        if env.local_rank == 0:  # one per node: the job script reads its own node's file
            record_exit_code(code)
        if code == PREEMPTED_EXIT_CODE and os.environ.get("SCAFFOLD_EXIT_FILE"):
            return 0  # the file says it; an exit 75 would read as a failure in torchrun's and srun's logs
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
    whether to requeue from this file, not from exit codes or signals. Each node's local rank 0
    writes it (the ranks agree on how the run ended), so the job script finds it on its own
    node's disk wherever global rank 0 runs; written whole (a temporary file, then renamed).
    """
    path = os.environ.get("SCAFFOLD_EXIT_FILE")
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{code}\n")
        os.replace(tmp, target)


def resume_command(run_name: str, world_size: int = 1) -> str:
    """The command that resumes this run: this one's, with ``run_name=<name> resume=last``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    target = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    if D.under_launcher() and not os.environ.get(D.SELF_LAUNCHED):
        head = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world_size)}"]
    else:
        head = ["python"]
    keep = [a for a in sys.argv[1:] if not a.lstrip("-").startswith(("run_name=", "resume="))]
    return shlex.join([*head, *target, *keep, f"run_name={run_name}", "resume=last"])


def report(trainer: Trainer, run_dir: Path, elapsed: float | None = None) -> None:
    """The end-of-run block: why it stopped, final metrics, best checkpoint, run folder, W&B."""
    for line in end_of_run_lines(trainer, run_dir, elapsed):
        _log.info(line)


def end_of_run_lines(trainer: Trainer, run_dir: Path, elapsed: float | None = None) -> list[str]:
    ends_in_command = trainer.stop_reason in ("interrupted", "preempted")  # a command is copied: keep it last
    took = f" after {_duration(elapsed)}" if elapsed is not None and not ends_in_command else ""
    lines = [stop_words(trainer) + took]
    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val")}
    lines.append(
        "final validation metrics: " + (", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())) or "none")
    )
    if trainer.fast_dev_run:
        lines.append("fast_dev_run: nothing was written (no checkpoints, run folder, train.log or W&B run)")
        return lines
    ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if ckpt is not None and ckpt.best_model_path:
        score = (
            f" ({ckpt.monitor}={ckpt.best_model_score:.4f})"
            if ckpt.monitor and ckpt.best_model_score is not None
            else ""
        )
        lines.append(f"best checkpoint: {ckpt.best_model_path}{score}")
    if ckpt is not None and ckpt.last_model_path and Path(ckpt.last_model_path).exists():
        lines.append(f"last checkpoint: {ckpt.last_model_path}")
    lines.append(f"run folder: {run_dir} (train.log, summary.json, config.yaml)")
    run_id = getattr(trainer.logger, "run_id", None)
    if run_id:
        sync, url = getattr(trainer.logger, "sync_command", None), getattr(trainer.logger, "url", None)
        if sync:
            lines.append(f"W&B: run {run_id} was saved offline; upload it with: {sync}")
        else:
            lines.append(f"W&B: run {run_id}" + (f" at {url}" if url else " (files under wandb/)"))
    return lines


def stop_words(trainer: Trainer) -> str:
    """Why the run stopped, in words."""
    reason, message, t = trainer.stop_reason, trainer.stop_message, trainer
    if reason == "interrupted":
        return trainer.interrupted_line()
    if reason == "max_epochs":
        return f"finished: reached trainer.max_epochs={t.max_epochs} at step {t.global_step}"
    if reason == "max_steps":
        return f"finished: reached trainer.max_steps={t.max_steps} in epoch {t.current_epoch}"
    if reason == "fast_dev_run":
        return f"finished: fast_dev_run ran {t.global_step} training step(s) and a validation"
    if reason == "early_stopping":
        return f"stopped early at step {t.global_step}: {message}"
    if reason == "preempted":
        return f"preempted at step {t.global_step} ({message}); resume with: {t.resume_command}"
    return f"stopped at step {t.global_step}: {message or reason}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s" if m else f"{s}s"
