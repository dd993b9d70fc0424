"""The fit loop: epochs; in each, optimizer windows; in each window, its micro-batches.

Read `run` then `run_epoch` top to bottom. A window is `accumulate_grad_batches` micro-batches
(the last of an epoch may be shorter): each runs training_step and backward, gradients sync
across processes on the window's last (nanoGPT's ``require_backward_grad_sync``), then the
optimizer steps once, and the global step, logging, the stop agreement and max_steps follow.
Batch hooks fire on every batch, as in Lightning. Under manual optimization a window is one
batch whose training_step steps its own optimizers (`manual.py`); the loop around it is the same.

Where the loop is lives in `self.state` (a `LoopState`, saved in every checkpoint); stops and
non-finite losses are decided in stopping.py, metrics in metrics.py, the step under a module's
own optimization hooks in automatic.py.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import RandomSampler

from . import automatic, checkpointing, manual, optim, stopping
from . import distributed as D
from .batch import prepare_batch
from .checkpoint import isolate_rng
from .evaluation import as_list, batches, prepare_loaders, run_eval
from .loggers import lightning_hparams
from .loop_state import LoopState
from .module import Module, batch_preparer
from .optim import LightningOptimizer, parse_optimizers
from .precision import NULL_CONTEXT
from .states import RunningStage
from .version import __version__

if TYPE_CHECKING:
    from .trainer import Trainer


class FitLoop:
    """`trainer.fit_loop`: runs a fit over the trainer's module, loaders and optimizers."""

    # Only these attributes: setting another of Lightning's loop attributes fails instead of being ignored.
    __slots__ = ("trainer", "state", "automatic", "epoch_rng", "loaders_epoch", "started")

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.state = LoopState()
        self.automatic = True  # module.automatic_optimization, read once per fit
        self.epoch_rng: dict[str, Any] | None = None  # random state at the epoch's start (D.epoch_iterator)
        self.loaders_epoch = 0  # the epoch the current loaders were made for (reload_dataloaders_every_n_epochs)
        self.started = False  # the restore and sanity check passed: from here on, a failure is recorded

    # Lightning's `trainer.fit_loop.max_epochs` & co. (e.g. raised before resuming): the Trainer's bounds.
    max_epochs = property(lambda self: self.trainer.max_epochs, lambda self, v: setattr(self.trainer, "max_epochs", v))
    max_steps = property(lambda self: self.trainer.max_steps, lambda self, v: setattr(self.trainer, "max_steps", v))
    min_epochs = property(lambda self: self.trainer.min_epochs, lambda self, v: setattr(self.trainer, "min_epochs", v))
    min_steps = property(lambda self: self.trainer.min_steps, lambda self, v: setattr(self.trainer, "min_steps", v))

    def run(self) -> None:
        trainer, state, hooks = self.trainer, self.state, self.trainer.hooks
        self._log_hyperparameters()
        hooks.call("on_fit_start")
        if trainer.resumed_from is None and trainer.has_validation and trainer.num_sanity_val_steps > 0:
            trainer.sanity_checking, trainer.state.stage = True, RunningStage.SANITY_CHECKING
            hooks.call("on_sanity_check_start")
            with isolate_rng(trainer.device):  # as Lightning: noise drawn in validation_step leaves training alone
                run_eval(trainer, "val", trainer.val_loader, trainer.limit_val_batches, trainer.num_sanity_val_steps)
            hooks.call("on_sanity_check_end")
            trainer.sanity_checking = False
        self.started = True
        start = getattr(trainer.logger, "start", None)  # W&B: the run starts now
        if trainer.is_global_zero and callable(start):
            start()
        trainer.state.stage = RunningStage.TRAINING
        self.loaders_epoch = state.epoch  # the loaders fit made serve this epoch (also after a resume)
        hooks.call("on_train_start")
        while not state.should_stop:
            if trainer.max_epochs is not None and state.epoch >= trainer.max_epochs:
                trainer.request_stop("max_epochs")
                break
            if trainer.max_steps >= 0 and state.global_step >= trainer.max_steps:
                trainer.request_stop("max_steps")
                break
            self._maybe_reload_loaders()
            self.run_epoch()
            if state.epoch_done:
                state.epoch, state.batches_done, state.epoch_done = state.epoch + 1, 0, False
        if state.stop_reason in ("max_epochs", "max_steps"):
            state.should_stop = False  # as Lightning's: reaching a limit is not a stop request
        stopping.check_finite(trainer)  # the last steps' losses, before the end hooks save anything
        stopping.announce(trainer)
        if trainer.fast_dev_run:
            state.stop_reason = "fast_dev_run"
        hooks.call("on_train_end")
        hooks.call("on_fit_end")

    def run_epoch(self) -> None:
        trainer, state, module = self.trainer, self.state, self.trainer.module
        n, manual = trainer.num_training_batches, not self.automatic
        k = 1 if manual else trainer.accumulate_grad_batches
        # The epoch's shuffle; after a mid-epoch resume, past what the checkpoint had trained.
        data, self.epoch_rng = D.epoch_iterator(
            trainer.train_loader, state.epoch, state.batches_done, trainer.world_size, self.epoch_rng
        )
        results = trainer.metrics.train
        if state.batches_done == 0:
            results.reset("train")
        trainer.metrics.current = results
        trainer.hooks.call("on_train_epoch_start")
        stopping.agree_stop(trainer)
        if state.val_pending and state.batches_done < n and not state.stop_agreed:
            self.validate()  # cut short by a stop signal before the save: run it again first
        module.train()
        # Once per epoch, everything the step reads: at ~300 µs a step, attribute lookups add up.
        step_fn, backward, optimizer_step, plain = self._step_body(manual)
        batch_idx, val_every = state.batches_done, self._val_every(n)
        env, device, dtype, precision = trainer.env, trainer.device, trainer.precision.input_dtype, trainer.precision
        distributed, strategy, t, now = env.active, trainer.strategy, trainer.timer, time.perf_counter
        prepare = batch_preparer(module, trainer.datamodule) or prepare_batch
        hooks = trainer.hooks
        start_hooks, end_hooks = hooks.for_("on_train_batch_start"), hooks.for_("on_train_batch_end")
        step_hooks = hooks.for_("on_before_optimizer_step")
        autocast = precision.autocast()  # one context, entered every step
        # A stop can wait for the next sync point; a skip must know before the optimizer step
        # (under DDP that is one all-reduce per step, the price of on_nonfinite_loss=skip).
        defer = trainer.on_nonfinite_loss == "stop"
        exact = not self._reads_loss_late()  # one CPU process (or skip): the exact check, every step
        agree_each_step = distributed and exact  # the same on every rank
        every, buffers = trainer.log_every_n_steps, strategy.ddp_buffers
        finite: Any = True  # a bool, or a device tensor read once per optimizer step (skip)
        # 16-mixed: a window whose training_steps all returned None has no backward, so nothing for the
        # GradScaler to unscale or step (it would fail); the step is counted as under 32 but not taken.
        scaling = idle = precision.scaling and not manual  # idle: True until a backward in the window
        manual_scaling = manual and precision.scaling
        halt = False
        while batch_idx < n and not state.stop_agreed and not halt:  # one optimizer window per pass
            first = batch_idx - batch_idx % k  # (a mid-window resume finishes its window)
            end = min(first + k, n)
            window = end - first
            while batch_idx < end and not state.stop_agreed:  # the window's micro-batches (a validation may stop)
                start = now()
                try:
                    batch = next(data)
                except StopIteration:  # a loader without len() ends the epoch here
                    n = trainer.num_training_batches = batch_idx
                    halt = True
                    break
                waited = now() - start
                batch, batch_size = prepare(batch, device, dtype)
                results.batch_size = batch_size
                for fn in start_hooks:
                    fn(batch, batch_idx)
                step_now = batch_idx + 1 == end
                if manual:  # training_step runs its own backward passes and optimizer steps
                    for buffer in buffers:  # what DDP does before each forward: rank 0's buffers everywhere
                        torch.distributed.broadcast(buffer, 0)
                    steps_before = state.global_step
                    with autocast:
                        outputs = step_fn(batch, batch_idx)
                    if manual_scaling:  # one scale update per training step, after all its optimizer steps
                        precision.update()
                    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
                    if isinstance(loss, torch.Tensor):  # read at the next sync point: the module has stepped
                        ok = torch.isfinite(loss.detach()).all()
                        state.unchecked = ok if state.unchecked is None else state.unchecked & ok
                else:
                    if plain:
                        outputs = step_fn(batch, batch_idx)
                    else:
                        with strategy.no_sync(not step_now), autocast:
                            outputs = step_fn(batch, batch_idx)
                    loss = outputs if isinstance(outputs, torch.Tensor) else _loss_of(outputs)
                    if loss is not None:
                        if loss.is_cpu:  # .item() waits for nothing on the CPU: check every step, exactly
                            if exact:
                                finite = finite is True and math.isfinite(loss.item())
                            elif not math.isfinite(loss.item()):  # DDP: the ranks agree at the next sync point
                                state.unchecked = False
                        else:  # reading a device value now would stall the accelerator's queue
                            ok = torch.isfinite(loss.detach())
                            if defer:
                                state.unchecked = ok if state.unchecked is None else state.unchecked & ok
                            else:
                                finite = ok if finite is True else finite & ok
                        loss = loss / window if window > 1 else loss  # x / 1 is x: skip the op
                        backward(loss)
                        idle = False
                    elif step_now and strategy.ddp is not None:  # None where DDP syncs: sync anyway
                        strategy.sync_without_loss(trainer, batch_idx)
                        idle = False
                batch_idx = state.batches_done = batch_idx + 1
                t.wait, t.samples, t.batches = t.wait + waited, t.samples + batch_size, t.batches + 1
                if manual:  # each opt.step() in training_step counted one global step
                    trainer.should_log = state.global_step // every > steps_before // every
                    if trainer.should_log or (distributed and state.global_step >= state.sync_step):
                        if not stopping.step_sync(trainer):
                            halt = True
                            break  # stop before anything reads or saves these weights
                elif step_now:  # the window's end: one optimizer step
                    if agree_each_step:  # every rank skips/stops alike
                        finite = env.all_reduce(torch.as_tensor(finite, device=device).float(), "min") > 0
                    if idle:
                        self._idle_step()
                    elif finite is True or finite:
                        optimizer_step(step_hooks)
                    elif not stopping.nonfinite_step(trainer):
                        halt = True
                        break  # stop before counting a step that was not taken
                    finite, idle = True, scaling
                    state.global_step = step = state.global_step + 1
                    trainer.should_log = step % every == 0
                    if trainer.should_log or (distributed and step >= state.sync_step):
                        if not stopping.step_sync(trainer):
                            halt = True
                            break  # stop before anything reads or saves these weights
                else:
                    trainer.should_log = False  # inside a window: callbacks log on the optimizer step only
                t.total += now() - start
                if val_every and batch_idx % val_every == 0 and batch_idx < n:
                    self.validate()  # before the batch-end hooks, so a checkpoint there includes it
                if end_hooks:  # after every batch (Lightning), with Lightning's outputs: {"loss": detached, ...}
                    out = _manual_outputs(outputs) if manual else _batch_outputs(outputs, loss)
                    for fn in end_hooks:
                        fn(out, batch, batch_idx - 1)
            if halt or batch_idx < end:
                break
            # After the window's optimizer step: its log row, max_steps, and any stop requested in it.
            if trainer.metrics.pending:
                trainer.metrics.flush(trainer)
            if trainer.max_steps >= 0 and state.global_step >= trainer.max_steps:
                trainer.request_stop("max_steps")
                state.stop_agreed = True  # the same step on every rank: nothing to agree on
            if state.signal is not None or state.should_stop != state.stop_agreed:
                stopping.agree_stop(trainer, collective=False)  # under DDP: agreed at the next sync point
        self.end_epoch(batch_idx, n)

    def end_epoch(self, batch_idx: int, n: int) -> None:
        """The epoch-end work: validation, on_train_epoch_end, epoch metrics and schedulers."""
        trainer, state, metrics = self.trainer, self.state, self.trainer.metrics
        if batch_idx < n or not stopping.check_finite(trainer):
            return  # stopped mid-epoch: the epoch-end work belongs to the resumed run
        state.epoch_done, trainer.at_epoch_end = True, True
        epoch_val = (state.epoch + 1) % trainer.check_val_every_n_epoch == 0
        if trainer.has_validation and epoch_val:
            self.validate()
            if state.val_pending:  # cut short by a stop signal: the resumed run validates, then ends the epoch
                state.epoch_done = trainer.at_epoch_end = False
                return
        metrics.current = metrics.train
        metrics.train.epoch_end = True  # self.log in on_train_epoch_end means an epoch value
        trainer.module.on_train_epoch_end()
        metrics.train.epoch_end = False
        metrics.epoch_end(trainer, metrics.train.compute_epoch())
        if self.automatic:  # under manual optimization the module steps its schedulers
            optim.step_schedulers(trainer, "epoch")
        trainer.hooks.call("on_train_epoch_end")
        metrics.flush(trainer)
        stopping.agree_stop(trainer)
        trainer.at_epoch_end = False

    def _step_body(self, manual: bool) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], bool]:
        """(training step, backward, optimizer step, whether the step needs no context around it)."""
        trainer = self.trainer
        hooks, strategy, precision = trainer.hooks, trainer.strategy, trainer.precision
        step_fn: Callable[..., Any] = strategy.step_fn
        if manual:  # the module's own backward and steps are timed inside it
            return hooks.timed("training_step (manual: with its backward and steps)", step_fn), _none, _none, False
        backward, optimizer_step = self.backward_fn(), hooks.timed("optimizer", self.optimizer_step)
        plain = precision.autocast() is NULL_CONTEXT and strategy.ddp is None and strategy.fsdp is None
        # A module overriding optimizer_step & co. steps through Lightning's closure (engine/automatic.py).
        hooked = automatic.hooked_step(trainer)
        if hooked is None:
            trainer.optimizers[0].zero_grad(set_to_none=True)  # nothing carries over from an unfinished window
        else:  # the closure enters its own contexts, runs backward (and zeroes), and the module steps
            step_fn, backward, optimizer_step, plain = hooked, automatic.no_backward, hooked.after_step, True
        return hooks.timed("forward (training_step)", step_fn), hooks.timed("backward", backward), optimizer_step, plain

    # -- the automatic step body's pieces --------------------------------------------------------
    def optimizer_step(self, hooks: list[Callable[..., Any]]) -> None:
        """Unscale, run on_before_optimizer_step `hooks`, clip, step, zero the gradients, step schedulers."""
        trainer = self.trainer
        optimizer, precision, clip = trainer.optimizers[0], trainer.precision, trainer.gradient_clip_val
        if hooks or clip is not None:
            precision.unscale(optimizer)  # hooks and clipping see true gradients, not scaled ones
            for fn in hooks:
                fn(optimizer)
            if clip is not None:
                optim.clip_gradients(optimizer, clip, trainer.gradient_clip_algorithm)
        if precision.scaling:
            stepped = precision.step(optimizer)
        else:
            optimizer.step()
            stepped = True
        optimizer.zero_grad(set_to_none=True)
        if stepped and trainer.lr_schedulers:
            optim.step_schedulers(trainer, "step")

    def _idle_step(self) -> None:
        """A window without backward under gradient scaling: no optimizer or scaler step (there are no
        gradients); the global step and step-interval schedulers advance as they do under 32."""
        trainer = self.trainer
        trainer.optimizers[0].zero_grad(set_to_none=True)
        if trainer.lr_schedulers:
            optim.step_schedulers(trainer, "step")

    def backward_fn(self) -> Callable[[torch.Tensor], None]:
        """`precision.backward`, wrapped in the backward hooks only where someone defines them.

        Lightning's order: on_before_zero_grad (first micro-batch of a window; the engine has
        already set the gradients to None after the last step), on_before_backward(loss),
        backward, on_after_backward.
        """
        trainer, hooks = self.trainer, self.trainer.hooks
        backward = trainer.precision.backward
        zero_grad, before, after = (
            hooks.for_(h) for h in ("on_before_zero_grad", "on_before_backward", "on_after_backward")
        )
        if not (zero_grad or before or after):
            return backward  # the common case: the loop calls backward itself, nothing in between
        k, state = trainer.accumulate_grad_batches, self.state

        def hooked(loss: torch.Tensor) -> None:
            if zero_grad and state.batches_done % k == 0:  # (the loop counts the batch after backward)
                for fn in zero_grad:
                    fn(trainer.optimizers[0])
            for fn in before:
                fn(loss)
            backward(loss)
            for fn in after:
                fn()

        return hooked

    # -- validation inside the fit ---------------------------------------------------------------
    def validate(self) -> None:
        """A validation during the fit (every val_check_interval batches, and at epoch ends)."""
        trainer, state = self.trainer, self.state
        if not stopping.check_finite(trainer):
            return
        with trainer.profiler.profile("[phase] validation"):
            if not self.automatic or state.batches_done % trainer.accumulate_grad_batches == 0 or state.epoch_done:
                trainer.module.on_validation_model_zero_grad()  # at an optimizer step, as Lightning (not mid-window)
            cut = run_eval(trainer, "val", trainer.val_loader, trainer.limit_val_batches, stoppable=True) is None
            state.val_pending = cut
            trainer.metrics.flush(trainer)
            trainer.metrics.current = trainer.metrics.train
        stopping.agree_stop(trainer)

    def _val_every(self, n: int) -> int:
        trainer = self.trainer
        v = trainer.val_check_interval
        if v is None or not trainer.has_validation or (isinstance(v, float) and v >= 1.0):
            return 0
        return max(1, int(n * v)) if isinstance(v, float) else int(v)

    def _reads_loss_late(self) -> bool:
        """With on_nonfinite_loss=stop, the loss flag waits for `check_finite` on an accelerator (a
        read stalls its queue) and under DDP (agreeing would be a collective per step); always under
        manual optimization (the module has stepped before the loop sees the loss)."""
        trainer = self.trainer
        return trainer.on_nonfinite_loss == "stop" and (
            trainer.device.type != "cpu" or not self.automatic or trainer.env.active
        )

    # -- what the module calls: `optimizer.step()` and `self.manual_backward(loss)` --------------------
    def lightning_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None, **kwargs: Any) -> Any:
        """`LightningOptimizer.step`: inside the module's optimizer_step (automatic optimization, through
        Lightning's closure) or in a manual training_step (counted as a global step)."""
        if self.automatic:
            return automatic.optimizer_step(self.trainer, optimizer, closure, **kwargs)
        return manual.step(self.trainer, optimizer, closure, **kwargs)

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """`Module.manual_backward`: the backward hooks, DDP's gradient sync and the scaler around backward."""
        manual.backward(self.trainer, loss, *args, **kwargs)

    # -- what fit sets up before the loop --------------------------------------------------------
    def set_loaders(self, train_dataloaders: Any, val_dataloaders: Any) -> None:
        """Prepare the loaders (the engine's resumable, sharded sampler unless use_distributed_sampler=False)."""
        trainer = self.trainer
        if trainer.use_distributed_sampler:
            seed = trainer.seed if trainer.seed is not None else 0
            sequential = trainer.overfit_batches > 0  # overfit the same batches every epoch
            train_dataloaders = D.prepare_loader(
                train_dataloaders, trainer.env, seed, train=True, sequential=sequential
            )
            val_dataloaders = prepare_loaders(trainer, val_dataloaders)
        elif trainer.overfit_batches > 0 and isinstance(getattr(train_dataloaders, "sampler", None), RandomSampler):
            raise ValueError(
                "overfit_batches with use_distributed_sampler=False needs a training loader that does not "
                "shuffle: DataLoader(..., shuffle=False)"
            )
        new = [train_dataloaders, *as_list(val_dataloaders)]
        for loader in (trainer.train_loader, *as_list(trainer.val_loader)):
            if loader is not None and all(loader is not n for n in new):
                D.shutdown_workers(loader)  # a reload: stop the old loaders' workers
        trainer.train_loader, trainer.val_loader = train_dataloaders, val_dataloaders
        trainer.train_num_workers = getattr(trainer.train_loader, "num_workers", 0)
        trainer.num_training_batches = batches(trainer.train_loader, trainer.limit_train_batches)
        self.loaders_epoch = self.state.epoch

    def configure_optimizers(self, module: Module) -> None:
        """What configure_optimizers returns, parsed; automatic optimization takes one optimizer."""
        trainer = self.trainer
        self.automatic = bool(module.automatic_optimization)
        if not self.automatic:
            manual.check_settings(trainer)
        trainer.optimizers, trainer.lr_schedulers = parse_optimizers(module.configure_optimizers())
        if self.automatic and len(trainer.optimizers) > 1:
            raise RuntimeError(
                "Training with multiple optimizers is only supported with manual optimization. Set "
                "`self.automatic_optimization = False`, then access your optimizers in `training_step` "
                "with `opt1, opt2, ... = self.optimizers()`."
            )
        trainer.lightning_optimizers = [LightningOptimizer(o, trainer) for o in trainer.optimizers]

    def _log_hyperparameters(self) -> None:
        """A generated project's run logs its config and the module's hparams; a plain Trainer logs
        Lightning's: the module's merged with the datamodule's (a clash is an error on every rank)."""
        trainer, module = self.trainer, self.trainer.module
        autolog = trainer.enable_autolog_hparams and bool(trainer.loggers)
        if autolog and trainer.config is not None:
            hparams = {"config": checkpointing.plain(trainer.config), "hparams": checkpointing.plain(module.hparams)}
        elif autolog:
            hparams = lightning_hparams(module, trainer.datamodule)
        if trainer.is_global_zero:
            if autolog:
                trainer.logger.log_hyperparams(hparams)
            if getattr(trainer.logger, "watch_mode", True):  # WandbLogger: only when asked (wandb.watch)
                trainer.logger.watch(module)

    def _maybe_reload_loaders(self) -> None:
        """reload_dataloaders_every_n_epochs: ask the datamodule for fresh loaders every n epochs."""
        trainer = self.trainer
        n = trainer.reload_dataloaders_every_n_epochs
        if not n or trainer.datamodule is None or self.state.epoch - self.loaders_epoch < n:
            return
        self.set_loaders(trainer.datamodule.train_dataloader(), trainer.datamodule.val_dataloader())

    # -- the fit's end ---------------------------------------------------------------------------
    def summary(self, status: str) -> dict[str, Any]:
        """What summary.json and the logger's run summary hold."""
        trainer, state, t = self.trainer, self.state, self.trainer.timer
        ckpt = trainer.checkpoint_callback
        return {
            "status": status,
            "global_step": state.global_step,
            "epoch": state.epoch,
            "stop_reason": state.stop_reason,
            "stop_message": state.stop_message,
            "best_model_path": ckpt.best_model_path if ckpt else "",
            "best_model_score": ckpt.best_model_score if ckpt else None,
            "last_model_path": ckpt.last_model_path if ckpt else "",
            "metrics": dict(trainer.callback_metrics),
            "wandb_run_id": getattr(trainer.logger, "run_id", None),
            "world_size": trainer.world_size,
            "host": socket.gethostname(),  # global rank 0's: where a multi-node run's summary and checkpoints came from
            "resumed_from": trainer.resumed_from,
            "samples_per_sec": t.samples_per_sec(trainer.world_size),
            "data_wait_frac": t.wait / t.total if t.total else None,
            "engine_version": __version__,
        }

    def finish(self, status: str) -> None:
        """The fit's end, whatever happened: free the wrapper and workers, then (rank 0) the logger's
        summary, summary.json and, after a Ctrl-C, how to resume."""
        trainer = self.trainer
        trainer.strategy.release()
        try:
            trainer.checkpoint_io.wait()
            for loader in (trainer.train_loader, *as_list(trainer.val_loader)):
                D.shutdown_workers(loader)
        finally:
            if trainer.is_global_zero:
                summary = self.summary(status)
                trainer.logger.log_summary(summary)
                trainer.logger.finalize(status)
                # A start that failed (a misfitting checkpoint) leaves a resumed run's summary as it was.
                path = trainer.default_root_dir / "summary.json"
                if not trainer.fast_dev_run and (self.started or not path.exists()):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".json.tmp")
                    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
                    os.replace(tmp, path)
                if self.state.stop_reason == "interrupted" and trainer.resume_command is None:
                    trainer.print(trainer.interrupted_line())


def _none(*args: Any) -> None:
    """The backward and optimizer step of a manual step body: training_step ran them."""


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss in what training_step returned: a tensor, a mapping with "loss", or None (skip)."""
    return outputs["loss"] if isinstance(outputs, Mapping) else outputs


def _batch_outputs(outputs: Any, loss: torch.Tensor | None) -> dict[str, Any]:
    """What on_train_batch_end gets, as Lightning: training_step's dict (or tensor) with "loss"
    detached and divided as backward saw it; {} when training_step returned None."""
    if loss is None:
        return {}
    if isinstance(outputs, Mapping):
        return {"loss": loss.detach(), **{k: v for k, v in outputs.items() if k != "loss"}}
    return {"loss": loss.detach()}


def _manual_outputs(outputs: Any) -> dict[str, Any]:
    """Manual optimization's on_train_batch_end outputs: training_step's dict (or {"loss": tensor}), detached."""
    out = dict(outputs) if isinstance(outputs, Mapping) else {} if outputs is None else {"loss": outputs}
    if isinstance(out.get("loss"), torch.Tensor):
        out["loss"] = out["loss"].detach()
    return out
