"""When the fit loop stops: signals, min_epochs / min_steps, non-finite losses, and under DDP
the ranks' agreement on all of them (one all-reduce at sync points).

Each function takes the Trainer as its first argument (this file never imports trainer.py).
The loop reads `trainer._stop_agreed`, which only `agree_stop` sets from `should_stop`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .trainer import Trainer

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; scripts/slurm.sbatch requeues on it
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
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
    trainer._stop_agreed = trainer.should_stop
    if trainer._stop_agreed:
        trainer._announce_stop()


def note_stop(trainer: Trainer) -> None:
    """This rank's own view: a signal becomes a stop; min_epochs / min_steps hold a soft stop back."""
    if trainer._signal == signal.SIGINT:
        trainer.request_stop(
            "interrupted",
            f"interrupted (Ctrl-C) at step {trainer.global_step}: saving a checkpoint; "
            "press Ctrl-C again to exit at once without saving",
        )
    elif trainer._signal is not None:
        name = signal.Signals(trainer._signal).name
        trainer.request_stop("preempted", f"received {name}; saving and exiting with code {PREEMPTED_EXIT_CODE}")
    if trainer.should_stop and (trainer.min_epochs or trainer.min_steps) and below_minimum(trainer):
        trainer.print(
            f"min_epochs={trainer.min_epochs} / min_steps={trainer.min_steps} not reached: training continues"
        )
        trainer.should_stop, trainer.stop_reason, trainer.stop_message = False, None, ""


def below_minimum(trainer: Trainer) -> bool:
    """Whether min_epochs / min_steps hold back the requested stop (never a safety stop)."""
    if trainer.stop_reason in HARD_STOPS:
        return False
    epochs_done = trainer.current_epoch + int(trainer._epoch_done)
    return (trainer.min_epochs is not None and epochs_done < trainer.min_epochs) or (
        trainer.min_steps is not None and trainer.global_step < trainer.min_steps
    )


def position(trainer: Trainer) -> tuple[int, int, int]:
    """Where the loop is (the same on every rank): agreements made here need not be repeated."""
    return trainer.current_epoch, trainer._batches_done, trainer.global_step


def step_sync(trainer: Trainer) -> bool:
    """After a logging step's optimizer step, or under DDP an agreement step (every
    `_sync_every` steps). False: a non-finite loss, stop before anything reads or saves
    these weights.

    In one process: check the losses, then log. Under DDP a logging step is rank 0's
    alone (it logs its own values; the other ranks' callbacks receive them at the next
    agreement, before any save, validation or epoch end reads them), so only the
    interval's agreements are collectives.
    """
    if not trainer.env.active:
        if not trainer.check_finite():
            return False
        trainer._log_step()
        return True
    if trainer.global_step >= trainer._sync_step:
        agree_stop(trainer)
        if trainer._nonfinite_seen:
            return False
    if trainer.should_log and trainer.is_global_zero:
        trainer._log_step(trainer._train_results.step_values())  # one device sync, on rank 0 only
    return True


def sync(trainer: Trainer) -> None:
    """Under DDP, the ranks' one agreement: a single all-reduce (sum) of a small float64 tensor.

    It carries whether any rank saw a non-finite loss since the last agreement (a device
    flag on GPUs, never read before), how many ranks want to stop, rank 0's seconds per
    step, and the step metrics rank 0 logged last (the other ranks add zeros, so the sum
    is rank 0's value exactly), which become every rank's `callback_metrics`. The step
    time sets, identically on every rank, the steps until the next agreement: about
    `SCAFFOLD_STOP_CHECK_S` seconds of training. Rarely a second round follows: the stop
    reasons (when a rank stops) or rank 0's metric names (when new ones appear).
    """
    flag, trainer._unchecked = trainer._unchecked, None
    lead, keys, step = trainer.is_global_zero, trainer._log_keys, trainer._step_metrics
    seconds, mark = 0.0, trainer._sync_mark
    if lead and mark is not None and trainer.global_step > mark[0]:
        seconds = (time.perf_counter() - mark[1]) / (trainer.global_step - mark[0])
    changed = float(lead and not step.keys() <= set(keys))
    values = [float(flag is False), float(trainer.should_stop), seconds, changed]
    if lead:  # each key's value, then whether rank 0 has it
        values += [step.get(k, 0.0) for k in keys] + [float(k in step) for k in keys]
    else:
        values += [0.0] * (2 * len(keys))
    vec = torch.tensor(values, dtype=torch.float64, device=trainer.device)
    if isinstance(flag, torch.Tensor):  # queued on the device: read below with everything else
        vec[0] = flag.logical_not().any().to(torch.float64)
    bad, stops, seconds, changed, *got = trainer.env.all_reduce(vec, "sum").tolist()
    if changed:
        step = trainer.env.broadcast_object(step)
        trainer._log_keys = tuple(dict.fromkeys((*keys, *step)))
        trainer.callback_metrics.update(step)
    elif keys:
        n = len(keys)
        trainer.callback_metrics.update({k: v for k, v, has in zip(keys, got[:n], got[n:], strict=True) if has})
    if stops:
        mine = (trainer.stop_reason, trainer.stop_message) if trainer.should_stop else None
        reason, message = next(r for r in trainer.env.gather_object(mine) if r is not None)  # lowest rank's
        trainer.should_stop, trainer.stop_reason, trainer.stop_message = True, reason, message
    if bad:
        found_nonfinite(trainer)
    else:
        trainer._checked_at = trainer.global_step
    if seconds > 0:
        trainer._sync_every = max(1, int(trainer._stop_check_s / seconds))
    trainer._sync_step = trainer.global_step + trainer._sync_every
    trainer._sync_mark, trainer._synced_at = (trainer.global_step, time.perf_counter()), position(trainer)


def check_finite(trainer: Trainer) -> bool:
    """Whether every training loss so far was finite; callbacks that save weights ask first.

    On an accelerator (with on_nonfinite_loss=stop) this reads the loss flag gathered
    since the last read, one sync, instead of a sync every step. On a non-finite loss it
    requests the stop, and the loop stops before the weights are logged, validated or
    saved. Under DDP it is an agreement point (`agree_stop`, once per loop position):
    every rank calls it at the same points, so the all-reduce lines up.
    """
    if trainer._nonfinite_seen:
        return False
    if trainer.env.active:
        if trainer._synced_at != position(trainer):
            agree_stop(trainer)
        return not trainer._nonfinite_seen
    if trainer._unchecked is None:
        return True  # nothing to read
    flag, trainer._unchecked = trainer._unchecked, None
    if bool(flag):
        trainer._checked_at = trainer.global_step
        return True
    found_nonfinite(trainer)
    return False


def found_nonfinite(trainer: Trainer) -> None:
    trainer._nonfinite_seen = True
    first, last = trainer._checked_at + 1, trainer.global_step
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

    def handler(signum: int, frame: Any) -> None:
        if trainer._signal is not None and signal.SIGINT in (signum, trainer._signal):
            # A second Ctrl-C (or a launcher's SIGTERM after it): the user wants out now.
            os.write(2, b"\ninterrupted again: exiting now, without saving\n")
            os._exit(INTERRUPTED_EXIT_CODE)
        trainer._signal = signum  # acted on after the current step

    previous = {}
    # SIGINT too: the first Ctrl-C finishes the step and saves, as SIGTERM does. torchrun and
    # `trainer.devices=N` start the workers in their own session: the launcher forwards it once.
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)):
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    return previous
