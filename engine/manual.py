"""Manual optimization (``automatic_optimization = False``): what ``manual_backward`` and
``LightningOptimizer.step`` call, and the settings that cannot apply.

The module's training_step runs its own backward passes and optimizer steps; the fit loop
(`FitLoop.manual_step_body`) keeps the rest: hooks, logging, validation, stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .trainer import Trainer


def check_settings(trainer: Trainer) -> None:
    """Trainer settings that mean automatic optimization fail early and say so (Lightning's messages)."""
    if trainer.gradient_clip_val is not None and trainer.gradient_clip_val > 0:
        raise ValueError(
            "Automatic gradient clipping is not supported for manual optimization. Remove "
            f"`Trainer(gradient_clip_val={trainer.gradient_clip_val})` or switch to automatic optimization "
            "(in training_step, call self.clip_gradients(opt, gradient_clip_val=...) before opt.step())."
        )
    if trainer.accumulate_grad_batches != 1:
        raise ValueError(
            "Automatic gradient accumulation is not supported for manual optimization. Remove "
            f"`Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches})` or switch to automatic "
            "optimization (accumulate yourself: step the optimizer every N batches)."
        )
    if trainer.on_nonfinite_loss == "skip":
        raise ValueError(
            "trainer.on_nonfinite_loss=skip needs automatic optimization: under manual optimization the module "
            "has stepped before the trainer sees the loss; use on_nonfinite_loss=stop, or check the loss in "
            "training_step before opt.step()"
        )


def backward(trainer: Trainer, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
    """`module.manual_backward`: the backward hooks around ``loss.backward()``, through DDP's
    gradient sync (`BackwardGate`) and the gradient scaler where the run has them."""
    with trainer.profiler.profile("[phase] backward"):
        trainer.hooks.call("on_before_backward", loss)
        ddp = trainer.strategy.ddp
        if ddp is not None:
            loss = ddp(loss)  # readies DDP's gradient sync (a no-op inside no_sync)
        if trainer.precision.scaling:
            loss = trainer.precision.scaler.scale(loss)
        loss.backward(*args, **kwargs)
        trainer.hooks.call("on_after_backward")


def step(trainer: Trainer, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None, **kwargs: Any) -> Any:
    """One optimizer step as Lightning takes it: the closure, then (on true gradients)
    on_before_optimizer_step, then the step; counted as a global step even when the
    gradient scaler skips it."""
    precision, hooks = trainer.precision, trainer.hooks.for_("on_before_optimizer_step")
    with trainer.profiler.profile("[phase] optimizer"):
        if precision.scaling:
            result = closure() if closure is not None else None
            if id(optimizer) in precision.unscaled:
                precision.unscaled.discard(id(optimizer))
            else:
                precision.unscale(optimizer)
            for fn in hooks:
                fn(optimizer)
            precision.step(optimizer, update=False, **kwargs)  # the update follows training_step
        else:

            def closure_then_hooks() -> Any:  # the optimizer runs it (with grad enabled) before stepping
                out = closure() if closure is not None else None
                for fn in hooks:
                    fn(optimizer)
                return out

            result = optimizer.step(closure=closure_then_hooks, **kwargs)
    trainer.fit_loop.state.global_step += 1
    return result
