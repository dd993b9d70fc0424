"""Lightning's `trainer.state`: which verb runs (fn), which loop (stage), and how it ended (status)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; scripts/slurm.sbatch requeues on it
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C


class TrainerFn(str, Enum):
    """`trainer.state.fn`: the verb running."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    def __str__(self) -> str:
        return self.value


class RunningStage(str, Enum):
    """`trainer.state.stage`: the loop running (training inside fit is "train", as in Lightning)."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    def __str__(self) -> str:
        return self.value


class TrainerStatus(str, Enum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


@dataclass
class TrainerState:
    """Lightning's `trainer.state`: what the trainer is doing (strings compare equal to the members)."""

    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        return self.status == TrainerStatus.INTERRUPTED
