"""Optimizers and schedulers: what configure_optimizers returns, parsed (`parse_optimizers`),
the schedulers stepped (`step_schedulers`), and the wrapper `self.optimizers()` returns.

Under ``automatic_optimization = False`` the module's training_step calls
``self.manual_backward(loss)``, ``opt.step()`` and ``opt.zero_grad()`` itself. The wrapper
routes ``step`` through the run's precision (GradScaler unscale/step/update for 16-mixed)
and counts it as a global step, as Lightning does: two optimizers stepped per batch
advance ``trainer.global_step`` by two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .trainer import Trainer


class LightningOptimizer:
    """A torch optimizer seen from a manually optimized module (other attributes pass through)."""

    def __init__(self, optimizer: torch.optim.Optimizer, trainer: Trainer) -> None:
        self._optimizer = optimizer
        self._trainer = trainer

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    def __getattr__(self, name: str) -> Any:  # param_groups, state, state_dict, defaults ...
        if name == "_optimizer":  # not set yet (copy, unpickling): no endless recursion
            raise AttributeError(name)
        return getattr(self._optimizer, name)

    def __repr__(self) -> str:
        return f"LightningOptimizer({self._optimizer!r})"

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Step through the precision (unscale, on_before_optimizer_step hooks, scaler) and count it."""
        if closure is not None and not callable(closure):
            raise TypeError("optimizer.step(closure) needs a callable closure (or none)")
        return self._trainer.fit_loop.lightning_step(self._optimizer, closure, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    @contextmanager
    def toggle_model(self, sync_grad: bool = True) -> Iterator[None]:
        """Only this optimizer's parameters require grad inside; with ``sync_grad=False`` the
        backward passes inside skip the DDP gradient sync (accumulate locally, sync later)."""
        module = self._trainer.module
        module.toggle_optimizer(self)
        try:
            with self._trainer.strategy.no_sync(not sync_grad, restore=not self._trainer.fit_loop.automatic):
                yield
        finally:
            module.untoggle_optimizer(self)


@dataclass
class _Scheduler:
    """A scheduler and Lightning's settings for it (what `trainer.lr_scheduler_configs` lists)."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def reduce_on_plateau(self) -> bool:
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def parse_optimizers(value: Any) -> tuple[list[torch.optim.Optimizer], list[_Scheduler]]:
    """Accept what Lightning's configure_optimizers accepts: an optimizer, a dict with "optimizer"
    (and "lr_scheduler"), a list of optimizers or of such dicts, or ([optimizers], [schedulers])."""
    optimizers: list[Any] = []
    schedulers: list[_Scheduler] = []

    def add_scheduler(s: Any) -> None:
        if isinstance(s, Mapping):
            unknown = set(s) - {"scheduler", "interval", "frequency", "monitor", "strict", "name"}
            if unknown or "scheduler" not in s:
                raise ValueError(
                    f"lr_scheduler dict needs 'scheduler' and may have interval/frequency/monitor; got {sorted(s)}"
                )
            cfg = _Scheduler(**s)
        else:
            cfg = _Scheduler(s)
        if cfg.interval not in ("step", "epoch"):
            raise ValueError(f"lr_scheduler interval must be 'step' or 'epoch', got {cfg.interval!r}")
        if isinstance(cfg.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and cfg.monitor is None:
            raise ValueError("ReduceLROnPlateau needs a monitor: return {'scheduler': ..., 'monitor': 'val_loss'}")
        schedulers.append(cfg)

    if isinstance(value, torch.optim.Optimizer):
        optimizers = [value]
    elif isinstance(value, Mapping):
        optimizers = [value["optimizer"]]
        if value.get("lr_scheduler") is not None:
            sched = value["lr_scheduler"]
            if isinstance(sched, Mapping) and "monitor" not in sched and "monitor" in value:
                sched = {**sched, "monitor": value["monitor"]}
            elif not isinstance(sched, Mapping) and "monitor" in value:
                sched = {"scheduler": sched, "monitor": value["monitor"]}
            add_scheduler(sched)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (list, tuple)):
        optimizers = list(value[0])
        for s in value[1]:
            add_scheduler(s)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Mapping):
                o, s = parse_optimizers(item)
                optimizers += o
                schedulers += s
            else:
                optimizers.append(item)
    else:
        raise TypeError(
            f"configure_optimizers returned {type(value).__name__}; return an optimizer, or a dict with 'optimizer'"
        )
    if not optimizers:
        raise ValueError("configure_optimizers returned no optimizer; return at least one")
    for opt in optimizers:
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"configure_optimizers returned a {type(opt).__name__} where an optimizer belongs")
    return optimizers, schedulers


def clip_gradients(optimizer: torch.optim.Optimizer, value: float, algorithm: str | None) -> None:
    """Clip the optimizer's gradients in place: by their total norm (the default) or by value."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    else:
        torch.nn.utils.clip_grad_norm_(params, value)


def step_schedulers(trainer: Trainer, interval: str) -> None:
    """Step the schedulers of this `interval` ("step" or "epoch") that are due by their frequency,
    through the module's `lr_scheduler_step(scheduler, metric)` (Lightning's hook)."""
    step = trainer.module.lr_scheduler_step
    for s in trainer.lr_schedulers:
        if s.interval != interval:
            continue
        count = trainer.global_step + 1 if interval == "step" else trainer.current_epoch + 1
        if count % s.frequency:
            continue
        if isinstance(s.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if s.monitor not in trainer.callback_metrics:
                if s.strict:
                    raise KeyError(
                        f"ReduceLROnPlateau monitors {s.monitor!r}, which was not logged "
                        f"(logged: {', '.join(sorted(trainer.callback_metrics)) or 'none'})"
                    )
                continue
            step(s.scheduler, trainer.callback_metrics[s.monitor])
        else:
            step(s.scheduler, None)
