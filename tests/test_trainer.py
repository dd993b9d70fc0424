"""The Trainer: devices, precision, the loop's knobs, schedulers and logging, with asserted values."""

from __future__ import annotations

import dataclasses
import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch
import torchmetrics
from engine_fixtures import RecordingLogger, Regressor, ScriptedVal, loader, make_trainer, regression_data
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from engine import ConfigError, DataModule, LearningRateMonitor, ModelCheckpoint, Module, seed_everything
from engine.checkpoint import load_checkpoint
from engine.trainer import move_to_device


# -- devices -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    meta: dict[str, Any]
    name: str = "b"


Pair = namedtuple("Pair", ["a", "b"])


def test_move_to_device_is_recursive() -> None:
    meta = torch.device("meta")  # a real device move that needs no GPU
    batch = {
        "t": torch.ones(2),
        "list": [torch.ones(1), 3, "s"],
        "tuple": (torch.ones(1), (torch.zeros(1),)),
        "pair": Pair(torch.ones(1), [torch.ones(1)]),
        "dc": Batch(torch.ones(3), {"y": torch.ones(1)}),
    }
    out = move_to_device(batch, meta)
    assert out["t"].device == meta
    assert out["list"][0].device == meta and out["list"][1:] == [3, "s"]
    assert isinstance(out["tuple"], tuple) and out["tuple"][1][0].device == meta
    assert type(out["pair"]) is Pair and out["pair"].a.device == meta and out["pair"].b[0].device == meta
    assert type(out["dc"]) is Batch and out["dc"].x.device == meta and out["dc"].meta["y"].device == meta
    assert out["dc"].name == "b"
    assert batch["t"].device.type == "cpu"  # the input is not modified


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_accelerator_cuda_without_gpu_says_what_to_do(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, accelerator="cuda", max_epochs=1)
    with pytest.raises(ConfigError, match="trainer.accelerator=cuda but no CUDA GPU.*trainer.accelerator=cpu"):
        trainer.fit(Regressor(), train_dataloaders=loader(regression_data()))


def test_16_mixed_on_cpu_names_bf16_mixed(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, precision="16-mixed", max_epochs=1)
    with pytest.raises(ValueError, match="use trainer.precision=bf16-mixed"):
        trainer.fit(Regressor(), train_dataloaders=loader(regression_data()))


def test_unknown_precision_is_an_error(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, precision="fp8", max_epochs=1)
    with pytest.raises(ValueError, match="bf16-mixed"):
        trainer.fit(Regressor(), train_dataloaders=loader(regression_data()))


class AutocastProbe(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bool, torch.dtype, torch.dtype]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x)
        self.seen.append(("train", torch.is_autocast_enabled("cpu"), out.dtype, self.layer.weight.dtype))
        return F.mse_loss(out.float(), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = self(batch[0])
        self.seen.append(("val", torch.is_autocast_enabled("cpu"), out.dtype, self.layer.weight.dtype))


def test_bf16_mixed_autocasts_inside_the_steps(tmp_path: Path) -> None:
    module = AutocastProbe()
    trainer = make_trainer(tmp_path, precision="bf16-mixed", max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, loader(regression_data()), loader(regression_data()))
    assert module.seen == [
        ("train", True, torch.bfloat16, torch.float32),
        ("train", True, torch.bfloat16, torch.float32),
        ("val", True, torch.bfloat16, torch.float32),
    ]
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the loop


def test_bf16_true_converts_parameters_and_inputs(tmp_path: Path) -> None:
    module = AutocastProbe()
    trainer = make_trainer(tmp_path, precision="bf16-true", max_epochs=1, limit_train_batches=2)
    trainer.fit(module, loader(regression_data()))
    assert module.seen == [("train", False, torch.bfloat16, torch.bfloat16)] * 2
    assert all(p.dtype == torch.bfloat16 for p in module.parameters())
    assert trainer.global_step == 2


# -- the loop ----------------------------------------------------------------------------------
def test_max_epochs_counts_steps_and_epochs(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(Regressor(), loader(regression_data(10), batch_size=4))  # 3 batches per epoch
    assert (trainer.global_step, trainer.current_epoch, trainer.stop_reason) == (6, 2, "max_epochs")


def test_max_steps_stops_mid_epoch(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=4)
    trainer.fit(Regressor(), loader(regression_data(10), batch_size=4))
    assert (trainer.global_step, trainer.current_epoch, trainer.stop_reason) == (4, 1, "max_steps")
    trainer = make_trainer(tmp_path, max_steps=3, accumulate_grad_batches=2)  # steps are optimizer steps
    trainer.fit(Regressor(), loader(regression_data(16), batch_size=4))  # 4 batches -> 2 steps per epoch
    assert (trainer.global_step, trainer.current_epoch) == (3, 1)


def _sgd_reference(
    module: Regressor, data: TensorDataset, windows: list[list[int]], lr: float, scales: list[float] | None = None
) -> None:
    """One SGD step per window of samples with the mean loss over the whole window (times `scales`)."""
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    x, y = data.tensors
    for idx, scale in zip(windows, scales or [1.0] * len(windows), strict=True):
        opt.zero_grad()
        (scale * F.mse_loss(module(x[idx]), y[idx])).backward()
        opt.step()


def test_accumulation_equals_one_big_batch_including_the_short_last_window(tmp_path: Path) -> None:
    data = regression_data(20)
    engine_model, reference = Regressor(lr=0.05), Regressor(lr=0.05)
    trainer = make_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=4)
    trainer.fit(engine_model, loader(data, batch_size=2))  # 10 batches: windows of 4, 4 and 2 batches
    assert trainer.global_step == 6
    windows = [list(range(0, 8)), list(range(8, 16)), list(range(16, 20))] * 2
    _sgd_reference(reference, data, windows, lr=0.05)
    for a, b in zip(engine_model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The common mistake, dividing the short window's 2 batches by k=4 (half its gradient), differs clearly.
    wrong = Regressor(lr=0.05)
    _sgd_reference(wrong, data, windows, lr=0.05, scales=[1.0, 1.0, 0.5] * 2)
    assert not torch.allclose(wrong.layer.weight, engine_model.layer.weight, atol=1e-3)


class NormProbe(Regressor):
    """Records the gradient norm on_before_optimizer_step sees and each step's update (SGD, lr 1)."""

    def __init__(self) -> None:
        super().__init__(lr=1.0)
        self.grad_norms: list[float] = []
        self.update_norms: list[float] = []
        self.update_maxabs: list[float] = []

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()]))))
        self._before = [p.detach().clone() for p in self.parameters()]

    def on_train_batch_end(self, *args: Any) -> None:
        update = torch.cat([(p.detach() - b).flatten() for p, b in zip(self.parameters(), self._before, strict=True)])
        self.update_norms.append(float(update.norm()))
        self.update_maxabs.append(float(update.abs().max()))


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping(tmp_path: Path, algorithm: str) -> None:
    probe = NormProbe()
    trainer = make_trainer(tmp_path, max_epochs=1, gradient_clip_val=0.05, gradient_clip_algorithm=algorithm)
    trainer.fit(probe, loader(regression_data(12), batch_size=4))
    # The hook sees the gradients before clipping (as in Lightning), and clipping has work to do.
    assert len(probe.grad_norms) == 3 and min(probe.grad_norms) > 0.5
    if algorithm == "norm":  # SGD with lr 1 moves the weights by minus the clipped gradient
        assert probe.update_norms == pytest.approx([0.05] * 3, rel=1e-4)
    else:
        assert probe.update_maxabs == pytest.approx([0.05] * 3)
        assert max(probe.update_norms) < min(probe.grad_norms)


class LRProbe(Regressor):
    """Records the LR each optimizer step used; configure_optimizers returns `sched_cfg`."""

    def __init__(self, make_sched: Any, **cfg: Any) -> None:
        super().__init__(lr=1.0)
        self.make_sched, self.cfg, self.lrs = make_sched, cfg, []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return super().training_step(batch, batch_idx) * 0.0  # weights stay put: LR is what we watch

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.make_sched(opt), **self.cfg}}


def _step_lr(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ({"interval": "step"}, [1, 0.5, 0.25, 0.125, 0.0625, 0.03125]),
        ({}, [1, 1, 1, 0.5, 0.5, 0.5]),  # Lightning's default interval: epoch
        ({"interval": "step", "frequency": 2}, [1, 1, 0.5, 0.5, 0.25, 0.25]),
    ],
)
def test_scheduler_interval_and_frequency(tmp_path: Path, cfg: dict[str, Any], expected: list[float]) -> None:
    module = LRProbe(_step_lr, **cfg)
    make_trainer(tmp_path, max_epochs=2).fit(module, loader(regression_data(12), batch_size=4))
    assert module.lrs == expected


def test_epoch_scheduler_frequency(tmp_path: Path) -> None:
    module = LRProbe(_step_lr, interval="epoch", frequency=2)
    make_trainer(tmp_path, max_epochs=5).fit(module, loader(regression_data(4), batch_size=4))
    assert module.lrs == [1, 1, 0.5, 0.5, 0.25]


def test_scheduler_returned_as_lists(tmp_path: Path) -> None:
    class Lists(LRProbe):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            return [opt], [_step_lr(opt)]

    module = Lists(_step_lr)
    make_trainer(tmp_path, max_epochs=3).fit(module, loader(regression_data(4), batch_size=4))
    assert module.lrs == [1, 0.5, 0.25]


class PlateauProbe(ScriptedVal):
    def __init__(self, script: list[float]) -> None:
        super().__init__(script, lr=1.0)
        self.lrs: list[float] = []

    def on_train_epoch_start(self) -> None:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1)
        return {"optimizer": opt, "lr_scheduler": sched, "monitor": "val_loss"}


def test_reduce_lr_on_plateau_follows_the_monitored_metric(tmp_path: Path) -> None:
    # patience=1: the LR halves after the second epoch in a row without improvement.
    module = PlateauProbe([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    trainer = make_trainer(tmp_path, max_epochs=7, limit_train_batches=1)
    trainer.fit(module, loader(regression_data(4)), loader(regression_data(4)))
    assert module.lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_reduce_lr_on_plateau_needs_a_logged_monitor(tmp_path: Path) -> None:
    class NoMonitor(PlateauProbe):
        def configure_optimizers(self) -> Any:
            out = super().configure_optimizers()
            return {"optimizer": out["optimizer"], "lr_scheduler": out["lr_scheduler"]}

    with pytest.raises(ValueError, match="ReduceLROnPlateau needs a monitor"):
        make_trainer(tmp_path, max_epochs=1).fit(NoMonitor([1.0]), loader(regression_data(4)))
    with pytest.raises(KeyError, match="'val_loss', which was not logged"):
        make_trainer(tmp_path, max_epochs=1).fit(PlateauProbe([1.0]), loader(regression_data(4)))


class ValCounter(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.val_batches: list[tuple[int, int, bool]] = []  # (global_step, batch_idx, sanity)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.val_batches.append((self.global_step, batch_idx, self.trainer.sanity_checking))
        super().validation_step(batch, batch_idx)

    def validations(self) -> list[int]:
        return [step for step, idx, sanity in self.val_batches if idx == 0 and not sanity]


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (None, [10, 20]),
        (5, [5, 10, 15, 20]),
        (3, [3, 6, 9, 10, 13, 16, 19, 20]),  # every 3 batches, and always at the epoch end
        (0.25, [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]),  # int(10 * 0.25) = every 2 batches
        (0.5, [5, 10, 15, 20]),
    ],
)
def test_val_check_interval(tmp_path: Path, interval: Any, expected: list[int]) -> None:
    module = ValCounter()
    trainer = make_trainer(tmp_path, max_epochs=2, val_check_interval=interval, limit_val_batches=1)
    trainer.fit(module, loader(regression_data(20), batch_size=2), loader(regression_data(8)))
    assert module.validations() == expected


@pytest.mark.parametrize(("limit", "steps"), [(3, 3), (0.5, 5), (0.25, 2), (1.0, 10), (None, 10)])
def test_limit_train_batches(tmp_path: Path, limit: Any, steps: int) -> None:
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=limit)
    trainer.fit(Regressor(), loader(regression_data(20), batch_size=2))
    assert (trainer.global_step, trainer.num_training_batches) == (2 * steps, steps)


@pytest.mark.parametrize(("limit", "batches"), [(2, 2), (0.25, 2), (0, 0), (None, 8)])
def test_limit_val_batches(tmp_path: Path, limit: Any, batches: int) -> None:
    module = ValCounter()
    trainer = make_trainer(tmp_path, max_epochs=1, limit_val_batches=limit)
    trainer.fit(module, loader(regression_data(4)), loader(regression_data(16), batch_size=2))
    assert len(module.val_batches) == batches
    assert ("val_loss" in trainer.callback_metrics) == (batches > 0)


@pytest.mark.parametrize(("flag", "steps"), [(True, 1), (3, 3)])
def test_fast_dev_run_runs_n_batches_and_writes_nothing(tmp_path: Path, flag: Any, steps: int) -> None:
    module, logger = ValCounter(), RecordingLogger()
    trainer = make_trainer(
        tmp_path / "run",
        fast_dev_run=flag,
        max_epochs=5,
        num_sanity_val_steps=2,
        logger=logger,
        callbacks=[ModelCheckpoint(monitor="val_loss")],
    )
    trainer.fit(module, loader(regression_data(40)), loader(regression_data(40)))
    assert (trainer.global_step, trainer.current_epoch, trainer.stop_reason) == (steps, 1, "fast_dev_run")
    assert [idx for _, idx, _ in module.val_batches] == list(range(steps))  # no sanity check, n val batches
    assert logger.calls == []  # the logger is replaced by a no-op
    assert not (tmp_path / "run").exists() or list((tmp_path / "run").rglob("*")) == []


def test_sanity_validation_runs_n_batches_and_leaves_no_metrics(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Probe(ValCounter):
        def on_train_start(self) -> None:
            seen["metrics"] = dict(self.trainer.callback_metrics)

    module, logger = Probe(), RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=2, logger=logger, log_every_n_steps=1)
    trainer.fit(module, loader(regression_data(4)), loader(regression_data(20), batch_size=2))
    assert [(idx, sanity) for _, idx, sanity in module.val_batches[:2]] == [(0, True), (1, True)]
    assert len(module.val_batches) == 2 + 10  # then one full validation
    assert seen["metrics"] == {}
    assert logger.series("val_loss") == [(1, trainer.callback_metrics["val_loss"])]  # only the real one


class Dropper(Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _seeded_fit(tmp_path: Path, seed: int) -> dict[str, torch.Tensor]:
    seed_everything(seed)
    module = Dropper()
    trainer = make_trainer(tmp_path, max_epochs=2, seed=seed, deterministic=True)
    trainer.fit(module, loader(regression_data(24), batch_size=4, shuffle=True))
    return module.state_dict()


def test_seed_and_deterministic_reproduce_identical_weights(tmp_path: Path) -> None:
    try:
        first, second, other = _seeded_fit(tmp_path, 7), _seeded_fit(tmp_path, 7), _seeded_fit(tmp_path, 8)
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["net.0.weight"], other["net.0.weight"])


@pytest.mark.slow  # inductor compiles C++ on first use: about 30 s on 2 CPU cores
def test_compile_runs_and_matches_eager(tmp_path: Path) -> None:
    results = []
    for compile_ in (False, True):
        module = Regressor()
        trainer = make_trainer(tmp_path, max_epochs=1, compile=compile_)
        trainer.fit(module, loader(regression_data(8)))
        assert (getattr(module, "_compiled_call_impl", None) is not None) == compile_  # nn.Module.compile ran
        results.append(module.layer.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


class Data(DataModule):
    def __init__(self) -> None:
        self.stages: list[str] = []

    def setup(self, stage: str) -> None:
        self.stages.append(stage)
        self.val, self.tst = regression_data(10, seed=1), regression_data(6, seed=2)

    def train_dataloader(self) -> DataLoader:
        return loader(self.val)

    def val_dataloader(self) -> DataLoader:
        return loader(self.val, batch_size=4)

    def test_dataloader(self) -> DataLoader:
        return loader(self.tst, batch_size=4)


def test_validate_and_test_return_metrics(tmp_path: Path) -> None:
    module, data = Regressor(), Data()
    trainer = make_trainer(tmp_path)
    val = trainer.validate(module, datamodule=data)
    tst = trainer.test(module, data)
    positional = trainer.test(module, data.test_dataloader())  # Lightning's test(model, dataloaders)
    with torch.no_grad():
        x, y = data.val.tensors
        expected_val = F.mse_loss(module(x), y, reduction="sum").item() / 10
        x, y = data.tst.tensors
        expected_test = F.mse_loss(module(x), y, reduction="sum").item() / 6
    assert val == [{"val_loss": pytest.approx(expected_val, rel=1e-6)}]
    assert tst == positional == [{"test_loss": pytest.approx(expected_test, rel=1e-6)}]
    assert data.stages == ["validate", "test"]
    assert trainer.callback_metrics["test_loss"] == pytest.approx(expected_test, rel=1e-6)


# -- logging -----------------------------------------------------------------------------------
class Logs(Regressor):
    """Logs known per-batch values: batch_idx (batches of 4, 4, 2 -> weighted mean 0.8)."""

    def __init__(self) -> None:
        super().__init__()
        self.acc = torchmetrics.Accuracy(task="binary")
        self.val_acc = torchmetrics.Accuracy(task="binary")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        value = torch.tensor(float(batch_idx))
        self.log("step_only", value)  # training default: on_step
        self.log("both", value, on_step=True, on_epoch=True, prog_bar=True)
        self.log("epoch_only", value, on_epoch=True, on_step=False)
        self.log("hidden", value, logger=False, on_step=False, on_epoch=True)
        self.log_dict({"d1": value, "d2": 2 * value}, on_epoch=True, on_step=False)
        # Epoch 0: every prediction right; epoch 1: right on the first 5 of 10 samples.
        preds = torch.ones(len(y)) if self.current_epoch == 0 else (torch.arange(len(y)) + 4 * batch_idx < 5).float()
        self.acc(preds, torch.ones(len(y)))
        self.log("acc", self.acc, on_step=False, on_epoch=True)
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_idx", float(batch_idx))  # validation default: on_epoch
        self.val_acc(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
        self.log("val_acc", self.val_acc)


def test_self_log_defaults_names_and_weighted_epoch_means(tmp_path: Path) -> None:
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1)
    module = Logs()
    trainer.fit(module, loader(regression_data(10)), loader(regression_data(10)))  # batches 4, 4, 2
    cm = trainer.callback_metrics
    assert cm["epoch_only"] == pytest.approx(0.8)  # (0*4 + 1*4 + 2*2) / 10, not (0+1+2)/3
    assert cm["both_epoch"] == pytest.approx(0.8) and cm["both_step"] == 2.0
    assert cm["d1"] == pytest.approx(0.8) and cm["d2"] == pytest.approx(1.6)
    assert cm["val_idx"] == pytest.approx(0.8)
    assert cm["step_only"] == 2.0 and "step_only_epoch" not in cm
    assert cm["both"] == pytest.approx(0.8)  # Lightning: the plain name holds the epoch value after the epoch
    assert cm["acc"] == pytest.approx(0.5)  # epoch 1 alone: the metric was reset after epoch 0
    assert logger.series("acc") == [(3, 1.0), (6, 0.5)]
    assert cm["val_acc"] == 0.5 and module.val_acc.update_count == 0
    # Step values at every step; epoch values once per epoch.
    assert logger.series("step_only") == [(1, 0.0), (2, 1.0), (3, 2.0), (4, 0.0), (5, 1.0), (6, 2.0)]
    assert logger.series("both_epoch") == [(3, pytest.approx(0.8)), (6, pytest.approx(0.8))]
    # logger=False: in callback_metrics, never sent to the logger.
    assert cm["hidden"] == pytest.approx(0.8)
    assert "hidden" not in trainer.logged_metrics and not logger.series("hidden")
    assert set(trainer.progress_metrics()) == {"both_step"}
    assert "both_epoch" in trainer.results_prog_bar


def test_explicit_batch_size_weights_the_epoch_mean(tmp_path: Path) -> None:
    class Weighted(Regressor):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("w", float(batch_idx), batch_size=[1, 3][batch_idx])

    trainer = make_trainer(tmp_path)
    assert trainer.validate(Weighted(), dataloaders=loader(regression_data(8))) == [{"w": 0.75}]


def test_self_log_in_on_train_epoch_end_is_an_epoch_value(tmp_path: Path) -> None:
    class EpochEnd(Regressor):
        def on_train_epoch_end(self) -> None:
            self.log("epoch_stat", torch.tensor(10.0 + self.current_epoch))  # Lightning: on_epoch by default

    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=1)
    trainer.fit(EpochEnd(), loader(regression_data(8)))
    assert logger.series("epoch_stat") == [(2, 10.0), (4, 11.0)]
    assert trainer.callback_metrics["epoch_stat"] == 11.0


def test_estimated_stepping_batches(tmp_path: Path) -> None:
    seen = []

    class OneCycle(Regressor):
        def configure_optimizers(self) -> Any:
            seen.append(self.trainer.estimated_stepping_batches)
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=seen[-1])
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    data = loader(regression_data(20), batch_size=2)  # 10 batches
    make_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=4).fit(
        OneCycle(), data
    )  # OneCycleLR raises past the end
    make_trainer(tmp_path, max_epochs=3, max_steps=5).fit(OneCycle(), data)
    make_trainer(tmp_path, max_epochs=2, limit_train_batches=0.5).fit(OneCycle(), data)
    assert seen == [6, 5, 10]


def test_log_every_n_steps_and_learning_rate_monitor(tmp_path: Path) -> None:
    class Sched(Regressor):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    logger = RecordingLogger()
    trainer = make_trainer(
        tmp_path, max_epochs=1, log_every_n_steps=3, logger=logger, callbacks=[LearningRateMonitor()]
    )
    trainer.fit(Sched(lr=0.01), loader(regression_data(40), batch_size=4))  # 10 steps
    assert [s for s, _ in logger.series("train_loss")] == [3, 6, 9]
    # The LR after step n (the one the next step uses), as Lightning's monitor logs it.
    assert logger.series("lr-SGD") == [(3, 0.5**3), (6, 0.5**6), (9, 0.5**9)]
    assert logger.calls[:2] == ["log_hyperparams", "watch"]
    assert logger.calls[-2:] == ["log_summary", "finalize"] and logger.status == "success"
    assert logger.summary["global_step"] == 10 and logger.summary["wandb_run_id"] == "recording-run"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["stop_reason"] == "max_epochs"
        and summary["metrics"]["train_loss"] == trainer.callback_metrics["train_loss"]
    )


def test_nonfinite_loss_stops_without_applying_the_update(tmp_path: Path) -> None:
    class Explodes(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 2 else loss

    module = Explodes()
    trainer = make_trainer(tmp_path, max_epochs=3)
    trainer.fit(module, loader(regression_data(20)))
    assert trainer.stop_reason == "nonfinite_loss" and trainer.global_step == 2
    assert torch.isfinite(module.layer.weight).all()


class CpuScaler:
    """Swaps an enabled GradScaler into the run, so the 16-mixed code path runs on CPU."""

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        trainer.precision.use_scaler(torch.amp.GradScaler("cpu", init_scale=2.0**16))


class ScaledProbe(Regressor):
    """Step 0's loss overflows once scaled (inf gradients); records LR, weight deltas and norms."""

    def __init__(self) -> None:
        super().__init__(lr=1.0)
        self.lrs: list[float] = []
        self.deltas: list[float] = []
        self.norms: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        self._before = [p.detach().clone() for p in self.parameters()]
        loss = super().training_step(batch, batch_idx)
        return loss * 1e35 if self.global_step == 0 else loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()]))))

    def on_train_batch_end(self, *args: Any) -> None:
        diff = torch.cat([(p.detach() - b).flatten() for p, b in zip(self.parameters(), self._before, strict=True)])
        self.deltas.append(float(diff.norm()))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_grad_scaler_path_unscales_before_clipping_and_skipped_steps_keep_the_schedule(tmp_path: Path) -> None:
    module = ScaledProbe()
    trainer = make_trainer(tmp_path, max_epochs=1, gradient_clip_val=0.05, callbacks=[CpuScaler()])
    trainer.fit(module, loader(regression_data(16)))  # 4 steps
    assert module.deltas[0] == 0.0  # inf gradients: the scaler skipped the step
    assert module.lrs == [1.0, 1.0, 0.5, 0.25]  # ... and the scheduler did not advance
    # Clipped on true (unscaled) gradients: SGD with lr 1 moves the weights by exactly the clip norm.
    assert module.deltas[1:] == pytest.approx([0.05 * lr for lr in module.lrs[1:]], rel=1e-4)
    # The hook saw true gradients: unscaled (the scale is 2**15) and not yet clipped.
    assert all(0.05 < n < 100 for n in module.norms[1:])
    assert trainer.precision.scaler.get_scale() == 2.0**15


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_16_mixed_on_cuda_autocasts_to_float16_with_a_grad_scaler(tmp_path: Path) -> None:
    module = AutocastProbe()
    trainer = make_trainer(tmp_path, accelerator="cuda", precision="16-mixed", max_epochs=1, limit_train_batches=2)
    trainer.fit(module, loader(regression_data()))
    assert [s[:3] for s in module.seen] == [("train", False, torch.float16)] * 2  # cpu autocast off, cuda on
    assert module.layer.weight.device.type == "cuda" and module.layer.weight.dtype == torch.float32
    assert trainer.precision.scaler.is_enabled() and trainer.global_step == 2


class WorkerProbe(TensorDataset):
    """Records, per sample, the worker that loaded it and the way its batches travel."""

    def __getitem__(self, i: int) -> Any:
        info = torch.utils.data.get_worker_info()
        strategy = torch.multiprocessing.get_sharing_strategy()
        tag = torch.tensor([info.id if info else -1, strategy == "file_system", torch.initial_seed() % 1000])
        return (*super().__getitem__(i), tag)


class TagRecorder(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, tag = batch
        self.tags.append(tag)
        return super().training_step((x, y), batch_idx)


def test_loader_workers_send_batches_by_file_name_and_run_the_users_init(tmp_path: Path) -> None:
    def user_init(worker_id: int) -> None:
        torch.manual_seed(500 + worker_id)  # visible in the samples' tags: the user's init ran

    data = DataLoader(
        WorkerProbe(*regression_data(32).tensors), batch_size=4, shuffle=True, num_workers=2, worker_init_fn=user_init
    )
    module = TagRecorder()
    make_trainer(tmp_path, max_epochs=1).fit(module, data)
    tags = torch.cat(module.tags)
    assert set(tags[:, 0].tolist()) == {0, 1}  # both workers loaded batches
    assert tags[:, 1].all()  # ... sent by file name
    assert set(tags[:, 2].tolist()) == {500, 501}  # ... after the user's worker_init_fn
    assert torch.multiprocessing.get_sharing_strategy() == "file_descriptor"  # this process is untouched
    assert torch.isfinite(module.layer.weight).all() and data.worker_init_fn is user_init


class OffCpu(torch.Tensor):
    """A CPU tensor that says it is elsewhere: the loop takes its accelerator path for the loss."""

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False


@pytest.mark.parametrize("sync_point", ["save", "log"])
def test_on_an_accelerator_the_nonfinite_check_waits_for_a_sync_point_and_saves_no_bad_weights(
    tmp_path: Path, sync_point: str
) -> None:
    class LateNaN(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            return (loss * float("nan") if self.global_step == 2 else loss).as_subclass(OffCpu)

    module = LateNaN()
    every_step = sync_point == "save"
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=1 if every_step else None, save_last=True
    )
    trainer = make_trainer(tmp_path, max_epochs=4, log_every_n_steps=50 if every_step else 4, callbacks=[checkpoints])
    trainer.fit(module, loader(regression_data(20)))  # 5 steps an epoch; the 3rd step's loss is NaN
    # No read per step: the NaN is found at the next save (after step 3) or logging step (4).
    stop = 3 if every_step else 4
    assert trainer.stop_reason == "nonfinite_loss" and trainer.global_step == stop
    assert ("at step 3;" if every_step else "at a step between 1 and 4;") in trainer.stop_message
    assert not torch.isfinite(module.layer.weight).all()  # the bad update was applied ...
    # ... but never saved: the save after step 3 (and the one at the end) read the flag and refused.
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == (["epoch=0-step=2.ckpt", "last.ckpt"] if every_step else [])
    if every_step:
        last = load_checkpoint(tmp_path / "ckpt" / "last.ckpt")
        assert last["loop"]["global_step"] == 2
        assert all(torch.isfinite(v).all() for v in last["model"].values())
