"""Writes the Lightning checkpoints in this folder (test fixtures: the test suite has no Lightning).

Made with lightning 2.6.6 and torch 2.13.0 (CPU), from the repository root:

    python3 -m venv .venv-bench
    .venv-bench/bin/python -m pip install torch==2.13.0 lightning
    .venv-bench/bin/python tests/data/lightning/make_checkpoints.py

A tiny regressor trains 2 epochs of 4 unshuffled batches (Adam and a StepLR scheduler, so the
files carry optimizer and scheduler state). Files:

- ``epoch0.ckpt``, ``epoch1.ckpt``: saved at the end of each epoch (plain-data hparams);
- ``mid_step6.ckpt``: saved after global step 6, in the middle of the second epoch;
- ``object_hparams.ckpt``: the same model with an ``nn.Module`` among its hparams, which
  ``torch.load(weights_only=True)`` refuses.

tests/test_lightning_checkpoints.py defines the same module with the engine's imports.

The other direction: ``make_checkpoints.py --read ENGINE.ckpt`` (a checkpoint the engine wrote for
``TinyRegressor``) loads it with Lightning's ``load_from_checkpoint`` and resumes a Lightning
``Trainer.fit`` from it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent


class TinyRegressor(pl.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.05, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), activation or nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def data(n: int = 32, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def train(module: pl.LightningModule, root: Path, callbacks: list) -> None:
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        callbacks=callbacks,
    )
    trainer.fit(module, data(), data(16, seed=1))


def main() -> None:
    # The tests compare bit for bit on the CPU instruction set the files were made on.
    (HERE / "CPU").write_text(torch.backends.cpu.get_cpu_capability() + "\n")
    root = Path(tempfile.mkdtemp())
    try:
        pl.seed_everything(0)
        train(
            TinyRegressor(hidden=8, lr=0.05),
            root,
            [
                ModelCheckpoint(dirpath=root, filename="epoch{epoch}", save_top_k=-1, auto_insert_metric_name=False),
                ModelCheckpoint(
                    dirpath=root / "mid",
                    filename="mid_step{step}",
                    every_n_train_steps=6,
                    save_top_k=-1,
                    auto_insert_metric_name=False,
                ),
            ],
        )
        shutil.copy(root / "epoch0.ckpt", HERE / "epoch0.ckpt")
        shutil.copy(root / "epoch1.ckpt", HERE / "epoch1.ckpt")
        shutil.copy(root / "mid" / "mid_step6.ckpt", HERE / "mid_step6.ckpt")
        pl.seed_everything(0)
        train(TinyRegressor(hidden=8, lr=0.05, activation=nn.ReLU()), root / "obj", [])
        shutil.copy(root / "obj" / "checkpoints" / "epoch=1-step=8.ckpt", HERE / "object_hparams.ckpt")
    finally:
        shutil.rmtree(root)
    for path in sorted(HERE.glob("*.ckpt")):
        print(f"{path.name}: {path.stat().st_size} bytes", file=sys.stderr)


def read_engine_checkpoint(path: str) -> None:
    module = TinyRegressor.load_from_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in saved.items())
    trainer = pl.Trainer(
        max_epochs=torch.load(path, weights_only=True)["epoch"] + 2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyRegressor(**module.hparams), data(), ckpt_path=path)
    print(f"Lightning read {path}: hparams {dict(module.hparams)}, resumed to step {trainer.global_step}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--read"]:
        read_engine_checkpoint(sys.argv[2])
    else:
        main()
