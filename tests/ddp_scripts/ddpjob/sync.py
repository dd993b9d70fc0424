"""``torchrun --nproc_per_node=2 -m ddpjob.sync OUT``: what the ranks say to each other, and when.

Every torch.distributed verb is wrapped to record the loop position it was called at, so the
test can see that steps between the loop's sync points run no collective of the engine's
(DDP's gradient all-reduce goes through its reducer, counted here by a comm hook). Then stops
that one rank alone asks for (a signal it sent itself, early stopping, max_time) with sparse
logging, where only the interval check, a validation or the epoch end can agree on them. Each
rank writes what it saw to ``OUT/sync-rank<r>.json``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F

from .engine import EarlyStopping, ModelCheckpoint, Trainer, seed_everything
from .engine import distributed as D
from .engine.checkpoint import load_checkpoint
from .job import DataConfig, ModelConfig, ToyClassifier, ToyData

VERBS = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast_object_list",
    "gather",
    "gather_object",
    "scatter",
    "scatter_object_list",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "barrier",
    "send",
    "recv",
)
SIGNAL_AT = 20  # the global step at which rank 1 sends itself SIGUSR1


class Recorder:
    """Wraps torch.distributed's verbs; while `trainer` is set, logs (epoch, batches done, step, verb)."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.in_grad_hook = False  # DDP's gradient all-reduce, through the counting comm hook below
        self.calls: list[tuple[int, int, int, str]] = []
        for name in VERBS:
            if hasattr(dist, name):
                setattr(dist, name, self._wrap(name, getattr(dist, name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            t = self.trainer
            if t is not None and not self.in_grad_hook:
                self.calls.append((t.current_epoch, t.fit_loop.state.batches_done, t.global_step, name))
            return fn(*args, **kwargs)

        return counted


class Plain(ToyClassifier):
    """Logs its loss on every step without sync_dist: nothing in the step asks for a collective."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        trainer = self.trainer
        if self.cfg.stop_hook == "signal" and trainer.env.rank == 1 and trainer.global_step == SIGNAL_AT:
            self.signalled_at = time.perf_counter()
            os.kill(os.getpid(), signal.SIGUSR1)  # this rank only
        if self.cfg.step_sleep:
            time.sleep(self.cfg.step_sleep)
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss


class GradSyncs:
    """Counts DDP's gradient all-reduces (one bucket per step for this model) and records the end time."""

    def __init__(self, recorder: Recorder | None) -> None:
        self.count = 0
        self.ended_at = 0.0
        self.recorder = recorder

    def on_train_start(self, trainer: Any, module: Any) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def hook(state, bucket):  # DDP checks annotations: leave them off
            self.count += 1
            if self.recorder is None:
                return allreduce_hook(None, bucket)
            self.recorder.in_grad_hook = True  # torch's hook calls dist.all_reduce: not the engine's
            try:
                return allreduce_hook(None, bucket)
            finally:
                self.recorder.in_grad_hook = False

        trainer.strategy.ddp.register_comm_hook(None, hook)

    def on_train_end(self, trainer: Any, module: Any) -> None:
        self.ended_at = time.perf_counter()


def fit(out: Path, name: str, recorder: Recorder | None = None, **spec: Any) -> dict[str, Any]:
    seed_everything(42)
    cfg = ModelConfig(**spec.pop("model", {}))
    module = Plain(cfg)
    grads = GradSyncs(recorder)
    callbacks = [grads, *spec.pop("callbacks", [])]
    trainer = Trainer(
        accelerator="cpu",
        seed=42,
        num_sanity_val_steps=0,
        progress_bar=False,
        enable_model_summary=False,
        logger=None,
        default_root_dir=out / name,
        callbacks=callbacks,
        **{"max_epochs": 2, "log_every_n_steps": 1000, "enable_checkpointing": False, **spec},
    )
    if recorder is not None:
        recorder.trainer = trainer
    try:
        trainer.fit(module, datamodule=ToyData(DataConfig(batch_size=8, n_train=256, n_val=17)))
    finally:
        if recorder is not None:
            recorder.trainer = None
    record = {
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "batches_done": trainer.fit_loop.state.batches_done,
        "stop_reason": trainer.stop_reason,
        "grad_syncs": grads.count,
        "sync_every": trainer.fit_loop.state.sync_every,
    }
    if hasattr(module, "signalled_at"):
        record["delay_s"] = grads.ended_at - module.signalled_at
    return record


def main(out: Path) -> None:
    env = D.setup("cpu")
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    record: dict[str, Any] = {"rank": env.rank}
    # 16 steps an epoch on each rank; logging every 5 steps; the interval check once an hour.
    os.environ["SCAFFOLD_STOP_CHECK_S"] = "3600"
    record["count"] = fit(out, "count", recorder, log_every_n_steps=5, limit_val_batches=0)
    record["calls"] = recorder.calls
    # Stops asked for on one rank only, with logging too sparse to agree on them.
    record["max_time"] = fit(out, "max_time", max_time={"seconds": 0} if env.rank == 1 else None)
    stopper = EarlyStopping(monitor="val_loss", stopping_threshold=1e9)  # stops at its first check
    record["early_stopping"] = fit(
        out, "early_stopping", val_check_interval=5, callbacks=[stopper] if env.rank == 1 else []
    )
    # A signal on rank 1 only: the interval check (about 0.3 s of 20 ms steps) brings it to rank 0.
    os.environ["SCAFFOLD_STOP_CHECK_S"] = "0.3"
    ckpt = ModelCheckpoint(dirpath=out / "signal" / "checkpoints", save_last=True, every_n_epochs=None)
    record["signal"] = fit(out, "signal", model={"stop_hook": "signal", "step_sleep": 0.02}, callbacks=[ckpt])
    env.barrier()
    record["signal"]["saved_step"] = load_checkpoint(out / "signal" / "checkpoints" / "last.ckpt")["loop"][
        "global_step"
    ]
    (out / f"sync-rank{env.rank}.json").write_text(json.dumps(record, indent=1))
    D.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
