"""Manual optimization: the optimizer wrapper `self.optimizers()` returns (Lightning's shape).

Under ``automatic_optimization = False`` the module's training_step calls
``self.manual_backward(loss)``, ``opt.step()`` and ``opt.zero_grad()`` itself. The wrapper
routes ``step`` through the run's precision (GradScaler unscale/step/update for 16-mixed)
and counts it as a global step, as Lightning does: two optimizers stepped per batch
advance ``trainer.global_step`` by two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        return self._trainer._manual_step(self._optimizer, closure, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    @contextmanager
    def toggle_model(self, sync_grad: bool = True) -> Iterator[None]:
        """Only this optimizer's parameters require grad inside; with ``sync_grad=False`` the
        backward passes inside skip the DDP gradient sync (accumulate locally, sync later)."""
        module = self._trainer.module
        module.toggle_optimizer(self)
        try:
            with self._trainer._no_sync(not sync_grad):
                yield
        finally:
            module.untoggle_optimizer(self)
