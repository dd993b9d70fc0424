"""Tiny modules, data and a recording logger shared by the engine tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from engine import DataModule, Module, Trainer


def regression_data(n: int = 20, d: int = 4, seed: int = 0) -> TensorDataset:
    """y = x @ w + noise, float32; deterministic for a given seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def loader(dataset: Any, batch_size: int = 4, shuffle: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


class Regressor(Module):
    """Linear regression with SGD; logs ``train_loss`` and ``val_loss``."""

    def __init__(self, d: int = 4, lr: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.Linear(d, 1)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ScriptedVal(Regressor):
    """Validation logs ``val_loss`` = script[current_epoch] (for stopping and checkpoint tests)."""

    def __init__(self, script: Sequence[float], name: str = "val_loss", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script, self.name = list(script), name

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log(self.name, self.script[self.current_epoch])


class RegressionData(DataModule):
    def __init__(self, n: int = 16, batch_size: int = 4) -> None:
        self.n, self.batch_size = n, batch_size

    def setup(self, stage: str) -> None:
        self.train, self.val = regression_data(self.n), regression_data(self.n // 2, seed=1)

    def train_dataloader(self) -> DataLoader:
        return loader(self.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return loader(self.val, self.batch_size)


def make_trainer(root: Path, **kwargs: Any) -> Trainer:
    """A quiet trainer writing under `root` (no progress bar, no sanity check unless asked)."""
    kwargs.setdefault("progress_bar", False)
    kwargs.setdefault("enable_checkpointing", False)  # only the checkpoints a test asks for
    kwargs.setdefault("logger", False)  # no lightning_logs/ CSV unless a test asks (checkpoints in root/checkpoints)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("accelerator", "cpu")
    return Trainer(default_root_dir=root, **kwargs)


class RecordingLogger:
    """Implements the engine's Logger protocol and records every call."""

    run_id: str | None = "recording-run"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hparams: list[dict[str, Any]] = []
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.saves: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.status: str | None = None
        self.watched: Any = None
        self.loaded: Mapping[str, Any] | None = None

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.calls.append("log_hyperparams")
        self.hparams.append(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.calls.append("log_metrics")
        self.metrics.append((step, dict(metrics)))

    def after_save_checkpoint(
        self, checkpoint_callback: Any, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        self.calls.append("after_save_checkpoint")
        self.saves.append({"last": checkpoint_callback.last_model_path, "step": step, "epoch": epoch})

    def watch(self, module: Any, log_freq: int | None = None) -> None:
        self.calls.append("watch")
        self.watched = module

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.calls.append("log_summary")
        self.summary = dict(summary)

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loaded = state

    def finalize(self, status: str) -> None:
        self.calls.append("finalize")
        self.status = status

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) for every log_metrics call that carried `key`."""
        return [(step, m[key]) for step, m in self.metrics if key in m]
