"""Model, data and probes of the DDP test project.

The data is a fixed synthetic 3-class problem; each sample carries its index, so a run can
report which samples each rank trained on. `Probe` writes what the tests assert on to
``<run dir>/rank<r>.json`` and ``weights-rank<r>.pt`` at the end of `fit`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .engine import DataConfig as EngineDataConfig
from .engine import DataModule, Module
from .engine.fsdp import local_bytes

STOP_HOOKS = ("on_train_epoch_start", "training_step", "on_train_batch_end", "on_validation_end", "on_train_epoch_end")


@dataclass
class ModelConfig:
    hidden: int = 32
    dropout: float = 0.0
    lr: float = 0.1
    # Test knobs. A stop request is made on `stop_rank` only (-1: the last rank) in `stop_hook`,
    # once global_step >= stop_step; it must stop every rank at the same step.
    stop_hook: str = ""
    stop_step: int = 0
    stop_rank: int = -1
    raise_step: int = -1  # raise in training_step on `raise_rank` at this global step
    raise_rank: int = 1
    step_sleep: float = 0.0  # seconds per training step: gives the signal tests time to act
    bad_save_step: int = -1  # from this global step on, checkpoints hold an object that cannot be saved


@dataclass
class DataConfig(EngineDataConfig):
    n_train: int = 128
    n_val: int = 33  # odd: the ranks' validation shards differ in size


def make_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(1234))
    y = (x @ w).argmax(dim=1)
    return TensorDataset(x, y, torch.arange(n))


class ToyData(DataModule):
    def __init__(self, cfg: DataConfig | None = None) -> None:
        self.cfg = cfg or DataConfig()

    def setup(self, stage: str) -> None:
        self.train = make_data(self.cfg.n_train, 0)
        self.val = make_data(self.cfg.n_val, 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.cfg.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.cfg.batch_size, shuffle=False)


class ToyClassifier(Module):
    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.save_hyperparameters(cfg)
        self.net = nn.Sequential(nn.Linear(8, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 3))
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
        self.seen: dict[int, list[int]] = {}  # epoch -> sample indices this rank trained on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, idx = batch
        trainer, cfg = self.trainer, self.cfg
        rank = trainer.env.rank
        if cfg.raise_step >= 0 and rank == cfg.raise_rank and trainer.global_step >= cfg.raise_step:
            raise RuntimeError(f"deliberate failure on rank {rank} at step {trainer.global_step}")
        if cfg.stop_hook == "training_step" and _stop_here(trainer, cfg) and batch_idx % 2 == 0:
            trainer.should_stop = True  # Lightning style, on a micro-batch that does not step
        if cfg.step_sleep:
            time.sleep(cfg.step_sleep)
        self.seen.setdefault(self.current_epoch, []).extend(idx.tolist())
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.log("train_loss_sync", loss, sync_dist=True)
        self.log("rank_unsynced", float(rank), on_step=True, on_epoch=True)  # differs per rank
        self.log("rank_mean", float(rank), sync_dist=True)  # (0 + 1) / 2 on two ranks
        self.log("rank_max", float(rank), on_step=False, on_epoch=True, reduce_fx="max", sync_dist=True)
        self.log(
            "rank_epoch_mean", float(rank), on_step=False, on_epoch=True, sync_dist=True
        )  # 0.5: each rank's own sums
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, idx = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_acc", self.val_acc)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_count", float(len(y)), reduce_fx="sum", sync_dist=True)
        self.log("val_max_index", idx.max().float(), reduce_fx="max", sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if 0 <= self.cfg.bad_save_step <= self.trainer.global_step:  # a save that fails after the shards are written
            checkpoint["callbacks"]["unsaveable"] = object()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # SGD: Adam's division by sqrt(v) would magnify float rounding in the 1- vs 2-process test.
        return torch.optim.SGD(self.parameters(), lr=self.cfg.lr, momentum=0.9)


def _stop_here(trainer: Any, cfg: ModelConfig) -> bool:
    stop_rank = cfg.stop_rank if cfg.stop_rank >= 0 else trainer.world_size - 1
    return trainer.env.rank == stop_rank and trainer.global_step >= cfg.stop_step


class RankStop:
    """Requests a stop on one rank only, in the hook `cfg.stop_hook` names."""

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.stop_hook and cfg.stop_hook not in STOP_HOOKS:
            raise ValueError(f"model.stop_hook must be one of {STOP_HOOKS}")
        self.cfg = cfg
        for hook in STOP_HOOKS:
            if hook == cfg.stop_hook and hook != "training_step":
                setattr(self, hook, self._maybe_stop)

    def _maybe_stop(self, trainer: Any, module: Any, *args: Any) -> None:
        if trainer.sanity_checking or not _stop_here(trainer, self.cfg):
            return
        trainer.request_stop("rank_stop", f"stop requested on rank {trainer.env.rank} only")


class Probe:
    """Records what each rank did; written at the end of fit (also after a preemption)."""

    def __init__(self) -> None:
        self.saves: list[list[Any]] = []
        self.grad_syncs = 0
        self.sharded_grads: list[bool] = []  # strategy=fsdp: after each backward, whether the shards got gradients
        self.rank_seed: int | None = None

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        self.rank_seed = torch.initial_seed()  # after the engine's per-rank seeding
        out = Path(trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"pid-rank{trainer.env.rank}").write_text(str(os.getpid()))  # a test may signal one rank
        saver = trainer.checkpoint_io
        save = saver.save

        def recording_save(state: dict[str, Any], path: Path) -> None:
            self.saves.append([trainer.global_step, Path(path).name])
            save(state, path)

        saver.save = recording_save

    def on_train_start(self, trainer: Any, module: Any) -> None:
        ddp = trainer.strategy.ddp  # the engine's DDP wrapper (None in one process)
        if ddp is None:
            return
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_hook(state, bucket):  # DDP checks annotations: leave them off
            self.grad_syncs += 1
            return allreduce_hook(None, bucket)

        ddp.register_comm_hook(None, counting_hook)

    def on_after_backward(self, trainer: Any, module: Any) -> None:
        if trainer.strategy.fsdp is not None:  # gradients reach the shards only when FSDP reduce-scatters them
            self.sharded_grads.append(any(p.grad is not None for p in module.parameters()))

    def on_fit_end(self, trainer: Any, module: Any) -> None:
        rank = trainer.env.rank
        out = Path(trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in module.state_dict().items()}
        torch.save({k: v.detach().cpu() for k, v in full.items()}, out / f"weights-rank{rank}.pt")
        record = {
            "rank": rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batches_done": trainer.fit_loop.state.batches_done,
            "stop_reason": trainer.stop_reason,
            "stop_message": trainer.stop_message,
            "callback_metrics": trainer.callback_metrics,
            "saves": self.saves,
            "grad_syncs": self.grad_syncs,
            "sharded_grads": self.sharded_grads,
            "rank_seed": self.rank_seed,
            "resumed_from": trainer.resumed_from,
            "seen": {str(k): v for k, v in module.seen.items()},
            "timer": dataclasses.asdict(trainer.timer),
            "local_bytes": local_bytes(module, trainer.optimizers),  # this process's parameters + optimizer state
        }
        (out / f"rank{rank}.json").write_text(json.dumps(record, indent=1))
