"""The Trainer: Lightning's API over the engine's parts (ARCHITECTURE.md in this folder draws them).

A facade: the fit loop is `fit_loop.py`, its state `loop_state.py`; evaluation and prediction
loops `evaluation.py`; hooks `hooks.py`; checkpoints `checkpointing.py`; processes `strategy.py`;
metrics `metrics.py`; stops `stopping.py`. Here: the arguments, Lightning's names for what those
parts hold, the verbs, and what a verb sets up (devices, precision, data, optimizers).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import warnings
from collections.abc import Iterable, Mapping
from datetime import timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import torch

from . import checkpointing, console, evaluation, lightning_api, stopping
from . import distributed as D
from . import fsdp as FSDP
from . import strategy as S
from .batch import move_to_device as move_to_device  # re-exported: engine.trainer.move_to_device
from .callbacks import EarlyStopping, ModelCheckpoint, ProgressBar, default_callbacks
from .checkpoint import AsyncSaver, SyncSaver
from .config import ConfigError
from .fit_loop import FitLoop
from .hooks import Hooks
from .loggers import NullLogger, make_logger
from .loop_state import Timer
from .metrics import Metrics
from .module import DataModule, Module
from .module import is_datamodule as _is_datamodule
from .optim import LightningOptimizer, _Scheduler
from .optim import parse_optimizers as parse_optimizers  # re-exported: engine.trainer.parse_optimizers
from .precision import Precision, matmul_precision_advice
from .profilers import make_profiler
from .states import INTERRUPTED_EXIT_CODE as INTERRUPTED_EXIT_CODE  # still importable from here
from .states import PREEMPTED_EXIT_CODE as PREEMPTED_EXIT_CODE
from .states import RunningStage, TrainerFn, TrainerState, TrainerStatus
from .utilities import rank_zero_only
from .utilities import seed_everything as seed_everything  # re-exported: engine.trainer.seed_everything

_log = logging.getLogger(__name__)


def _alias(path: str, settable: bool = False) -> Any:
    """A Lightning name for what one of the Trainer's parts holds (`path`: "fit_loop.state.epoch")."""
    owner, _, name = path.rpartition(".")
    get_owner = attrgetter(owner) if owner else (lambda trainer: trainer)

    def fset(trainer: Trainer, value: Any) -> None:
        setattr(get_owner(trainer), name, value)

    return property(attrgetter(path), fset if settable else None, doc=f"`trainer.{path}`")


_EVALUATING = (RunningStage.SANITY_CHECKING, RunningStage.VALIDATING, RunningStage.TESTING)


def _accepted_without_effect(name: str, value: Any) -> None:
    warnings.warn(f"Trainer({name}={value!r}) is accepted but has no effect in this engine", UserWarning, stacklevel=3)


class Trainer:
    """Fit, validate, test and predict with a `Module` (Lightning's arguments; README: "Trainer arguments")."""

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
        strategy, find_unused_parameters = S.parse_strategy(strategy, find_unused_parameters)
        self.fsdp_options = FSDP.FSDPOptions.parse(fsdp)  # trainer.fsdp.*: how strategy=fsdp shards
        self.strategy = S.Strategy(strategy, find_unused_parameters, self.fsdp_options, devices)
        accelerator = S.ACCELERATORS.get(str(accelerator), str(accelerator))
        if accelerator not in set(S.ACCELERATORS.values()):
            raise ValueError(f"accelerator={accelerator!r} is not supported; use 'auto', 'cpu', 'gpu'/'cuda' or 'mps'")
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
        self.callbacks = default_callbacks(
            callbacks,
            progress_bar=progress_bar and enable_progress_bar is not False,
            checkpointing=enable_checkpointing is not False and not self.fast_dev_run,
            model_summary=enable_model_summary is not False,
            throughput=None if barebones else bottleneck_warn_fraction,
            max_time=max_time,
        )
        self.logger, self.loggers = make_logger(logger, self.default_root_dir)
        self.enable_autolog_hparams = enable_autolog_hparams  # False: hyperparameters are not sent to the loggers
        self.min_epochs, self.min_steps = min_epochs, min_steps
        self.limit_test_batches, self.limit_predict_batches = limit_test_batches, limit_predict_batches
        self.benchmark, self.detect_anomaly = benchmark, detect_anomaly
        self.profiler = make_profiler(profiler)
        self.reload_dataloaders_every_n_epochs = reload_dataloaders_every_n_epochs
        self.use_distributed_sampler, self.barebones = use_distributed_sampler, barebones
        self.inference_mode = inference_mode
        self.state = TrainerState()
        self.checkpoint_io: AsyncSaver | SyncSaver = AsyncSaver() if async_checkpoint else SyncSaver()
        self.bottleneck_warn_fraction = bottleneck_warn_fraction
        # The parts: where the fit is (fit_loop.state), who is called (hooks), what was logged (metrics).
        self.fit_loop = FitLoop(self)
        self.hooks = Hooks(self)
        self.metrics = Metrics(self._reduce)
        self.sanity_checking = False
        self.at_epoch_end = False
        self.should_log = False
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_schedulers: list[_Scheduler] = []
        self.lightning_optimizers: list[LightningOptimizer] = []  # what module.optimizers() returns
        self.timer = Timer()
        self.env = D.DistEnv()
        self.precision: Precision | None = None  # set when a verb starts (it needs the device)
        self.module: Module | None = None
        self.datamodule: DataModule | None = None
        self.train_loader: Any = None
        self.val_loader: Any = None
        self.test_loader: Any = None  # those of the last trainer.test() / predict()
        self.predict_loader: Any = None
        self.num_training_batches = 0
        self.train_num_workers = 0
        self.resumed_from: str | None = None
        # How to resume this run, for the line printed after a Ctrl-C (`run` sets the command).
        self.resume_command: str | None = None

    def __getattr__(self, name: str) -> Any:  # only for names not found: a Lightning one says what instead
        error = lightning_api.missing_attribute("Trainer", name)
        if error is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        raise error

    # -- Lightning's names for the loop's state and the metrics ---------------------------------
    global_step = _alias("fit_loop.state.global_step", settable=True)
    current_epoch = _alias("fit_loop.state.epoch", settable=True)
    should_stop = _alias("fit_loop.state.should_stop", settable=True)
    stop_reason = _alias("fit_loop.state.stop_reason", settable=True)
    stop_message = _alias("fit_loop.state.stop_message", settable=True)

    received_sigterm = property(lambda self: self.fit_loop.state.signal == signal.SIGTERM)
    callback_metrics = _alias("metrics.callback", settable=True)
    logged_metrics = _alias("metrics.logged", settable=True)
    results = _alias("metrics.current")

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """The latest values logged with ``prog_bar=True`` in this stage (as Lightning: a fit's training
        step and epoch values and validation's; a validate() or test() run's own only)."""
        return self.metrics.progress_bar(self.state.fn == TrainerFn.FITTING)

    results_prog_bar = _alias("metrics.prog_bar")
    last_eval_metrics = _alias("metrics.last_eval")  # the latest validation/test epoch values

    def logged_names(self) -> set[str]:
        """Every metric name logged so far in this fit (callbacks check their `monitor` against it)."""
        return self.metrics.names()

    def summary(self, status: str = "success") -> dict[str, Any]:
        """What summary.json and the logger's run summary hold."""
        return self.fit_loop.summary(status)

    def progress_metrics(self) -> dict[str, float]:
        return self.metrics.progress()

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Queue metrics for the logger at the current step (sent once per step)."""
        self.metrics.pending.update(metrics)

    # -- read-only views ---------------------------------------------------------------------
    is_global_zero = _alias("env.is_global_zero")
    model = _alias("module")
    lightning_module = _alias("module")
    global_rank = _alias("env.rank")
    local_rank = _alias("env.local_rank")

    @property
    def node_rank(self) -> int:
        return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", os.environ.get("SLURM_NODEID", "0"))))

    world_size = _alias("env.world_size")
    device = _alias("env.device")

    @property
    def num_devices(self) -> int:
        """Devices (processes) per node."""
        ids = self.strategy.devices
        if isinstance(ids, list):
            return len(ids)
        if ids is not None:
            return ids
        return int(os.environ.get("LOCAL_WORLD_SIZE", max(1, self.world_size // max(1, self.num_nodes))))

    @property
    def device_ids(self) -> list[int]:
        ids = self.strategy.devices
        return list(ids) if isinstance(ids, list) else list(range(self.num_devices))

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

    lr_scheduler_configs = _alias("lr_schedulers")

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @training.setter
    def training(self, value: bool) -> None:
        if value:
            self.state.stage = RunningStage.TRAINING
        elif self.training:
            self.state.stage = None

    validating = property(lambda self: self.state.stage == RunningStage.VALIDATING)
    testing = property(lambda self: self.state.stage == RunningStage.TESTING)
    predicting = property(lambda self: self.state.stage == RunningStage.PREDICTING)
    evaluating = property(lambda self: self.state.stage in _EVALUATING)
    interrupted = property(lambda self: self.state.status == TrainerStatus.INTERRUPTED)

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The GradScaler under 16-mixed, else None."""
        precision = self.precision
        return precision.scaler if precision is not None and precision.scaling else None

    # Lightning's names for the loaders as the loops use them (rebuilt around the engine's sharded
    # samplers): one loader, or a list of them; and how many batches each runs.
    train_dataloader = _alias("train_loader")
    val_dataloaders = _alias("val_loader")
    test_dataloaders = _alias("test_loader")
    predict_dataloaders = _alias("predict_loader")

    @property
    def num_val_batches(self) -> list[int]:
        """Batches each validation loader runs on this process (limit_val_batches applied)."""
        return [evaluation.batches(loader, self.limit_val_batches) for loader in evaluation.as_list(self.val_loader)]

    @property
    def num_sanity_val_batches(self) -> list[int]:
        cap = self.num_sanity_val_steps
        return [n if cap < 0 else min(n, cap) for n in self.num_val_batches]

    @property
    def num_test_batches(self) -> list[int]:
        return [evaluation.batches(loader, self.limit_test_batches) for loader in evaluation.as_list(self.test_loader)]

    @property
    def num_predict_batches(self) -> list[int]:
        loaders = evaluation.as_list(self.predict_loader)
        return [evaluation.batches(loader, self.limit_predict_batches) for loader in loaders]

    @property
    def has_validation(self) -> bool:
        return any(n > 0 for n in self.num_val_batches)

    enable_validation = _alias("has_validation")

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
        state = self.fit_loop.state
        state.should_stop = True
        if state.stop_reason is None:
            state.stop_reason, state.stop_message = reason, message

    def check_finite(self) -> bool:
        """Whether every training loss so far was finite; callbacks that save weights ask first
        (under DDP an agreement point, called at the same points on every rank)."""
        return stopping.check_finite(self)

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
        self.connect(module, datamodule, "fit")
        self.state.fn, self.state.status = TrainerFn.FITTING, TrainerStatus.RUNNING
        status, self.fit_loop.started = "failed", False
        previous_handlers = stopping.install_signal_handlers(self)
        anomaly = torch.is_anomaly_enabled()
        if self.detect_anomaly:  # a backward that makes NaN/inf raises, naming the forward op
            torch.set_anomaly_enabled(True)
        self.profiler.setup(self)
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
            self.fit_loop.set_loaders(train_dataloaders, val_dataloaders)
            if self.num_training_batches == 0:
                raise ConfigError(
                    f"no training batches: the training DataLoader has {_length(self.train_loader)} batches and "
                    f"trainer.limit_train_batches={self.limit_train_batches}; use a larger limit or more data"
                )
            self.fit_loop.configure_optimizers(module)
            if ckpt_path is not None:
                checkpointing.restore(self, ckpt_path, weights_only)
            self.strategy.wrap(self, module, self.fit_loop.automatic)
            self.fit_loop.run()
            self.hooks.teardown("fit")
            status = "interrupted" if self.stop_reason in ("preempted", "interrupted") else "success"
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            if self.stop_reason is None:
                self.stop_reason, self.stop_message = status, f"{type(exc).__name__}: {exc}"
            D.record_exception(exc)  # torchrun shows this rank's traceback as the root cause
            self.hooks.exception(exc)
            raise
        finally:
            torch.set_anomaly_enabled(anomaly)
            self.profiler.teardown(self)
            self.state.stage = None
            self.state.status = TrainerStatus.FINISHED if status == "success" else TrainerStatus.INTERRUPTED
            try:
                self.fit_loop.finish(status)  # a second Ctrl-C here still exits at once
            finally:
                for sig, handler in previous_handlers.items():
                    signal.signal(sig, handler)

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
        """Run one validation epoch; without a model, on the fitted one (`checkpointing.resolve_for_verb`)."""
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
        """Run one test epoch; without a model, on the fitted one (`checkpointing.resolve_for_verb`)."""
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
        with self.profiler.profile("[phase] checkpoint"):
            checkpointing.save(self, Path(path), weights_only)

    def interrupted_line(self) -> str:
        """``interrupted at step N; resume with: ...`` (`resume_command`, else the Trainer call)."""
        ckpt = self.checkpoint_callback
        last = ckpt.last_model_path if ckpt is not None and ckpt.last_model_path else "last"
        how = self.resume_command or f"trainer.fit(model, datamodule, ckpt_path={str(last)!r})"
        return f"interrupted at step {self.global_step}; resume with: {how}"

    # -- what a verb sets up ---------------------------------------------------------------------
    def connect(self, module: Module, datamodule: DataModule | None, stage: str) -> None:
        """A verb starts: processes and device, precision, the module's callbacks, data and setup hooks
        (Lightning's order), the module on its device and, under FSDP, sharded."""
        S.setup_environment(self)
        rank_zero_only.rank = self.env.rank
        console.setup(self.env.rank)
        D.seed_rank(self.env, self.seed if self.seed is not None else torch.initial_seed())
        self.precision = Precision(self.precision_name, self.device)
        self.metrics.train.device = self.metrics.eval.device = self.device
        advice = matmul_precision_advice(self.device, self.precision.precision)
        if advice and self.is_global_zero:
            warnings.warn(advice, UserWarning, stacklevel=3)
        self.fit_loop.state.new_run(D.stop_check_seconds())
        if not self.is_global_zero:
            self.logger = NullLogger()  # one W&B run per job: only global rank 0 logs
        self.module, self.datamodule = module, datamodule
        module.trainer = self
        self.metrics.reset()
        lightning_api.check_overrides(module, datamodule, self.callbacks)  # before anything runs
        self.hooks.attach_module_callbacks(module)
        self.hooks.reset()
        if datamodule is not None:
            datamodule.trainer = self
        self.hooks.setup(stage)  # prepare_data and setup, before the module moves (layers built there move too)
        configure = getattr(module, "configure_model", None)
        if callable(configure):  # Lightning's hook, with every strategy: layers built here start on the device
            with self.device:
                configure()
        module.to(self.device)
        self.precision.convert_module(module)
        self.strategy.setup(self, module)

    def _reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        return self.env.all_reduce(tensor, op)


def _length(loader: Any) -> int | str:
    try:
        return len(loader)
    except TypeError:
        return "an unknown number of"
