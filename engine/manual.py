"""Manual optimization: the batch loop under ``automatic_optimization = False``, and what
``manual_backward`` and ``LightningOptimizer.step`` call.

The module's training_step runs its own backward passes and optimizer steps; the loop here
keeps the rest (hooks, logging, validation, stops). Each function takes the Trainer as its
first argument (this file never imports trainer.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import stopping
from .batch import prepare_batch

if TYPE_CHECKING:
    from .module import Module
    from .trainer import Trainer


class BackwardGate(nn.Module):
    """Manual optimization under DDP: `manual_backward` passes the loss through DDP's forward.

    training_step calls backward and steps before it returns, so it cannot run inside DDP's
    forward (DDP readies its gradient sync after forward returns). Passing each loss through
    this identity forward is DDP's public contract, forward then backward, once per backward.
    """

    def __init__(self, module: Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss


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


def run_batches(trainer: Trainer, data: Iterator[Any], batch_idx: int, n: int) -> tuple[int, int]:
    """The batch loop under manual optimization; returns (batches done, batches in the epoch).

    training_step runs its own backward passes and optimizer steps (each ``opt.step()``
    is one global step, as in Lightning); the loop keeps the rest: hooks, logging every
    `log_every_n_steps` global steps, validation, max_steps, signals, and the non-finite
    check of the loss training_step returns (read at the next sync point, before anything
    is logged, validated or saved: the module has already stepped on it).
    """
    val_every = trainer._val_every(n)
    distributed, device, dtype = trainer.env.active, trainer.device, trainer.precision.input_dtype
    autocast, step_fn, scaling = trainer.precision.autocast(), trainer._step_fn, trainer.precision.scaling
    results, t = trainer._train_results, trainer.timer
    if trainer.profiler.enabled:  # the module's own backward and steps are timed inside it
        step_fn = trainer.profiler.wrap("[phase] training_step (manual: with its backward and steps)", step_fn)
    start_hooks, end_hooks = trainer._hooks_for("on_train_batch_start"), trainer._hooks_for("on_train_batch_end")
    every, buffers, now = trainer.log_every_n_steps, trainer._ddp_buffers, time.perf_counter
    from .module import batch_preparer  # (module.py imports this file)

    prepare = batch_preparer(trainer.module, trainer.datamodule) or prepare_batch
    while batch_idx < n and not trainer._stop_agreed:
        start = now()
        try:
            batch = next(data)
        except StopIteration:  # a loader without len() ends the epoch here
            n = trainer.num_training_batches = batch_idx
            break
        waited = now() - start
        batch, batch_size = prepare(batch, device, dtype)
        results.batch_size = batch_size
        for fn in start_hooks:
            fn(batch, batch_idx)
        for buffer in buffers:  # what DDP does before each forward: rank 0's buffers everywhere
            torch.distributed.broadcast(buffer, 0)
        steps_before = trainer.global_step
        with autocast:
            outputs = step_fn(batch, batch_idx)
        if scaling:  # one scale update per training step, after all its optimizer steps
            trainer.precision.update()
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            ok = torch.isfinite(loss.detach()).all()
            trainer._unchecked = ok if trainer._unchecked is None else trainer._unchecked & ok
        batch_idx = trainer._batches_done = batch_idx + 1
        t.wait, t.samples, t.batches = t.wait + waited, t.samples + batch_size, t.batches + 1
        trainer.should_log = trainer.global_step // every > steps_before // every
        if trainer.should_log or (distributed and trainer.global_step >= trainer._sync_step):
            if not stopping.step_sync(trainer):
                break  # stop before anything reads or saves these weights
        t.total += now() - start
        if val_every and batch_idx % val_every == 0 and batch_idx < n:
            trainer._validate_now()
        if end_hooks:  # Lightning's outputs: training_step's dict (or {"loss": tensor}), the loss detached
            out = dict(outputs) if isinstance(outputs, Mapping) else {} if outputs is None else {"loss": outputs}
            if isinstance(out.get("loss"), torch.Tensor):
                out["loss"] = out["loss"].detach()
            for fn in end_hooks:
                fn(out, batch, batch_idx - 1)
        if trainer._pending_log:
            trainer._flush_log()
        if trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps:
            trainer.request_stop("max_steps")
            trainer._stop_agreed = True  # the same step on every rank
        if trainer._signal is not None or trainer.should_stop != trainer._stop_agreed:
            stopping.agree_stop(trainer, collective=False)
    return batch_idx, n


def backward(trainer: Trainer, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
    """`module.manual_backward`: the backward hooks around ``loss.backward()``, through DDP's
    gradient sync (`BackwardGate`) and the gradient scaler where the run has them."""
    trainer._call("on_before_backward", loss)
    if trainer._ddp is not None:
        loss = trainer._ddp(loss)  # readies DDP's gradient sync (a no-op inside no_sync)
    if trainer.precision.scaling:
        loss = trainer.precision.scaler.scale(loss)
    loss.backward(*args, **kwargs)
    trainer._call("on_after_backward")


def step(trainer: Trainer, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None, **kwargs: Any) -> Any:
    """One optimizer step as Lightning takes it: the closure, then (on true gradients)
    on_before_optimizer_step, then the step; counted as a global step even when the
    gradient scaler skips it."""
    precision, hooks = trainer.precision, trainer._hooks_for("on_before_optimizer_step")
    if precision.scaling:
        result = closure() if closure is not None else None
        if id(optimizer) in trainer._unscaled:
            trainer._unscaled.discard(id(optimizer))
        else:
            precision.unscale(optimizer)
        for fn in hooks:
            fn(optimizer)
        precision.step(optimizer, update=False, **kwargs)  # the update follows training_step (run_batches)
    else:

        def closure_then_hooks() -> Any:  # the optimizer runs it (with grad enabled) before stepping
            out = closure() if closure is not None else None
            for fn in hooks:
                fn(optimizer)
            return out

        result = optimizer.step(closure=closure_then_hooks, **kwargs)
    trainer.global_step += 1
    return result


def unscale_for_clipping(trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
    """Under manual optimization with gradient scaling, clip true gradients: unscale once per step."""
    if not trainer._automatic and trainer.precision.scaling and id(optimizer) not in trainer._unscaled:
        trainer.precision.unscale(optimizer)
        trainer._unscaled.add(id(optimizer))
