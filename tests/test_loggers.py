"""The logger protocol, NullLogger and CSVLogger (no W&B here; see test_wandb.py)."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from engine.loggers import CSVLogger, Logger, NullLogger, WandbLogger


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_every_logger_follows_the_protocol(tmp_path: Path) -> None:
    for logger in (NullLogger(), CSVLogger(tmp_path), WandbLogger(mode="disabled", save_dir=tmp_path)):
        assert isinstance(logger, Logger)
        assert logger.run_id is None


def test_null_logger_accepts_every_call() -> None:
    logger = NullLogger()
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.after_save_checkpoint(object(), step=0, epoch=0)
    logger.watch(torch.nn.Linear(1, 1))
    logger.log_summary({"stop_reason": "max_epochs"})
    logger.load_state_dict(logger.state_dict())
    logger.finalize("success")
    assert logger.state_dict() == {}


def test_csv_columns_grow_and_values_round_trip(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path / "run")
    logger.log_metrics({"train_loss": torch.tensor(0.5), "epoch": 0.0}, step=1)
    logger.log_metrics({"train_loss": 0.25, "epoch": 0.0}, step=2)
    logger.log_metrics({"val_loss": 0.75, "val_acc": 0.5}, step=2)  # new columns: header rewritten
    logger.log_metrics({"train_loss": 0.125, "epoch": 1.0}, step=3)
    assert Path(logger.log_dir) == tmp_path / "run" / "lightning_logs" / "version_0"  # Lightning's layout
    header, rows = read_csv(Path(logger.log_dir) / "metrics.csv")
    assert header == ["epoch", "step", "train_loss", "val_acc", "val_loss"]  # sorted, as Lightning's
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in rows] == [
        ("1", "0.5", ""),
        ("2", "0.25", ""),
        ("2", "", "0.75"),
        ("3", "0.125", ""),
    ]
    assert rows[2]["val_acc"] == "0.5" and rows[3]["epoch"] == "1.0"
    assert sorted(p.name for p in Path(logger.log_dir).iterdir()) == ["metrics.csv"]  # no temporary files left
    assert logger.state_dict() == {"step": 3, "version": 0}


@dataclass
class _ModelCfg:
    hidden: int = 8
    path: Path = Path("data")


def test_csv_hparams_yaml_merges_nested_config(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"config": {"trainer": {"max_epochs": 3}, "model": _ModelCfg()}})
    logger.log_hyperparams({"hparams": {"lr": torch.tensor(0.01)}, "config": {"trainer": {"seed": 1}}})
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert saved == {
        "config": {"trainer": {"max_epochs": 3, "seed": 1}, "model": {"hidden": 8, "path": "data"}},
        "hparams": {"lr": pytest.approx(0.01)},
    }


def test_csv_resume_drops_rows_past_the_checkpoint(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path)
    for step in (1, 2, 3, 4):
        first.log_metrics({"loss": 1.0 / step}, step=step)
    # The checkpoint was taken at step 2; steps 3-4 are logged again after the resume.
    second = CSVLogger(tmp_path)
    second.load_state_dict(first.state_dict() | {"step": 2})  # the checkpoint names the version folder
    second.log_metrics({"loss": 0.3, "lr": 0.1}, step=3)
    assert second.log_dir == first.log_dir
    header, rows = read_csv(Path(first.log_dir) / "metrics.csv")
    assert header == ["loss", "lr", "step"]
    assert [(r["step"], r["loss"], r["lr"]) for r in rows] == [("1", "1.0", ""), ("2", "0.5", ""), ("3", "0.3", "0.1")]


def test_loggers_import_and_disabled_mode_work_without_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails
    logger = WandbLogger(mode="disabled", save_dir=tmp_path)
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.log_summary({"stop_reason": "max_steps"})
    logger.experiment.log({"anything": 1})  # a no-op stand-in, like Lightning's dummy experiment
    logger.finalize("success")
    assert logger.run_id is None and list(tmp_path.iterdir()) == []
    with pytest.raises(ModuleNotFoundError, match="pip install wandb"):
        WandbLogger(mode="offline", save_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "cloud"}, "wandb.mode"),
        ({"log_model": "first"}, "wandb.log_model"),
        ({"watch": "grads"}, "wandb.watch"),
    ],
)
def test_wandb_logger_rejects_bad_options_naming_the_key(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WandbLogger(**kwargs)
