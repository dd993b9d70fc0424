"""Tuner: lr_find and scale_batch_size, compared with Lightning's on a deterministic model.

`scenario()` runs unchanged under Lightning: with ``engine`` aliased to ``lightning.pytorch`` (as
tests/ports/record_lightning.py does) it printed the LIGHTNING numbers below.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _data(n: int = 256) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, x @ torch.linspace(-1, 1, 8).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=g))


def _classes() -> tuple[type, type]:
    import engine as pl

    class Net(pl.LightningModule):
        def __init__(self, lr: float = 0.01, batch_size: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.lr, self.batch_size = lr, batch_size
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

        def train_dataloader(self) -> DataLoader:
            return DataLoader(_data(), batch_size=self.batch_size, shuffle=True)

    class Data(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.batch_size = 4

        def train_dataloader(self) -> DataLoader:
            return DataLoader(_data(), batch_size=self.batch_size)

    return Net, Data


def _weights(module: nn.Module) -> list[float]:
    return [round(float(p.double().sum()), 10) for p in module.parameters()]


def scenario(workdir: Path) -> dict[str, Any]:
    import engine as pl
    from engine.tuner import Tuner

    Net, Data = _classes()
    torch.manual_seed(0)
    model = Net()
    before = _weights(model)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    finder = Tuner(trainer).lr_find(model, min_lr=1e-4, max_lr=50.0, num_training=60)
    out: dict[str, Any] = {
        "steps": len(finder.results["loss"]),
        "lr": [round(x, 12) for x in finder.results["lr"][::7]],
        "loss": [round(x, 6) for x in finder.results["loss"][::7]],
        "suggestion": round(finder.suggestion(), 12),
        "model_lr": round(model.lr, 12),
        "weights_restored": _weights(model) == before,
        "global_step_untouched": trainer.global_step,
    }
    trainer.fit(model)  # the user's trainer still trains from the start, at the suggestion
    out["fit_global_step"] = trainer.global_step
    out["fit_lr"] = [round(g["lr"], 12) for o in trainer.optimizers for g in o.param_groups]
    dm = Data()
    found = Tuner(pl.Trainer(logger=False, enable_progress_bar=False)).scale_batch_size(
        Net(), datamodule=dm, max_trials=4, steps_per_trial=2
    )
    out["batch_size"], out["dm_batch_size"] = found, dm.batch_size
    return out


LIGHTNING = {  # lightning==2.6.6, torch==2.13.0+cpu
    "steps": 39,
    "lr": [0.0001, 0.000575258, 0.002659147948, 0.012291993868, 0.056820122901, 0.26265278044],
    "loss": [1.548307, 3.561843, 3.895505, 3.292611, 2.735873, 4.56582],
    "suggestion": 0.005124966151,
    "model_lr": 0.005124966151,
    "weights_restored": True,
    "global_step_untouched": 0,
    "fit_global_step": 48,
    "fit_lr": [5.124966e-06],
    "batch_size": 16,
    "dm_batch_size": 16,
}


def test_lr_find_and_scale_batch_size_match_lightning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ours = scenario(tmp_path)
    assert ours == LIGHTNING


def test_lr_find_stops_on_divergence_and_plot_needs_matplotlib_or_says_so(tmp_path: Path) -> None:
    import engine as pl
    from engine.tuner import Tuner

    Net, _ = _classes()
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=10, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    finder = Tuner(trainer).lr_find(Net(), min_lr=1e-3, max_lr=1e4, num_training=100, update_attr=False)
    losses = finder.results["loss"]
    assert 2 < len(losses) < 100 and len(finder.results["lr"]) == len(losses)  # stopped when the loss blew up
    assert losses[-1] > 4 * min(x for x in losses if math.isfinite(x))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install matplotlib"):
            finder.plot(suggest=True)
    else:
        assert finder.plot(suggest=True) is not None


def test_scale_batch_size_stops_at_the_first_size_that_runs_out_of_memory(tmp_path: Path) -> None:
    import engine as pl
    from engine.tuner import Tuner

    Net, _ = _classes()

    class Big(Net):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if len(batch[0]) > 32:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().training_step(batch, batch_idx)

    model = Big()
    weights = _weights(model)
    tuner = Tuner(pl.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path))
    assert tuner.scale_batch_size(model, init_val=2) == 32
    assert model.batch_size == 32 and model.hparams.batch_size == 32 and _weights(model) == weights
    with pytest.raises(AttributeError, match="no `bs`"):
        tuner.scale_batch_size(model, batch_arg_name="bs")
