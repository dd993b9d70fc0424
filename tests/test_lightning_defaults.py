"""The engine's Trainer, callbacks and loggers default to what Lightning 2.6 does.

The LIGHTNING_* constants were recorded by running the same module and data under Lightning 2.6.6
(`lightning.pytorch`, CPU, TensorBoard not installed, so its default logger is a CSVLogger): a
Linear(4, 1) regression, 8 samples in batches of 2 (4 steps an epoch), max_epochs=2, no progress
bar, model summary or sanity check. The script printed the files under `default_root_dir`, the rows
of metrics.csv, hparams.yaml and `trainer.should_stop`. Generated projects keep the engine's own
choices (W&B, last.ckpt, the metric in checkpoint names, log every 10 steps): their config says so.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from engine import CSVLogger, DataModule, ModelCheckpoint, Module, Trainer
from engine.checkpoint import CheckpointError, load_checkpoint
from engine.config import Config
from engine.loggers import NullLogger
from engine.run import build_trainer

# Lightning 2.6.6: Trainer() then .fit (the files under default_root_dir, sorted).
LIGHTNING_DEFAULT_FILES = [
    "lightning_logs/version_0/checkpoints/epoch=1-step=8.ckpt",
    "lightning_logs/version_0/hparams.yaml",
    "lightning_logs/version_0/metrics.csv",
]
LIGHTNING_NO_LOGGER_FILES = ["checkpoints/epoch=1-step=8.ckpt"]  # Trainer(logger=False)
# hparams.yaml: the module's save_hyperparameters() merged with the datamodule's, flat.
LIGHTNING_HPARAMS = {"batch_size": 2, "lr": 0.1, "n": 8, "width": 4}
# Its metrics.csv: (epoch, step, val_loss logged?) of each row; train_loss waits for step 50.
LIGHTNING_DEFAULT_ROWS = [("0", "3", True), ("1", "7", True)]
# CSVLogger(save_dir, name="exp") + ModelCheckpoint(monitor="val_loss", save_top_k=2), no save_last.
LIGHTNING_MONITOR_FILES = [
    "logs/exp/version_0/checkpoints/epoch=0-step=4.ckpt",
    "logs/exp/version_0/checkpoints/epoch=1-step=8.ckpt",
    "logs/exp/version_0/hparams.yaml",
    "logs/exp/version_0/metrics.csv",
]
# ModelCheckpoint(save_weights_only=True, save_last=True), Trainer(logger=False).
LIGHTNING_WEIGHTS_ONLY_FILES = ["checkpoints/epoch=1-step=8.ckpt", "checkpoints/last.ckpt"]
# metrics.csv with log_every_n_steps=1, `a` logged on step in training_step (value: batch_idx),
# `v` in validation_step, `e` on epoch only, then trainer.test() logging `t`: (epoch, step) of each row.
LIGHTNING_CSV_HEADER = ["a", "e", "epoch", "step", "t", "v"]
LIGHTNING_CSV_ROWS = {
    "a": [("0", "0"), ("0", "1"), ("0", "2"), ("0", "3"), ("1", "4"), ("1", "5"), ("1", "6"), ("1", "7")],
    "v": [("0", "3"), ("1", "7")],
    "e": [("0", "3"), ("1", "7")],
    "t": [("2", "8")],
}
# The same with accumulate_grad_batches=2 (two optimizer steps an epoch).
LIGHTNING_CSV_ROWS_ACCUMULATED = {
    "a": [("0", "0"), ("0", "1"), ("1", "2"), ("1", "3")],
    "v": [("0", "1"), ("1", "3")],
    "e": [("0", "1"), ("1", "3")],
    "t": [("2", "4")],
}
# 120 batches, one epoch, the default log_every_n_steps: the rows with train_loss.
LIGHTNING_DEFAULT_CADENCE = [("0", "49"), ("0", "99")]
LIGHTNING_WEIGHTS_ONLY_RESUME = "save_weights_only"  # KeyError: "... contains only the model. ... save_weights_only"


# inspect.signature(lightning.pytorch.Trainer.__init__) under Lightning 2.6.6: every argument's default.
LIGHTNING_TRAINER_DEFAULTS = {
    "accelerator": "auto", "strategy": "auto", "devices": "auto", "num_nodes": 1, "precision": None,
    "logger": None, "callbacks": None, "fast_dev_run": False, "max_epochs": None, "min_epochs": None,
    "max_steps": -1, "min_steps": None, "max_time": None, "limit_train_batches": None,
    "limit_val_batches": None, "limit_test_batches": None, "limit_predict_batches": None,
    "overfit_batches": 0.0, "val_check_interval": None, "check_val_every_n_epoch": 1,
    "num_sanity_val_steps": None, "log_every_n_steps": None, "enable_checkpointing": None,
    "enable_progress_bar": None, "enable_model_summary": None, "accumulate_grad_batches": 1,
    "gradient_clip_val": None, "gradient_clip_algorithm": None, "deterministic": None, "benchmark": None,
    "inference_mode": True, "use_distributed_sampler": True, "profiler": None, "detect_anomaly": False,
    "barebones": False, "plugins": None, "sync_batchnorm": False, "reload_dataloaders_every_n_epochs": 0,
    "default_root_dir": None, "enable_autolog_hparams": True, "model_registry": None,
}  # fmt: skip
# inspect.signature(ModelCheckpoint.__init__) and CSVLogger.__init__ under Lightning 2.6.6.
LIGHTNING_CHECKPOINT_DEFAULTS = {
    "dirpath": None, "filename": None, "monitor": None, "verbose": False, "save_last": None, "save_top_k": 1,
    "save_on_exception": False, "save_weights_only": False, "mode": "min", "auto_insert_metric_name": True,
    "every_n_train_steps": None, "train_time_interval": None, "every_n_epochs": None,
    "save_on_train_epoch_end": None, "enable_version_counter": True,
}  # fmt: skip
LIGHTNING_CSV_DEFAULTS = {"name": "lightning_logs", "version": None, "prefix": "", "flush_logs_every_n_steps": 100}
# ModelCheckpoint(save_on_exception=True), Trainer(logger=False, max_epochs=3), training_step raising at
# global_step 5: the epoch-end checkpoint stays, the exception's is added.
LIGHTNING_EXCEPTION_FILES = ["checkpoints/epoch=0-step=4.ckpt", "checkpoints/epoch=1-step=5.ckpt"]
# Defaults kept on purpose, each listed in the README's "Coming from Lightning".
ENGINE_OWN_DEFAULTS = {"devices": 1}  # a Trainer starts no processes: torchrun or trainer.devices=N does


class Linear(Module):
    def __init__(self, lr: float = 0.1, width: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", ((self.layer(x) - y) ** 2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Data(DataModule):
    def __init__(self, batch_size: int = 2, n: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _loader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        n = self.hparams.n
        return DataLoader(
            TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)),
            batch_size=self.hparams.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()


QUIET = {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}


def files(root: Path) -> list[str]:
    """The files under `root`, but the engine's own summary.json (README: "Coming from Lightning")."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "summary.json")


def test_trainer_signature_defaults_are_lightnings() -> None:
    engine = {n: p.default for n, p in inspect.signature(Trainer.__init__).parameters.items() if n != "self"}
    missing = sorted(set(LIGHTNING_TRAINER_DEFAULTS) - set(engine))
    assert not missing, f"Lightning's Trainer arguments missing here: {missing}"
    differ = {n: engine[n] for n, v in LIGHTNING_TRAINER_DEFAULTS.items() if engine[n] != v}
    assert differ == ENGINE_OWN_DEFAULTS


@pytest.mark.parametrize(
    ("cls", "lightning"), [(ModelCheckpoint, LIGHTNING_CHECKPOINT_DEFAULTS), (CSVLogger, LIGHTNING_CSV_DEFAULTS)]
)
def test_callback_and_logger_signature_defaults_are_lightnings(cls: type, lightning: dict[str, Any]) -> None:
    engine = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()}
    assert {n: engine.get(n, "missing") for n in lightning} == lightning


def test_save_on_exception_saves_the_weights_as_they_are(tmp_path: Path) -> None:
    class Boom(Linear):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.global_step == 5:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    module = Boom()
    callback = ModelCheckpoint(save_on_exception=True)
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback], **{**QUIET, "max_epochs": 3})
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(module, Data())
    assert files(tmp_path) == LIGHTNING_EXCEPTION_FILES
    saved = load_checkpoint(tmp_path / "checkpoints/epoch=1-step=5.ckpt")
    assert torch.equal(saved["state_dict"]["layer.weight"], module.layer.weight) and saved["global_step"] == 5


def test_trainer_defaults_are_lightnings() -> None:
    assert Trainer(max_time="00:00:00:01").max_epochs is None  # no epoch bound under max_time, as Lightning
    assert Trainer(deterministic=None, precision=None, gradient_clip_algorithm=None).gradient_clip_algorithm is None
    trainer = Trainer()
    assert trainer.log_every_n_steps == 50  # Lightning: log_every_n_steps=None means 50
    assert trainer.num_sanity_val_steps == 2 and trainer.max_epochs == 1000
    checkpoint = ModelCheckpoint()
    assert checkpoint.save_last is None and checkpoint.save_weights_only is False
    assert (checkpoint.every_n_epochs, checkpoint.every_n_train_steps) == (1, None)


def test_default_cadence_logs_every_50_steps(tmp_path: Path) -> None:
    class NoVal(Linear):
        val_dataloader = None

    trainer = Trainer(default_root_dir=tmp_path, max_epochs=1, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(NoVal(), Data(batch_size=1, n=120).train_dataloader())
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").open()))
    assert [(r["epoch"], r["step"]) for r in rows if r.get("train_loss")] == LIGHTNING_DEFAULT_CADENCE


def test_without_logger_the_trainer_logs_csv_under_lightning_logs(tmp_path: Path) -> None:
    trainer = Trainer(default_root_dir=tmp_path, **QUIET)
    assert isinstance(trainer.logger, CSVLogger)
    trainer.fit(Linear(), Data())
    assert files(tmp_path) == LIGHTNING_DEFAULT_FILES
    assert yaml.safe_load((tmp_path / "lightning_logs/version_0/hparams.yaml").read_text()) == LIGHTNING_HPARAMS
    rows = list(csv.DictReader((tmp_path / "lightning_logs/version_0/metrics.csv").open()))
    assert [(r["epoch"], r["step"], bool(r["val_loss"])) for r in rows] == LIGHTNING_DEFAULT_ROWS
    assert trainer.log_dir == str(tmp_path / "lightning_logs/version_0")
    assert trainer.checkpoint_callback.dirpath == tmp_path / "lightning_logs/version_0/checkpoints"
    # A second run takes the next version, as Lightning's.
    Trainer(default_root_dir=tmp_path, **QUIET).fit(Linear(), Data())
    assert (tmp_path / "lightning_logs/version_1/checkpoints/epoch=1-step=8.ckpt").is_file()


def test_enable_autolog_hparams_false_writes_no_hparams(tmp_path: Path) -> None:
    trainer = Trainer(default_root_dir=tmp_path, enable_autolog_hparams=False, enable_checkpointing=False, **QUIET)
    trainer.fit(Linear(), Data())
    assert files(tmp_path) == ["lightning_logs/version_0/metrics.csv"]  # Lightning 2.6.6: the same


def test_logger_false_logs_nothing_and_checkpoints_under_the_root(tmp_path: Path) -> None:
    Trainer(default_root_dir=tmp_path, logger=False, **QUIET).fit(Linear(), Data())
    assert files(tmp_path) == LIGHTNING_NO_LOGGER_FILES


def test_checkpoint_names_and_folder_follow_the_logger(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path / "logs", name="exp")
    callback = ModelCheckpoint(monitor="val_loss", save_top_k=2)
    Trainer(default_root_dir=tmp_path, logger=logger, log_every_n_steps=1, callbacks=[callback], **QUIET).fit(
        Linear(), Data()
    )
    assert files(tmp_path) == LIGHTNING_MONITOR_FILES  # no metric in the names, no last.ckpt
    assert callback.last_model_path == ""


def test_save_weights_only_saves_weights_and_refuses_to_resume(tmp_path: Path) -> None:
    callback = ModelCheckpoint(save_weights_only=True, save_last=True)
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback], **QUIET)
    trainer.fit(Linear(), Data())
    assert files(tmp_path) == LIGHTNING_WEIGHTS_ONLY_FILES
    state = load_checkpoint(tmp_path / "checkpoints/last.ckpt")
    assert not state.get("optimizers") and not state.get("optimizer_states") and state["state_dict"]
    model = Linear.load_from_checkpoint(tmp_path / "checkpoints/last.ckpt")  # the weights load
    assert torch.equal(model.layer.weight, trainer.module.layer.weight)
    fresh = Linear()
    (metrics,) = Trainer(default_root_dir=tmp_path, logger=False, **QUIET).validate(
        fresh, Data().val_dataloader(), ckpt_path=tmp_path / "checkpoints/last.ckpt", verbose=False
    )  # and evaluate
    assert torch.equal(fresh.layer.weight, trainer.module.layer.weight) and metrics["val_loss"] > 0
    again = Trainer(default_root_dir=tmp_path, logger=False, **{**QUIET, "max_epochs": 3})
    with pytest.raises(CheckpointError, match=LIGHTNING_WEIGHTS_ONLY_RESUME):
        again.fit(Linear(), Data(), ckpt_path=tmp_path / "checkpoints/last.ckpt")


def _csv_rows(tmp_path: Path, **kwargs: Any) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    class Logs(Linear):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("a", float(batch_idx))
            self.log("e", 1.0, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("v", float(batch_idx))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("t", float(batch_idx))

    module, data = Logs(), Data()
    logger = CSVLogger(tmp_path, name="run")
    trainer = Trainer(
        default_root_dir=tmp_path, logger=logger, log_every_n_steps=1, enable_checkpointing=False, **QUIET, **kwargs
    )
    trainer.fit(module, data)
    trainer.test(module, data.val_dataloader(), verbose=False)
    with (tmp_path / "run/version_0/metrics.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    wanted = ("a", "e", "t", "v")
    return header, {k: [(r["epoch"], r["step"]) for r in rows if r.get(k)] for k in wanted}


def test_csv_steps_and_epochs_are_lightnings(tmp_path: Path) -> None:
    header, rows = _csv_rows(tmp_path)
    assert rows == {k: LIGHTNING_CSV_ROWS[k] for k in rows}
    assert [c for c in header if c in LIGHTNING_CSV_HEADER] == LIGHTNING_CSV_HEADER


def test_csv_steps_under_accumulation_are_lightnings(tmp_path: Path) -> None:
    _, rows = _csv_rows(tmp_path, accumulate_grad_batches=2)
    assert rows == {k: LIGHTNING_CSV_ROWS_ACCUMULATED[k] for k in rows}


def test_conflicting_module_and_datamodule_hparams_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="hparams lr differ"):
        Trainer(default_root_dir=tmp_path, **QUIET).fit(Linear(lr=0.1, width=4), _Clash())
    # Nothing to log them to (or autolog off): no merge, no error, as Lightning.
    Trainer(default_root_dir=tmp_path, logger=False, **QUIET).fit(Linear(), _Clash())
    Trainer(default_root_dir=tmp_path, enable_autolog_hparams=False, **QUIET).fit(Linear(), _Clash())


class _Clash(Data):
    def __init__(self) -> None:
        super().__init__()
        self.hparams["lr"] = 0.5  # the module says 0.1


@pytest.mark.parametrize("limit", [{"max_epochs": 2}, {"max_epochs": None, "max_steps": 3}])
def test_should_stop_stays_false_at_the_limit(tmp_path: Path, limit: dict[str, Any]) -> None:
    trainer = Trainer(default_root_dir=tmp_path, logger=False, **{**QUIET, **limit})
    trainer.fit(Linear(), Data())
    assert trainer.should_stop is False  # Lightning 2.6.6: False after max_epochs and after max_steps
    assert trainer.stop_reason == ("max_epochs" if "max_steps" not in limit else "max_steps")  # the engine's record


def test_generated_projects_keep_their_own_choices(tmp_path: Path) -> None:
    """The project's config chooses log_every_n_steps=10, last.ckpt, the metric in the names, no CSV."""
    cfg = Config()
    cfg.checkpoint.monitor, cfg.checkpoint.mode = "val_loss", "min"
    cfg.wandb.mode = "disabled"
    cfg.trainer.max_epochs, cfg.trainer.progress_bar, cfg.trainer.num_sanity_val_steps = 2, False, 0
    trainer = build_trainer(cfg, tmp_path / "run")
    assert trainer.log_every_n_steps == 10
    assert isinstance(trainer.logger, NullLogger) and trainer.loggers == []
    callback = trainer.checkpoint_callback
    assert callback.save_last is True and callback.dirpath == tmp_path / "run/checkpoints"
    trainer.fit(Linear(), Data())
    names = sorted(os.listdir(tmp_path / "run/checkpoints"))
    assert names[-1] == "last.ckpt" and len(names) == 2
    assert names[0].startswith("epoch=") and "-val_loss=" in names[0]
    assert not (tmp_path / "run/lightning_logs").exists()


def test_under_ddp_every_rank_checkpoints_into_rank_0s_version_folder(tmp_path: Path) -> None:
    from test_ddp import _check, _run, _torchrun

    _check(_run(_torchrun("ddpjob.defaults", str(tmp_path)), tmp_path))
    folder = tmp_path / "lightning_logs/version_0"
    records = [json.loads((tmp_path / f"defaults-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["dirpath"] for r in records] == [str(folder / "checkpoints")] * 2
    assert [r["should_stop"] for r in records] == [False, False]
    assert records[0]["log_dir"] == str(folder)
    # 16 samples, 2 processes, batches of 2: 4 steps an epoch; one log folder, written by rank 0
    # (no metrics.csv: nothing reaches log_every_n_steps=50, as under Lightning).
    assert files(tmp_path / "lightning_logs") == ["version_0/checkpoints/epoch=1-step=8.ckpt", "version_0/hparams.yaml"]


def test_with_several_loggers_each_gets_its_own_step(tmp_path: Path) -> None:
    """A CSVLogger gets Lightning's step; the engine's own loggers (W&B's axis) the global step."""
    from engine_fixtures import RecordingLogger

    csv_logger, recording = CSVLogger(tmp_path, name="csv"), RecordingLogger()
    trainer = Trainer(
        default_root_dir=tmp_path,
        logger=[csv_logger, recording],
        log_every_n_steps=1,
        enable_checkpointing=False,
        **QUIET,
    )
    trainer.fit(Linear(), Data())
    rows = list(csv.DictReader((tmp_path / "csv/version_0/metrics.csv").open()))
    train_steps = [int(r["step"]) for r in rows if r["train_loss"]]
    assert train_steps == list(range(8))  # LIGHTNING_CSV_ROWS["a"]'s steps
    assert [step for step, m in recording.metrics if "train_loss" in m] == list(range(1, 9))


def test_a_resumed_fit_continues_the_csv_as_an_uninterrupted_one(tmp_path: Path) -> None:
    def rows(root: Path) -> list[tuple[str, ...]]:
        with (root / "lightning_logs/version_0/metrics.csv").open() as f:
            return [(r["epoch"], r["step"], r["train_loss"][:6], r["val_loss"][:6]) for r in csv.DictReader(f)]

    Trainer(default_root_dir=tmp_path / "a", log_every_n_steps=1, **QUIET).fit(Linear(), Data())
    b = tmp_path / "b"
    for epochs, ckpt_path in ((1, None), (2, b / "ck/last.ckpt")):
        callback = ModelCheckpoint(dirpath=b / "ck", save_last=True)
        trainer = Trainer(
            default_root_dir=b, log_every_n_steps=1, callbacks=[callback], **{**QUIET, "max_epochs": epochs}
        )
        trainer.fit(Linear(), Data(), ckpt_path=ckpt_path)
    assert rows(b) == rows(tmp_path / "a")  # the same version folder, the same steps and values
