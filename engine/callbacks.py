"""Callbacks: duck-typed objects whose hook methods the trainer calls by name.

Hooks (every one optional; `trainer` and `module` are passed to each):
    setup(trainer, module, stage)            on_fit_start(trainer, module)
    on_sanity_check_start(trainer, module)   on_sanity_check_end(trainer, module)   around the sanity check
    on_train_start(trainer, module)          on_train_epoch_start(trainer, module)
    on_train_batch_start(trainer, module, batch, batch_idx)
    on_before_zero_grad(trainer, module, optimizer)   first micro-batch of each optimizer step
    on_before_backward(trainer, module, loss)   on_after_backward(trainer, module)
    on_before_optimizer_step(trainer, module, optimizer)   true (unscaled), not yet clipped gradients
    on_train_batch_end(trainer, module, outputs, batch, batch_idx)   after every batch ({"loss": ...})
    on_validation_start(trainer, module)     on_validation_epoch_start(trainer, module)
    on_validation_batch_start(trainer, module, batch, batch_idx[, dataloader_idx])
    on_validation_batch_end(trainer, module, outputs, batch, batch_idx[, dataloader_idx])
    on_validation_epoch_end(trainer, module) on_validation_end(trainer, module)
    on_train_epoch_end(trainer, module)      on_train_end(trainer, module)
    on_test_start(trainer, module)           on_test_epoch_start(trainer, module)
    on_test_batch_start(...) / on_test_batch_end(...)   as the validation ones
    on_test_epoch_end(trainer, module)       on_test_end(trainer, module)
    on_predict_start(trainer, module)        on_predict_epoch_start(trainer, module)
    on_predict_batch_start(...) / on_predict_batch_end(...)   as the validation ones
    on_predict_epoch_end(trainer, module)    on_predict_end(trainer, module)
    on_fit_end(trainer, module)              on_exception(trainer, module, exception)
    teardown(trainer, module, stage)         on_save_checkpoint(trainer, module, checkpoint)
    on_load_checkpoint(trainer, module, checkpoint)   when fit resumes, after the module's
    state_dict() / load_state_dict(state)    saved in checkpoints under the callback's `state_key`
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import remove_checkpoint
from .config import ConfigError
from .states import TrainerFn

if TYPE_CHECKING:
    from .module import Module
    from .trainer import Trainer

_log = logging.getLogger(__name__)


class Callback:
    """Optional base class; any object with some of the hook methods works."""

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _better(mode: str, a: float, b: float) -> bool:
    return a < b if mode == "min" else a > b


def check_monitor(trainer: Trainer, monitor: str, key: str, sanity: bool = False) -> None:
    """Raise ConfigError, with the closest logged name, when `monitor` was never logged.

    After the sanity check only validation metrics are known, so only a near miss of one of
    them fails there (``val_los`` for ``val_loss``): a monitor on a training metric may be
    logged later. Afterwards any name never logged is an error.
    """
    names = sorted(trainer.metrics.names())
    if monitor in names:
        return
    close = difflib.get_close_matches(monitor, names, n=1, cutoff=0.8 if sanity else 0.6)
    if sanity and not close:
        return
    hint = f"did you mean {key}={close[0]}? Or " if close else ""
    raise ConfigError(
        f"{key}={monitor!r} was never logged (logged: {', '.join(names) or 'none'}); "
        f"{hint}log it with self.log, or set {key}=null"
    )


class EarlyStopping(Callback):
    """Stop when `monitor` stops improving; the reason goes to `trainer.stop_reason`."""

    def __init__(
        self,
        monitor: str,
        mode: str = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        verbose: bool = True,
        strict: bool = True,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"early_stopping.mode must be 'min' or 'max', got {mode!r}")
        self.strict = strict  # False: a monitor that was never logged is skipped, as in Lightning
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta = abs(min_delta)
        self.check_finite = check_finite
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self.verbose = verbose
        self.wait_count = 0
        self.best_score = math.inf if mode == "min" else -math.inf
        self.stopped_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[{self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {"wait_count": self.wait_count, "best_score": self.best_score, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = state["wait_count"]
        self.best_score = state["best_score"]
        self.stopped_epoch = state["stopped_epoch"]

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if trainer.sanity_checking:
            check_monitor(trainer, self.monitor, "early_stopping.monitor", sanity=True)  # fail before training
        elif trainer.state.fn == TrainerFn.FITTING:  # not in trainer.validate(): nothing to stop
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if not trainer.has_validation:  # no validation loop: judge the training metrics
            self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self.monitor not in trainer.callback_metrics:
            if not self.strict:
                return
            check_monitor(trainer, self.monitor, "early_stopping.monitor")
            return  # logged, but its first value comes later (a training epoch metric)
        current = float(trainer.callback_metrics[self.monitor])
        reason = self.evaluate(current)
        if reason is not None:
            self.stopped_epoch = trainer.current_epoch
            trainer.request_stop("early_stopping", reason)

    def evaluate(self, current: float) -> str | None:
        """Update with a new value; a message when training should stop, else None."""
        name = self.monitor
        if self.check_finite and not math.isfinite(current):
            return f"{name} = {current} is not finite"
        if self.stopping_threshold is not None and _better(self.mode, current, self.stopping_threshold):
            return f"{name} = {current:.6g} reached stopping_threshold {self.stopping_threshold}"
        if self.divergence_threshold is not None and _better(self.mode, self.divergence_threshold, current):
            return f"{name} = {current:.6g} diverged past divergence_threshold {self.divergence_threshold}"
        shifted = current + self.min_delta if self.mode == "min" else current - self.min_delta
        if _better(self.mode, shifted, self.best_score):
            self.best_score, self.wait_count = current, 0
            return None
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return (
                f"{name} did not improve by more than {self.min_delta} for {self.wait_count} "
                f"{'check' if self.wait_count == 1 else 'checks'} "
                f"(best {self.best_score:.6g})"
            )
        return None


_FIELD = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


class ModelCheckpoint(Callback):
    """Save the `save_top_k` best checkpoints by `monitor`, and `last.ckpt` when `save_last`.

    Saves after every `every_n_train_steps` optimizer steps, or else at the end of every
    `every_n_epochs`-th epoch (and after each mid-epoch validation). With no `monitor`
    the newest checkpoints are kept. Lightning's defaults: files named ``epoch=E-step=S.ckpt``
    (a `filename` such as ``"{epoch}-{val_loss:.3f}"`` adds values), no `last.ckpt`, and
    `dirpath` ``<logger save_dir>/<name>/<version>/checkpoints`` (``<default_root_dir>/checkpoints``
    without a logger). `save_weights_only`: the weights and the loop position, no optimizer
    state: such a file loads (`load_from_checkpoint`, `ckpt_path` of validate/test) but cannot
    resume a fit.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        save_last: bool | str | None = None,
        save_on_exception: bool = False,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        verbose: bool = False,
        save_weights_only: bool = False,
        auto_insert_metric_name: bool = True,
        save_on_train_epoch_end: bool | None = None,
        train_time_interval: Any = None,
        enable_version_counter: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"checkpoint.mode must be 'min' or 'max', got {mode!r}")
        if train_time_interval is not None:
            warnings.warn(
                "ModelCheckpoint(train_time_interval) is accepted but has no effect here: "
                "saves follow every_n_train_steps / every_n_epochs",
                stacklevel=2,
            )
        self.verbose, self.auto_insert_metric_name = verbose, auto_insert_metric_name
        self.save_weights_only, self.save_on_exception = save_weights_only, save_on_exception
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename or "{epoch}-{step}"  # Lightning's default name: epoch=E-step=S.ckpt
        # save_last: None and False write no last.ckpt; True and Lightning's "link" write the file.
        self.monitor, self.mode, self.save_top_k, self.save_last = monitor, mode, save_top_k, save_last
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1  # Lightning: with no trigger given, save every epoch
        self.every_n_train_steps = every_n_train_steps or None
        self.every_n_epochs = every_n_epochs or None
        self.best_k_models: dict[str, float] = {}
        self.restored_best_k_models: dict[str, float] = {}  # as saved, possibly another folder's
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""
        self.current_score: float | None = None  # the monitored value at the latest save
        self._last_saved_step = -1
        self._warned_missing = False

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[{self.monitor}]"

    def state_dict(self) -> dict[str, Any]:
        return {
            "dirpath": str(self.dirpath),
            "best_k_models": dict(self.best_k_models),
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the ranking of this callback's own files only.

        A checkpoint written in another folder (resuming from another run, or from a copied
        run folder) names files this callback does not own: ranking them would let top-k
        pruning delete them, and the summary would report them. Their scores stay readable in
        `restored_best_k_models`, for information; nothing outside `dirpath` is touched.
        """
        self.restored_best_k_models = dict(state["best_k_models"])
        # Files that vanished since (deleted by hand, another machine) are forgotten too.
        self.best_k_models = {p: s for p, s in state["best_k_models"].items() if self._owns(p) and Path(p).exists()}
        self.best_model_path = ""
        self.best_model_score = None
        self.last_model_path = state["last_model_path"] if self._owns(state["last_model_path"]) else ""
        if self.best_k_models:
            self._update_best()

    def _owns(self, path: str) -> bool:
        """Whether `path` is a file directly inside this callback's dirpath."""
        if not path or self.dirpath is None:
            return False
        return Path(path).resolve().parent == self.dirpath.resolve()

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if self.dirpath is None:  # rank 0's folder (only its logger knows the version) on every rank
            self.dirpath = Path(trainer.env.broadcast_object(str(_default_dirpath(trainer))))

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        n, step = self.every_n_train_steps, trainer.global_step
        # Called after every batch: under accumulation the batches of a window share a step, saved once.
        if n and step % n == 0 and step != self._last_saved_step and step > 0:
            self.save(trainer)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if trainer.sanity_checking and self.monitor:
            check_monitor(trainer, self.monitor, "checkpoint.monitor", sanity=True)  # fail before training
        # A validation in the middle of an epoch (val_check_interval) is a save point too; one that
        # trainer.validate() runs is not (nothing trained: as Lightning).
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and not trainer.sanity_checking and not trainer.at_epoch_end and self.every_n_train_steps is None:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        n = self.every_n_epochs
        if self.every_n_train_steps is None and n and (trainer.current_epoch + 1) % n == 0:
            self.save(trainer)

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        if self.save_last and trainer.global_step != self._last_saved_step:
            self._save_last(trainer)

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        """`save_on_exception` (Lightning's): the weights as they are, under this callback's file name
        (and `last.ckpt` when `save_last`). One process only: under several, the others may not
        have failed and would never reach the save's barrier."""
        if not self.save_on_exception or trainer.fast_dev_run or trainer.sanity_checking or self.dirpath is None:
            return
        if trainer.global_step == self._last_saved_step:
            return  # saved at this step already
        if trainer.world_size > 1:
            trainer.print(
                f"warning: save_on_exception: no checkpoint saved after {type(exception).__name__} (several processes)"
            )
            return
        path = self.dirpath / self.format_name(trainer.callback_metrics, trainer.current_epoch, trainer.global_step)
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        self._last_saved_step = trainer.global_step
        if self.save_last:
            self._save_last(trainer)
        trainer.print(f"{type(exception).__name__}: {exception}; saved checkpoint to {path}")

    def format_name(self, metrics: dict[str, float], epoch: int, step: int) -> str:
        values = {**metrics, "epoch": epoch, "step": step}

        def field(m: re.Match) -> str:
            key, fmt = m.group(1), m.group(2)
            value = format(values.get(key, float("nan")), fmt or "")
            return f"{key.replace('/', '_')}={value}" if self.auto_insert_metric_name else value

        return _FIELD.sub(field, self.filename) + ".ckpt"

    def save(self, trainer: Trainer) -> None:
        """A save point: maybe a top-k checkpoint, then `last.ckpt`."""
        if trainer.global_step == self._last_saved_step or not trainer.check_finite():
            return
        metrics = trainer.callback_metrics
        self.current_score = metrics.get(self.monitor) if self.monitor else None
        path = self.dirpath / self.format_name(metrics, trainer.current_epoch, trainer.global_step)
        if self.save_top_k != 0:
            if self.monitor is None:
                self._keep(trainer, str(path), float(trainer.global_step), "max")
            elif self.monitor in metrics:
                self._keep(trainer, str(path), float(metrics[self.monitor]), self.mode)
            elif trainer.at_epoch_end or trainer.metrics.last_eval:
                check_monitor(trainer, self.monitor, "checkpoint.monitor")  # logged by now, if ever
            elif not self._warned_missing:
                self._warned_missing = True
                warnings.warn(
                    f"checkpoint.monitor={self.monitor!r} was not logged at step {trainer.global_step}; "
                    "no checkpoint is ranked until it is (log it with self.log in validation_step)",
                    stacklevel=2,
                )
        if self.save_last:
            self._save_last(trainer)
        self._last_saved_step = trainer.global_step

    def _keep(self, trainer: Trainer, path: str, score: float, mode: str) -> None:
        k = self.save_top_k
        if k > 0 and len(self.best_k_models) >= k:
            worst = max(self.best_k_models, key=lambda p: self.best_k_models[p] * (1 if mode == "min" else -1))
            if math.isnan(score) or not _better(mode, score, self.best_k_models[worst]):
                return
        else:
            worst = None
        self.best_k_models[path] = score
        if worst is not None:
            del self.best_k_models[worst]
        self._update_best()
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        if worst is not None and worst != path and trainer.is_global_zero:
            trainer.checkpoint_io.wait()  # the new file is safe before the old one goes
            remove_checkpoint(worst)  # a file, or a sharded checkpoint's folder
        trainer.logger_after_save(self)

    def _update_best(self) -> None:
        mode = "max" if self.monitor is None else self.mode
        best = min(self.best_k_models, key=lambda p: self.best_k_models[p] * (1 if mode == "min" else -1))
        self.best_model_path = best
        self.best_model_score = None if self.monitor is None else self.best_k_models[best]

    def _save_last(self, trainer: Trainer) -> None:
        if not trainer.check_finite():
            return  # last.ckpt keeps the last good weights
        path = self.dirpath / "last.ckpt"
        self.last_model_path = str(path)
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)
        self._last_saved_step = trainer.global_step
        trainer.logger_after_save(self)


def _default_dirpath(trainer: Trainer) -> Path:
    """Lightning's checkpoint folder: ``<save_dir>/<name>/<version>/checkpoints`` of the first
    logger, else ``<default_root_dir>/checkpoints`` (also for a logger without name or version)."""
    logger = trainer.loggers[0] if trainer.loggers else None
    name = getattr(logger, "name", None) if logger is not None else None
    version = getattr(logger, "version", None) if logger is not None else None
    if name is None or version is None:
        return Path(trainer.default_root_dir) / "checkpoints"
    save_dir = getattr(logger, "save_dir", None) or trainer.default_root_dir
    return Path(save_dir) / str(name) / (version if isinstance(version, str) else f"version_{version}") / "checkpoints"


class LearningRateMonitor(Callback):
    """Log each optimizer's learning rate as ``lr-<Optimizer>`` (``-pg<i>`` per extra group).

    `logging_interval`: "step" (every `log_every_n_steps`), "epoch" (at each epoch's start),
    or None: as each optimizer's scheduler steps (an optimizer without one: per step).
    `log_momentum` / `log_weight_decay` add ``momentum-<Optimizer>`` / ``weight_decay-<Optimizer>``.
    """

    def __init__(
        self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise ValueError(f"LearningRateMonitor(logging_interval={logging_interval!r}): use 'step', 'epoch' or None")
        self.logging_interval = logging_interval
        self.log_momentum, self.log_weight_decay = log_momentum, log_weight_decay

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.should_log and self.logging_interval != "epoch":
            self._log(trainer, self.learning_rates(trainer, "step"))

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if self.logging_interval != "step":
            self._log(trainer, self.learning_rates(trainer, "epoch"))

    @staticmethod
    def _log(trainer: Trainer, rates: dict[str, float]) -> None:
        if rates:
            trainer.log_metrics(rates)
            trainer.callback_metrics.update(rates)  # as Lightning's: EarlyStopping/ModelCheckpoint may read them

    def learning_rates(self, trainer: Trainer, interval: str | None = None) -> dict[str, float]:
        """The rates to log at `interval` ("step" or "epoch"; None: every optimizer's)."""
        stepped_by = {id(s.scheduler.optimizer): s.interval for s in getattr(trainer, "lr_schedulers", ())}
        out: dict[str, float] = {}
        for opt in trainer.optimizers:
            if interval is not None and self.logging_interval is None and stepped_by.get(id(opt), "step") != interval:
                continue
            name = type(opt).__name__
            for i, group in enumerate(opt.param_groups):
                suffix = "" if i == 0 else f"-pg{i}"
                out[f"lr-{name}{suffix}"] = float(group["lr"])
                if self.log_momentum:
                    momentum = group.get("betas", (group.get("momentum", 0.0),))[0]
                    out[f"momentum-{name}{suffix}"] = float(momentum)
                if self.log_weight_decay:
                    out[f"weight_decay-{name}{suffix}"] = float(group.get("weight_decay", 0.0))
        return out


class ThroughputMonitor(Callback):
    """Samples/s and the share of each step spent waiting for the data loader.

    Logs ``throughput/samples_per_sec`` and ``throughput/data_wait_frac`` (unless
    `log_throughput` is False); warns once when waiting exceeds `warn_fraction` of the step time
    and prints a report at the end. Waits under `min_wait_ms` per batch are never a bottleneck
    worth a warning: a tiny model on in-memory data spends a large share of a very short step
    collating the batch. Every Trainer has one (report only) unless given its own. The advice
    names config keys when the run has them (``data.num_workers=4``), else ``DataLoader(...)``.
    """

    def __init__(
        self, warn_fraction: float = 0.2, warmup_steps: int = 5, min_wait_ms: float = 1.0, log_throughput: bool = True
    ) -> None:
        self.warn_fraction = warn_fraction
        self.warmup_steps = warmup_steps
        self.min_wait_ms = min_wait_ms
        self.log_throughput = log_throughput
        self.warned = False
        self._mark = (0.0, 0.0, 0, 0)  # wait, total, samples, batches at the last log
        self._base: tuple[float, float, int] | None = None  # wait, total, batches when warmup ended

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.should_log:
            return
        t = trainer.timer
        wait, total, samples, batches = (
            t.wait - self._mark[0],
            t.total - self._mark[1],
            t.samples - self._mark[2],
            t.batches - self._mark[3],
        )
        self._mark = (t.wait, t.total, t.samples, t.batches)
        if total <= 0 or batches == 0:
            return
        if self.log_throughput:
            rate = samples * trainer.world_size / total  # the job's: every process trains as many samples
            trainer.log_metrics({"throughput/samples_per_sec": rate, "throughput/data_wait_frac": wait / total})
        if self.warned or t.batches <= self.warmup_steps:
            return
        if self._base is None:
            self._base = (t.wait - wait, t.total - total, t.batches - batches)
        # Judged on everything since warmup, not on this window alone: one slow fetch (a page
        # fault, a busy machine) in a short window is not a data bottleneck.
        w, tot, b = t.wait - self._base[0], t.total - self._base[1], t.batches - self._base[2]
        if tot > 0 and self._slow(w, tot, b):
            self.warned = True
            trainer.print(f"warning: {self.advice(w / tot, trainer)}")

    def _slow(self, wait: float, total: float, batches: int) -> bool:
        return wait / total > self.warn_fraction and 1000 * wait / batches >= self.min_wait_ms

    def advice(self, fraction: float, trainer: Trainer) -> str:
        """What to change, in the caller's terms: config keys in a configured run, else DataLoader arguments."""
        workers, loader = trainer.train_num_workers, trainer.train_loader
        cores = os.cpu_count() or 1
        suggest = max(2, min(cores, 2 * max(1, workers)))
        more = workers < cores
        args = [f"num_workers={suggest}"] if more else []
        if trainer.device.type == "cuda" and not getattr(loader, "pin_memory", False):
            args.append("pin_memory=True")
        if (workers > 0 or more) and not getattr(loader, "persistent_workers", False):
            args.append("persistent_workers=True")  # workers kept across epochs, not restarted
        data_cfg = getattr(trainer.config, "data", None)
        tips = []
        if more and hasattr(data_cfg, "num_workers"):  # a generated project: the config key
            tips.append(f"data.num_workers={suggest}")
            args = args[1:]
        if args:
            tips.append(f"DataLoader({', '.join(args)})" + (" in your data module" if tips else ""))
        if not more:
            tips.append("a faster dataset (cache or preprocess it)")
        return (
            f"the data loader is the bottleneck: {fraction:.0%} of each step is spent waiting for data "
            f"(threshold {self.warn_fraction:.0%}). Try {', '.join(tips)}."
        )

    def report(self, trainer: Trainer) -> str:
        t = trainer.timer
        if t.batches == 0 or t.total <= 0:
            return "bottleneck report: no training steps ran"
        frac = t.wait / t.total
        lines = [
            f"bottleneck report: {t.batches} batches, {t.samples_per_sec(trainer.world_size):.1f} samples/s, "
            f"{1000 * t.total / t.batches:.2f} ms/batch, waiting for data {frac:.0%} "
            f"({1000 * t.wait / t.batches:.2f} ms/batch), compute {1 - frac:.0%}",
        ]
        if self._slow(t.wait, t.total, t.batches):
            lines.append("  " + self.advice(frac, trainer))
        return "\n".join(lines)

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        trainer.print(self.report(trainer))


class ProgressBar(Callback):
    """The training progress: a live bar on a terminal, plain lines otherwise (CI logs, SLURM files).

    Both show epoch x/N, batch, step, elapsed time, the ETA of the whole fit, samples/s, the
    share of time spent waiting for data and the ``prog_bar`` metrics; each validation adds one
    line. On a terminal the bar (rich) is redrawn at most every `refresh_rate` batches (0: no
    bar), and every other message prints above it, never glued onto it. Elsewhere a line is
    written every ``log_every_n_steps`` steps but at most every `line_interval_s` seconds, and at
    each epoch's end. The lines go through the engine's logger (so into ``train.log`` too), or
    to `stream` when one is given.
    """

    def __init__(self, refresh_rate: int = 1, stream: Any = None, line_interval_s: float = 10.0) -> None:
        self.refresh_rate = refresh_rate
        self.stream = stream
        self.line_interval_s = line_interval_s
        self._progress: Any = None  # rich.progress.Progress while the bar is on screen
        self._want_bar = False
        self._task: Any = None
        self._started = 0.0
        self._start_step = 0
        self._last_line = -math.inf
        self._last_draw = -math.inf
        self._metrics = ""

    # -- hooks ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._started, self._start_step = time.perf_counter(), trainer.global_step
        self._last_line, self._metrics = -math.inf, ""
        self._want_bar = (
            trainer.is_global_zero and self.stream is None and self.refresh_rate > 0 and _is_terminal(sys.stdout)
        )

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if self._want_bar and self._progress is None:
            self._want_bar = False
            self._start_bar()
        if self._progress is not None:
            total = trainer.num_training_batches
            self._progress.reset(
                self._task,
                total=total if total < sys.maxsize else None,
                completed=trainer.fit_loop.state.batches_done,
                description=self._epoch(trainer),
            )

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        if trainer.should_log:
            shown = {**trainer.progress_metrics(), **self._val_metrics(trainer)}
            self._metrics = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        last = batch_idx + 1 == trainer.num_training_batches
        now = time.perf_counter()
        if self._progress is not None:
            if (batch_idx + 1) % self.refresh_rate == 0 and (now - self._last_draw >= 0.1 or last):
                self._last_draw = now
                self._progress.update(self._task, completed=batch_idx + 1, **self._fields(trainer, now))
            if trainer.should_log:  # train.log keeps the lines the bar shows
                self._emit(self._line(trainer, batch_idx, now), progress=True)
        elif (trainer.should_log and now - self._last_line >= self.line_interval_s) or last:
            self._last_line = now
            self._emit(self._line(trainer, batch_idx, now), progress=True)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        latest = trainer.metrics.last_eval
        shown = {k: v for k, v in latest.items() if k in trainer.results_prog_bar} or latest
        text = ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "(nothing logged)"
        self._emit(f"{self._epoch(trainer)} step {trainer.global_step} validation: {text}")

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        self._stop_bar()

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        self._stop_bar()

    # -- pieces --------------------------------------------------------------------------------
    def _start_bar(self) -> None:
        try:  # rich draws the bar; without it, the plain lines
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        except ImportError:
            return
        from rich.table import Column

        from . import console

        screen = Console(file=sys.stdout)
        # The epoch and batch count never shrink; on a narrow terminal (80 columns) the bar does,
        # and the fields after the step count are cut at the right edge rather than squeezing
        # the epoch to "epo…" (rich shares the width between columns that may shrink).
        fixed = Column(no_wrap=True)
        self._progress = Progress(
            TextColumn("{task.description}", table_column=fixed),
            BarColumn(bar_width=30 if screen.width >= 120 else 12),
            MofNCompleteColumn(table_column=fixed),
            TextColumn(
                "step {task.fields[step]} | {task.fields[times]} | {task.fields[rate]} {task.fields[metrics]}",
                table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
            ),
            expand=True,  # the ratio column takes what is left of the line, and no more
            console=screen,
            redirect_stdout=True,  # every print and log line goes above the bar
            redirect_stderr=True,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("", total=None, start=True, step=0, times="", rate="", metrics="")
        self._progress.start()
        console.set_live(True)

    def _stop_bar(self) -> None:
        if self._progress is not None:
            from . import console

            self._progress.stop()
            self._progress = None
            console.set_live(False)

    def _fields(self, trainer: Trainer, now: float) -> dict[str, Any]:
        t = trainer.timer
        rate = f"{t.samples_per_sec(trainer.world_size):.0f} samples/s, data wait {t.wait / t.total:.0%}"
        return {
            "step": trainer.global_step,
            "times": self._times(trainer, now),
            "rate": rate if t.total > 0 else "",
            "metrics": self._metrics,
        }

    def _line(self, trainer: Trainer, batch_idx: int, now: float) -> str:
        total = trainer.num_training_batches
        parts = [
            self._epoch(trainer),
            f"batch {batch_idx + 1}/{total}" if total < sys.maxsize else f"batch {batch_idx + 1}",
            f"step {trainer.global_step}",
            self._times(trainer, now),
        ]
        t = trainer.timer
        if t.total > 0:
            parts.append(f"{t.samples_per_sec(trainer.world_size):.0f} samples/s, data wait {t.wait / t.total:.0%}")
        if self._metrics:
            parts.append(self._metrics)
        return " | ".join(parts)

    def _times(self, trainer: Trainer, now: float) -> str:
        elapsed = now - self._started
        done = trainer.global_step - self._start_step
        left = trainer.estimated_stepping_batches - trainer.global_step
        eta = f", ETA {_clock(left * elapsed / done)}" if done > 0 and left >= 0 else ""
        return f"{_clock(elapsed)} elapsed{eta}"

    @staticmethod
    def _epoch(trainer: Trainer) -> str:
        n = trainer.max_epochs
        return f"epoch {trainer.current_epoch + 1}/{n}" if n is not None else f"epoch {trainer.current_epoch + 1}"

    @staticmethod
    def _val_metrics(trainer: Trainer) -> dict[str, float]:
        return {k: v for k, v in trainer.metrics.last_eval.items() if k in trainer.results_prog_bar}

    def _emit(self, line: str, progress: bool = False) -> None:
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        else:
            _log.info(line, extra={"progress": progress})


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _clock(seconds: float) -> str:
    """1:05 or 1:02:03."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- Lightning's names for the display callbacks, and its Timer ---------------------------------
def parse_duration(value: Any) -> float | None:
    """Seconds from Lightning's max_time forms: "DD:HH:MM:SS", a dict of timedelta keywords, a timedelta."""
    import datetime

    if value is None:
        return None
    if isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"max_time={value!r}: write it as 'DD:HH:MM:SS', e.g. '00:12:00:00' for 12 hours")
        days, hours, minutes, seconds = (int(p) for p in parts)
        value = datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    elif isinstance(value, dict):
        try:
            value = datetime.timedelta(**value)
        except TypeError:
            raise ValueError(f"max_time={value!r}: use timedelta's keywords (days, hours, minutes, seconds)") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, datetime.timedelta):
        raise ValueError(f"max_time={value!r}: pass 'DD:HH:MM:SS', a dict such as {{'hours': 12}}, or a timedelta")
    return value.total_seconds()


class Timer(Callback):
    """Stop training once `duration` of training time has passed (``Trainer(max_time=...)``).

    Checked after every optimizer step (`interval="step"`) or at each epoch's end; the stop
    reason is ``max_time``. The elapsed time is saved in checkpoints, so a resumed run counts on.
    """

    def __init__(self, duration: Any = None, interval: str = "step", verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise ValueError(f"Timer(interval={interval!r}): use 'step' or 'epoch'")
        self.duration = parse_duration(duration)
        self.interval, self.verbose = interval, verbose
        self._start: float | None = None
        self._offset = 0.0  # training time before a resume

    def time_elapsed(self, stage: str = "train") -> float:
        running = time.monotonic() - self._start if self._start is not None else 0.0
        return self._offset + running

    def time_remaining(self, stage: str = "train") -> float | None:
        return None if self.duration is None else max(0.0, self.duration - self.time_elapsed(stage))

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {"train": self.time_elapsed()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._offset = float(state.get("time_elapsed", {}).get("train", 0.0))

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._start = time.monotonic()

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        self._offset, self._start = self.time_elapsed(), None

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.interval == "step":
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if self.duration is not None and self.time_elapsed() >= self.duration:
            trainer.request_stop("max_time", f"max_time of {self.duration:.0f} s reached" if self.verbose else "")


class RichProgressBarTheme:
    """Accepted for Lightning's RichProgressBar(theme=...); the engine's display has one style."""

    def __init__(self, **styles: Any) -> None:
        self.__dict__.update(styles)


class TQDMProgressBar(ProgressBar):
    """Lightning's name for the engine's progress display; ``refresh_rate=0`` turns it off.

    Arguments the display does not use (`process_position`, `leave`) are kept as
    attributes, so code that reads them works.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False, **kwargs: Any) -> None:
        import inspect

        wanted = {"refresh_rate": refresh_rate, "process_position": process_position, "leave": leave, **kwargs}
        accepted = inspect.signature(ProgressBar.__init__).parameters
        super().__init__(**{k: v for k, v in wanted.items() if k in accepted})
        for key, value in wanted.items():
            if key not in accepted:
                setattr(self, key, value)
        self._enabled = refresh_rate > 0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        """The trainer calls no hook of a disabled progress bar."""
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True


class RichProgressBar(TQDMProgressBar):
    """Lightning's rich display: the engine's display, which draws its bar with rich on a terminal."""

    def __init__(
        self,
        refresh_rate: int = 1,
        leave: bool = False,
        theme: RichProgressBarTheme | None = None,
        console_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave, **kwargs)
        self.theme = theme or RichProgressBarTheme()
        self.console_kwargs = console_kwargs or {}


class ModelSummary(Callback):
    """Print the model's parameter table when fit starts (`max_depth`: rows down to that depth; 0: off).

    With ``module.example_input_array`` set, the table also shows each row's input and output sizes.
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        self.max_depth = max_depth
        self.summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if self.max_depth == 0 or not trainer.is_global_zero:
            return
        from .summary import summarize

        trainer.print(str(summarize(module, self.max_depth, trainer)))


class RichModelSummary(ModelSummary):
    """Lightning's rich table, printed as the plain one (no `rich` dependency)."""


def default_callbacks(
    callbacks: Any,
    *,
    progress_bar: bool,
    checkpointing: bool,
    model_summary: bool,
    throughput: float | None,
    max_time: Any,
) -> list[Any]:
    """The Trainer's callbacks: those passed (one or a list, as Lightning accepts) and Lightning's
    defaults the enable_* switches ask for, unless one of that type was passed."""
    result: list[Any] = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks] if callbacks else []

    def add(kind: type, make: Any) -> None:
        if not any(isinstance(c, kind) for c in result):
            result.append(make())

    if progress_bar:
        add(ProgressBar, ProgressBar)
    if checkpointing:  # Lightning's default: the newest epoch's checkpoint in <logger's version folder>/checkpoints
        add(ModelCheckpoint, ModelCheckpoint)
    if model_summary:
        add(ModelSummary, ModelSummary)
    if throughput is not None:  # the bottleneck report (the timer runs anyway)
        add(ThroughputMonitor, lambda: ThroughputMonitor(throughput, log_throughput=False))
    if max_time is not None:
        result.append(Timer(duration=max_time))
    return result
