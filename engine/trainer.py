"""The Trainer: Lightning's names, one readable loop (`_train_epoch`)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import RandomSampler

from . import __version__, automatic, console, evaluation, lightning_api, manual, optim, stopping, strategy
from . import distributed as D
from . import fsdp as FSDP
from .batch import move_to_device as move_to_device  # re-exported: engine.trainer.move_to_device
from .batch import prepare_batch
from .callbacks import Callback, EarlyStopping, ModelCheckpoint, ModelSummary, ProgressBar, ThroughputMonitor
from .callbacks import Timer as TimerCallback
from .checkpoint import (
    AsyncSaver,
    CheckpointError,
    SyncSaver,
    add_lightning_keys,
    capture_rng_state,
    check_model_state,
    engine_layout,
    find_resume_checkpoint,
    isolate_rng,
    load_checkpoint,
    restore_rng_state,
)
from .config import ConfigError
from .loggers import NullLogger, lightning_hparams, make_logger, send_metrics
from .module import DataModule, Module, batch_preparer
from .module import is_datamodule as _is_datamodule
from .optim import LightningOptimizer, _Scheduler, parse_optimizers
from .precision import NULL_CONTEXT, Precision, matmul_precision_advice
from .profilers import make_profiler
from .results import Results
from .states import RunningStage, TrainerFn, TrainerState, TrainerStatus
from .stopping import INTERRUPTED_EXIT_CODE as INTERRUPTED_EXIT_CODE  # still importable from here
from .stopping import PREEMPTED_EXIT_CODE as PREEMPTED_EXIT_CODE
from .utilities import rank_zero_only

_log = logging.getLogger(__name__)
# Module hooks the loop calls through `_call`: name -> whether they take the hook's arguments.
_MODULE_HOOKS = {
    "on_train_batch_start": True,
    "on_train_batch_end": True,
    "on_before_optimizer_step": True,
    "on_fit_start": False,
    "on_train_start": False,
    "on_train_epoch_start": False,
    "on_train_end": False,
    "on_fit_end": False,
    # Called once per batch only where a callback or the module defines them (see `_backward_fn`).
    "on_before_zero_grad": True,
    "on_before_backward": True,
    "on_after_backward": False,
    # The evaluation and prediction loops (engine/evaluation.py).
    **{f"on_{stage}_{when}": False for stage in ("validation", "test", "predict") for when in ("start", "end")},
    **{f"on_{stage}_epoch_{when}": False for stage in ("validation", "test", "predict") for when in ("start", "end")},
    **{f"on_{stage}_batch_{when}": True for stage in ("validation", "test", "predict") for when in ("start", "end")},
}


@dataclass
class Timer:
    """Running totals for the bottleneck report (seconds, samples, batches)."""

    wait: float = 0.0
    total: float = 0.0
    samples: int = 0
    batches: int = 0

    def samples_per_sec(self, world_size: int) -> float | None:
        """The whole job's rate: under DDP every process trains as many samples (the sampler pads)."""
        return self.samples * world_size / self.total if self.total > 0 else None


# Lightning's accelerator names -> the engine's.
_ACCELERATORS = {"auto": "auto", "cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}


def _accepted_without_effect(name: str, value: Any) -> None:
    warnings.warn(f"Trainer({name}={value!r}) is accepted but has no effect in this engine", UserWarning, stacklevel=3)


def _parse_strategy(strategy: Any, find_unused_parameters: bool) -> tuple[str, bool]:
    """Lightning's strategy strings -> "auto", "ddp" (DDP runs when processes are launched) or "fsdp"."""
    name = str(strategy) if isinstance(strategy, str) else type(strategy).__name__
    if name in ("auto", "single_device"):
        return "auto", find_unused_parameters
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_false"):
        return "ddp", find_unused_parameters
    if name in ("ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_true"):
        return "ddp", True
    if name.lower().startswith(("fsdp", "modelparallel")):
        return "fsdp", find_unused_parameters
    raise ValueError(
        f"strategy={name!r} is not supported; use 'auto', 'ddp' (also 'ddp_spawn', run as 'ddp') or 'fsdp'"
    )


def _parse_devices(devices: Any) -> int | list[int] | None:
    """Lightning's forms: "auto" (None: one per process), an int (-1: all), "2", "0,1", [0, 1]."""
    if devices == "auto" or devices is None:
        return None
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        devices = int(text) if text.lstrip("-").isdigit() else devices
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices == -1:
            return max(1, torch.cuda.device_count())
        if devices >= 1:
            return devices
    raise ValueError(f"devices={devices!r}: use 'auto', a count (1, 2, -1 for all), '0,1' or a list of indices")


class Trainer:
    """Fit, validate and test a `Module` (see DESIGN.md's config keys for the arguments)."""

    def __init__(
        self,
        *,
        max_epochs: int | None = None,
        max_steps: int = -1,
        precision: str | int | None = None,
        accelerator: str = "auto",
        devices: int = 1,
        num_nodes: int = 1,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,  # None: "norm" (Lightning passes None to its hook)
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        fast_dev_run: bool | int = False,
        seed: int | None = None,
        deterministic: bool | str | None = None,
        num_threads: int | None = None,
        compile: bool = False,
        sync_batchnorm: bool = False,
        find_unused_parameters: bool = False,
        on_nonfinite_loss: str = "stop",
        async_checkpoint: bool = False,
        progress_bar: bool = True,
        bottleneck_warn_fraction: float = 0.2,
        callbacks: Iterable[Any] | None = None,
        logger: Any = None,
        default_root_dir: str | Path | None = None,
        config: Any = None,
        # Lightning's other arguments (README: "Trainer arguments").
        strategy: str = "auto",
        fsdp: Any = None,
        min_epochs: int | None = None,
        min_steps: int | None = None,
        max_time: str | timedelta | Mapping[str, int] | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        benchmark: bool | None = None,
        detect_anomaly: bool = False,
        profiler: str | Any = None,
        reload_dataloaders_every_n_epochs: int = 0,
        use_distributed_sampler: bool = True,
        barebones: bool = False,
        overfit_batches: int | float = 0.0,
        inference_mode: bool = True,
        plugins: Any = None,
        model_registry: str | None = None,
        enable_autolog_hparams: bool = True,
    ) -> None:
        for name, value, default in (
            ("plugins", plugins, None),
            ("model_registry", model_registry, None),
        ):
            if value != default:
                _accepted_without_effect(name, value)
        # Lightning's None defaults and what they mean there.
        precision = "32" if precision is None else precision
        num_sanity_val_steps = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        log_every_n_steps = 50 if log_every_n_steps is None else log_every_n_steps
        deterministic = False if deterministic is None else deterministic
        if barebones:  # Lightning's minimal-overhead mode: no display, files or sanity check
            enable_checkpointing = enable_progress_bar = enable_model_summary = False
            logger, num_sanity_val_steps = False, 0
        self.strategy, find_unused_parameters = _parse_strategy(strategy, find_unused_parameters)
        self.fsdp_options = FSDP.FSDPOptions.parse(fsdp)  # trainer.fsdp.*: how strategy=fsdp shards
        accelerator = _ACCELERATORS.get(str(accelerator), str(accelerator))
        if accelerator not in set(_ACCELERATORS.values()):
            raise ValueError(f"accelerator={accelerator!r} is not supported; use 'auto', 'cpu', 'gpu'/'cuda' or 'mps'")
        self._device_ids = _parse_devices(devices)
        if max_epochs is None and max_steps < 0 and max_time is None and not fast_dev_run:
            max_epochs = 1000  # Lightning's default bound
        self.fast_dev_run = int(fast_dev_run)
        if self.fast_dev_run:  # n batches of train and val, one epoch, nothing saved or logged
            max_epochs, max_steps = 1, self.fast_dev_run
            limit_train_batches = limit_val_batches = self.fast_dev_run
            num_sanity_val_steps, logger = 0, False
        elif overfit_batches > 0:  # as Lightning: the same first batches, unshuffled, for train and validation
            limit_train_batches = limit_val_batches = overfit_batches
        self.overfit_batches = overfit_batches
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.precision_name = str(precision)
        self.accelerator, self.devices, self.num_nodes = accelerator, devices, num_nodes
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self.limit_train_batches, self.limit_val_batches = limit_train_batches, limit_val_batches
        self.val_check_interval, self.check_val_every_n_epoch = val_check_interval, check_val_every_n_epoch
        self.num_sanity_val_steps, self.log_every_n_steps = num_sanity_val_steps, log_every_n_steps
        if deterministic not in (True, False, "warn"):
            raise ValueError(f"deterministic={deterministic!r}: use True (strict), 'warn' or False")
        self.seed, self.deterministic, self.compile = seed, deterministic, compile
        self.num_threads = num_threads
        self.sync_batchnorm, self.find_unused_parameters = sync_batchnorm, find_unused_parameters
        self.on_nonfinite_loss = on_nonfinite_loss
        self.default_root_dir = Path(default_root_dir) if default_root_dir is not None else Path.cwd()
        self.config = config
        # One callback or several, as Lightning accepts.
        self.callbacks: list[Any] = (
            list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks] if callbacks else []
        )
        # The enable_* switches add Lightning's default callbacks; ones passed in `callbacks` are kept.
        if progress_bar and enable_progress_bar is not False and not self._has(ProgressBar):
            self.callbacks.append(ProgressBar())
        if enable_checkpointing is not False and not self.fast_dev_run and not self._has(ModelCheckpoint):
            # Lightning's default: the newest epoch's checkpoint in <logger's version folder>/checkpoints.
            self.callbacks.append(ModelCheckpoint())
        if enable_model_summary is not False and not self._has(ModelSummary):
            self.callbacks.append(ModelSummary())
        if not barebones and not self._has(ThroughputMonitor):  # the bottleneck report: the timer runs anyway
            self.callbacks.append(ThroughputMonitor(bottleneck_warn_fraction, log_throughput=False))
        if max_time is not None:
            self.callbacks.append(TimerCallback(duration=max_time))
        self.logger, self.loggers = make_logger(logger, self.default_root_dir)
        self.enable_autolog_hparams = enable_autolog_hparams
        self.min_epochs, self.min_steps = min_epochs, min_steps
        self.limit_test_batches, self.limit_predict_batches = limit_test_batches, limit_predict_batches
        self.benchmark, self.detect_anomaly = benchmark, detect_anomaly
        self.profiler = make_profiler(profiler)
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.use_distributed_sampler, self.barebones, self.inference_mode = (
            use_distributed_sampler,
            barebones,
            inference_mode,
        )
        self.enable_autolog_hparams = enable_autolog_hparams  # False: hyperparameters are not sent to the loggers
        self.state = TrainerState()
        self.checkpoint_io: AsyncSaver | SyncSaver = AsyncSaver() if async_checkpoint else SyncSaver()
        self.bottleneck_warn_fraction = bottleneck_warn_fraction

        # Progress and state that callbacks and the module read.
        self.global_step = 0
        self.current_epoch = 0
        self.should_stop = False
        self._stop_agreed = False  # should_stop as all ranks agreed on it (what the loop obeys)
        self.stop_reason: str | None = None
        self.stop_message = ""
        self.sanity_checking = False
        self.at_epoch_end = False
        self.should_log = False
        self.callback_metrics: dict[str, float] = {}
        self.logged_metrics: dict[str, float] = {}
        self.last_eval_metrics: dict[str, float] = {}  # the latest validation/test epoch values
        self._sanity_names: set[str] = set()  # what the sanity check's validation logged
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_schedulers: list[_Scheduler] = []
        self._lightning_optimizers: list[LightningOptimizer] = []  # what module.optimizers() returns
        self._automatic = True  # module.automatic_optimization, read once per fit
        self._unscaled: set[int] = set()  # optimizers clip_gradients unscaled before their step (16-mixed)
        self._ddp_buffers: list[torch.Tensor] = []  # manual optimization under DDP: broadcast each batch
        self.timer = Timer()
        self.env = D.DistEnv()
        self.module: Module | None = None
        self.datamodule: DataModule | None = None
        self.train_loader: Any = None
        self.val_loader: Any = None
        self.test_loader: Any = None  # those of the last trainer.test() / predict()
        self.predict_loader: Any = None
        self.num_training_batches = 0
        self.train_num_workers = 0
        self.resumed_from: str | None = None
        self._loaders_epoch = 0  # the epoch the current loaders were made for (reload_dataloaders_every_n_epochs)
        self._batches_done = 0  # position inside the current epoch (for mid-epoch resume)
        self._epoch_rng: dict[str, Any] | None = None  # random state at the epoch's start (D.epoch_iterator)
        self._epoch_done = False
        self._val_pending = False  # a validation that a stop signal cut short: the resumed run repeats it
        self._signal: int | None = None
        self._stop_announced = False
        # How to resume this run, for the line printed after a Ctrl-C (`run` sets the command).
        self.resume_command: str | None = None
        self._pending_log: dict[str, float] = {}
        self._train_results = Results(self._reduce)
        self._eval_results = Results(self._reduce)
        self.results = self._train_results
        self._hooks: dict[str, list[Callable[..., Any]]] = {}
        self._step_fn: Callable[[Any, int], Any] | None = None
        self._ddp: nn.Module | None = None
        self._fsdp: FSDP.Sharded | None = None  # strategy=fsdp with a process group: the sharded module
        # On an accelerator or under DDP with on_nonfinite_loss=stop, the loss flag is read where the
        # loop syncs anyway (logging steps, validation, saves), not every step: see `check_finite`.
        self._unchecked: torch.Tensor | bool | None = None  # finiteness of the losses since the last read
        self._checked_at = 0  # global_step of the last read
        self._nonfinite_seen = False
        # Under DDP the ranks agree on stops and non-finite losses in one all-reduce at sync points
        # (see `stopping.sync`), and every `_sync_every` steps, so a signal one rank got reaches them all.
        self._sync_every = 1  # steps between agreements: rank-uniform, re-derived from the step time
        self._sync_step = 0  # global_step of the next agreement by interval
        self._sync_mark: tuple[int, float] | None = None  # (global_step, time) of the last agreement
        self._synced_at: tuple[int, int, int] | None = None  # loop position of the last agreement
        self._stop_check_s = D.DEFAULT_STOP_CHECK_S
        self._log_keys: tuple[str, ...] = ()  # rank 0's step metric names, as all ranks last agreed
        self._step_metrics: dict[str, float] = {}  # what the latest logging step logged

    def _has(self, kind: type) -> bool:
        return any(isinstance(c, kind) for c in self.callbacks)

    # -- read-only views -------------------------------------------------------------------
    @property
    def is_global_zero(self) -> bool:
        return self.env.is_global_zero

    # Lightning's names for what the trainer holds.
    @property
    def model(self) -> Module | None:
        return self.module

    @property
    def lightning_module(self) -> Module | None:
        return self.module

    @property
    def global_rank(self) -> int:
        return self.env.rank

    @property
    def local_rank(self) -> int:
        return self.env.local_rank

    @property
    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", os.environ.get("SLURM_NODEID", "0"))))

    @property
    def num_devices(self) -> int:
        """Devices (processes) per node."""
        ids = self._device_ids
        if isinstance(ids, list):
            return len(ids)
        if ids is not None:
            return ids
        return int(os.environ.get("LOCAL_WORLD_SIZE", max(1, self.world_size // max(1, self.num_nodes))))

    @property
    def checkpoint_callbacks(self) -> list[ModelCheckpoint]:
        return [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next(iter(self.checkpoint_callbacks), None)

    @property
    def early_stopping_callbacks(self) -> list[EarlyStopping]:
        return [c for c in self.callbacks if isinstance(c, EarlyStopping)]

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        return next(iter(self.early_stopping_callbacks), None)

    @property
    def progress_bar_callback(self) -> ProgressBar | None:
        return next((c for c in self.callbacks if isinstance(c, ProgressBar)), None)

    @property
    def log_dir(self) -> str:
        """The first logger's folder (`log_dir`, else `save_dir`), else `default_root_dir`."""
        first = self.loggers[0] if self.loggers else None
        folder = getattr(first, "log_dir", None) or getattr(first, "save_dir", None)
        return str(folder if folder is not None else self.default_root_dir)

    @property
    def lr_scheduler_configs(self) -> list[_Scheduler]:
        """Each scheduler with its interval, frequency, monitor, strict and name."""
        return self.lr_schedulers

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """The latest values logged with ``prog_bar=True`` in this stage (as Lightning: a fit's training
        step and epoch values and validation's; a validate() or test() run's own only)."""
        shown = self.results_prog_bar
        train: dict[str, float] = {}
        if self.state.fn == TrainerFn.FITTING:
            prog = self._train_results.prog_bar
            train = {k: v for k, v in self.callback_metrics.items() if k in prog and k not in self.last_eval_metrics}
            train.update(self.progress_metrics())
        return {**train, **{k: v for k, v in self.last_eval_metrics.items() if k in shown}}

    def _reset_metrics(self) -> None:
        """Each fit/validate/test/predict starts with no metrics, as in Lightning: callback_metrics
        after test() hold the test's values only, not the fit's."""
        # New dicts (not cleared ones): what an earlier verb returned or a caller kept stays as it was.
        self.callback_metrics, self.logged_metrics, self.last_eval_metrics, self._step_metrics = {}, {}, {}, {}
        self._sanity_names = set()
        self._train_results.reset("train")

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @training.setter
    def training(self, value: bool) -> None:
        if value:
            self.state.stage = RunningStage.TRAINING
        elif self.training:
            self.state.stage = None

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @property
    def world_size(self) -> int:
        return self.env.world_size

    # Lightning's other read-only views (engine/lightning_api.py lists every name).
    @property
    def evaluating(self) -> bool:
        return self.state.stage in (RunningStage.SANITY_CHECKING, RunningStage.VALIDATING, RunningStage.TESTING)

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def received_sigterm(self) -> bool:
        return self._signal == signal.SIGTERM

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The GradScaler under 16-mixed, else None."""
        precision = getattr(self, "precision", None)
        return precision.scaler if precision is not None and precision.scaling else None

    @property
    def device_ids(self) -> list[int]:
        ids = self._device_ids
        return list(ids) if isinstance(ids, list) else list(range(self.num_devices))

    @property
    def enable_validation(self) -> bool:
        return self.has_validation

    @property
    def num_sanity_val_batches(self) -> list[int]:
        cap = self.num_sanity_val_steps
        return [n if cap < 0 else min(n, cap) for n in self.num_val_batches]

    @property
    def num_test_batches(self) -> list[int]:
        return [self._limit(loader, self.limit_test_batches) for loader in evaluation.as_list(self.test_loader)]

    @property
    def num_predict_batches(self) -> list[int]:
        loaders = evaluation.as_list(self.predict_loader)
        return [self._limit(loader, self.limit_predict_batches) for loader in loaders]

    def __getattr__(self, name: str) -> Any:  # only for names not found: a Lightning one says what instead
        error = lightning_api.missing_attribute("Trainer", name)
        if error is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        raise error

    @property
    def _reads_loss_late(self) -> bool:
        """With on_nonfinite_loss=stop, the loss flag waits for `check_finite` on an accelerator (a
        read stalls its queue) and under DDP (agreeing would be a collective per step); always under
        manual optimization (the module has stepped before the loop sees the loss)."""
        return self.on_nonfinite_loss == "stop" and (
            self.device.type != "cpu" or not self._automatic or self.env.active
        )

    @property
    def device(self) -> torch.device:
        return self.env.device

    @property
    def has_validation(self) -> bool:
        return any(self._limit(loader, self.limit_val_batches) > 0 for loader in evaluation.as_list(self.val_loader))

    # Lightning's names for the loaders as the loops use them (rebuilt around the engine's sharded
    # samplers): one loader, or a list of them.
    @property
    def train_dataloader(self) -> Any:
        return self.train_loader

    @property
    def val_dataloaders(self) -> Any:
        return self.val_loader

    @property
    def test_dataloaders(self) -> Any:
        return self.test_loader

    @property
    def predict_dataloaders(self) -> Any:
        return self.predict_loader

    @property
    def num_val_batches(self) -> list[int]:
        """Batches each validation loader runs on this process (limit_val_batches applied)."""
        return [self._limit(loader, self.limit_val_batches) for loader in evaluation.as_list(self.val_loader)]

    @property
    def results_prog_bar(self) -> set[str]:
        return self._train_results.prog_bar | self._eval_results.prog_bar

    @property
    def estimated_stepping_batches(self) -> int:
        """Optimizer steps this fit will take (for schedulers such as OneCycleLR)."""
        per_epoch = math.ceil(self.num_training_batches / self.accumulate_grad_batches)
        by_epochs = per_epoch * self.max_epochs if self.max_epochs is not None else math.inf
        by_steps = self.max_steps if self.max_steps > 0 else math.inf
        total = min(by_epochs, by_steps)
        return int(total) if total != math.inf else per_epoch

    def print(self, *args: Any, sep: str = " ") -> None:
        """A message for the user, from global rank 0, through `logging` (console and train.log).

        A message that starts with ``warning:`` is logged as a warning, so it stays visible when
        the engine's logger is set to WARNING.
        """
        if self.is_global_zero:
            text = sep.join(str(a) for a in args)
            _log.log(logging.WARNING if text.startswith("warning:") else logging.INFO, text)

    def request_stop(self, reason: str, message: str = "") -> None:
        """Ask the loop to stop after the current step (callbacks call this).

        The message is printed (``stopping: ...``) when the loop acts on the stop, after the
        validation line that caused it.
        """
        self.should_stop = True
        if self.stop_reason is None:
            self.stop_reason, self.stop_message = reason, message

    def _announce_stop(self) -> None:
        if self.should_stop and self.stop_message and not self._stop_announced:
            self._stop_announced = True
            self.print(f"stopping: {self.stop_message}")

    def logged_names(self) -> set[str]:
        """Every metric name logged so far in this fit (callbacks check their `monitor` against it)."""
        train = self._train_results
        return {*self.callback_metrics, *self._sanity_names, *train.step, *train.epoch, *train.metric_objects}

    def progress_metrics(self) -> dict[str, float]:
        values = self._train_results.step_values()
        return {k: v for k, v in values.items() if k in self._train_results.prog_bar}

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Queue metrics for the logger at the current step (sent once per step)."""
        self._pending_log.update(metrics)

    def logger_after_save(self, checkpoint_callback: Any) -> None:
        if self.is_global_zero:
            if getattr(self.logger, "needs_checkpoint_files", False):
                self.checkpoint_io.wait()  # an artifact upload reads the file: let the write finish
            self.logger.after_save_checkpoint(checkpoint_callback, step=self.global_step, epoch=self.current_epoch)

    # -- the public verbs ------------------------------------------------------------------
    def fit(
        self,
        module: Module | None = None,
        datamodule: DataModule | None = None,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        *,
        model: Module | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train; ``ckpt_path`` resumes (an engine or a Lightning checkpoint, "last" or a path).

        ``weights_only=False`` lets a trusted checkpoint holding Python objects load.
        """
        module = module if module is not None else model  # Lightning's keyword is `model=`
        if datamodule is not None and not _is_datamodule(datamodule):
            # Lightning's positional order: fit(model, train_dataloaders, val_dataloaders).
            datamodule, train_dataloaders, val_dataloaders = None, datamodule, train_dataloaders
        elif datamodule is None and _is_datamodule(train_dataloaders):
            datamodule, train_dataloaders = train_dataloaders, None
        self._setup(module, datamodule, "fit")
        self.state.fn, self.state.status = TrainerFn.FITTING, TrainerStatus.RUNNING
        status, self._fit_started = "failed", False
        previous_handlers = stopping.install_signal_handlers(self)
        anomaly = torch.is_anomaly_enabled()
        if self.detect_anomaly:  # a backward that makes NaN/inf raises, naming the forward op
            torch.set_anomaly_enabled(True)
        self.profiler.setup(self)
        if self.profiler.enabled:
            self._instrument()
        try:
            source = datamodule if datamodule is not None else module  # Lightning: loaders defined on the module
            if train_dataloaders is None:
                train_dataloaders = evaluation.request_loader(source, "train_dataloader")
            if val_dataloaders is None:
                val_dataloaders = evaluation.request_loader(source, "val_dataloader")
            if train_dataloaders is None:
                raise ValueError(
                    "fit needs train_dataloaders, a datamodule, or a train_dataloader() method on the module"
                )
            self._set_fit_loaders(train_dataloaders, val_dataloaders)
            if self.num_training_batches == 0:
                raise ConfigError(
                    f"no training batches: the training DataLoader has {_length(self.train_loader)} batches and "
                    f"trainer.limit_train_batches={self.limit_train_batches}; use a larger limit or more data"
                )
            self._configure_optimizers(module)
            if ckpt_path is not None:
                self._restore(ckpt_path, weights_only)
            strategy.wrap(self, module)
            # A generated project's run logs its config and the module's hparams; a plain Trainer logs
            # Lightning's: the module's merged with the datamodule's (a clash is an error on every rank).
            autolog = self.enable_autolog_hparams and bool(self.loggers)
            if autolog and self.config is not None:
                hparams = {"config": _plain(self.config), "hparams": _plain(module.hparams)}
            elif autolog:
                hparams = lightning_hparams(module, self.datamodule)
            if self.is_global_zero:
                if autolog:
                    self.logger.log_hyperparams(hparams)
                if getattr(self.logger, "watch_mode", True):  # WandbLogger: only when asked (wandb.watch)
                    self.logger.watch(module)
            self._fit_loop()
            self._teardown_hooks("fit")
            status = "interrupted" if self.stop_reason in ("preempted", "interrupted") else "success"
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            if self.stop_reason is None:
                self.stop_reason, self.stop_message = status, f"{type(exc).__name__}: {exc}"
            D.record_exception(exc)  # torchrun shows this rank's traceback as the root cause
            self._call("on_exception", exc)
            if self.datamodule is not None and callable(getattr(self.datamodule, "on_exception", None)):
                self.datamodule.on_exception(exc)
            raise
        finally:
            torch.set_anomaly_enabled(anomaly)
            self.profiler.teardown(self)
            for name in ("_optimizer_step", "_validate_now", "save_checkpoint", "_manual_step", "_manual_backward"):
                self.__dict__.pop(name, None)  # drop the profiler's wrappers
            self.state.stage = None
            self.state.status = TrainerStatus.FINISHED if status == "success" else TrainerStatus.INTERRUPTED
            try:
                self._finish(status)  # a second Ctrl-C here still exits at once
            finally:
                for sig, handler in previous_handlers.items():
                    signal.signal(sig, handler)

    def _set_fit_loaders(self, train_dataloaders: Any, val_dataloaders: Any) -> None:
        """Prepare the loaders (the engine's resumable, sharded sampler unless use_distributed_sampler=False)."""
        if self.use_distributed_sampler:
            seed = self.seed if self.seed is not None else 0
            sequential = self.overfit_batches > 0  # overfit the same batches every epoch
            train_dataloaders = D.prepare_loader(train_dataloaders, self.env, seed, train=True, sequential=sequential)
            val_dataloaders = evaluation.prepare_loaders(self, val_dataloaders)
        elif self.overfit_batches > 0 and isinstance(getattr(train_dataloaders, "sampler", None), RandomSampler):
            raise ValueError(
                "overfit_batches with use_distributed_sampler=False needs a training loader that does not "
                "shuffle: DataLoader(..., shuffle=False)"
            )
        new = [train_dataloaders, *evaluation.as_list(val_dataloaders)]
        for loader in (self.train_loader, *evaluation.as_list(self.val_loader)):
            if loader is not None and all(loader is not n for n in new):
                D.shutdown_workers(loader)  # a reload: stop the old loaders' workers
        self.train_loader, self.val_loader = train_dataloaders, val_dataloaders
        self.train_num_workers = getattr(self.train_loader, "num_workers", 0)
        self.num_training_batches = self._limit(self.train_loader, self.limit_train_batches)
        self._loaders_epoch = self.current_epoch

    def _maybe_reload_loaders(self) -> None:
        """reload_dataloaders_every_n_epochs: ask the datamodule for fresh loaders every n epochs."""
        n = self.reload_dataloaders_every_n_epochs
        if not n or self.datamodule is None or self.current_epoch - self._loaders_epoch < n:
            return
        self._set_fit_loaders(self.datamodule.train_dataloader(), self.datamodule.val_dataloader())

    def _instrument(self) -> None:
        """Time the loop's phases through the profiler: wrappers set here, so an off profiler costs nothing."""
        prof, cls = self.profiler, type(self)
        self._optimizer_step = prof.wrap("[phase] optimizer", partial(cls._optimizer_step, self))
        self._manual_step = prof.wrap("[phase] optimizer", partial(cls._manual_step, self))
        self._manual_backward = prof.wrap("[phase] backward", partial(cls._manual_backward, self))
        self._validate_now = prof.wrap("[phase] validation", partial(cls._validate_now, self))
        self.save_checkpoint = prof.wrap("[phase] checkpoint", partial(cls.save_checkpoint, self))

    def validate(
        self,
        module: Module | None = None,
        datamodule: DataModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        *,
        model: Module | None = None,
        verbose: bool = True,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run one validation epoch; without a model, on the fitted one (see `evaluation.resolve_ckpt`)."""
        module = module if module is not None else model
        return evaluation.evaluate_only(
            self, "validate", module, datamodule, dataloaders, ckpt_path, verbose, weights_only
        )

    def test(
        self,
        module: Module | None = None,
        datamodule: DataModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        *,
        model: Module | None = None,
        verbose: bool = True,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run one test epoch; without a model, on the fitted one (see `evaluation.resolve_ckpt`)."""
        module = module if module is not None else model
        return evaluation.evaluate_only(self, "test", module, datamodule, dataloaders, ckpt_path, verbose, weights_only)

    def predict(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        datamodule: DataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | Path | None = None,
    ) -> list[Any] | None:
        """What `predict_step` returned for each batch (a list per dataloader when there are several).

        Under DDP each process returns the predictions for its own shard of the data (as Lightning).
        """
        return evaluation.predict(self, model, dataloaders, datamodule, return_predictions, ckpt_path)

    def save_checkpoint(self, path: str | Path, weights_only: bool = False) -> None:
        """Write everything needed to resume; global rank 0 writes, all ranks wait.

        `weights_only` (Lightning's): no optimizer, scheduler, scaler or callback state; such a
        file loads weights and evaluates, but cannot resume a fit.
        """
        if self.fast_dev_run:
            return  # a smoke test of the code path: nothing is written (as Lightning)
        if not self.check_finite():
            self.print(f"not saving {path}: a non-finite loss has changed the weights since the last checkpoint")
            return
        state = self._checkpoint_state()
        if weights_only:
            for key in ("optimizers", "optimizer_states", "lr_schedulers", "scaler", "callbacks"):
                state.pop(key, None)
        if self._fsdp is not None:  # every process writes its shards into one folder
            self.checkpoint_io.wait()
            FSDP.save(state, Path(path), self.module, [] if weights_only else self.optimizers)
            return
        error: Exception | None = None
        if self.is_global_zero:
            try:
                if Path(path).is_dir():  # a sharded checkpoint of that name (resumed without fsdp): set aside
                    FSDP.step_aside(Path(path))
                self.checkpoint_io.save(state, Path(path))
            except Exception as e:  # the other ranks learn of it below and stop with it, instead of waiting
                error = e
        if self.env.active:  # the barrier: every rank waits for rank 0's outcome
            failed = self.env.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
            if failed is not None and error is None:
                raise CheckpointError(f"rank 0 could not save {path}: {failed}")
        if error is not None:
            raise error

    # -- the loop ------------------------------------------------------------------------
    def _fit_loop(self) -> None:
        self._call("on_fit_start")
        if self.resumed_from is None and self.has_validation and self.num_sanity_val_steps > 0:
            self.sanity_checking, self.state.stage = True, RunningStage.SANITY_CHECKING
            self._call("on_sanity_check_start")
            with isolate_rng(self.device):  # as Lightning: noise drawn in validation_step leaves training alone
                self._run_eval("val", self.val_loader, self.limit_val_batches, cap=self.num_sanity_val_steps)
            self._call("on_sanity_check_end")
            self.sanity_checking = False
        self._fit_started = True  # the restore and sanity check passed: from here on, a failure is recorded
        start = getattr(self.logger, "start", None)  # W&B: the run starts now
        if self.is_global_zero and callable(start):
            start()
        self.state.stage = RunningStage.TRAINING
        self._loaders_epoch = self.current_epoch  # the loaders fit made serve this epoch (also after a resume)
        self._call("on_train_start")
        while not self.should_stop:
            if self.max_epochs is not None and self.current_epoch >= self.max_epochs:
                self.request_stop("max_epochs")
                break
            if self.max_steps >= 0 and self.global_step >= self.max_steps:
                self.request_stop("max_steps")
                break
            self._maybe_reload_loaders()
            self._train_epoch()
            if self._epoch_done:
                self.current_epoch += 1
                self._batches_done, self._epoch_done = 0, False
        if self.stop_reason in ("max_epochs", "max_steps"):
            self.should_stop = False  # as Lightning's: reaching a limit is not a stop request
        self.check_finite()  # the last steps' losses, before the end hooks save anything
        self._announce_stop()
        if self.fast_dev_run:
            self.stop_reason = "fast_dev_run"
        self._call("on_train_end")
        self._call("on_fit_end")

    def _train_epoch(self) -> None:
        module, n, k = self.module, self.num_training_batches, self.accumulate_grad_batches
        # The epoch's shuffle; after a mid-epoch resume, past what the checkpoint had trained.
        data, self._epoch_rng = D.epoch_iterator(
            self.train_loader, self.current_epoch, self._batches_done, self.world_size, self._epoch_rng
        )
        if self._batches_done == 0:
            self._train_results.reset("train")
        self.results = self._train_results
        self._call("on_train_epoch_start")
        stopping.agree_stop(self)
        if self._val_pending and self._batches_done < n and not self._stop_agreed:
            self._validate_now()  # cut short by a stop signal before the save: run it again first
        module.train()
        if not self._automatic:  # the module steps its own optimizers: a loop body of its own
            self._end_train_epoch(*manual.run_batches(self, data, self._batches_done, n))
            return
        # A module overriding optimizer_step & co. steps through Lightning's closure (engine/automatic.py).
        hooked = automatic.hooked_step(self)
        if hooked is None:  # (else the closure zeroes, through optimizer_zero_grad)
            self.optimizers[0].zero_grad(set_to_none=True)  # nothing carries over from an unfinished window
        batch_idx = self._batches_done
        val_every = self._val_every(n)
        distributed, device, dtype = self.env.active, self.device, self.precision.input_dtype
        # A stop can wait for the next sync point; a skip must know before the optimizer step
        # (under DDP that is one all-reduce per step, the price of on_nonfinite_loss=skip).
        defer = self.on_nonfinite_loss == "stop"
        exact = not self._reads_loss_late  # one CPU process (or skip): the exact check, every step
        agree_each_step = distributed and exact  # the same on every rank
        autocast = self.precision.autocast()  # one context, entered every step
        plain = autocast is NULL_CONTEXT and self._ddp is None and self._fsdp is None  # no context around the step
        # Everything the step reads, fetched once: at ~300 µs a step, attribute lookups add up.
        step_fn, backward, results, t = self._step_fn, self._backward_fn(), self._train_results, self.timer
        optimizer_step, prepare = self._optimizer_step, batch_preparer(module, self.datamodule) or prepare_batch
        if hooked is not None:  # the closure enters its own contexts, runs backward, and the module steps
            step_fn, backward, optimizer_step, plain = hooked, automatic.no_backward, hooked.after_step, True
        if self.profiler.enabled:  # timed wrappers, made once per epoch: an off profiler adds nothing per step
            step_fn = self.profiler.wrap("[phase] forward (training_step)", step_fn)
            backward = self.profiler.wrap("[phase] backward", backward)
        start_hooks, end_hooks = self._hooks_for("on_train_batch_start"), self._hooks_for("on_train_batch_end")
        step_hooks = self._hooks_for("on_before_optimizer_step")
        now = time.perf_counter
        finite: Any = True  # a bool, or a device tensor read once per optimizer step (skip)
        # 16-mixed: a window whose training_steps all returned None has no backward, so nothing for the
        # GradScaler to unscale or step (it would fail); the step is counted as under 32 but not taken.
        scaling = idle = self.precision.scaling  # idle: True until a backward in the window (never without scaling)
        while batch_idx < n and not self._stop_agreed:
            start = now()
            try:
                batch = next(data)
            except StopIteration:  # a loader without len() ends the epoch here
                n = self.num_training_batches = batch_idx
                break
            waited = now() - start
            batch, batch_size = prepare(batch, device, dtype)
            results.batch_size = batch_size
            for fn in start_hooks:
                fn(batch, batch_idx)
            if k == 1:
                step_now, window = True, 1
            else:
                window_start = batch_idx - batch_idx % k
                window = min(k, n - window_start)  # the last window of an epoch may be short
                step_now = batch_idx + 1 == window_start + window
            if plain:
                outputs = step_fn(batch, batch_idx)
            else:
                with self._no_sync(not step_now), autocast:
                    outputs = step_fn(batch, batch_idx)
            loss = outputs if isinstance(outputs, torch.Tensor) else _loss_of(outputs)
            if loss is not None:
                if loss.is_cpu:  # .item() waits for nothing on the CPU: check every step, exactly
                    if exact:
                        finite = finite is True and math.isfinite(loss.item())
                    elif not math.isfinite(loss.item()):  # DDP: the ranks agree at the next sync point
                        self._unchecked = False
                else:  # reading a device value now would stall the accelerator's queue
                    ok = torch.isfinite(loss.detach())
                    if defer:
                        self._unchecked = ok if self._unchecked is None else self._unchecked & ok
                    else:
                        finite = ok if finite is True else finite & ok
                loss = loss / window if window > 1 else loss  # x / 1 is x: skip the op
                backward(loss)
                idle = False
            elif step_now and self._ddp is not None:  # None where DDP syncs: sync anyway
                strategy.sync_without_loss(self)
                idle = False
            batch_idx = self._batches_done = batch_idx + 1
            t.wait, t.samples, t.batches = t.wait + waited, t.samples + batch_size, t.batches + 1
            if step_now:
                if agree_each_step:  # every rank skips/stops alike
                    finite = self.env.all_reduce(torch.as_tensor(finite, device=device).float(), "min") > 0
                if idle:
                    self._idle_step()
                elif finite is True or finite:
                    optimizer_step(step_hooks)
                elif not stopping.nonfinite_step(self):
                    break  # stop before counting a step that was not taken
                finite, idle = True, scaling
                self.global_step = step = self.global_step + 1
                self.should_log = step % self.log_every_n_steps == 0
                if self.should_log or (distributed and step >= self._sync_step):
                    if not stopping.step_sync(self):
                        break  # stop before anything reads or saves these weights
            else:
                self.should_log = False  # inside a window: callbacks log on the optimizer step only
            t.total += now() - start
            if val_every and batch_idx % val_every == 0 and batch_idx < n:
                self._validate_now()  # before the batch-end hooks, so a checkpoint there includes it
            if end_hooks:  # after every batch (Lightning), with Lightning's outputs: {"loss": detached, ...}
                out = _batch_outputs(outputs, loss)
                for fn in end_hooks:
                    fn(out, batch, batch_idx - 1)
            if step_now:
                if self._pending_log:
                    self._flush_log()
                if self.max_steps >= 0 and self.global_step >= self.max_steps:
                    self.request_stop("max_steps")
                    self._stop_agreed = True  # the same step on every rank: nothing to agree on
                if self._signal is not None or self.should_stop != self._stop_agreed:
                    stopping.agree_stop(self, collective=False)  # under DDP: agreed at the next sync point
        self._end_train_epoch(batch_idx, n)

    def _end_train_epoch(self, batch_idx: int, n: int) -> None:
        """The epoch-end work: validation, on_train_epoch_end, epoch metrics and schedulers."""
        module = self.module
        if batch_idx < n or not self.check_finite():
            return  # stopped mid-epoch: the epoch-end work belongs to the resumed run
        self._epoch_done, self.at_epoch_end = True, True
        epoch_val = (self.current_epoch + 1) % self.check_val_every_n_epoch == 0
        if self.has_validation and epoch_val:
            self._validate_now()
            if self._val_pending:  # cut short by a stop signal: the resumed run validates, then ends the epoch
                self._epoch_done = self.at_epoch_end = False
                return
        self.results = self._train_results
        self._train_results.epoch_end = True  # self.log in on_train_epoch_end means an epoch value
        module.on_train_epoch_end()
        self._train_results.epoch_end = False
        epoch_metrics = self._train_results.compute_epoch()
        latest = {**self._train_results.step_values(), **epoch_metrics}  # also between logging steps
        self.callback_metrics.update(self.env.broadcast_object(self._train_results.with_plain_names(latest)))
        if self._automatic:  # under manual optimization the module steps its schedulers
            optim.step_schedulers(self, "epoch")
        self.log_metrics({**epoch_metrics, "epoch": float(self.current_epoch)})
        self._call("on_train_epoch_end")
        self._flush_log()
        stopping.agree_stop(self)
        self.at_epoch_end = False

    def _optimizer_step(self, hooks: list[Callable[..., Any]]) -> None:
        """Unscale, run on_before_optimizer_step `hooks`, clip, step, zero the gradients, step schedulers."""
        optimizer, precision = self.optimizers[0], self.precision
        if hooks or self.gradient_clip_val is not None:
            precision.unscale(optimizer)  # hooks and clipping see true gradients, not scaled ones
            for fn in hooks:
                fn(optimizer)
            if self.gradient_clip_val is not None:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                if self.gradient_clip_algorithm != "value":
                    torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
                else:
                    torch.nn.utils.clip_grad_value_(params, self.gradient_clip_val)
        if precision.scaling:
            stepped = precision.step(optimizer)
        else:
            optimizer.step()
            stepped = True
        optimizer.zero_grad(set_to_none=True)
        if stepped and self.lr_schedulers:
            optim.step_schedulers(self, "step")

    def _idle_step(self) -> None:
        """A window without backward under gradient scaling: no optimizer or scaler step (there are no
        gradients); the global step and step-interval schedulers advance as they do under 32."""
        self.optimizers[0].zero_grad(set_to_none=True)
        if self.lr_schedulers:
            optim.step_schedulers(self, "step")

    # -- manual optimization (engine/manual.py): methods, so that the profiler can time them ---------
    def _manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """What `module.manual_backward` calls."""
        manual.backward(self, loss, *args, **kwargs)

    def _manual_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None, **kwargs: Any) -> Any:
        """What `LightningOptimizer.step` calls."""
        return manual.step(self, optimizer, closure, **kwargs)

    # -- pieces of the loop ------------------------------------------------------------------
    def check_finite(self) -> bool:
        """Whether every training loss so far was finite; callbacks that save weights ask first.

        Reads the loss flag gathered since the last read (see `stopping.check_finite`); under
        DDP an agreement point, called at the same points on every rank.
        """
        return stopping.check_finite(self)

    def _validate_now(self) -> None:
        if not self.check_finite():
            return
        if not self._automatic or self._batches_done % self.accumulate_grad_batches == 0 or self._epoch_done:
            self.module.on_validation_model_zero_grad()  # at an optimizer step, as Lightning (not mid-window)
        self._val_pending = self._run_eval("val", self.val_loader, self.limit_val_batches, stoppable=True) is None
        self._flush_log()
        self.results = self._train_results
        stopping.agree_stop(self)

    def _run_eval(
        self, stage: str, loaders: Any, limit: int | float | None, cap: int | None = None, stoppable: bool = False
    ) -> dict[str, float] | None:
        """One validation ("val") or test epoch over `loaders` (see engine/evaluation.py)."""
        return evaluation.run_eval(self, stage, loaders, limit, cap, stoppable)

    def _log_step(self, metrics: dict[str, float] | None = None) -> None:
        """A logging step: the step values to the loggers, and rank 0's to every rank's callbacks
        (`metrics`: under DDP rank 0's own, logged by it alone; `stopping.sync` passes them on)."""
        if metrics is None:
            metrics = self._train_results.step_values()  # the one device sync per logging step
            shared = self.env.broadcast_object(self._train_results.with_plain_names(metrics))
        else:
            shared = self._train_results.with_plain_names(metrics)
        self._step_metrics = shared
        self.callback_metrics.update(shared)
        self.log_metrics({**metrics, "epoch": float(self.current_epoch)})

    def _flush_log(self) -> None:
        if not self._pending_log:
            return
        metrics = {k: v for k, v in self._pending_log.items() if k not in self.results.hidden}
        self._pending_log = {}
        self.logged_metrics.update(metrics)
        self.logged_metrics.pop("epoch", None)  # sent to the loggers, but not one of the logged metrics
        if self.is_global_zero and metrics:
            # Lightning's loggers get Lightning's step: during fit, the optimizer steps before this batch's.
            fitting = self.state.fn == TrainerFn.FITTING and self.global_step > 0
            lightning_step = self.global_step - 1 if fitting else self.global_step
            send_metrics(self.logger, metrics, self.global_step, lightning_step, self.current_epoch)

    def _val_every(self, n: int) -> int:
        v = self.val_check_interval
        if v is None or not self.has_validation or (isinstance(v, float) and v >= 1.0):
            return 0
        return max(1, int(n * v)) if isinstance(v, float) else int(v)

    def _no_sync(self, skip_sync: bool) -> Any:
        # Inside an accumulation window, DDP need not all-reduce until the last micro-batch.
        if skip_sync and self._ddp is not None:
            return self._ddp.no_sync()
        if self._fsdp is not None:  # FSDP: a flag read in backward, set before every micro-batch
            return self._fsdp.gradient_sync(not skip_sync, restore=not self._automatic)
        return NULL_CONTEXT

    def _call(self, hook: str, *args: Any) -> None:
        for fn in self._hooks_for(hook):
            fn(*args)

    def _backward_fn(self) -> Callable[[torch.Tensor], None]:
        """`precision.backward`, wrapped in the backward hooks only where someone defines them.

        Lightning's order: on_before_zero_grad (first micro-batch of a window; the engine has
        already set the gradients to None after the last step), on_before_backward(loss),
        backward, on_after_backward.
        """
        backward = self.precision.backward
        zero_grad, before, after = (
            self._hooks_for(h) for h in ("on_before_zero_grad", "on_before_backward", "on_after_backward")
        )
        if not (zero_grad or before or after):
            return backward  # the common case: the loop calls backward itself, nothing in between
        k = self.accumulate_grad_batches

        def hooked(loss: torch.Tensor) -> None:
            if zero_grad and self._batches_done % k == 0:  # (the loop counts the batch after backward)
                for fn in zero_grad:
                    fn(self.optimizers[0])
            for fn in before:
                fn(loss)
            backward(loss)
            for fn in after:
                fn()

        return hooked

    def _hooks_for(self, hook: str) -> list[Callable[..., Any]]:
        hooks = self._hooks.get(hook)
        if hooks is None:  # looked up once per fit, so a step pays only for hooks that do something
            hooks = self._hooks[hook] = self._find_hooks(hook)
        return hooks

    def _find_hooks(self, hook: str) -> list[Callable[..., Any]]:
        """The callbacks' `hook` methods, then the module's unless it is Module's no-op."""
        module = self.module
        named: list[tuple[str, Callable[..., Any]]] = [
            (f"[Callback]{type(c).__name__}.{hook}", partial(getattr(c, hook), self, module))
            for c in self.callbacks
            if callable(getattr(c, hook, None)) and getattr(c, "is_disabled", False) is not True
        ]
        if hook in _MODULE_HOOKS:
            fn = getattr(module, hook)
            if hook in vars(module) or getattr(type(module), hook, None) is not getattr(Module, hook, None):
                owner = f"[LightningModule]{type(module).__name__}.{hook}"
                named.append((owner, fn if _MODULE_HOOKS[hook] else lambda *args: fn()))
        wrap = self.profiler.wrap  # the identity unless a profiler is on: each hook timed under its owner's name
        return [wrap(name, fn) for name, fn in named]

    def _limit(self, loader: Any, limit: int | float | None) -> int:
        if loader is None:
            return 0
        try:
            total = len(loader)
        except TypeError:
            total = sys.maxsize  # an iterable without len: run until it ends
        if limit is None:
            return total
        if isinstance(limit, float):
            return min(total, int(total * limit)) if limit < 1.0 else total
        return min(total, int(limit))

    def _reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        return self.env.all_reduce(tensor, op)

    # -- setup, checkpoints, teardown --------------------------------------------------------
    def _setup(self, module: Module, datamodule: DataModule | None, stage: str) -> None:
        if self.deterministic:
            # True: a non-deterministic op raises (Lightning's meaning; what exact GPU resume needs);
            # "warn": it only warns.
            torch.use_deterministic_algorithms(True, warn_only=self.deterministic == "warn")
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if self.num_threads is not None:
            # Small models gain nothing from more threads, and lose badly when cores are shared.
            torch.set_num_threads(self.num_threads)
        if self.benchmark is not None or self.deterministic:
            torch.backends.cudnn.benchmark = bool(self.benchmark) and not self.deterministic
        self.env = D.setup(self.accelerator, cpu_collectives=self.strategy == "fsdp" and self.fsdp_options.cpu_offload)
        ids = self._device_ids
        if isinstance(ids, list) and self.env.device.type == "cuda":  # devices=[2, 3]: these GPUs
            self.env = replace(self.env, device=torch.device("cuda", ids[self.env.local_rank % len(ids)]))
            torch.cuda.set_device(self.env.device)
        if self.num_devices > 1 and not self.env.active:
            warnings.warn(
                f"devices={self.devices!r} asks for {self.num_devices} processes, but this one runs alone: launch "
                f"with `torchrun --nproc_per_node={self.num_devices} your_script.py` to train on all of them",
                UserWarning,
                stacklevel=3,
            )
        rank_zero_only.rank = self.env.rank
        console.setup(self.env.rank)
        D.seed_rank(self.env, self.seed if self.seed is not None else torch.initial_seed())
        self.precision = Precision(self.precision_name, self.device)
        self._train_results.device = self._eval_results.device = self.device
        advice = matmul_precision_advice(self.device, self.precision.precision)
        if advice and self.is_global_zero:
            warnings.warn(advice, UserWarning, stacklevel=3)
        self._unchecked, self._checked_at, self._nonfinite_seen = None, 0, False
        self._sync_every, self._sync_step, self._sync_mark, self._synced_at = 1, 0, None, None
        self._stop_check_s, self._log_keys, self._step_metrics = D.stop_check_seconds(), (), {}
        if not self.is_global_zero:
            self.logger = NullLogger()  # one W&B run per job: only global rank 0 logs
        self.module, self.datamodule = module, datamodule
        module.trainer = self
        self._reset_metrics()
        lightning_api.check_overrides(module, datamodule, self.callbacks)  # before anything runs
        self._attach_module_callbacks(module)
        self._hooks = {}
        # Lightning's order: prepare_data (datamodule, module) on one process per node, then setup
        # (datamodule, callbacks, module) on every process, before the module moves to the device
        # (so layers built in setup move with it).
        if datamodule is not None:
            datamodule.trainer = self
        for owner in (datamodule, module):
            if owner is not None and self._prepares_data(owner):
                owner.prepare_data()
        self.env.barrier()
        if datamodule is not None:
            datamodule.setup(stage)
        self._call_setup(stage)
        module.setup(stage)
        configure = getattr(module, "configure_model", None)
        if callable(configure):  # Lightning's hook, with every strategy: layers built here start on the device
            with self.device:
                configure()
        module.to(self.device)
        self.precision.convert_module(module)
        self._step_fn = strategy.training_step_fn(module)
        strategy.shard(self, module)

    def _prepares_data(self, owner: Any) -> bool:
        """`prepare_data` runs on local rank 0 of each node, or on global rank 0 with prepare_data_per_node=False."""
        per_node = getattr(owner, "prepare_data_per_node", True)
        return self.env.local_rank == 0 if per_node else self.is_global_zero

    def _call_setup(self, stage: str) -> None:
        for c in self.callbacks:
            if callable(getattr(c, "setup", None)):
                c.setup(self, self.module, stage)

    def _teardown_hooks(self, stage: str) -> None:
        """Lightning's order: the datamodule's teardown(stage), the callbacks', the module's."""
        if self.datamodule is not None and callable(getattr(self.datamodule, "teardown", None)):
            self.datamodule.teardown(stage)
        for c in self.callbacks:
            if callable(getattr(c, "teardown", None)):
                c.teardown(self, self.module, stage)
        self.module.teardown(stage)

    def _attach_module_callbacks(self, module: Module) -> None:
        """Add what `module.configure_callbacks()` returns, as Lightning does: a returned callback
        replaces the Trainer's callbacks of its type (or a parent type), and checkpoint callbacks
        move to the end, so they save what the others did."""
        extra = module.configure_callbacks()
        if not extra:
            return
        extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
        replaced = {
            type(c) for c in self.callbacks if type(c) is not Callback and any(isinstance(e, type(c)) for e in extra)
        }
        if replaced:
            names = ", ".join(sorted(t.__name__ for t in replaced))
            self.print(f"configure_callbacks replaces the Trainer's {names}")
        merged = [c for c in self.callbacks if type(c) not in replaced] + extra
        self.callbacks = [c for c in merged if not isinstance(c, ModelCheckpoint)] + [
            c for c in merged if isinstance(c, ModelCheckpoint)
        ]

    def _configure_optimizers(self, module: Module) -> None:
        self._automatic = bool(module.automatic_optimization)
        if not self._automatic:
            manual.check_settings(self)
        self.optimizers, self.lr_schedulers = parse_optimizers(module.configure_optimizers())
        if self._automatic and len(self.optimizers) > 1:
            raise RuntimeError(
                "Training with multiple optimizers is only supported with manual optimization. Set "
                "`self.automatic_optimization = False`, then access your optimizers in `training_step` "
                "with `opt1, opt2, ... = self.optimizers()`."
            )
        self._lightning_optimizers = [LightningOptimizer(o, self) for o in self.optimizers]
        self._unscaled = set()

    def _checkpoint_state(self) -> dict[str, Any]:
        module = self.module
        # Per rank, in one gather: the random streams and the partial epoch sums (each rank's own).
        per_rank = self._gather(
            {
                "rng": capture_rng_state(self.device),
                "results": self._train_results.state_dict(),
                "epoch_rng": self._epoch_rng if not self._epoch_done else None,
            }
        )
        state = {
            "engine_version": __version__,
            "model": module.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "lr_schedulers": [s.scheduler.state_dict() for s in self.lr_schedulers],
            "scaler": self.precision.scaler.state_dict(),
            "rng": [r["rng"] for r in per_rank],
            "epoch_rng": [r["epoch_rng"] for r in per_rank],  # mid-epoch, for a loader the engine did not shard
            "loop": {
                "epoch": self.current_epoch,
                "global_step": self.global_step,
                "batches_done": self._batches_done,
                "epoch_done": self._epoch_done,
                "val_pending": self._val_pending,
                "batch_size": getattr(self.train_loader, "batch_size", None),
                "world_size": self.world_size,
                "global_batch_size": (getattr(self.train_loader, "batch_size", None) or 0) * self.world_size,
            },
            "callbacks": {
                c.state_key: c.state_dict()
                for c in self.callbacks
                if hasattr(c, "state_dict") and hasattr(c, "state_key")
            },
            "logger": self.logger.state_dict(),
            "results": [r["results"] for r in per_rank],
            "callback_metrics": dict(self.callback_metrics),  # a resumed finished run still reports them
            "config": _plain(self.config),
            "hparams": _plain(module.hparams),
            "datamodule": self.datamodule.state_dict() if self.datamodule is not None else {},
        }
        # What load_from_checkpoint needs to rebuild the module (and datamodule), Lightning's keys.
        unsaved = [k for k, v in module.hparams.items() if not _is_plain(v)]
        if unsaved:  # saved as their str(): load_from_checkpoint asks for them instead of passing text
            state["hparams_unsaved"] = unsaved
        if getattr(module, "_hparams_name", None):
            state["hparams_name"] = module._hparams_name
        dm_hparams = getattr(self.datamodule, "hparams", None)
        if dm_hparams:
            state["datamodule_hyper_parameters"] = _plain(dm_hparams)
            if getattr(self.datamodule, "_hparams_name", None):
                state["datamodule_hparams_name"] = self.datamodule._hparams_name
        add_lightning_keys(state)
        module.on_save_checkpoint(state)
        self._call("on_save_checkpoint", state)
        if state.get("state_dict") is not state["model"]:  # a Lightning-style hook replaced the weights
            state["model"] = state["state_dict"]
        return state

    def _gather(self, obj: Any) -> list[Any]:
        if not self.env.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def _resolve_ckpt(self, ckpt_path: str | Path) -> Path | None:
        if str(ckpt_path) in ("last", "auto"):
            if (self.default_root_dir / "checkpoints").is_dir():  # what a crash mid-save of a sharded one left
                FSDP.recover(self.default_root_dir / "checkpoints")
            # resume=auto (a requeued job, maybe on another node count) falls back to an epoch-end checkpoint
            found = find_resume_checkpoint(
                self.default_root_dir / "checkpoints", self._other_global_batch if str(ckpt_path) == "auto" else None
            )
            if found is None and str(ckpt_path) == "last":
                raise CheckpointError(
                    f"resume=last but {self.default_root_dir / 'checkpoints'} holds no checkpoint; "
                    "check run_name/output_dir, or use resume=auto to start fresh when there is none"
                )
            return found
        path = Path(ckpt_path)
        if not path.is_file() and not FSDP.is_sharded_checkpoint(path):
            raise CheckpointError(f"checkpoint {path} does not exist; pass resume=last or an existing .ckpt path")
        return path

    def _other_global_batch(self, state: dict[str, Any]) -> str | None:
        """Why this run cannot continue `state`: saved mid-epoch with another global batch."""
        loop = state.get("loop") or {}
        if loop.get("epoch_done") or not loop.get("batches_done"):
            return None
        saved = (loop.get("batch_size") or 0) * (loop.get("world_size") or 1)
        mine = (getattr(self.train_loader, "batch_size", None) or 0) * self.world_size
        return None if saved == mine else f"was saved mid-epoch with a global batch of {saved}, this run's is {mine}"

    def _restore(self, ckpt_path: str | Path, weights_only: bool | None = None) -> None:
        # Rank 0 picks the file (resume=last may skip unreadable ones); every rank loads that one.
        path = self.env.broadcast_object(self._resolve_ckpt(ckpt_path) if self.is_global_zero else None)
        if path is None:
            return
        sharded = self._fsdp is not None or FSDP.is_sharded_checkpoint(path)
        if sharded:  # loads weights and optimizer state in place, resharded for this world size
            ckpt = FSDP.load(path, self.module, self.optimizers, weights_only)
        else:
            # On the CPU first: load_state_dict copies the weights into the parameters and the optimizer
            # moves its state to them, so the device never holds a second copy of the model.
            ckpt = engine_layout(load_checkpoint(path, "cpu", weights_only), path)
        for key in ("model", "optimizers", "loop"):
            if key not in ckpt:
                raise CheckpointError(
                    f"{path} holds no '{key}' entry, so training cannot resume from it (weights only: "
                    "ModelCheckpoint(save_weights_only=True) or save_checkpoint(weights_only=True)?); "
                    "load its weights with YourModule.load_from_checkpoint(path) and fit without ckpt_path"
                )
        if not sharded:
            check_model_state(self.module, ckpt["model"], path)
        loop = ckpt["loop"]
        mid_epoch = not loop["epoch_done"] and loop["batches_done"] > 0
        batch_size = getattr(self.train_loader, "batch_size", None)
        # Mid-epoch, the sampler resumes at a global position, so the process count may change as long
        # as the global batch (batch_size x processes) does not: the same batches, split differently.
        saved_global = (loop.get("batch_size") or 0) * (loop.get("world_size") or 1)
        own_data = mid_epoch and not isinstance(getattr(self.train_loader, "sampler", None), D.ResumableSampler)
        if own_data:  # your own sampler or an iterable: the same processes and batch size, or an error
            try:
                note = D.resume_check(self.train_loader, loop, self.world_size)
            except ValueError as e:
                raise CheckpointError(f"{path}: {e}") from None
            if note:
                self.print(note)
        elif mid_epoch and (batch_size is None or saved_global != batch_size * self.world_size):
            raise CheckpointError(
                f"{path} was saved mid-epoch with a global batch of {saved_global} (batch_size="
                f"{loop.get('batch_size')} on {loop.get('world_size')} process(es)); this run has batch_size="
                f"{batch_size} on {self.world_size}. Keep data.batch_size x processes = {saved_global} "
                "(e.g. data.batch_size="
                f"{saved_global // self.world_size if saved_global % self.world_size == 0 else '?'}), "
                "or resume from a checkpoint saved at an epoch end"
            )
        if not sharded:
            self.module.load_state_dict(ckpt["model"])
            if len(ckpt["optimizers"]) != len(self.optimizers):
                raise CheckpointError(
                    f"{path} holds {len(ckpt['optimizers'])} optimizer states; configure_optimizers returned {len(self.optimizers)}"
                )
            for opt, s in zip(self.optimizers, ckpt["optimizers"], strict=True):
                opt.load_state_dict(s)
        for sched, s in zip(self.lr_schedulers, ckpt.get("lr_schedulers", []), strict=False):
            sched.scheduler.load_state_dict(s)
        scaler_state = ckpt.get("scaler") or {}  # empty: saved without gradient scaling (32, bf16)
        if scaler_state:
            self.precision.scaler.load_state_dict(scaler_state)
        elif self.precision.scaling:
            self.print(f"{path} holds no GradScaler state (saved without 16-mixed): the gradient scale starts fresh")
        self.current_epoch, self.global_step = loop["epoch"], loop["global_step"]
        self._batches_done, self._epoch_done = loop["batches_done"], loop["epoch_done"]
        self._val_pending = bool(loop.get("val_pending", False))
        if self._epoch_done:
            self.current_epoch, self._batches_done, self._epoch_done = self.current_epoch + 1, 0, False
        else:  # each rank's own partial epoch sums (an older checkpoint holds rank 0's dict only)
            results = ckpt.get("results", {})
            if isinstance(results, list):  # folded where the process count changed
                results = Results.fold(results, self.env.rank, self.world_size)
            self._train_results.load_state_dict(results, self.device)
        saved = ckpt.get("callbacks", {})
        for c in self.callbacks:
            key = getattr(c, "state_key", None)
            if key in saved and hasattr(c, "load_state_dict"):
                c.load_state_dict(saved[key])
        self.callback_metrics.update(ckpt.get("callback_metrics", {}))
        self.logger.load_state_dict({**ckpt.get("logger", {}), "checkpoint": str(path)})  # W&B: a parent's path
        if self.datamodule is not None:
            self.datamodule.load_state_dict(ckpt.get("datamodule", {}))
        rng = ckpt.get("rng", [])
        epoch_rng = ckpt.get("epoch_rng") or []
        self._epoch_rng = epoch_rng[self.env.rank] if self._batches_done and self.env.rank < len(epoch_rng) else None
        if rng and self.env.rank < len(rng):  # a rank the saving run did not have keeps its own seeded streams
            # this rank's streams, its CUDA one restored on the device this rank uses
            restore_rng_state(rng[self.env.rank], self.device)
        self.module.on_load_checkpoint(ckpt)
        self._call("on_load_checkpoint", ckpt)  # the callbacks' hook (after the module's, as Lightning)
        self.resumed_from = str(path)
        if loop.get("note"):
            self.print(loop["note"])
        self.print(f"resumed from {path} at epoch {self.current_epoch}, step {self.global_step}")

    def _finish(self, status: str) -> None:
        strategy.release(self)
        try:
            self.checkpoint_io.wait()
            for loader in (self.train_loader, *evaluation.as_list(self.val_loader)):
                D.shutdown_workers(loader)
        finally:
            if self.is_global_zero:
                summary = self.summary(status)
                self.logger.log_summary(summary)
                self.logger.finalize(status)
                # A start that failed (a misfitting checkpoint) leaves a resumed run's summary as it was.
                path = self.default_root_dir / "summary.json"
                if not self.fast_dev_run and (getattr(self, "_fit_started", True) or not path.exists()):
                    _write_json(path, summary)
                if self.stop_reason == "interrupted" and self.resume_command is None:
                    self.print(self.interrupted_line())

    def interrupted_line(self) -> str:
        """``interrupted at step N; resume with: ...`` (`resume_command`, else the Trainer call)."""
        ckpt = next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)
        last = ckpt.last_model_path if ckpt is not None and ckpt.last_model_path else "last"
        how = self.resume_command or f"trainer.fit(model, datamodule, ckpt_path={str(last)!r})"
        return f"interrupted at step {self.global_step}; resume with: {how}"

    def summary(self, status: str = "success") -> dict[str, Any]:
        ckpt = next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)
        t = self.timer
        return {
            "status": status,
            "global_step": self.global_step,
            "epoch": self.current_epoch,
            "stop_reason": self.stop_reason,
            "stop_message": self.stop_message,
            "best_model_path": ckpt.best_model_path if ckpt else "",
            "best_model_score": ckpt.best_model_score if ckpt else None,
            "last_model_path": ckpt.last_model_path if ckpt else "",
            "metrics": dict(self.callback_metrics),
            "wandb_run_id": getattr(self.logger, "run_id", None),
            "world_size": self.world_size,
            "host": socket.gethostname(),  # global rank 0's: where a multi-node run's summary and checkpoints came from
            "resumed_from": self.resumed_from,
            "samples_per_sec": t.samples_per_sec(self.world_size),
            "data_wait_frac": t.wait / t.total if t.total else None,
            "engine_version": __version__,
        }


def _length(loader: Any) -> int | str:
    try:
        return len(loader)
    except TypeError:
        return "an unknown number of"


def _batch_outputs(outputs: Any, loss: torch.Tensor | None) -> dict[str, Any]:
    """What on_train_batch_end gets, as Lightning: training_step's dict (or tensor) with "loss"
    detached and divided as backward saw it; {} when training_step returned None."""
    if loss is None:
        return {}
    if isinstance(outputs, Mapping):
        return {"loss": loss.detach(), **{k: v for k, v in outputs.items() if k != "loss"}}
    return {"loss": loss.detach()}


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss in what training_step returned: a tensor, a mapping with "loss", or None (skip)."""
    return outputs["loss"] if isinstance(outputs, Mapping) else outputs


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python, numpy and torch (all devices); Lightning's function, also for the research code.

    `seed` None takes ``PL_GLOBAL_SEED`` from the environment, else 0. ``workers=True`` also
    gives every DataLoader worker its own seeds, derived from the loader's seed, the worker's
    id and the process's rank (``PL_SEED_WORKERS=1``; the engine's loaders read it).
    """
    import random

    if seed is None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    seed = int(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    return seed


def _plain(value: Any) -> Any:
    """Config and hparams as plain containers (checkpoints load with weights_only=True)."""
    from .config import to_dict

    if isinstance(value, (list, tuple)):  # a tuple stays one: torch.load(weights_only=True) reads tuples
        items = [_plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if not isinstance(value, Mapping):
        value = to_dict(value)  # a dataclass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _is_plain(value: Any) -> bool:
    """Whether a hyperparameter survives `_plain` unchanged (numbers, str, None, lists, dicts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
