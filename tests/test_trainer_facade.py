"""The Trainer as a facade over its parts (fit_loop.py, metrics.py, strategy.py): the names research
code and callbacks read keep working, and the profiler sees every phase."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import Regressor, loader, make_trainer, regression_data

from engine.profilers import PyTorchProfiler


class ManualRegressor(Regressor):
    """Regressor stepping its own optimizer (automatic_optimization = False)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss


def test_pytorch_profiler_writes_its_trace_under_manual_optimization(tmp_path: Path) -> None:
    # Manual optimization's opt.step() is one profiler step: the schedule completes and the trace is written.
    profiler = PyTorchProfiler(dirpath=tmp_path / "prof")
    trainer = make_trainer(tmp_path, max_epochs=1, profiler=profiler)
    trainer.fit(ManualRegressor(), loader(regression_data(n=40), batch_size=4))
    assert profiler.trace_path is not None and profiler.trace_path.is_file(), (
        "no trace written (profiler never stepped)"
    )


def test_the_trainer_keeps_the_names_callbacks_read(tmp_path: Path) -> None:
    # Names callbacks and research code read, kept on the Trainer over trainer.metrics and trainer.fit_loop.
    data = regression_data()
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(Regressor(), loader(data), loader(data))
    assert "val_loss" in trainer.last_eval_metrics
    assert "train_loss" in trainer.logged_names()
    assert trainer.summary()["status"] == "success"


def test_strategy_hashes_as_the_name_it_equals(tmp_path: Path) -> None:
    # trainer.strategy is its name (a str) that also holds the wrappers: equal, hashed and dumped as the name.
    trainer = make_trainer(tmp_path, strategy="ddp")
    assert trainer.strategy == "ddp"
    assert trainer.strategy in {"ddp", "fsdp"}
    assert {"ddp": 1}.get(trainer.strategy) == 1 and json.dumps(trainer.strategy) == '"ddp"'
    assert trainer.strategy.ddp is None  # no process group in this process: nothing wrapped


def test_lightning_fit_loop_max_epochs_is_not_silently_ignored(tmp_path: Path) -> None:
    # Lightning's trainer.fit_loop.max_epochs sets the Trainer's bound.
    trainer = make_trainer(tmp_path, max_epochs=3)
    trainer.fit_loop.max_epochs = 1
    trainer.fit(Regressor(), loader(regression_data()))
    assert trainer.current_epoch == 1


def test_setting_an_attribute_the_fit_loop_does_not_have_fails(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    with pytest.raises(AttributeError):
        trainer.fit_loop.epoch_progress = None  # Lightning's loop internals: not silently accepted
