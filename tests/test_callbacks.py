"""Callbacks: hook order, EarlyStopping on scripted metrics, ModelCheckpoint files, ThroughputMonitor."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import RecordingLogger, Regressor, ScriptedVal, loader, make_trainer, regression_data
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import engine.callbacks as callbacks_module
from engine import ConfigError, EarlyStopping, ModelCheckpoint, ThroughputMonitor

DOCUMENTED_HOOKS = set(re.findall(r"(\w+)\(", callbacks_module.__doc__ or ""))


class HookRecorder:
    """Duck-typed: no base class, just methods named like hooks; records (hook, details)."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_") or name == "setup":

            def hook(trainer: Any, module: Any, *args: Any) -> None:
                assert module is trainer.module
                self.calls.append(f"{name}({args[-1]})" if name == "setup" else name)

            return hook
        raise AttributeError(name)


class ModuleHooks(Regressor):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls
        for hook in (
            "on_fit_start",
            "on_train_start",
            "on_train_epoch_start",
            "on_train_epoch_end",
            "on_validation_epoch_end",
            "on_train_end",
            "on_fit_end",
        ):
            setattr(self, hook, lambda *a, _h=hook: self.calls.append(f"module.{_h}"))


def test_duck_typed_callback_sees_hooks_in_the_documented_order(tmp_path: Path) -> None:
    calls: list[str] = []
    module = ModuleHooks(calls)
    trainer = make_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=1, callbacks=[HookRecorder(calls)])
    trainer.fit(module, loader(regression_data(8)), loader(regression_data(8)))  # 2 batches, 2 epochs

    def validation(batches: int) -> list[str]:
        return [
            "on_validation_start",
            "on_validation_epoch_start",
            *["on_validation_batch_start", "on_validation_batch_end"] * batches,
            "on_validation_epoch_end",
            "module.on_validation_epoch_end",
            "on_validation_end",
        ]

    batch = [  # Lightning's order around the optimizer step
        "on_train_batch_start",
        "on_before_zero_grad",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_train_batch_end",
    ]
    epoch = [
        "on_train_epoch_start",
        "module.on_train_epoch_start",
        *batch,
        *batch,
        *validation(2),
        "module.on_train_epoch_end",
        "on_train_epoch_end",
    ]
    assert calls == [
        "setup(fit)",
        "on_fit_start",
        "module.on_fit_start",
        "on_sanity_check_start",
        *validation(1),  # the sanity check
        "on_sanity_check_end",
        "on_train_start",
        "module.on_train_start",
        *epoch,
        *epoch,
        "on_train_end",
        "module.on_train_end",
        "on_fit_end",
        "module.on_fit_end",
    ]
    calls.clear()
    trainer.test(module, dataloaders=loader(regression_data(8)))
    test_batch = ["on_test_batch_start", "on_test_batch_end"]
    assert calls == [
        "setup(test)",
        "on_test_start",
        "on_test_epoch_start",
        *test_batch * 2,
        "on_test_epoch_end",
        "on_test_end",
    ]


def test_every_hook_the_trainer_calls_is_documented(tmp_path: Path) -> None:
    calls: list[str] = []

    class Fails(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.current_epoch == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    trainer = make_trainer(
        tmp_path, max_epochs=2, num_sanity_val_steps=1, callbacks=[HookRecorder(calls), ModelCheckpoint()]
    )
    trainer.test(Fails(), dataloaders=loader(regression_data(4)))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Fails(), loader(regression_data(4)), loader(regression_data(4)))
    called = {c.split("(")[0] for c in calls}
    assert {"on_exception", "on_save_checkpoint", "on_test_end"} <= called
    assert called <= DOCUMENTED_HOOKS, called - DOCUMENTED_HOOKS
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["stop_reason"]) == ("failed", "failed")
    assert summary["stop_message"] == "RuntimeError: boom"


def test_on_save_checkpoint_sees_the_checkpoint(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    class Saver:
        def on_save_checkpoint(self, trainer: Any, module: Any, checkpoint: dict[str, Any]) -> None:
            seen.append(checkpoint)

    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[Saver(), ModelCheckpoint(save_last=True)])
    trainer.fit(Regressor(), loader(regression_data(8)))
    assert len(seen) == 2  # the top-k file and last.ckpt
    assert all(c["loop"]["global_step"] == 2 and "layer.weight" in c["model"] for c in seen)


# -- EarlyStopping -------------------------------------------------------------------------------
NAN = float("nan")


@pytest.mark.parametrize(
    ("script", "kwargs", "stopped_epoch", "message"),
    [
        (
            [1.0, 0.9, 0.95, 0.91, 0.8, 0.7],
            {"patience": 2},
            3,
            "val_loss did not improve by more than 0.0 for 2 checks (best 0.9)",
        ),
        (
            [1.0, 0.95, 0.92, 0.5, 0.4],
            {"patience": 2, "min_delta": 0.1},
            2,
            "val_loss did not improve by more than 0.1 for 2 checks (best 1)",
        ),
        (
            [0.5, 0.6, 0.6, 0.55, 0.9],
            {"patience": 2, "mode": "max"},
            3,
            "val_loss did not improve by more than 0.0 for 2 checks (best 0.6)",
        ),
        (
            [1.0, 0.7, 0.4, 0.3],
            {"patience": 10, "stopping_threshold": 0.5},
            2,
            "val_loss = 0.4 reached stopping_threshold 0.5",
        ),
        (
            [1.0, 6.0, 0.1],
            {"patience": 10, "divergence_threshold": 5.0},
            1,
            "val_loss = 6 diverged past divergence_threshold 5.0",
        ),
        ([1.0, NAN, 0.5], {"patience": 10}, 1, "val_loss = nan is not finite"),
        ([1.0, 2.0, 2.0], {"patience": 0}, 1, "val_loss did not improve by more than 0.0 for 1 check (best 1)"),
    ],
)
def test_early_stopping_on_a_scripted_metric(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    script: list[float],
    kwargs: dict[str, Any],
    stopped_epoch: int,
    message: str,
) -> None:
    es = EarlyStopping(monitor="val_loss", **kwargs)
    trainer = make_trainer(tmp_path, max_epochs=len(script) + 3, limit_train_batches=1, callbacks=[es])
    trainer.fit(ScriptedVal(script), loader(regression_data(8)), loader(regression_data(4)))
    assert es.stopped_epoch == stopped_epoch
    assert trainer.global_step == stopped_epoch + 1  # one step per epoch, the stopping epoch completes
    assert (trainer.should_stop, trainer.stop_reason, trainer.stop_message) == (True, "early_stopping", message)
    assert f"stopping: {message}\n" in capsys.readouterr().out  # the reason is printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["stop_reason"], summary["stop_message"], summary["epoch"]) == (
        "early_stopping",
        message,
        stopped_epoch + 1,
    )


def test_early_stopping_without_check_finite_treats_nan_as_no_improvement(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_loss", patience=2, check_finite=False)
    trainer = make_trainer(tmp_path, max_epochs=4, limit_train_batches=1, callbacks=[es])
    trainer.fit(ScriptedVal([1.0, NAN, 0.5, 0.4]), loader(regression_data(8)), loader(regression_data(4)))
    assert (trainer.stop_reason, es.stopped_epoch, es.best_score) == ("max_epochs", None, pytest.approx(0.4))


def test_early_stopping_without_validation_judges_training_epoch_metrics(tmp_path: Path) -> None:
    class TrainScript(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("score", [3.0, 2.0, 2.5, 2.4, 1.0][self.current_epoch], on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

    es = EarlyStopping(monitor="score", patience=2)
    trainer = make_trainer(tmp_path, max_epochs=5, callbacks=[es])
    trainer.fit(TrainScript(), loader(regression_data(8)))
    assert (es.stopped_epoch, trainer.global_step, trainer.stop_reason) == (3, 8, "early_stopping")


def test_early_stopping_on_an_unlogged_metric_names_what_was_logged(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[EarlyStopping(monitor="val_acc")])
    with pytest.raises(ConfigError, match=r"monitor='val_acc' was never logged \(logged: train_loss, val_loss\)"):
        trainer.fit(ScriptedVal([1.0, 1.0]), loader(regression_data(4)), loader(regression_data(4)))


@pytest.mark.parametrize(
    ("callback", "key"),
    [(EarlyStopping(monitor="val_los"), "early_stopping"), (ModelCheckpoint(monitor="val_los"), "checkpoint")],
)
def test_a_misspelt_monitor_fails_after_the_sanity_check_with_a_suggestion(
    tmp_path: Path, callback: Any, key: str
) -> None:
    trainer = make_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=1, callbacks=[callback])
    with pytest.raises(
        ConfigError, match=rf"{key}.monitor='val_los' was never logged.*did you mean {key}.monitor=val_loss\?"
    ):
        trainer.fit(ScriptedVal([1.0, 1.0]), loader(regression_data(4)), loader(regression_data(4)))
    assert trainer.global_step == 0  # before any training, not after a whole epoch


def test_a_monitor_on_a_training_metric_is_not_refused_by_the_sanity_check(tmp_path: Path) -> None:
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="train_loss", save_top_k=1)
    trainer = make_trainer(tmp_path, max_epochs=2, num_sanity_val_steps=1, callbacks=[ckpt])
    trainer.fit(ScriptedVal([1.0, 1.0]), loader(regression_data(4)), loader(regression_data(4)))
    assert trainer.global_step > 0 and ckpt.best_model_score is not None


# -- ModelCheckpoint -----------------------------------------------------------------------------
def _fit_scripted(
    tmp_path: Path, script: list[float], **ckpt_kwargs: Any
) -> tuple[Any, ModelCheckpoint, RecordingLogger]:
    ckpt, logger = ModelCheckpoint(**ckpt_kwargs), RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=len(script), limit_train_batches=1, callbacks=[ckpt], logger=logger)
    trainer.fit(ScriptedVal(script), loader(regression_data(8)), loader(regression_data(4)))
    return trainer, ckpt, logger


def _files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "checkpoints").iterdir()}


@pytest.mark.parametrize(
    ("mode", "kept", "best"),
    [
        ("min", {"epoch=1-val_loss=0.30.ckpt", "epoch=3-val_loss=0.20.ckpt"}, ("epoch=3-val_loss=0.20.ckpt", 0.2)),
        ("max", {"epoch=0-val_loss=0.50.ckpt", "epoch=2-val_loss=0.40.ckpt"}, ("epoch=0-val_loss=0.50.ckpt", 0.5)),
    ],
)
def test_model_checkpoint_keeps_top_k_by_the_monitored_metric(
    tmp_path: Path, mode: str, kept: set[str], best: tuple[str, float]
) -> None:
    trainer, ckpt, logger = _fit_scripted(
        tmp_path,
        [0.5, 0.3, 0.4, 0.2],
        monitor="val_loss",
        mode=mode,
        save_top_k=2,
        filename="{epoch}-{val_loss:.2f}",
        save_last=True,
    )
    assert _files(tmp_path) == kept | {"last.ckpt"}
    assert (Path(ckpt.best_model_path).name, ckpt.best_model_score) == (best[0], pytest.approx(best[1]))
    assert {Path(p).name for p in ckpt.best_k_models} == kept
    state = torch.load(ckpt.best_model_path, weights_only=True)
    assert state["loop"]["epoch"] == int(best[0][6]) and state["loop"]["global_step"] == int(best[0][6]) + 1
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["loop"]["global_step"] == 4
    assert torch.equal(last["model"]["layer.weight"], trainer.module.layer.weight)
    assert [(s["step"], s["epoch"]) for s in logger.saves][-1] == (4, 3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["best_model_path"], summary["best_model_score"]) == (ckpt.best_model_path, pytest.approx(best[1]))


def test_model_checkpoint_default_name_and_no_monitor_keeps_the_newest(tmp_path: Path) -> None:
    _, ckpt, _ = _fit_scripted(tmp_path, [0.5, 0.3, 0.4])
    assert _files(tmp_path) == {"epoch=2-step=3.ckpt"}  # Lightning's: no last.ckpt unless save_last
    assert ckpt.best_model_score is None
    _, ckpt, _ = _fit_scripted(tmp_path / "m", [0.5, 0.25], monitor="val_loss")
    assert _files(tmp_path / "m") == {"epoch=1-step=2.ckpt"}  # the value only when `filename` names it
    _, ckpt, _ = _fit_scripted(tmp_path / "f", [0.5, 0.25], monitor="val_loss", filename="{epoch}-{val_loss:.4f}")
    assert _files(tmp_path / "f") == {"epoch=1-val_loss=0.2500.ckpt"}


def test_model_checkpoint_save_last_false_and_every_n_train_steps(tmp_path: Path) -> None:
    _fit_scripted(tmp_path, [0.5, 0.3], save_last=False)
    assert _files(tmp_path) == {"epoch=1-step=2.ckpt"}
    ckpt, logger = ModelCheckpoint(every_n_train_steps=2, save_top_k=-1), RecordingLogger()
    trainer = make_trainer(tmp_path / "s", max_epochs=2, callbacks=[ckpt], logger=logger)
    trainer.fit(Regressor(), loader(regression_data(12)))  # 3 steps per epoch
    assert _files(tmp_path / "s") == {"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=1-step=6.ckpt"}


# -- ThroughputMonitor ---------------------------------------------------------------------------
class SlowDataset(Dataset):
    def __init__(self, n: int, delay: float) -> None:
        self.data, self.delay = regression_data(n), delay

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        time.sleep(self.delay)
        return self.data[i]


class Heavy(Regressor):
    """Does real work per batch (a few large matmuls), so data loading is a small share."""

    def __init__(self) -> None:
        super().__init__(d=64)
        # Wide enough that a busy machine's scheduling hiccups stay a small share of a step.
        self.net = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _throughput_fit(tmp_path: Path, module: Regressor, data: Any, batch_size: int) -> tuple[RecordingLogger, Any]:
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=1, log_every_n_steps=2, logger=logger, callbacks=[ThroughputMonitor()])
    trainer.fit(module, loader(data, batch_size=batch_size))
    return logger, trainer


def test_throughput_monitor_warns_for_a_slow_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger, trainer = _throughput_fit(tmp_path, Regressor(), SlowDataset(16, delay=0.004), batch_size=2)  # 8 batches
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: the data loader is the bottleneck")]
    assert len(warnings) == 1, out  # warned once
    # A plain script has no config keys: the advice is in its own terms.
    assert re.search(r"Try DataLoader\(num_workers=\d+, persistent_workers=True\)\.", warnings[0]), warnings[0]
    report = re.search(
        r"bottleneck report: 8 batches, [\d.]+ samples/s, [\d.]+ ms/batch, waiting for data (\d+)% "
        r"\(([\d.]+) ms/batch\), compute \d+%\n  the data loader is the bottleneck.*DataLoader\(num_workers=\d+",
        out,
    )
    assert report and int(report.group(1)) > 50 and float(report.group(2)) >= 8.0, out
    fracs = [v for _, v in logger.series("throughput/data_wait_frac")]
    assert len(fracs) == 4 and min(fracs) > 0.5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data_wait_frac"] > 0.5 and summary["samples_per_sec"] > 0


def test_every_trainer_reports_the_bottleneck_and_a_configured_run_gets_config_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine import load_config

    plain = RecordingLogger()
    trainer = make_trainer(tmp_path / "plain", max_epochs=1, log_every_n_steps=2, logger=plain)  # no monitor given
    trainer.fit(Regressor(), loader(SlowDataset(16, delay=0.004), batch_size=2))
    out = capsys.readouterr().out
    assert re.search(r"bottleneck report: 8 batches, .*\n  the data loader is the bottleneck.*Try DataLoader\(", out)
    assert "data.num_workers" not in out and not plain.series("throughput/data_wait_frac")  # reports, logs nothing
    cfg = load_config(["wandb.mode=disabled"], path=False, exit_on_error=False)
    configured = make_trainer(tmp_path / "cfg", max_epochs=1, log_every_n_steps=2, config=cfg)
    configured.fit(Regressor(), loader(SlowDataset(16, delay=0.004), batch_size=2))
    out = capsys.readouterr().out
    assert re.search(r"Try data\.num_workers=\d+, DataLoader\(persistent_workers=True\) in your data module\.", out)
    barebones = make_trainer(tmp_path / "bare", max_epochs=1, barebones=True)
    barebones.fit(Regressor(), loader(regression_data(16), batch_size=2))
    assert "bottleneck report" not in capsys.readouterr().out


def test_throughput_monitor_is_quiet_for_fast_data_and_real_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = TensorDataset(torch.randn(512, 64), torch.randn(512, 1))
    logger, _ = _throughput_fit(tmp_path, Heavy(), data, batch_size=64)  # 8 batches
    out = capsys.readouterr().out
    assert "warning" not in out and "Try" not in out, out
    assert re.search(r"bottleneck report: 8 batches, .* waiting for data \d+%", out)
    assert all(v > 0 for _, v in logger.series("throughput/samples_per_sec"))


def test_throughput_monitor_ignores_sub_millisecond_waits() -> None:
    monitor = ThroughputMonitor(warn_fraction=0.2, min_wait_ms=1.0)
    assert not monitor._slow(wait=0.0005 * 10, total=0.001 * 10, batches=10)  # 50%, but 0.5 ms per batch
    assert monitor._slow(wait=0.002 * 10, total=0.004 * 10, batches=10)  # 50% and 2 ms per batch
    assert not monitor._slow(wait=0.002 * 10, total=0.1 * 10, batches=10)  # 2 ms of a 100 ms step
    assert math.isclose(0.2, monitor.warn_fraction)


def test_learning_rate_monitor_names_param_groups() -> None:
    from engine import LearningRateMonitor

    w = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [w], "lr": 0.1}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01}])

    class FakeTrainer:
        optimizers = [opt]

    assert LearningRateMonitor().learning_rates(FakeTrainer()) == {"lr-AdamW": 0.1, "lr-AdamW-pg1": 0.01}


def test_progress_bar_prints_plain_lines_when_not_a_tty(tmp_path: Path) -> None:
    import io

    from engine import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream=stream, line_interval_s=0)
    trainer = make_trainer(tmp_path, max_epochs=2, log_every_n_steps=2, callbacks=[bar])
    trainer.fit(Regressor(), loader(regression_data(16)), loader(regression_data(8)))  # 4 steps an epoch
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6 and "\r" not in stream.getvalue()
    assert re.fullmatch(
        r"epoch 1/2 \| batch 2/4 \| step 2 \| 0:00 elapsed, ETA 0:00 \| \d+ samples/s, data wait \d+% \| "
        r"train_loss=[\d.e+-]+",
        lines[0],
    ), lines[0]
    assert lines[1].startswith("epoch 1/2 | batch 4/4 | step 4 | ")
    # No prog_bar validation metric: every validation metric is shown.
    assert re.fullmatch(r"epoch 1/2 step 4 validation: val_loss=[0-9.]+", lines[2])
    assert lines[5].startswith("epoch 2/2 step 8 validation: ")


def test_progress_lines_are_throttled_in_time_but_every_epoch_ends_with_one(tmp_path: Path) -> None:
    import io

    from engine import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream=stream, line_interval_s=3600)
    trainer = make_trainer(tmp_path, max_epochs=2, log_every_n_steps=1, callbacks=[bar])
    trainer.fit(Regressor(), loader(regression_data(16)), loader(regression_data(8)))
    batches = [line.split(" | ")[1] for line in stream.getvalue().splitlines() if "validation" not in line]
    assert batches == ["batch 1/4", "batch 4/4", "batch 4/4"]  # the first, then each epoch's last
