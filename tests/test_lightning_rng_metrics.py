"""Lightning's RNG and metrics semantics: the sanity check inside an isolated RNG, and
callback_metrics / logged_metrics / progress_bar_metrics kept per stage.

The metrics scenario runs here on the engine and, through ``record_lightning_hooks.py``, under
Lightning itself; what Lightning gave is recorded at the end of this file.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import engine as pl


def _data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _trainer(root: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("logger", pl.loggers.CSVLogger(root))
    return pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )


class Logging(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.layer(batch[0])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self(batch), batch[1])
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_both", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", F.mse_loss(self(batch), batch[1]), prog_bar=True)
        self.log("val_hidden", 1.0, logger=False)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", F.mse_loss(self(batch), batch[1]), prog_bar=True)
        self.log("test_step_value", float(batch_idx), on_step=True, on_epoch=False)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _metrics(trainer: Any) -> dict[str, dict[str, float]]:
    def plain(d: dict[str, Any]) -> dict[str, float]:
        return {k: round(float(v), 5) for k, v in sorted(d.items())}

    return {
        "callback": plain(trainer.callback_metrics),
        "logged": plain(trainer.logged_metrics),
        "progress_bar": plain(trainer.progress_bar_metrics),
    }


def stage_metrics(root: Path) -> dict[str, Any]:
    module, loader = Logging(), DataLoader(_data(), batch_size=8)
    trainer = _trainer(root, max_epochs=2)
    out = {}
    trainer.fit(module, loader, loader)
    out["after fit"] = _metrics(trainer)
    trainer.test(module, loader, verbose=False)
    out["after test"] = _metrics(trainer)
    trainer.validate(module, loader, verbose=False)
    out["after validate"] = _metrics(trainer)
    trainer.predict(module, loader)
    out["after predict"] = _metrics(trainer)
    trainer.fit(module, loader)  # max_epochs already reached: nothing runs
    out["after a fit that runs nothing"] = _metrics(trainer)
    fresh = _trainer(root, max_epochs=1, logger=False)
    fresh.test(module, loader, verbose=False)
    out["test on a fresh trainer"] = _metrics(fresh)
    fresh.fit(module, loader)
    out["then fit without validation"] = _metrics(fresh)
    return out


class Pair:
    """A batch type of the research code's own: only its transfer_batch_to_device knows how to move it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y


def _pairs(items: list[Any]) -> Pair:
    return Pair(torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]))


class Transferring(Logging):
    """The module's batch transfer hooks (on_before_batch_transfer, transfer_batch_to_device)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Any] = []

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.calls.append(["before", type(batch).__name__, dataloader_idx, self.trainer.state.stage.value])
        return Pair(batch.x + 1, batch.y)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        self.calls.append(["transfer", device.type, dataloader_idx])
        return Pair(batch.x.to(device), batch.y.to(device))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = F.mse_loss(self.layer(batch.x), batch.y)
        self.log("train_loss", loss, batch_size=len(batch.x))
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.log("val_loss", F.mse_loss(self.layer(batch.x), batch.y), batch_size=len(batch.x))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.layer(batch.x)


class Augmenting(pl.LightningDataModule):
    """The datamodule's on_after_batch_transfer (GPU augmentation's usual place)."""

    def __init__(self, calls: list[Any]) -> None:
        super().__init__()
        self.calls = calls

    def _loader(self) -> DataLoader:
        return DataLoader(_data(16), batch_size=8, collate_fn=_pairs)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(), self._loader()]

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.calls.append(["after", dataloader_idx])
        return Pair(batch.x * 2, batch.y)


def batch_transfer(root: Path) -> dict[str, Any]:
    module = Transferring()
    data = Augmenting(module.calls)
    trainer = _trainer(root, max_epochs=1, num_sanity_val_steps=1, limit_val_batches=1, logger=False)
    trainer.fit(module, datamodule=data)
    metrics = {k: round(float(v), 5) for k, v in sorted(trainer.callback_metrics.items())}
    predictions = trainer.predict(module, datamodule=data)
    return {
        "calls": module.calls,
        "metrics": metrics,
        "weights": torch.cat([p.detach().flatten() for p in module.parameters()]).numpy().tobytes().hex(),
        "predictions": round(float(sum(p.sum() for p in predictions)), 4),
    }


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "stage_metrics": stage_metrics,
    "batch_transfer": batch_transfer,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_metrics_and_batch_hooks_as_lightning(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    got, want = SCENARIOS[name](tmp_path), LIGHTNING[name]
    assert list(got) == list(want)
    for point in got:
        assert got[point] == want[point], point


# -- the sanity check's random numbers -----------------------------------------------------------
class Noisy(pl.LightningModule):
    """Dropout in training; validation draws from every global stream (a VAE's or a flow's sampling)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 1))
        self.val_draws = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x + 0.1 * torch.randn_like(x)), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        noise = torch.randn_like(x) + float(np.random.rand()) + random.random()
        self.val_draws += 1
        self.log("val_loss", F.mse_loss(self.net(x + noise), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _noisy_fit(root: Path, sanity: int) -> tuple[torch.Tensor, int, tuple[float, float, float]]:
    pl.seed_everything(7)
    module, loader = Noisy(), DataLoader(_data(), batch_size=8)
    _trainer(root, max_epochs=2, num_sanity_val_steps=sanity, logger=False).fit(module, loader, loader)
    after = (torch.rand(()).item(), float(np.random.rand()), random.random())  # the streams after fit
    return torch.cat([p.detach().flatten() for p in module.parameters()]), module.val_draws, after


def test_the_sanity_check_leaves_the_random_streams_alone(tmp_path: Path) -> None:
    with_sanity, draws_with, after_with = _noisy_fit(tmp_path / "a", sanity=2)
    without, draws_without, after_without = _noisy_fit(tmp_path / "b", sanity=0)
    assert draws_with == draws_without + 2  # the sanity check did draw noise
    assert torch.equal(with_sanity, without)  # and training never saw it
    assert after_with == after_without


def test_isolate_rng_restores_every_stream() -> None:
    from engine.checkpoint import isolate_rng

    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with isolate_rng():
        torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all() and random.getstate() == before[2]


# -- recorded under Lightning (record_lightning_hooks.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu
LIGHTNING: dict[str, Any] = {
    "stage_metrics": {
        "after fit": {
            "callback": {
                "train_both": 4.28769,
                "train_both_epoch": 4.28769,
                "train_both_step": 4.30862,
                "train_loss": 4.30862,
                "val_hidden": 1.0,
                "val_loss": 3.82728,
            },
            "logged": {
                "train_both_epoch": 4.28769,
                "train_both_step": 4.30862,
                "train_loss": 4.30862,
                "val_loss": 3.82728,
            },
            "progress_bar": {
                "train_both_epoch": 4.28769,
                "train_both_step": 4.30862,
                "train_loss": 4.30862,
                "val_loss": 3.82728,
            },
        },
        "after test": {
            "callback": {"test_loss": 3.82728},
            "logged": {"test_loss": 3.82728, "test_step_value": 3.0},
            "progress_bar": {"test_loss": 3.82728},
        },
        "after validate": {
            "callback": {"val_hidden": 1.0, "val_loss": 3.82728},
            "logged": {"val_loss": 3.82728},
            "progress_bar": {"val_loss": 3.82728},
        },
        "after predict": {"callback": {}, "logged": {}, "progress_bar": {}},
        "after a fit that runs nothing": {"callback": {}, "logged": {}, "progress_bar": {}},
        "test on a fresh trainer": {
            "callback": {"test_loss": 3.82728},
            "logged": {"test_loss": 3.82728, "test_step_value": 3.0},
            "progress_bar": {"test_loss": 3.82728},
        },
        "then fit without validation": {
            "callback": {
                "train_both": 3.64082,
                "train_both_epoch": 3.64082,
                "train_both_step": 3.68847,
                "train_loss": 3.68847,
            },
            "logged": {"train_both_epoch": 3.64082, "train_both_step": 3.68847, "train_loss": 3.68847},
            "progress_bar": {"train_both_epoch": 3.64082, "train_both_step": 3.68847, "train_loss": 3.68847},
        },
    },
    "batch_transfer": {
        "calls": [
            ["before", "Pair", 0, "sanity_check"],
            ["transfer", "cpu", 0],
            ["after", 0],
            ["before", "Pair", 1, "sanity_check"],
            ["transfer", "cpu", 1],
            ["after", 1],
            ["before", "Pair", 0, "train"],
            ["transfer", "cpu", 0],
            ["after", 0],
            ["before", "Pair", 0, "train"],
            ["transfer", "cpu", 0],
            ["after", 0],
            ["before", "Pair", 0, "validate"],
            ["transfer", "cpu", 0],
            ["after", 0],
            ["before", "Pair", 1, "validate"],
            ["transfer", "cpu", 1],
            ["after", 1],
            ["before", "Pair", 0, "predict"],
            ["transfer", "cpu", 0],
            ["after", 0],
            ["before", "Pair", 0, "predict"],
            ["transfer", "cpu", 0],
            ["after", 0],
        ],
        "metrics": {"train_loss": 10.64462, "val_loss/dataloader_idx_0": 1.95952, "val_loss/dataloader_idx_1": 1.95952},
        "weights": "e006f33d5e64c13e7bf90fbed63c20bd2ea809be",
        "predictions": 6.5267,
    },
}
# -- end of recorded numbers --
