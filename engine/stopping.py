"""When the fit loop stops: signals, min_epochs / min_steps, non-finite losses, and under DDP
the ranks' agreement on all of them (one all-reduce at sync points).

Each function takes the Trainer first and keeps its decisions in the loop's state
(`trainer.fit_loop.state`, a `LoopState`): the loop obeys `state.stop_agreed`, which only
`agree_stop` sets from `should_stop`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import torch

from .states import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE

if TYPE_CHECKING:
    from .trainer import Trainer

# Stops that min_epochs / min_steps never hold back (safety and the configured bounds).
HARD_STOPS = ("preempted", "nonfinite_loss", "max_steps", "max_epochs", "fast_dev_run", "interrupted", "failed")


def agree_stop(trainer: Trainer, collective: bool = True) -> None:
    """Make every rank take the same stop decision, for the same reason.

    Called where callbacks may have set `should_stop`: an epoch's start and end, after a
    validation, at saves (`check_finite`) and, with ``collective=False``, after a step that
    requested one. In one process the loop obeys at once. Under DDP a rank may stop alone (a
    signal, a timer or a metric only it saw); leaving the loop alone would hang the others in
    a collective, so a request waits for the next sync point, where one all-reduce (`sync`)
    tells every rank. Callbacks see rank 0's `callback_metrics` on every rank, so most
    decisions agree anyway.
    """
    note_stop(trainer)
    if trainer.env.active:
        if not collective:
            return  # this rank alone: the next sync point agrees
        sync(trainer)
    state = trainer.fit_loop.state
    state.stop_agreed = state.should_stop
    if state.stop_agreed:
        announce(trainer)


def announce(trainer: Trainer) -> None:
    """Print the stop's message (``stopping: ...``) once, when the loop acts on it."""
    state = trainer.fit_loop.state
    if state.should_stop and state.stop_message and not state.stop_announced:
        state.stop_announced = True
        trainer.print(f"stopping: {state.stop_message}")


def note_stop(trainer: Trainer) -> None:
    """This rank's own view: a signal becomes a stop; min_epochs / min_steps hold a soft stop back."""
    state = trainer.fit_loop.state
    if state.signal == signal.SIGINT:
        trainer.request_stop(
            "interrupted",
            f"interrupted (Ctrl-C) at step {trainer.global_step}: saving a checkpoint; "
            "press Ctrl-C again to exit at once without saving",
        )
    elif state.signal is not None:
        name = signal.Signals(state.signal).name
        trainer.request_stop("preempted", f"received {name}; saving and exiting with code {PREEMPTED_EXIT_CODE}")
    if trainer.should_stop and (trainer.min_epochs or trainer.min_steps) and below_minimum(trainer):
        trainer.print(
            f"min_epochs={trainer.min_epochs} / min_steps={trainer.min_steps} not reached: training continues"
        )
        state.should_stop, state.stop_reason, state.stop_message = False, None, ""


def below_minimum(trainer: Trainer) -> bool:
    """Whether min_epochs / min_steps hold back the requested stop (never a safety stop)."""
    if trainer.stop_reason in HARD_STOPS:
        return False
    epochs_done = trainer.current_epoch + int(trainer.fit_loop.state.epoch_done)
    return (trainer.min_epochs is not None and epochs_done < trainer.min_epochs) or (
        trainer.min_steps is not None and trainer.global_step < trainer.min_steps
    )


def step_sync(trainer: Trainer) -> bool:
    """After a logging step's optimizer step, or under DDP an agreement step (every
    `sync_every` steps). False: a non-finite loss, stop before anything reads or saves
    these weights.

    In one process: check the losses, then log. Under DDP a logging step is rank 0's
    alone (it logs its own values; the other ranks' callbacks receive them at the next
    agreement, before any save, validation or epoch end reads them), so only the
    interval's agreements are collectives.
    """
    metrics = trainer.metrics
    if not trainer.env.active:
        if not check_finite(trainer):
            return False
        metrics.log_step(trainer)
        return True
    if trainer.global_step >= trainer.fit_loop.state.sync_step:
        agree_stop(trainer)
        if trainer.fit_loop.state.nonfinite_seen:
            return False
    if trainer.should_log and trainer.is_global_zero:
        metrics.log_step(trainer, metrics.train.step_values())  # one device sync, on rank 0 only
    return True


def sync(trainer: Trainer) -> None:
    """Under DDP, the ranks' one agreement: a single all-reduce (sum) of a small float64 tensor.

    It carries whether any rank saw a non-finite loss since the last agreement (a device
    flag on GPUs, never read before), how many ranks want to stop, rank 0's seconds per
    step, and the step metrics rank 0 logged last (the other ranks add zeros, so the sum
    is rank 0's value exactly: `Metrics.agreement_values`), which become every rank's
    `callback_metrics`. The step
    time sets, identically on every rank, the steps until the next agreement: about
    `SCAFFOLD_STOP_CHECK_S` seconds of training. Rarely a second round follows: the stop
    reasons (when a rank stops) or rank 0's metric names (when new ones appear).
    """
    state, lead, step = trainer.fit_loop.state, trainer.is_global_zero, trainer.global_step
    flag, state.unchecked = state.unchecked, None
    seconds, mark = 0.0, state.sync_mark
    if lead and mark is not None and step > mark[0]:
        seconds = (time.perf_counter() - mark[1]) / (step - mark[0])
    changed, metric_values = trainer.metrics.agreement_values(lead)
    vec = torch.tensor(
        [float(flag is False), float(state.should_stop), seconds, changed, *metric_values],
        dtype=torch.float64,
        device=trainer.device,
    )
    if isinstance(flag, torch.Tensor):  # queued on the device: read below with everything else
        vec[0] = flag.logical_not().any().to(torch.float64)
    bad, stops, seconds, changed, *got = trainer.env.all_reduce(vec, "sum").tolist()
    trainer.metrics.take_agreement(trainer, changed, got)
    if stops:
        mine = (state.stop_reason, state.stop_message) if state.should_stop else None
        reason, message = next(r for r in trainer.env.gather_object(mine) if r is not None)  # lowest rank's
        state.should_stop, state.stop_reason, state.stop_message = True, reason, message
    if bad:
        found_nonfinite(trainer)
    else:
        state.checked_at = step
    if seconds > 0:
        state.sync_every = max(1, int(state.stop_check_s / seconds))
    state.sync_step = step + state.sync_every
    state.sync_mark, state.synced_at = (step, time.perf_counter()), state.position()


def check_finite(trainer: Trainer) -> bool:
    """Whether every training loss so far was finite; callbacks that save weights ask first.

    On an accelerator (with on_nonfinite_loss=stop) this reads the loss flag gathered
    since the last read, one sync, instead of a sync every step. On a non-finite loss it
    requests the stop, and the loop stops before the weights are logged, validated or
    saved. Under DDP it is an agreement point (`agree_stop`, once per loop position):
    every rank calls it at the same points, so the all-reduce lines up.
    """
    state = trainer.fit_loop.state
    if state.nonfinite_seen:
        return False
    if trainer.env.active:
        if state.synced_at != state.position():
            agree_stop(trainer)
        return not state.nonfinite_seen
    if state.unchecked is None:
        return True  # nothing to read
    flag, state.unchecked = state.unchecked, None
    if bool(flag):
        state.checked_at = trainer.global_step
        return True
    found_nonfinite(trainer)
    return False


def found_nonfinite(trainer: Trainer) -> None:
    state = trainer.fit_loop.state
    state.nonfinite_seen = True
    first, last = state.checked_at + 1, trainer.global_step
    where = f"step {last}" if first == last else f"a step between {first} and {last}"
    trainer.request_stop(
        "nonfinite_loss",
        f"the training loss was not finite at {where}; the last checkpoint holds the last good weights",
    )


def nonfinite_step(trainer: Trainer) -> bool:
    """Drop this step's gradients; False when the loop must stop (on_nonfinite_loss=stop)."""
    trainer.optimizers[0].zero_grad(set_to_none=True)  # never apply a non-finite update
    message = f"the training loss is not finite at step {trainer.global_step}"
    if trainer.on_nonfinite_loss == "stop":
        trainer.request_stop("nonfinite_loss", message + "; the last checkpoint holds the last good weights")
        return False
    trainer.print(f"warning: {message}; skipping this step (trainer.on_nonfinite_loss=skip)")
    return True


def install_signal_handlers(trainer: Trainer) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    state = trainer.fit_loop.state

    def handler(signum: int, frame: Any) -> None:
        if state.signal is not None and signal.SIGINT in (signum, state.signal):
            # A second Ctrl-C (or a launcher's SIGTERM after it): the user wants out now.
            os.write(2, b"\ninterrupted again: exiting now, without saving\n")
            os._exit(INTERRUPTED_EXIT_CODE)
        state.signal = signum  # acted on after the current step

    previous = {}
    # SIGINT too: the first Ctrl-C finishes the step and saves, as SIGTERM does. torchrun and
    # `trainer.devices=N` start the workers in their own session: the launcher forwards it once.
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)):
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    return previous
