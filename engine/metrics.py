"""What `self.log` recorded, where it goes (loggers, callbacks, progress bar) and how ranks share it.

`trainer.metrics` holds the two stores `self.log` writes into (training, and evaluation),
Lightning's `callback_metrics` / `logged_metrics`, and the values queued for the loggers
(sent once per step by `flush`). Under DDP the ranks' callbacks see rank 0's values: at a
logging step rank 0 broadcasts them (one process: nothing to share), and between logging steps
they ride in the stop agreement's all-reduce (`agreement_values` / `take_agreement`, called by
`stopping.sync`), so no collective is added for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .loggers import send_metrics
from .results import Results
from .states import TrainerFn

if TYPE_CHECKING:
    from .trainer import Trainer


class Metrics:
    def __init__(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> None:
        self.train, self.eval = Results(reduce), Results(reduce)
        self.current = self.train  # where `self.log` writes now (`trainer.results`)
        self.callback: dict[str, float] = {}
        self.logged: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}  # the latest validation/test epoch values
        self.sanity_names: set[str] = set()  # what the sanity check's validation logged
        self.pending: dict[str, float] = {}  # queued for the loggers at the current step
        self.step: dict[str, float] = {}  # what the latest logging step logged
        self.log_keys: tuple[str, ...] = ()  # rank 0's step metric names, as all ranks last agreed

    def reset(self) -> None:
        """Each fit/validate/test/predict starts with no metrics, as in Lightning: callback_metrics
        after test() hold the test's values only, not the fit's."""
        # New dicts (not cleared ones): what an earlier verb returned or a caller kept stays as it was.
        self.callback, self.logged, self.last_eval, self.step = {}, {}, {}, {}
        self.sanity_names, self.log_keys = set(), ()
        self.train.reset("train")

    def names(self) -> set[str]:
        """Every metric name logged so far in this fit (callbacks check their `monitor` against it)."""
        train = self.train
        return {*self.callback, *self.sanity_names, *train.step, *train.epoch, *train.metric_objects}

    @property
    def prog_bar(self) -> set[str]:
        return self.train.prog_bar | self.eval.prog_bar

    def progress(self) -> dict[str, float]:
        """The training step values logged with ``prog_bar=True``."""
        values = self.train.step_values()
        return {k: v for k, v in values.items() if k in self.train.prog_bar}

    def progress_bar(self, fitting: bool) -> dict[str, float]:
        """Lightning's `progress_bar_metrics`: a fit's training and validation values; a
        validate() or test() run's own only."""
        shown = self.prog_bar
        train: dict[str, float] = {}
        if fitting:
            prog = self.train.prog_bar
            train = {k: v for k, v in self.callback.items() if k in prog and k not in self.last_eval}
            train.update(self.progress())
        return {**train, **{k: v for k, v in self.last_eval.items() if k in shown}}

    def log_step(self, trainer: Trainer, values: dict[str, float] | None = None) -> None:
        """A logging step: the step values to the loggers, and rank 0's to every rank's callbacks
        (`values`: under DDP rank 0's own, logged by it alone; the next agreement passes them on)."""
        if values is None:
            values = self.train.step_values()  # the one device sync per logging step
            shared = trainer.env.broadcast_object(self.train.with_plain_names(values))
        else:
            shared = self.train.with_plain_names(values)
        self.step = shared
        self.callback.update(shared)
        self.pending.update({**values, "epoch": float(trainer.current_epoch)})

    def epoch_end(self, trainer: Trainer, epoch_values: dict[str, float]) -> None:
        """The training epoch's values: to every rank's callbacks (rank 0's) and to the loggers."""
        latest = {**self.train.step_values(), **epoch_values}  # also between logging steps
        self.callback.update(trainer.env.broadcast_object(self.train.with_plain_names(latest)))
        self.pending.update({**epoch_values, "epoch": float(trainer.current_epoch)})

    def eval_end(self, trainer: Trainer, values: dict[str, float]) -> None:
        """A validation or test epoch's values (sanity check: only their names are kept)."""
        if trainer.sanity_checking:
            self.sanity_names = set(values)
            return
        self.last_eval = trainer.env.broadcast_object(values)
        # Lightning's callback_metrics: epoch values under the logged name and, for values logged
        # with both on_step and on_epoch, under the plain name too (never the `_step` values).
        self.callback.update(self.eval.with_plain_names(self.last_eval))
        self.pending.update(values)  # validation and test epoch values go to the loggers (as Lightning)

    def eval_step(self, trainer: Trainer) -> None:
        """An evaluation batch's on_step values: to the loggers at the current training step."""
        results = self.eval
        values = results.step_values()
        results.step.clear()
        if trainer.sanity_checking:
            return
        values = {k: v for k, v in values.items() if k not in results.hidden}
        self.logged.update(values)
        if trainer.is_global_zero and values:
            # At the current training step: a logger's step must not go backwards (W&B drops such rows).
            trainer.logger.log_metrics(values, step=trainer.global_step)

    def flush(self, trainer: Trainer) -> None:
        """Send what was queued at this step to the loggers (rank 0), once."""
        if not self.pending:
            return
        metrics = {k: v for k, v in self.pending.items() if k not in self.current.hidden}
        self.pending = {}
        self.logged.update(metrics)
        self.logged.pop("epoch", None)  # sent to the loggers, but not one of the logged metrics
        if trainer.is_global_zero and metrics:
            # Lightning's loggers get Lightning's step: during fit, the optimizer steps before this batch's.
            fitting = trainer.state.fn == TrainerFn.FITTING and trainer.global_step > 0
            lightning_step = trainer.global_step - 1 if fitting else trainer.global_step
            send_metrics(trainer.logger, metrics, trainer.global_step, lightning_step, trainer.current_epoch)

    # -- rank 0's step values inside the stop agreement (`stopping.sync`) ----------------------------
    def agreement_values(self, lead: bool) -> tuple[float, list[float]]:
        """Whether rank 0 logged names the ranks do not know yet, and each known name's value then
        whether rank 0 has it (zeros from the other ranks: the sum is rank 0's value exactly)."""
        keys, step = self.log_keys, self.step
        if not lead:
            return 0.0, [0.0] * (2 * len(keys))
        changed = float(not step.keys() <= set(keys))
        return changed, [step.get(k, 0.0) for k in keys] + [float(k in step) for k in keys]

    def take_agreement(self, trainer: Trainer, changed: float, got: list[float]) -> None:
        """Every rank's callback_metrics get rank 0's step values (new names: one broadcast)."""
        keys = self.log_keys
        if changed:
            step = trainer.env.broadcast_object(self.step)
            self.log_keys = tuple(dict.fromkeys((*keys, *step)))
            self.callback.update(step)
        elif keys:
            n = len(keys)
            self.callback.update({k: v for k, v, has in zip(keys, got[:n], got[n:], strict=True) if has})
