"""``torchrun --nproc_per_node=N -m ddpjob.uneven OUT``: evaluation sets that do not split evenly.

Each case validates, tests and predicts a data set whose size leaves some rank short: the last
batch has fewer samples than processes, batch size 1, fewer samples than processes, one sample.
The steps run a collective per batch (``self.log(..., on_step=True, sync_dist=True)`` and a
torchmetrics metric with ``dist_sync_on_step=True``) and log epoch values reduced every way, so a
rank that ran fewer batches, or skipped the epoch's reduction, would hang the job. Each rank
writes what it got to ``OUT/uneven-rank<r>.json``; the test compares it with the plain sums.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torchmetrics
from torch.utils.data import DataLoader, TensorDataset

from .engine import Module, Trainer
from .engine import distributed as D

CASES = [(7, 2), (9, 4), (5, 1), (2, 4), (1, 3)]  # (samples, batch size per process)


class Values(Module):
    """Sample i has value i + 1; every step logs its batch's values and gathers their sum."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)  # DDP wraps a module with parameters
        self.total = torchmetrics.SumMetric(dist_sync_on_step=True)
        self.batches = 0
        self.gathered: list[float] = []

    def _evaluate(self, batch: Any, prefix: str) -> None:
        (values,) = batch
        self.batches += 1
        self.gathered.append(float(self.all_gather(values.sum()).sum()))  # a collective in every step
        self.log(f"{prefix}_mean", values.mean(), sync_dist=True, on_step=True, on_epoch=True)
        self.log(f"{prefix}_max", values.max(), sync_dist=True, reduce_fx="max")
        self.log(f"{prefix}_min", values.min(), sync_dist=True, reduce_fx="min")
        self.log(f"{prefix}_sum", values.sum(), sync_dist=True, reduce_fx="sum")
        self.log(f"{prefix}_count", float(len(values)), sync_dist=True, reduce_fx="sum")
        self.log(f"{prefix}_own", float(len(values)), reduce_fx="sum")  # this rank's alone (no sync_dist)
        self.total(values.sum())  # dist_sync_on_step: a collective in forward
        self.log(f"{prefix}_metric_sum", self.total)  # a copied batch's update is undone

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (values,) = batch
        self.all_gather(values.sum())
        return values


def main(out: Path) -> None:
    records = []
    for samples, batch_size in CASES:
        trainer = Trainer(accelerator="cpu", progress_bar=False, default_root_dir=out, logger=False)
        module = Values()
        loader = DataLoader(TensorDataset(torch.arange(1.0, samples + 1)), batch_size=batch_size)
        (val,) = trainer.validate(module, loader, verbose=False)
        val_batches, module.batches = module.batches, 0
        (test,) = trainer.test(module, loader, verbose=False)
        predictions = trainer.predict(module, loader)
        records.append(
            {
                "samples": samples,
                "val": val,
                "val_batches": val_batches,
                "test": test,
                "test_batches": module.batches,
                "gathered": module.gathered,
                "predicted": torch.cat(predictions).tolist() if predictions else [],
            }
        )
    (out / f"uneven-rank{trainer.env.rank}.json").write_text(json.dumps(records))
    D.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
