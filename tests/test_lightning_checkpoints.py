"""Checkpoints both ways between the engine and Lightning: the engine writes Lightning's keys too
(each tensor stored once), and reads checkpoints Lightning wrote (tests/data/lightning, made by
its make_checkpoints.py with lightning 2.6.6: this suite cannot import Lightning); plus
``load_from_checkpoint``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import Regressor, loader, make_trainer, regression_data
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine import CheckpointError, DataModule, Module, Trainer
from engine.checkpoint import load_checkpoint

DATA = Path(__file__).resolve().parent / "data" / "lightning"
LIGHTNING_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "epoch", "global_step", "hyper_parameters")


# -- the module and data of make_checkpoints.py, with the engine's imports ---------------------
class TinyRegressor(Module):
    def __init__(self, hidden: int = 8, lr: float = 0.05, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), activation or nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def data(n: int = 32, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def lightning_ckpt(name: str) -> dict[str, Any]:
    return torch.load(DATA / name, weights_only=True)


# Float kernels differ in their last bits between CPU instruction sets: Lightning's files are
# compared bit for bit on the instruction set they were made on (the CPU file), closely elsewhere.
SAME_CPU = (DATA / "CPU").read_text().strip() == torch.backends.cpu.get_cpu_capability()


def assert_same(got: torch.Tensor, expected: torch.Tensor, key: str) -> None:
    if SAME_CPU:
        assert torch.equal(got, expected), key
    else:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6, msg=key)


def assert_weights(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    assert own.keys() == state.keys()
    for key, value in state.items():
        assert_same(own[key], value, key)


# -- reading what Lightning wrote ----------------------------------------------------------------
def test_fit_resumes_a_lightning_epoch_end_checkpoint_and_ends_where_lightning_did(tmp_path: Path) -> None:
    module = TinyRegressor()
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, data(), data(16, seed=1), ckpt_path=DATA / "epoch0.ckpt")
    lightning = lightning_ckpt("epoch1.ckpt")  # Lightning's own run, trained on through epoch 1
    assert (trainer.current_epoch, trainer.global_step) == (2, lightning["global_step"]) == (2, 8)
    assert_weights(module, lightning["state_dict"])  # bit for bit: same loop, same order of operations
    adam = trainer.optimizers[0].state_dict()
    for key, value in lightning["optimizer_states"][0]["state"][0].items():
        assert_same(adam["state"][0][key], value, key)
    assert trainer.lr_schedulers[0].scheduler.state_dict() == lightning["lr_schedulers"][0]


def test_a_mid_epoch_lightning_checkpoint_resumes_at_the_next_epoch_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = TinyRegressor()
    trainer = make_trainer(tmp_path, max_epochs=3)
    trainer.fit(module, data(), data(16, seed=1), ckpt_path=DATA / "mid_step6.ckpt")
    out = capsys.readouterr().out
    assert out.count("in the middle of epoch 1 (after 2 batches)") == 1
    assert "resumes at the start of epoch 2" in out
    assert (trainer.current_epoch, trainer.global_step) == (3, 10)  # step 6 + one epoch of 4


def test_validate_and_test_load_lightning_weights(tmp_path: Path) -> None:
    weights = lightning_ckpt("epoch1.ckpt")["state_dict"]
    expected = TinyRegressor()
    expected.load_state_dict(weights)
    x, y = data(16, seed=1).dataset.tensors
    with torch.no_grad():
        want = nn.functional.mse_loss(expected(x), y).item()  # two equal batches: the epoch mean
    module = TinyRegressor()
    (metrics,) = make_trainer(tmp_path).validate(module, data(16, seed=1), ckpt_path=DATA / "epoch1.ckpt")
    assert metrics["val_loss"] == pytest.approx(want, rel=1e-6)
    assert_weights(module, weights)
    other = TinyRegressor()
    other.test_step = other.validation_step  # type: ignore[method-assign]
    make_trainer(tmp_path).test(other, data(16, seed=1), ckpt_path=DATA / "epoch1.ckpt")
    assert_weights(other, weights)


def test_an_object_in_lightning_hparams_fails_in_one_line_naming_the_escape_hatch(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        make_trainer(tmp_path, max_epochs=3).fit(TinyRegressor(), data(), ckpt_path=DATA / "object_hparams.ckpt")
    message = str(info.value)
    assert "\n" not in message and "object_hparams.ckpt" in message
    assert "torch.nn.modules.activation.ReLU" in message and "weights_only=False" in message
    with pytest.raises(CheckpointError, match="weights_only=False"):
        TinyRegressor.load_from_checkpoint(DATA / "object_hparams.ckpt")

    # The escape hatch, for a file one trusts: the whole module comes back, ReLU included.
    module = TinyRegressor.load_from_checkpoint(DATA / "object_hparams.ckpt", weights_only=False)
    assert isinstance(module.net[1], nn.ReLU)
    trainer = make_trainer(tmp_path, max_epochs=3)
    trainer.fit(TinyRegressor(activation=nn.ReLU()), data(), ckpt_path=DATA / "object_hparams.ckpt", weights_only=False)
    assert trainer.global_step == 12


def test_torch_env_switch_is_the_escape_hatch_for_resume_in_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ckpt = load_checkpoint(DATA / "object_hparams.ckpt")
    assert isinstance(ckpt["hyper_parameters"]["activation"], nn.ReLU)


def test_a_weights_only_lightning_checkpoint_cannot_resume_but_loads(tmp_path: Path) -> None:
    ckpt = lightning_ckpt("epoch1.ckpt")
    for key in ("optimizer_states", "lr_schedulers", "loops", "callbacks"):
        del ckpt[key]  # what ModelCheckpoint(save_weights_only=True) writes
    torch.save(ckpt, tmp_path / "weights.ckpt")
    with pytest.raises(CheckpointError, match=r"weights\.ckpt holds no 'optimizers' entry.*load_from_checkpoint"):
        make_trainer(tmp_path).fit(TinyRegressor(), data(), ckpt_path=tmp_path / "weights.ckpt")
    assert_weights(TinyRegressor.load_from_checkpoint(tmp_path / "weights.ckpt"), ckpt["state_dict"])


def test_load_from_checkpoint_rebuilds_a_lightning_module_from_its_hparams() -> None:
    ckpt = lightning_ckpt("epoch1.ckpt")
    module = TinyRegressor.load_from_checkpoint(DATA / "epoch1.ckpt")
    assert dict(module.hparams) == ckpt["hyper_parameters"] == {"hidden": 8, "lr": 0.05, "activation": None}
    assert_weights(module, ckpt["state_dict"])
    assert TinyRegressor.load_from_checkpoint(DATA / "epoch1.ckpt", lr=1e-3).hparams.lr == 1e-3
    with pytest.raises(
        CheckpointError, match=r"(?s)does not fit the model.*0\.weight: checkpoint \(8, 4\) vs model \(16, 4\)"
    ):
        TinyRegressor.load_from_checkpoint(DATA / "epoch1.ckpt", hidden=16)
    with pytest.raises(TypeError, match="hiden, which is neither an __init__ argument nor a saved hparam"):
        TinyRegressor.load_from_checkpoint(DATA / "epoch1.ckpt", hiden=16)


# -- what the engine writes ---------------------------------------------------------------------
class Wide(Regressor):
    """Enough weights (a 256x256 layer: 257 KiB) that storing them twice would show in the size."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"width": 256})
        self.extra = nn.Linear(256, 256)


@pytest.mark.parametrize("async_checkpoint", [False, True])
def test_engine_checkpoint_carries_lightning_keys_without_storing_tensors_twice(
    tmp_path: Path, async_checkpoint: bool
) -> None:
    module = Wide()
    trainer = make_trainer(tmp_path, max_epochs=2, async_checkpoint=async_checkpoint)
    trainer.fit(module, loader(regression_data()))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    trainer.checkpoint_io.wait()
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    # What a script written for Lightning reads:
    assert all(key in ckpt for key in LIGHTNING_KEYS) and ckpt["pytorch-lightning_version"]
    assert (ckpt["epoch"], ckpt["global_step"]) == (ckpt["loop"]["epoch"], ckpt["loop"]["global_step"]) == (2, 10)
    assert ckpt["hyper_parameters"] == {"width": 256}
    assert_weights(module, ckpt["state_dict"])
    assert ckpt["optimizer_states"][0]["param_groups"] == trainer.optimizers[0].state_dict()["param_groups"]
    # ... and one copy of each tensor: the engine-only layout is within a few KiB of it.
    engine_only = {k: v for k, v in ckpt.items() if k not in (*LIGHTNING_KEYS, "pytorch-lightning_version")}
    torch.save(engine_only, tmp_path / "engine_only.ckpt")
    weights = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    size, engine_size = (tmp_path / "a.ckpt").stat().st_size, (tmp_path / "engine_only.ckpt").stat().st_size
    assert weights > 256 * 1024 and size - engine_size < 4096, (size, engine_size)


def test_a_hook_replacing_lightning_state_dict_changes_the_saved_weights(tmp_path: Path) -> None:
    class DropsExtra(Wide):
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if "extra" not in k}

    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(DropsExtra(), loader(regression_data()))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert set(ckpt["model"]) == set(ckpt["state_dict"]) == {"layer.weight", "layer.bias"}


@dataclasses.dataclass
class NetConfig:
    hidden: int = 8
    lr: float = 0.05


class ConfigRegressor(TinyRegressor):
    """Like the generated project's model: one dataclass config given to save_hyperparameters."""

    def __init__(self, cfg: NetConfig | None = None, activation: nn.Module | None = None) -> None:
        Module.__init__(self)
        cfg = cfg or NetConfig()
        self.save_hyperparameters(cfg)
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(4, cfg.hidden), activation or nn.Tanh(), nn.Linear(cfg.hidden, 1))


def test_load_from_checkpoint_rebuilds_a_dataclass_config_and_applies_overrides(tmp_path: Path) -> None:
    module = ConfigRegressor(NetConfig(hidden=6, lr=0.01))
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, data())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["hparams_name"] == "cfg"

    loaded = ConfigRegressor.load_from_checkpoint(tmp_path / "a.ckpt")
    assert loaded.cfg == NetConfig(hidden=6, lr=0.01)
    assert_weights(loaded, module.state_dict())
    assert ConfigRegressor.load_from_checkpoint(tmp_path / "a.ckpt", lr=0.5).cfg == NetConfig(hidden=6, lr=0.5)
    assert ConfigRegressor.load_from_checkpoint(tmp_path / "a.ckpt", cfg=NetConfig(6, 0.2)).cfg.lr == 0.2


def test_hparams_that_are_not_plain_data_must_be_passed_back(tmp_path: Path) -> None:
    module = TinyRegressor(activation=nn.ReLU())
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, data())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)  # still plain: the object is saved as text
    assert ckpt["hparams"]["activation"] == "ReLU()" and ckpt["hparams_unsaved"] == ["activation"]
    with pytest.raises(CheckpointError) as info:
        TinyRegressor.load_from_checkpoint(tmp_path / "a.ckpt")
    message = str(info.value)
    assert "activation='ReLU()'" in message and "load_from_checkpoint(path, activation=...)" in message
    assert "save_hyperparameters(ignore=['activation'])" in message
    loaded = TinyRegressor.load_from_checkpoint(tmp_path / "a.ckpt", activation=nn.ReLU())
    assert isinstance(loaded.net[1], nn.ReLU) and loaded.hparams.hidden == 8
    assert_weights(loaded, module.state_dict())


def test_strict_names_every_misfit_and_false_loads_what_fits(tmp_path: Path) -> None:
    state = lightning_ckpt("epoch1.ckpt")
    state["state_dict"]["net.9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys .*net\.9\.weight.*strict=False"):
        TinyRegressor.load_from_checkpoint(tmp_path / "extra.ckpt")
    assert_weights(
        TinyRegressor.load_from_checkpoint(tmp_path / "extra.ckpt", map_location="cpu", strict=False),
        {k: v for k, v in state["state_dict"].items() if k != "net.9.weight"},
    )


def test_datamodule_load_from_checkpoint_rebuilds_from_its_hparams(tmp_path: Path) -> None:
    class Data(DataModule):
        def __init__(self, batch_size: int = 4, n: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()

        def train_dataloader(self) -> DataLoader:
            return loader(regression_data(self.hparams["n"]), self.hparams["batch_size"])

    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(Regressor(), datamodule=Data(batch_size=2, n=8))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    assert Data.load_from_checkpoint(tmp_path / "a.ckpt").hparams == {"batch_size": 2, "n": 8}
    assert Data.load_from_checkpoint(tmp_path / "a.ckpt", n=4).hparams == {"batch_size": 2, "n": 4}


def test_engine_checkpoints_without_lightning_keys_still_load(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    module = TinyRegressor(hidden=3)
    trainer.fit(module, data())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    old = {k: v for k, v in ckpt.items() if k not in (*LIGHTNING_KEYS, "pytorch-lightning_version", "hparams_name")}
    torch.save(old, tmp_path / "old.ckpt")  # as written before the Lightning keys existed
    assert_weights(TinyRegressor.load_from_checkpoint(tmp_path / "old.ckpt", hidden=3), module.state_dict())
    resumed = make_trainer(tmp_path, max_epochs=2)
    resumed.fit(TinyRegressor(hidden=3), data(), ckpt_path=tmp_path / "old.ckpt")
    assert resumed.global_step == 8
    _ = Trainer  # the public name the resume goes through


class ShapedRegressor(TinyRegressor):
    def __init__(self, shape: tuple[int, ...] = (1, 4), sizes: list[int] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.zeros = torch.zeros((2,) + shape)  # a tuple hparam used as a tuple (UvA's energy model does this)


def test_load_from_checkpoint_gives_tuples_back_as_tuples_and_lists_as_lists(tmp_path: Path) -> None:
    module = ShapedRegressor(shape=(1, 4), sizes=[3, 5])
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, data())
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    loaded = ShapedRegressor.load_from_checkpoint(tmp_path / "a.ckpt")
    assert loaded.hparams.shape == (1, 4) and isinstance(loaded.hparams.shape, tuple)
    assert loaded.hparams.sizes == [3, 5] and isinstance(loaded.hparams.sizes, list)
