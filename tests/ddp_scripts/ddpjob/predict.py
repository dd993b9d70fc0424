"""``torchrun --nproc_per_node=2 -m ddpjob.predict OUT``: `trainer.predict` under DDP.

Each rank writes ``OUT/predict-rank<r>.json``: the sample ids its predictions cover (what
`predict` returned there) and what `all_gather` gave it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from .engine import Module, Trainer
from .engine import distributed as D


class Ids(Module):
    """Predicts the ids of its samples; gathers one small tensor and one number at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)  # DDP wraps a module with parameters

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (ids,) = batch
        return ids

    def on_predict_end(self) -> None:
        rank = float(self.global_rank)
        self.gathered = self.all_gather(torch.tensor([rank, rank + 1])).tolist()
        self.gathered_scalar = self.all_gather(rank).tolist()


def main(out: Path) -> None:
    trainer = Trainer(accelerator="cpu", progress_bar=False, default_root_dir=out)
    module = Ids()
    predictions = trainer.predict(module, DataLoader(TensorDataset(torch.arange(7)), batch_size=2))
    record = {
        "predicted_ids": torch.cat(predictions).tolist(),
        "gathered": module.gathered,
        "gathered_scalar": module.gathered_scalar,
    }
    (out / f"predict-rank{trainer.env.rank}.json").write_text(json.dumps(record))
    D.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
