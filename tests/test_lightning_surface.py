"""Lightning's public surface: names, Trainer arguments and Trainer attributes research code uses."""

from __future__ import annotations

import datetime
import io
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from engine_fixtures import RecordingLogger, RegressionData, Regressor, ScriptedVal, loader, regression_data
from torch.utils.data import DataLoader, Dataset, TensorDataset

import engine as pl
from engine import Trainer


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # Lightning's default_root_dir is the working directory
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


def quiet(root: Path, **kwargs: Any) -> Trainer:
    """A Trainer with Lightning's defaults, minus the display (tests read files and attributes)."""
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("accelerator", "cpu")
    return Trainer(default_root_dir=root, **kwargs)


class Recorder(pl.Callback):
    """Records what the trainer says about itself at each hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, Any, bool]] = []

    def _note(self, hook: str, trainer: Trainer) -> None:
        self.seen.append((hook, trainer.state.fn, trainer.state.stage, trainer.training))

    def on_validation_start(self, trainer: Trainer, module: Any) -> None:
        self._note("validation_start", trainer)

    def on_train_batch_start(self, trainer: Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self._note("train_batch", trainer)

    def on_test_start(self, trainer: Trainer, module: Any) -> None:
        self._note("test_start", trainer)


# -- 1. names ----------------------------------------------------------------------------------
def test_lightning_names_and_submodules_resolve_like_lightning() -> None:
    assert pl.LightningModule is pl.Module and pl.LightningDataModule is pl.DataModule
    assert issubclass(pl.callbacks.ModelCheckpoint, pl.Callback)
    for name in (
        "Callback",
        "ModelCheckpoint",
        "EarlyStopping",
        "LearningRateMonitor",
        "TQDMProgressBar",
        "RichProgressBar",
        "ModelSummary",
        "RichModelSummary",
        "Timer",
    ):
        assert isinstance(getattr(pl.callbacks, name), type), name
    assert pl.loggers.CSVLogger is pl.CSVLogger and pl.loggers.WandbLogger is pl.WandbLogger
    assert issubclass(pl.callbacks.TQDMProgressBar, pl.callbacks.ProgressBar)
    assert issubclass(pl.callbacks.RichModelSummary, pl.callbacks.ModelSummary)


def test_rank_zero_only_runs_on_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

    calls: list[int] = []
    record = rank_zero_only(lambda x: calls.append(x) or x)
    assert record(1) == 1 and calls == [1]
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert record(2) is None and calls == [1]
    assert rank_zero_only(lambda: 5, default=-1)() == -1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank_zero_warn("silent on rank 1")  # would raise if it warned
        rank_zero_info("silent on rank 1")


def test_trainer_sets_rank_zero_only_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 7)
    quiet(tmp_path, max_epochs=1, enable_checkpointing=False).fit(Regressor(), loader(regression_data(8)))
    assert rank_zero_only.rank == 0


class _Noisy(Dataset):
    """What each worker draws from torch, random and numpy for each item."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        import numpy as np

        info = torch.utils.data.get_worker_info()
        return torch.tensor([info.id, torch.rand(()).item(), random.random(), float(np.random.rand())])


def _worker_draws(workers: bool) -> torch.Tensor:
    from engine.distributed import DistEnv, prepare_loader

    pl.seed_everything(123, workers=workers)
    raw = DataLoader(_Noisy(), batch_size=1, num_workers=2)
    return torch.cat(list(prepare_loader(raw, DistEnv(), seed=0, train=False)))


def test_seed_everything_workers_derives_per_worker_seeds() -> None:
    seeded = _worker_draws(workers=True)
    assert os.environ["PL_SEED_WORKERS"] == "1" and os.environ["PL_GLOBAL_SEED"] == "123"
    assert torch.equal(seeded, _worker_draws(workers=True))  # reproducible
    by_worker = {int(row[0]): row[1:] for row in seeded}
    assert not torch.equal(by_worker[0], by_worker[1])  # every stream differs between workers
    plain = _worker_draws(workers=False)
    assert os.environ["PL_SEED_WORKERS"] == "0"
    assert not torch.equal(seeded[:, 1:], plain[:, 1:])  # the worker init function reseeded
    assert pl.seed_everything() == 123  # None: PL_GLOBAL_SEED


def test_progress_bar_aliases_accept_lightning_arguments(tmp_path: Path) -> None:
    quiet_bar, shown = io.StringIO(), io.StringIO()
    trainer = quiet(tmp_path, max_epochs=1, log_every_n_steps=1, enable_progress_bar=True, enable_checkpointing=False)
    trainer.callbacks.append(pl.callbacks.TQDMProgressBar(refresh_rate=0, stream=quiet_bar))
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert quiet_bar.getvalue() == ""  # refresh_rate=0: off, as in Lightning
    theme = pl.callbacks.RichProgressBarTheme(description="green")
    rich = pl.callbacks.RichProgressBar(refresh_rate=1, leave=True, theme=theme, stream=shown)
    trainer = quiet(tmp_path, max_epochs=1, log_every_n_steps=1, callbacks=[rich], enable_checkpointing=False)
    assert trainer.progress_bar_callback is rich
    assert sum(isinstance(c, pl.ProgressBar) for c in trainer.callbacks) == 1  # no second, default bar
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert "epoch 1/1" in shown.getvalue() and rich.theme.description == "green" and rich.leave is True


class _Nested(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 1)
        self.head.requires_grad_(False)
        self.example_input_array = torch.zeros(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.encoder.parameters(), lr=0.1)


def test_model_summary_prints_lightnings_table_with_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    quiet(tmp_path, max_epochs=1, enable_model_summary=True, enable_checkpointing=False).fit(
        _Nested(), loader(regression_data(8))
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if "| Name" in line)
    assert [c.strip() for c in header.split("|")] == ["", "Name", "Type", "Params", "Mode", "In sizes", "Out sizes"]
    encoder = next(line for line in lines if "| encoder" in line)
    assert [c.strip() for c in encoder.split("|")][2:] == ["Sequential", "40", "train", "[3, 4]", "[3, 8]"]
    assert "| encoder.0" not in out  # max_depth=1
    assert "40        Trainable params" in out and "9         Non-trainable params" in out
    assert "49        Total params" in out


def test_model_summary_depth_and_off(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = loader(regression_data(8))
    deep = pl.callbacks.RichModelSummary(max_depth=2)
    quiet(tmp_path, max_epochs=1, callbacks=[deep], enable_checkpointing=False).fit(_Nested(), data)
    assert "| encoder.0 " in capsys.readouterr().out
    quiet(tmp_path, max_epochs=1, callbacks=[pl.callbacks.ModelSummary(max_depth=0)], enable_checkpointing=False).fit(
        _Nested(), data
    )
    assert "Trainable params" not in capsys.readouterr().out
    Trainer(default_root_dir=tmp_path, max_epochs=1, enable_progress_bar=False, enable_checkpointing=False).fit(
        _Nested(), data
    )
    assert "Trainable params" in capsys.readouterr().out  # enable_model_summary defaults to True, as in Lightning


class _Scheduled(Regressor):
    def __init__(self, interval: str | None) -> None:
        super().__init__()
        self.interval = interval

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        if self.interval is None:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.interval, "name": "decay"}}


@pytest.mark.parametrize(
    ("logging_interval", "scheduler_interval", "expected"),
    [
        ("step", "epoch", [2, 4, 6]),  # every log step (log_every_n_steps=2, 2 steps per epoch)
        ("epoch", "step", [1, 3, 5]),  # each epoch's start, sent with its first step's record
        (None, "epoch", [1, 3, 5]),  # as the scheduler steps
        (None, "step", [2, 4, 6]),
        (None, None, [2, 4, 6]),  # no scheduler: per step
    ],
)
def test_learning_rate_monitor_logging_interval(
    tmp_path: Path, logging_interval: str | None, scheduler_interval: str | None, expected: list[int]
) -> None:
    logger = RecordingLogger()
    monitor = pl.callbacks.LearningRateMonitor(logging_interval=logging_interval)
    trainer = quiet(
        tmp_path, max_epochs=3, log_every_n_steps=2, callbacks=[monitor], logger=logger, enable_checkpointing=False
    )
    trainer.fit(_Scheduled(scheduler_interval), loader(regression_data(8)))
    assert [step for step, _ in logger.series("lr-SGD")] == expected
    if scheduler_interval == "epoch" and logging_interval is None:
        assert [v for _, v in logger.series("lr-SGD")] == [0.1, 0.05, 0.025]


def test_learning_rate_monitor_rejects_unknown_interval() -> None:
    with pytest.raises(ValueError, match="'step', 'epoch' or None"):
        pl.callbacks.LearningRateMonitor(logging_interval="batch")


def test_csv_logger_writes_lightnings_layout_and_versions(tmp_path: Path) -> None:
    for expected in ("version_0", "version_1"):
        logger = pl.loggers.CSVLogger(tmp_path / "logs", name="exp")
        trainer = quiet(tmp_path, max_epochs=2, log_every_n_steps=1, logger=logger, enable_checkpointing=False)
        trainer.fit(Regressor(), loader(regression_data(8)))
        folder = tmp_path / "logs" / "exp" / expected
        assert trainer.log_dir == logger.log_dir == str(folder)
        rows = (folder / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        assert (
            header == sorted(header) and "train_loss" in header and len(rows) == 1 + 4
        )  # 4 steps (no row for an epoch number alone)
        assert yaml.safe_load((folder / "hparams.yaml").read_text()) == {}  # Lightning's: the module's hparams, flat
    named = pl.loggers.CSVLogger(tmp_path / "flat", name="", version="run-a", prefix="fold1")
    named.log_metrics({"loss": 1.0})
    assert (tmp_path / "flat" / "run-a" / "metrics.csv").read_text().splitlines() == ["fold1-loss,step", "1.0,0"]


# -- 2. Trainer arguments ----------------------------------------------------------------------
def test_logger_forms(tmp_path: Path) -> None:
    a, b = RecordingLogger(), RecordingLogger()
    trainer = quiet(tmp_path, max_epochs=1, log_every_n_steps=1, logger=[a, b], enable_checkpointing=False)
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert trainer.loggers == [a, b] and a.metrics == b.metrics and len(a.metrics) == 3
    assert a.status == b.status == "success" and trainer.logger.calls is a.calls  # attributes: the first logger's
    default = quiet(tmp_path / "d", max_epochs=1, logger=True, enable_checkpointing=False)
    default.fit(Regressor(), loader(regression_data(8)))
    assert isinstance(default.logger, pl.CSVLogger)
    assert (tmp_path / "d" / "lightning_logs" / "version_0" / "hparams.yaml").is_file()  # 2 steps: no row yet
    assert isinstance(quiet(tmp_path / "n").logger, pl.CSVLogger)  # no logger=: Lightning's default, CSV
    for off in ([], False):
        trainer = quiet(tmp_path, logger=off)
        assert trainer.loggers == [] and isinstance(trainer.logger, pl.NullLogger)
        assert trainer.log_dir == str(tmp_path)  # no logger: default_root_dir


def test_enable_checkpointing_keeps_the_newest_epoch_in_default_root_dir(tmp_path: Path) -> None:
    trainer = quiet(tmp_path / "run", max_epochs=2, logger=False)  # with a logger: in its version folder
    trainer.fit(Regressor(), loader(regression_data(8)))
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["epoch=1-step=4.ckpt"]  # Lightning's default: newest epoch only, no last.ckpt
    assert trainer.checkpoint_callback.best_model_path == str(tmp_path / "run" / "checkpoints" / files[0])
    quiet(tmp_path / "off", max_epochs=1, enable_checkpointing=False).fit(Regressor(), loader(regression_data(8)))
    assert not (tmp_path / "off" / "checkpoints").exists()
    barebones = quiet(tmp_path / "bare", max_epochs=1, barebones=True, logger=True)
    assert not any(
        isinstance(c, (pl.ProgressBar, pl.ModelCheckpoint, pl.callbacks.ModelSummary)) for c in barebones.callbacks
    )
    assert barebones.loggers == [] and barebones.num_sanity_val_steps == 0
    assert not any(isinstance(c, pl.ProgressBar) for c in quiet(tmp_path, enable_progress_bar=False).callbacks)


class _StopAtOnce(pl.Callback):
    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        trainer.should_stop = True  # Lightning's way for a callback to stop


def test_min_epochs_and_min_steps_hold_back_a_requested_stop(tmp_path: Path) -> None:
    flat = [1.0] * 10  # never improves: patience 1 stops after the second validation
    early = pl.EarlyStopping(monitor="val_loss", patience=1, verbose=False)
    trainer = quiet(tmp_path, max_epochs=10, min_epochs=4, callbacks=[early], enable_checkpointing=False)
    trainer.fit(ScriptedVal(flat), datamodule=RegressionData())
    assert trainer.current_epoch == 4 and trainer.stop_reason == "early_stopping"
    trainer = quiet(tmp_path, max_epochs=10, min_steps=6, callbacks=[_StopAtOnce()], enable_checkpointing=False)
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert trainer.global_step == 6
    trainer = quiet(tmp_path, max_epochs=10, callbacks=[_StopAtOnce()], enable_checkpointing=False)
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert trainer.global_step == 1  # without a minimum the stop is immediate


@pytest.mark.parametrize("max_time", ["00:00:00:00", {"seconds": 0}, datetime.timedelta(0)])
def test_max_time_stops_with_reason(tmp_path: Path, max_time: Any) -> None:
    trainer = quiet(tmp_path, max_epochs=5, max_time=max_time, enable_checkpointing=False)
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert trainer.stop_reason == "max_time" and trainer.global_step == 1


def test_max_time_rejects_bad_forms() -> None:
    with pytest.raises(ValueError, match="DD:HH:MM:SS"):
        Trainer(max_time="12:00")
    with pytest.raises(ValueError, match="timedelta's keywords"):
        Trainer(max_time={"weeks_": 1})


def test_limits_strategy_devices_and_accelerator_forms(tmp_path: Path) -> None:
    trainer = Trainer(limit_test_batches=3, limit_predict_batches=0.5, strategy="ddp_spawn", accelerator="gpu")
    assert (trainer.limit_test_batches, trainer.limit_predict_batches) == (3, 0.5)
    assert trainer.strategy == "ddp" and trainer.accelerator == "cuda"
    assert Trainer(strategy="ddp_find_unused_parameters_true").find_unused_parameters is True
    assert Trainer(strategy="fsdp").strategy == "fsdp"
    assert Trainer(strategy="fsdp", fsdp={"wrap": ["Block"]}).fsdp_options.wrap == ["Block"]
    with pytest.raises(ValueError, match="'auto', 'ddp'"):
        Trainer(strategy="deepspeed")
    with pytest.raises(ValueError, match="fsdp options \\['shard'\\] are unknown"):
        Trainer(strategy="fsdp", fsdp={"shard": True})
    with pytest.raises(ValueError, match="not supported"):
        Trainer(accelerator="tpu")
    for devices, count in (
        ("auto", 1),
        (1, 1),
        ([0, 1], 2),
        ("0,1", 2),
        ("3", 3),
        (-1, max(1, torch.cuda.device_count())),
    ):
        assert Trainer(devices=devices).num_devices == count, devices
    with pytest.raises(ValueError, match="devices=0"):
        Trainer(devices=0)
    with pytest.warns(UserWarning, match="torchrun --nproc_per_node=2"):
        quiet(tmp_path, max_epochs=1, devices=2, enable_checkpointing=False).fit(
            Regressor(), loader(regression_data(8))
        )


def test_arguments_without_meaning_here_warn_once() -> None:
    with pytest.warns(UserWarning, match=r"plugins=\['x'\]\) is accepted but has no effect") as record:
        Trainer(plugins=["x"], inference_mode=False)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(overfit_batches=0.0, plugins=None, inference_mode=True)  # defaults: silent


class _CudnnSpy(pl.Callback):
    def on_train_start(self, trainer: Trainer, module: Any) -> None:
        self.benchmark = torch.backends.cudnn.benchmark
        self.anomaly = torch.is_anomaly_enabled()


@pytest.mark.filterwarnings("ignore:Error detected in MulBackward0")
def test_benchmark_sets_cudnn_and_detect_anomaly_raises_on_nan_gradients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    spy = _CudnnSpy()
    quiet(tmp_path, max_epochs=1, benchmark=True, callbacks=[spy], enable_checkpointing=False).fit(
        Regressor(), loader(regression_data(8))
    )
    assert spy.benchmark is True and spy.anomaly is False

    class NanGrad(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return torch.sqrt(self.layer.weight * 0).sum()  # finite loss, NaN gradient (0 * inf)

    with pytest.raises(RuntimeError, match="returned nan values"):
        quiet(tmp_path, max_epochs=1, detect_anomaly=True, enable_checkpointing=False).fit(
            NanGrad(), loader(regression_data(8))
        )
    assert not torch.is_anomaly_enabled()  # restored after fit
    quiet(tmp_path, max_epochs=1, enable_checkpointing=False).fit(NanGrad(), loader(regression_data(8)))


class _Timed(Regressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with self.trainer.profiler.profile("my_block"):
            return super().training_step(batch, batch_idx)


def test_simple_profiler_reports_phases_and_hooks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trainer = quiet(tmp_path, max_epochs=2, profiler="simple", num_sanity_val_steps=0)
    trainer.fit(_Timed(), datamodule=RegressionData())
    out = capsys.readouterr().out
    assert "FIT Profiler Report" in out
    records = trainer.profiler.records
    for phase in ("data (next batch)", "forward (training_step)", "backward", "optimizer", "validation", "checkpoint"):
        assert records[f"[phase] {phase}"][0] > 0, phase
        assert f"[phase] {phase}" in out
    assert records["[phase] optimizer"][0] == trainer.global_step == 8
    assert records["[phase] validation"][0] == 2 and records["[phase] checkpoint"][0] == 2
    assert records["my_block"][0] == 8
    assert records["[Callback]ModelCheckpoint.on_train_epoch_end"][0] == 2
    loop = trainer.fit_loop
    kept = [*vars(trainer).values(), *(getattr(loop, name) for name in type(loop).__slots__)]
    assert not any(getattr(v, "__name__", None) == "timed" for v in kept)  # no profiler wrappers left behind


def test_no_profiler_adds_no_wrappers(tmp_path: Path) -> None:
    from engine.profilers import PassThroughProfiler

    trainer = quiet(tmp_path, max_epochs=1, enable_checkpointing=False)
    assert type(trainer.profiler) is PassThroughProfiler
    fn = trainer.fit_loop.optimizer_step
    assert trainer.profiler.wrap("x", fn) is fn  # the loop runs the very same callables
    with trainer.profiler.profile("anything"):
        pass


def test_pytorch_profiler_writes_a_chrome_trace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trainer = quiet(tmp_path, max_steps=6, profiler="pytorch", enable_checkpointing=False)
    trainer.fit(Regressor(), loader(regression_data(32)))
    path = tmp_path / "profiler" / "fit.pt.trace.json"
    events = json.loads(path.read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert {"forward (training_step)", "backward", "optimizer"} <= names
    assert str(path) in capsys.readouterr().out
    with pytest.raises(ValueError, match="profiler='simple' or profiler='pytorch'"):
        Trainer(profiler="advanced")


class _CountingData(RegressionData):
    def __init__(self) -> None:
        super().__init__()
        self.made = 0

    def train_dataloader(self) -> DataLoader:
        self.made += 1
        return super().train_dataloader()


def test_reload_dataloaders_every_n_epochs(tmp_path: Path) -> None:
    for n, made in ((0, 1), (1, 3), (2, 2)):
        data = _CountingData()
        quiet(tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=n, enable_checkpointing=False).fit(
            Regressor(), datamodule=data
        )
        assert data.made == made, n


class _Predicting(Regressor):
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch[0])


def test_use_distributed_sampler_false_keeps_the_users_loader(tmp_path: Path) -> None:
    mine = loader(regression_data(8), shuffle=True)
    trainer = quiet(tmp_path, max_epochs=1, use_distributed_sampler=False, enable_checkpointing=False)
    trainer.fit(_Predicting(), mine)
    assert trainer.train_dataloader is mine and trainer.global_step == 2
    val = loader(regression_data(12))
    trainer.validate(dataloaders=val)
    trainer.test(dataloaders=mine)
    trainer.predict(dataloaders=[val, mine])
    assert trainer.val_dataloaders is val and trainer.test_dataloaders is mine
    assert trainer.predict_dataloaders == [val, mine] and trainer.num_val_batches == [3]
    trainer = quiet(tmp_path, max_epochs=1, enable_checkpointing=False, limit_val_batches=2)
    trainer.fit(Regressor(), mine, val)
    assert trainer.train_dataloader is not mine  # the engine's resumable, sharded sampler
    assert trainer.val_dataloaders is not val and trainer.num_val_batches == [2]
    assert [len(b) for b in trainer.val_dataloaders.batch_sampler] == [4, 4, 4]


# -- 3. Trainer surface ------------------------------------------------------------------------
def test_trainer_surface_during_and_after_fit(tmp_path: Path) -> None:
    recorder = Recorder()
    early = pl.EarlyStopping(monitor="val_loss", patience=5, verbose=False)
    logger = pl.loggers.CSVLogger(tmp_path)
    trainer = quiet(tmp_path, max_epochs=2, callbacks=[recorder, early], logger=logger, num_sanity_val_steps=1)
    module = _Scheduled("epoch")
    assert trainer.state.status == "initializing" and trainer.state.stage is None
    trainer.fit(module, datamodule=RegressionData())
    seen = {(hook, str(fn), str(stage), training) for hook, fn, stage, training in recorder.seen}
    assert seen == {
        ("validation_start", "fit", "sanity_check", False),
        ("train_batch", "fit", "train", True),
        ("validation_start", "fit", "validate", False),
    }
    assert trainer.model is module and trainer.lightning_module is module
    assert trainer.checkpoint_callbacks == [trainer.checkpoint_callback]
    assert isinstance(trainer.checkpoint_callback, pl.ModelCheckpoint)
    assert trainer.early_stopping_callback is early and trainer.early_stopping_callbacks == [early]
    assert trainer.loggers == [logger] and trainer.log_dir == str(tmp_path / "lightning_logs" / "version_0")
    (config,) = trainer.lr_scheduler_configs
    assert (config.interval, config.frequency, config.name, config.reduce_on_plateau) == ("epoch", 1, "decay", False)
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.StepLR)
    assert trainer.state.fn == "fit" and trainer.state.finished and not trainer.training
    assert (trainer.is_global_zero, trainer.global_rank, trainer.local_rank) == (True, 0, 0)
    assert (trainer.num_devices, trainer.num_nodes, trainer.world_size) == (1, 1, 1)
    assert (trainer.current_epoch, trainer.global_step, trainer.max_epochs) == (2, 8, 2)
    assert not trainer.sanity_checking
    assert {"train_loss", "val_loss"} <= set(trainer.callback_metrics)
    assert "val_loss" in trainer.logged_metrics
    assert set(trainer.progress_bar_metrics) == {"train_loss"}  # Regressor logs train_loss with prog_bar=True
    trainer.test(module, dataloaders=loader(regression_data(8)))
    assert recorder.seen[-1][:3] == ("test_start", "test", "test") and trainer.state.fn == "test"


def test_overfit_batches_trains_and_validates_on_the_same_first_batches_unshuffled(tmp_path: Path) -> None:
    """Lightning's overfit_batches: limit both loops to the first N batches and turn shuffling off."""
    seen: list[list[float]] = []

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0].flatten().tolist())
            return self.layer(batch[0]).sum()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            seen.append(["val", *batch[0].flatten().tolist()])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = TensorDataset(torch.arange(8.0).reshape(8, 1))
    train = DataLoader(data, batch_size=2, shuffle=True)
    trainer = Trainer(
        overfit_batches=2, max_epochs=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="overfit_batches: the train DataLoader shuffles"):
        trainer.fit(Recorder(), train, DataLoader(data, batch_size=2))
    first, val = [[0.0, 1.0], [2.0, 3.0]], [["val", 0.0, 1.0], ["val", 2.0, 3.0]]
    assert seen == [*first, *val, *first, *val]
