"""Every public extension point of Lightning 2.6 is honoured or refused out loud.

`tests/data/lightning_api.json` lists Lightning's own names (written from Lightning's classes by
`tests/record_lightning_api.py`); engine/lightning_api.py must list exactly those, each
honoured or refused. A new Lightning name therefore fails here, not in a user's run.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import engine as pl
from engine import lightning_api as api

ROOT = Path(__file__).resolve().parents[1]
LIGHTNING = json.loads((ROOT / "tests" / "data" / "lightning_api.json").read_text())


def _data(n: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


# -- the table against Lightning's classes ---------------------------------------------------------
@pytest.mark.parametrize("table", list(api.TABLES))
def test_the_table_lists_exactly_lightnings_names(table: str) -> None:
    assert LIGHTNING["lightning"].startswith("2.6")
    ours, theirs = set(api.TABLES[table]), set(LIGHTNING[table])
    assert not theirs - ours, f"Lightning names missing from engine/lightning_api.py {table}: {sorted(theirs - ours)}"
    assert not ours - theirs, f"names that are not Lightning's in {table}: {sorted(ours - theirs)}"
    for name, status in api.TABLES[table].items():
        assert status == api.YES or re.match(r"(differs|no): \S", status), (name, status)


def test_the_readme_table_is_generated_from_the_engine_table() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- lightning_api: python -m engine.lightning_api -->", "<!-- end of lightning_api -->"
    block = readme.split(begin)[1].split(end)[0].strip()
    assert block == api.markdown(), "README.md's table is stale: regenerate it with python -m engine.lightning_api"


def test_every_name_said_to_be_there_is_there(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    trainer.fit(Small())  # (trainer.precision is known once the device is)
    provided = {
        "module_hooks": lambda n: hasattr(pl.LightningModule, n) or n.endswith("_dataloader"),  # loaders: yours
        "module": lambda n: hasattr(pl.LightningModule, n) or n == "hparams",  # hparams: set in __init__
        "datamodule": lambda n: hasattr(pl.LightningDataModule, n),
        "callback": lambda n: True,  # duck-typed: the next test shows each is called
        "trainer": lambda n: hasattr(trainer, n),
        "trainer_arguments": lambda n: n in inspect.signature(pl.Trainer.__init__).parameters,
    }
    for table, names in api.TABLES.items():
        missing = [n for n, s in names.items() if not s.startswith("no: ") and not provided[table](n)]
        assert not missing, (table, missing)


def test_reading_a_refused_name_says_what_to_do_instead(tmp_path: Path) -> None:
    module, trainer = pl.LightningModule(), _trainer(tmp_path)
    for name in api.refused(api.MODULE):
        with pytest.raises(AttributeError, match=re.escape(f"LightningModule.{name} is not provided")):
            getattr(module, name)
    for name, instead in api.refused(api.TRAINER).items():
        with pytest.raises(AttributeError, match=re.escape(instead)):
            getattr(trainer, name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        trainer.not_a_name  # noqa: B018
    assert getattr(trainer, "not_a_name", 3) == 3 and not hasattr(module, "not_a_name")


# -- refused hooks stop the run before it starts -----------------------------------------------------
class Small(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.steps = 0

    def forward(self, batch: Any) -> torch.Tensor:
        return self.layer(batch[0] if isinstance(batch, (list, tuple)) else batch)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return F.mse_loss(self(batch), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", F.mse_loss(self(batch), batch[1]))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", F.mse_loss(self(batch), batch[1]))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.01)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "interval": "step"},
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_data(), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_data(8), batch_size=4)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_data(8), batch_size=4)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_data(8), batch_size=4)


@pytest.mark.parametrize("name", sorted(api.refused(api.MODULE_HOOKS)))
def test_a_module_overriding_a_hook_never_called_stops_fit_naming_it(name: str, tmp_path: Path) -> None:
    module = type("Overriding", (Small,), {name: lambda self, *args, **kwargs: None})()
    with pytest.raises(api.UnsupportedHookError, match=rf"^Overriding\.{name} is a Lightning hook .*: \w"):
        _trainer(tmp_path).fit(module)
    assert module.steps == 0  # nothing ran


# -- every hook said to be honoured is called -------------------------------------------------------
_MODULE_METHODS = (  # LightningModule's other overridable methods the engine calls
    "backward",
    "configure_callbacks",
    "configure_gradient_clipping",
    "configure_optimizers",
    "lr_scheduler_step",
    "optimizer_step",
    "optimizer_zero_grad",
    "predict_step",
    "test_step",
    "training_step",
    "validation_step",
)


def _recording(base: type, names: list[str], seen: set[str]) -> type:
    """`base` with each of `names` recording its call, then doing what `base` does."""

    def make(name: str) -> Any:
        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen.add(name)
            return getattr(super(cls, self), name)(*args, **kwargs)

        return hook

    cls = type(f"Recording{base.__name__}", (base,), {n: make(n) for n in names})
    return cls


def _nothing(self: Any, *args: Any, **kwargs: Any) -> None:
    pass


CallbackBase = type(
    "CallbackBase", (pl.Callback,), {n: _nothing for n in api.CALLBACK if n.startswith(("on_", "setup", "teardown"))}
)


class DataBase(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_data(), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_data(8), batch_size=4)


class Failing(Small):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        raise RuntimeError("boom")


def test_every_honoured_hook_is_called(tmp_path: Path) -> None:
    seen: set[str] = set()
    module_hooks = [n for n, s in api.MODULE_HOOKS.items() if not s.startswith("no: ")]
    module_cls = _recording(Small, [*module_hooks, *_MODULE_METHODS], seen)
    callback_hooks = [n for n in api.CALLBACK if n != "state_key"]
    callback_seen: set[str] = set()
    callback_cls = _recording(CallbackBase, callback_hooks, callback_seen)
    callback_cls.state_key = property(lambda self: callback_seen.add("state_key") or "Recording")  # type: ignore[attr-defined]
    callback_cls.state_dict = lambda self: callback_seen.add("state_dict") or {}  # type: ignore[attr-defined]
    callback_cls.load_state_dict = lambda self, state: callback_seen.add("load_state_dict")  # type: ignore[attr-defined]

    module = module_cls()
    trainer = _trainer(tmp_path, gradient_clip_val=1.0, callbacks=[callback_cls()])
    trainer.fit(module)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[callback_cls()])
    trainer.fit(module, ckpt_path="last")  # on_load_checkpoint, load_state_dict
    trainer.validate(module)
    trainer.test(module)
    trainer.predict(module)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, callbacks=[callback_cls()]).fit(Failing())
    assert not (set(module_hooks) | set(_MODULE_METHODS)) - seen, "module hooks never called"
    assert not set(api.CALLBACK) - callback_seen, "callback hooks never called"

    data_seen: set[str] = set()
    data_hooks = [n for n, s in api.DATAMODULE.items() if s == api.YES and callable(getattr(DataBase, n, None))]
    data_hooks += ["prepare_data", "setup", "teardown", "train_dataloader", "val_dataloader"]
    data_cls = _recording(
        DataBase, [n for n in data_hooks if n not in ("load_from_checkpoint", "save_hyperparameters")], data_seen
    )
    _trainer(tmp_path / "dm").fit(Small(), datamodule=data_cls())
    _trainer(tmp_path / "dm", max_epochs=2).fit(Small(), datamodule=data_cls(), ckpt_path="last")
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path / "dm").fit(Failing(), datamodule=data_cls())
    assert {"on_exception", "state_dict", "load_state_dict", "prepare_data", "setup", "teardown"} <= data_seen


def test_datamodule_from_datasets_serves_each_dataset(tmp_path: Path) -> None:
    data = pl.LightningDataModule.from_datasets(_data(), val_dataset=[_data(8), _data(4)], batch_size=4)
    train, val = data.train_dataloader(), data.val_dataloader()
    assert isinstance(train.sampler, torch.utils.data.RandomSampler) and train.batch_size == 4
    assert [len(v.dataset) for v in val] == [8, 4] and data.test_dataloader() is None
    module = Small()
    _trainer(tmp_path).fit(module, datamodule=pl.LightningDataModule.from_datasets(_data(), _data(8), batch_size=4))
    assert module.steps == 4


def test_trainer_views_lightning_reads(tmp_path: Path) -> None:
    module = Small()
    trainer = _trainer(tmp_path, num_sanity_val_steps=1)
    trainer.fit(module)
    assert trainer.precision == "32-true" and trainer.precision == "32" and str(trainer.precision) == "32-true"
    assert trainer.precision != "16-mixed" and trainer.scaler is None
    assert trainer.device_ids == [0] and trainer.enable_validation and not trainer.evaluating
    assert trainer.num_sanity_val_batches == [1] and not trainer.interrupted and not trainer.received_sigterm
    trainer.test(module)
    trainer.predict(module)
    assert trainer.num_test_batches == [2] and trainer.num_predict_batches == [2]
    assert module.dtype == torch.float32 and module.hparams_initial == {} and not module.on_gpu
