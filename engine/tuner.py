"""Lightning's ``Tuner``: the learning-rate range test (``lr_find``) and the batch-size search.

Both run a short, separate fit on a throw-away Trainer with the user's settings, so the user's
Trainer is never touched, and give the model its initial weights back afterwards (Lightning
restores from a temporary checkpoint; the result is the same). The algorithms are Lightning's:
an exponential (or linear) learning-rate schedule stepped every optimizer step, the loss smoothed
with ``beta=0.98`` and bias-corrected, a stop once it exceeds ``early_stop_threshold`` times the
best, and the suggestion at the steepest descent of the smoothed loss.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch

from .callbacks import Callback

_log = logging.getLogger(__name__)
_LR_NAMES = ("lr", "learning_rate")


class _ExponentialLR(torch.optim.lr_scheduler.LRScheduler):
    """Lightning's: ``lr_min * (lr_max / lr_min) ** ((step + 1) / num_iter)``, ``lr_min`` at step 0."""

    def __init__(self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1) -> None:
        self.end_lr, self.num_iter = end_lr, num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        r = (self.last_epoch + 1) / self.num_iter
        self.lr = [b * (self.end_lr / b) ** r for b in self.base_lrs] if self.last_epoch > 0 else list(self.base_lrs)
        return self.lr


class _LinearLR(_ExponentialLR):
    def get_lr(self) -> list[float]:
        r = (self.last_epoch + 1) / self.num_iter
        self.lr = [b + r * (self.end_lr - b) for b in self.base_lrs] if self.last_epoch > 0 else list(self.base_lrs)
        return self.lr


class _LRCallback(Callback):
    """Records the lr each step trains with and the smoothed loss after it; stops on divergence."""

    def __init__(self, early_stop_threshold: float | None, beta: float = 0.98) -> None:
        self.early_stop_threshold, self.beta = early_stop_threshold, beta
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg_loss = self.best_loss = 0.0
        self.scheduler: Any = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self.lrs.append(self.scheduler.lr[0])

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return
        loss = outputs if isinstance(outputs, torch.Tensor) else (outputs or {}).get("loss")
        if loss is None:
            self.losses.append(float("nan"))
            return
        step = trainer.global_step
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * loss.item()
        smoothed = self.avg_loss / (1 - self.beta ** (step + 1))
        if self.early_stop_threshold is not None and step > 1 and smoothed > self.early_stop_threshold * self.best_loss:
            trainer.should_stop = True
        if smoothed < self.best_loss or step == 1:
            self.best_loss = smoothed
        self.losses.append(smoothed)


class LRFinder:
    """What ``lr_find`` returns: ``results`` (``{"lr": [...], "loss": [...]}``), ``suggestion()``, ``plot()``."""

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        self.mode, self.lr_min, self.lr_max, self.num_training = mode, lr_min, lr_max, num_training
        self.results: dict[str, list[float]] = {}
        self._optimal_idx: int | None = None

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The lr at the steepest negative gradient of the smoothed loss (None with fewer than 2 points)."""
        losses = torch.tensor(self.results["loss"][skip_begin:-skip_end])
        lrs = torch.tensor(self.results["lr"][skip_begin:-skip_end])
        finite = torch.isfinite(losses)
        losses, lrs = losses[finite], lrs[finite]
        if len(losses) < 2:
            _log.error("lr_find: too few points for a suggestion; raise num_training or use more batches")
            self._optimal_idx = None
            return None
        gradients = torch.gradient(losses, spacing=[lrs])[0]
        kept = torch.arange(len(self.results["loss"]))[skip_begin:-skip_end][finite]
        self._optimal_idx = int(kept[int(torch.argmin(gradients))])
        return self.results["lr"][self._optimal_idx]

    def plot(self, suggest: bool = False, show: bool = False, ax: Any = None) -> Any:
        """The loss against the lr (log scale in exponential mode), the suggestion as a red dot."""
        try:
            import matplotlib.pyplot as plt  # lazy: only plotting needs it
        except ImportError:
            raise ImportError("LRFinder.plot needs matplotlib: pip install matplotlib") from None
        lrs, losses = self.results["lr"], self.results["loss"]
        fig, ax = plt.subplots() if ax is None else (ax.figure, ax)
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest and self.suggestion() is not None and self._optimal_idx:
            ax.plot(lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red")
        if show:
            plt.show()
        return fig


def _lr_attr(model: Any, attr_name: str) -> str:
    """Lightning's lookup: ``attr_name``, else ``lr``/``learning_rate`` on the model or its hparams."""
    names = (attr_name,) if attr_name else _LR_NAMES
    for name in names:
        if hasattr(model, name) or name in getattr(model, "hparams", {}):
            return name
    raise AttributeError(
        f"lr_find(update_attr=True) found no {' or '.join(repr(n) for n in names)} attribute on the model "
        "or in its hparams; add one, pass attr_name=..., or update_attr=False"
    )


def _set_attr(model: Any, name: str, value: Any) -> None:
    if hasattr(model, name):
        setattr(model, name, value)
    if name in getattr(model, "hparams", {}):
        model.hparams[name] = value


def _restore(model: Any, weights: dict[str, Any]) -> None:
    """The initial weights back, and torchmetrics objects emptied of the search's updates (Lightning
    resets the metrics it logged when the search's fit ends)."""
    model.load_state_dict(weights)
    for m in model.modules():
        if type(m).__module__.startswith("torchmetrics") and callable(getattr(m, "reset", None)):
            m.reset()


def _has_attr(obj: Any, name: str) -> bool:
    return hasattr(obj, name) or name in getattr(obj, "hparams", {})


def _dataset_length(model: Any, datamodule: Any) -> float:
    """The training set's length where it has one (a batch that big is the last to try)."""
    try:
        return len((datamodule or model).train_dataloader().dataset)
    except Exception:  # no loader method, an iterable dataset, or one that needs setup() first
        return math.inf


class Tuner:
    """``Tuner(trainer).lr_find(model, ...)`` and ``.scale_batch_size(model, ...)``, as Lightning's."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer

    def _search_trainer(self, **overrides: Any) -> Any:
        """A Trainer with the user's settings that logs, saves and validates nothing."""
        from .trainer import Trainer

        t = self._trainer
        settings: dict[str, Any] = dict(
            max_epochs=t.max_epochs,
            precision=t.precision_name,
            accelerator=t.accelerator,
            devices=t.devices,
            accumulate_grad_batches=t.accumulate_grad_batches,
            gradient_clip_val=t.gradient_clip_val,
            gradient_clip_algorithm=t.gradient_clip_algorithm,
            limit_train_batches=t.limit_train_batches,
            seed=t.seed,
            deterministic=t.deterministic,
            default_root_dir=t.default_root_dir,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        settings.update(overrides)
        return Trainer(**settings)

    def lr_find(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: Any = None,
        method: str = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> LRFinder | None:
        """Train ``num_training`` steps with the lr rising from ``min_lr`` to ``max_lr``; see `LRFinder`.

        With ``update_attr`` the model's ``lr``/``learning_rate`` (or ``attr_name``) is set to the
        suggestion. The model's weights and the user's Trainer are as before the call.
        """
        if method != "fit":
            raise ValueError(f"lr_find(method={method!r}): only 'fit' is supported, as in Lightning")
        if mode not in ("exponential", "linear"):
            raise ValueError(f"lr_find(mode={mode!r}): use 'exponential' or 'linear'")
        if self._trainer.fast_dev_run:
            _log.warning("Skipping the learning rate finder: fast_dev_run is on")
            return None
        name = _lr_attr(model, attr_name) if update_attr else ""
        finder = LRFinder(mode, min_lr, max_lr, num_training)
        recorder = _LRCallback(early_stop_threshold)
        configure = model.configure_optimizers

        def configure_with_search_schedule() -> Any:
            # The user's optimizer at min_lr with the search's schedule instead of the user's schedulers.
            from .optim import parse_optimizers

            optimizers, _ = parse_optimizers(configure())
            if len(optimizers) != 1:
                raise ValueError(f"lr_find works with one optimizer; configure_optimizers returned {len(optimizers)}")
            optimizer = optimizers[0]
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] = min_lr
            cls = _ExponentialLR if mode == "exponential" else _LinearLR
            recorder.scheduler = cls(optimizer, max_lr, num_training)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": recorder.scheduler, "interval": "step"}}

        initial = copy.deepcopy(model.state_dict())
        trainer_before = model.__dict__.get("_trainer")  # the search Trainer attaches itself
        model.configure_optimizers = configure_with_search_schedule
        try:
            search = self._search_trainer(max_steps=num_training, callbacks=[recorder])
            search.fit(
                model, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, datamodule=datamodule
            )
        finally:
            del model.configure_optimizers  # the class's own again
            _restore(model, initial)
            model.trainer = trainer_before
        if len(recorder.losses) < num_training:
            _log.info("LR finder stopped early after %d steps due to diverging loss.", len(recorder.losses))
        finder.results = {"lr": recorder.lrs[: len(recorder.losses)], "loss": recorder.losses}
        if update_attr:
            lr = finder.suggestion()
            if lr is not None:
                _set_attr(model, name, lr)
                _log.info("Learning rate set to %s", lr)
        return finder

    def scale_batch_size(
        self,
        model: Any,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: Any = None,
        method: str = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> int | None:
        """Lightning's batch-size search; sets and returns the size found.

        ``power`` doubles from ``init_val`` while ``steps_per_trial`` steps fit in memory, for at most
        ``max_trials`` trials (on a CPU nothing runs out: ``max_trials`` and ``max_val`` bound it);
        ``binsearch`` then bisects between the last size that fit and the first that did not, and
        keeps ``margin`` below it. The size is set as ``batch_arg_name`` wherever the model, its
        hparams or the datamodule have it. Weights are restored afterwards.
        """
        if method != "fit":
            raise ValueError(f"scale_batch_size(method={method!r}): only 'fit' is supported here")
        if mode not in ("power", "binsearch"):
            raise ValueError(f"scale_batch_size(mode={mode!r}): use 'power' or 'binsearch'")
        if train_dataloaders is not None:
            raise ValueError(
                "scale_batch_size cannot change the batch size of a DataLoader passed in; give the model or "
                f"datamodule a `{batch_arg_name}` attribute its *_dataloader() methods use"
            )
        holders = [h for h in (model, datamodule) if h is not None and _has_attr(h, batch_arg_name)]
        if not holders:
            raise AttributeError(
                f"scale_batch_size found no `{batch_arg_name}` on the model, its hparams or the datamodule; "
                "add one that the *_dataloader() methods read, or pass batch_arg_name=..."
            )
        if self._trainer.fast_dev_run:
            _log.warning("Skipping the batch size finder: fast_dev_run is on")
            return None
        initial = copy.deepcopy(model.state_dict())
        size, good, bad = init_val, None, None
        try:
            for trial in range(max_trials):
                if size >= max_val:
                    _log.info("Reached the maximum batch size limit of %d. Stopping search.", max_val)
                    break
                for holder in holders:
                    _set_attr(holder, batch_arg_name, size)
                if self._trial(model, datamodule, steps_per_trial):
                    good = size
                    if trial + 1 >= max_trials or size >= _dataset_length(model, datamodule):
                        break
                    size = size * 2 if bad is None else (good + bad) // 2
                    if bad is not None and bad - good <= 1:
                        break
                else:
                    bad = size
                    if good is None:
                        size //= 2
                        if size < 1:
                            raise RuntimeError("scale_batch_size: even batch_size=1 runs out of memory")
                        continue
                    if mode == "power" or bad - good <= 1:
                        break
                    size = (good + bad) // 2
        finally:
            _restore(model, initial)
        found = good if good is not None else size
        if mode == "binsearch" and bad is not None:
            found = max(1, int(found * (1 - margin)))
        for holder in holders:
            _set_attr(holder, batch_arg_name, found)
        _log.info("Finished batch size finder, will continue with full run using batch size %d", found)
        return found

    def _trial(self, model: Any, datamodule: Any, steps: int) -> bool:
        """Fit ``steps`` steps; False when that runs out of memory (CUDA's or the host's)."""
        try:
            trial = self._search_trainer(max_steps=steps, limit_train_batches=None, max_epochs=None)
            trial.fit(model, datamodule=datamodule)
        except (torch.OutOfMemoryError, MemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return False
        except RuntimeError as e:  # some backends raise a plain RuntimeError
            if "out of memory" not in str(e).lower():
                raise
            return False
        return True


__all__ = ["LRFinder", "Tuner"]
