"""``torchrun --nproc_per_node=2 -m ddpjob.defaults OUT``: a plain `Trainer` with Lightning's defaults.

No logger and no checkpoint folder given: every rank must checkpoint into rank 0's logger
version folder. Each rank writes ``OUT/defaults-rank<r>.json``: its checkpoint folder,
`log_dir` and `should_stop`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from .engine import Module, Trainer


class Linear(Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)), batch_size=2)
    trainer = Trainer(accelerator="cpu", enable_progress_bar=False, default_root_dir=out, max_epochs=2)
    trainer.fit(Linear(), data)
    record = {
        "dirpath": str(trainer.checkpoint_callback.dirpath),
        "log_dir": trainer.log_dir,
        "should_stop": trainer.should_stop,
    }
    (out / f"defaults-rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
