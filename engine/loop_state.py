"""Where a fit is and what it has decided: the loop's state, saved in every checkpoint as "loop".

`Trainer.global_step`, `current_epoch`, `should_stop` ... are Lightning's names for fields here.
Only the position is saved (a stop, a non-finite loss or the sync schedule belong to one run);
`load_state_dict` also reads the checkpoints of earlier engine versions (the same keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .distributed import DEFAULT_STOP_CHECK_S


@dataclass
class LoopState:
    # The position: saved and restored.
    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0  # in the current epoch (a mid-epoch checkpoint resumes after them)
    epoch_done: bool = False  # the epoch-end work (validation, epoch metrics, schedulers) ran
    val_pending: bool = False  # a validation a stop signal cut short: the resumed run repeats it
    # Stopping: requested (`should_stop`), and agreed by every rank (what the loop obeys).
    should_stop: bool = False
    stop_agreed: bool = False
    stop_reason: str | None = None
    stop_message: str = ""
    stop_announced: bool = False
    signal: int | None = None  # a SIGTERM/SIGUSR1/SIGINT received, acted on after the current step
    # Non-finite losses: a flag read where the loop syncs anyway (see `stopping.check_finite`).
    unchecked: torch.Tensor | bool | None = None  # finiteness of the losses since the last read
    checked_at: int = 0  # global_step of the last read
    nonfinite_seen: bool = False
    # Under DDP, the ranks' agreement schedule (see `stopping.sync`): every `sync_every` steps.
    sync_every: int = 1
    sync_step: int = 0  # global_step of the next agreement by interval
    sync_mark: tuple[int, float] | None = None  # (global_step, time) of the last agreement
    synced_at: tuple[int, int, int] | None = None  # loop position of the last agreement
    stop_check_s: float = DEFAULT_STOP_CHECK_S

    def new_run(self, stop_check_s: float) -> None:
        """A verb starts: no loss read and no agreement yet. The position and a stop stay as they
        are (a second fit continues the first; its stop reason is still the run's)."""
        self.unchecked, self.checked_at, self.nonfinite_seen = None, 0, False
        self.sync_every, self.sync_step, self.sync_mark, self.synced_at = 1, 0, None, None
        self.stop_check_s = stop_check_s

    def position(self) -> tuple[int, int, int]:
        """Where the loop is (the same on every rank): agreements made here need not be repeated."""
        return self.epoch, self.batches_done, self.global_step

    def state_dict(self, batch_size: int | None, world_size: int) -> dict[str, Any]:
        """The checkpoint's "loop" entry; the global batch says whether a mid-epoch resume fits."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "batches_done": self.batches_done,
            "epoch_done": self.epoch_done,
            "val_pending": self.val_pending,
            "batch_size": batch_size,
            "world_size": world_size,
            "global_batch_size": (batch_size or 0) * world_size,
        }

    def load_state_dict(self, loop: dict[str, Any]) -> None:
        """Continue where `loop` was: after a finished epoch, at the next one's start."""
        self.epoch, self.global_step = loop["epoch"], loop["global_step"]
        self.batches_done, self.epoch_done = loop["batches_done"], loop["epoch_done"]
        self.val_pending = bool(loop.get("val_pending", False))
        if self.epoch_done:
            self.epoch, self.batches_done, self.epoch_done = self.epoch + 1, 0, False

    @staticmethod
    def mid_epoch(loop: dict[str, Any]) -> bool:
        """Whether a saved "loop" entry stopped inside an epoch (its data order must be continued)."""
        return not loop.get("epoch_done") and bool(loop.get("batches_done"))

    @staticmethod
    def global_batch(loop: dict[str, Any]) -> int:
        """A saved "loop" entry's global batch, batch_size x processes (older checkpoints lack the key)."""
        return (loop.get("batch_size") or 0) * (loop.get("world_size") or 1)


@dataclass
class Timer:
    """Running totals for the bottleneck report (seconds, samples, batches)."""

    wait: float = 0.0
    total: float = 0.0
    samples: int = 0
    batches: int = 0

    def samples_per_sec(self, world_size: int) -> float | None:
        """The whole job's rate: under DDP every process trains as many samples (the sampler pads)."""
        return self.samples * world_size / self.total if self.total > 0 else None
