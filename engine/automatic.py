"""Automatic optimization through the module's own optimization hooks, as Lightning calls them.

A module that overrides `optimizer_step`, `optimizer_zero_grad`, `configure_gradient_clipping`
or `backward` trains through `HookedStep`: each batch's training_step, zero_grad (first batch
of a window) and backward run in a closure; on a window's last batch the loop calls
``module.optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)``, whose
``optimizer.step(closure=optimizer_closure)`` runs the closure, the on_before_optimizer_step
hooks and ``configure_gradient_clipping``, then steps. The choice is made once per epoch
(`hooked_step`): a module overriding none of them keeps the loop's own step, at no cost.

"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from .hooks import overrides

if TYPE_CHECKING:
    from .trainer import Trainer

# The module hooks that put the step in the module's hands (Lightning's LightningModule methods).
STEP_HOOKS = ("optimizer_step", "optimizer_zero_grad", "configure_gradient_clipping", "backward")


def hooked_step(trainer: Trainer) -> HookedStep | None:
    """The closure-based step when the module overrides an optimization hook, else None."""
    module = trainer.module
    if not trainer.fit_loop.automatic or not any(overrides(module, name) for name in STEP_HOOKS):
        return None
    if trainer.on_nonfinite_loss == "skip":
        names = ", ".join(n for n in STEP_HOOKS if overrides(module, n))
        raise ValueError(
            f"trainer.on_nonfinite_loss=skip cannot skip a step the module takes itself ({names} overridden); "
            "use on_nonfinite_loss=stop, or check the loss in optimizer_step"
        )
    return HookedStep(trainer)


class HookedStep:
    """One batch of automatic optimization as Lightning's closure runs it (see the module docstring).

    Called by the loop as its training step; returns what training_step returned. The loop does
    no backward or optimizer step of its own then, only `after_step` (the schedulers).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.module = trainer, trainer.module
        self.optimizer = trainer.optimizers[0]
        self.lightning_optimizer = trainer.lightning_optimizers[0]
        self.step_fn, self.precision, self.strategy = trainer.strategy.step_fn, trainer.precision, trainer.strategy
        hooks = trainer.hooks
        self.zero_grad_hooks = hooks.for_("on_before_zero_grad")
        self.before, self.after = hooks.for_("on_before_backward"), hooks.for_("on_after_backward")
        self.k = trainer.accumulate_grad_batches
        self._ran = False

    def __call__(self, batch: Any, batch_idx: int) -> Any:
        trainer, k = self.trainer, self.k
        n = trainer.num_training_batches
        window_start = batch_idx - batch_idx % k
        window = min(k, n - window_start)  # the last window of an epoch may be short (as the loop)
        step_now = batch_idx + 1 == window_start + window
        result: list[Any] = []

        def optimizer_closure() -> torch.Tensor | None:
            with torch.enable_grad():
                with self.strategy.no_sync(not step_now), self.precision.autocast():
                    outputs = self.step_fn(batch, batch_idx)
                loss = _closure_loss(outputs)
                if loss is not None and window > 1:  # the loop's normalization (Lightning's, for full windows)
                    loss = loss / window
                if batch_idx % k == 0:  # the window's first batch: zero after training_step, before backward
                    for fn in self.zero_grad_hooks:
                        fn(self.optimizer)
                    self.module.optimizer_zero_grad(trainer.current_epoch, batch_idx, self.optimizer)
                if loss is not None:
                    self._backward(loss)
            result[:] = [outputs]
            self._ran = True
            return None if loss is None else loss.detach()

        if not step_now:
            optimizer_closure()
        else:
            self._ran = False
            self.module.optimizer_step(trainer.current_epoch, batch_idx, self.lightning_optimizer, optimizer_closure)
            if not self._ran:
                raise RuntimeError(
                    "optimizer_step did not run optimizer_closure (training_step and backward): call "
                    "optimizer.step(closure=optimizer_closure), or optimizer_closure() when not stepping"
                )
        return result[0]

    def _backward(self, loss: torch.Tensor) -> None:
        """Lightning's order: the loss scaled (16-mixed), on_before_backward, module.backward, on_after_backward."""
        if self.precision.scaling:
            loss = self.precision.scaler.scale(loss)
        for fn in self.before:
            fn(loss)
        self.module.backward(loss)
        for fn in self.after:
            fn()

    def after_step(self, hooks: Any = None) -> None:
        """What the loop does after the module's step: the step-interval schedulers (no zero_grad:
        the next window's closure zeroes, through optimizer_zero_grad)."""
        if self.trainer.lr_schedulers:
            from . import optim

            optim.step_schedulers(self.trainer, "step")


def no_backward(loss: torch.Tensor) -> None:
    """The loop's backward under `HookedStep`: the closure has run it."""


def _closure_loss(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor) or outputs is None:
        return outputs
    if isinstance(outputs, Mapping):
        if outputs.get("loss") is None:
            raise ValueError("training_step returned a dict without 'loss'; return {'loss': loss, ...}")
        return outputs["loss"]
    raise TypeError(
        f"training_step returned {type(outputs).__name__}; return a loss tensor, a dict with 'loss', or None"
    )


def optimizer_step(
    trainer: Trainer, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None, **kwargs: Any
) -> Any:
    """`optimizer.step(closure=...)` inside module.optimizer_step under automatic optimization
    (Lightning's precision step): the closure, then on true gradients the on_before_optimizer_step
    hooks and ``configure_gradient_clipping``, then the step (the GradScaler's under 16-mixed)."""
    precision, module = trainer.precision, trainer.module
    hooks = trainer.hooks.for_("on_before_optimizer_step")

    def after_closure() -> None:
        for fn in hooks:
            fn(optimizer)
        module.configure_gradient_clipping(
            optimizer,
            gradient_clip_val=trainer.gradient_clip_val,
            gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        )

    if precision.scaling:
        result = closure() if closure is not None else None
        skip = result is None  # training_step returned None: no gradients to unscale or step
        if not skip:
            precision.unscale(optimizer)
        after_closure()
        if not skip:
            precision.step(optimizer, **kwargs)
        return result

    def closure_then_hooks() -> Any:  # the optimizer runs it (with grad enabled) before stepping
        out = closure() if closure is not None else None
        after_closure()
        return out

    return optimizer.step(closure=closure_then_hooks, **kwargs)
