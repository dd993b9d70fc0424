"""Lightning's verbs after fit (validate/test/predict, ckpt_path), the module's and datamodule's
Lightning surface (hooks, loaders, all_gather, configure_callbacks, ...), and the logging names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import (
    RecordingLogger,
    RegressionData,
    Regressor,
    ScriptedVal,
    loader,
    make_trainer,
    regression_data,
)
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from engine import Callback, CheckpointError, DataModule, EarlyStopping, ModelCheckpoint, Trainer
from engine.checkpoint import load_checkpoint


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _fit_with_best_at_epoch_0(tmp_path: Path, **kwargs: Any) -> tuple[Trainer, ScriptedVal, ModelCheckpoint]:
    """Three epochs; val_loss is lowest after epoch 0, so best != last."""
    ckpt = ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=1, save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=3, callbacks=[ckpt], **kwargs)
    module = ScriptedVal([0.1, 0.5, 0.9, 0.9])  # (the last entry: validate after fit)
    trainer.fit(module, loader(regression_data(16)), loader(regression_data(8)))
    return trainer, module, ckpt


def _test_loss(module: nn.Module, data: Any) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return F.mse_loss(module(x), y).item()


# -- verbs after fit, ckpt_path ---------------------------------------------------------------------
def test_test_after_fit_uses_the_best_last_or_given_checkpoint(tmp_path: Path) -> None:
    trainer, module, ckpt = _fit_with_best_at_epoch_0(tmp_path)
    fitted = _weights(module)
    best = load_checkpoint(ckpt.best_model_path)["model"]
    last = load_checkpoint(ckpt.last_model_path)["model"]
    assert "epoch=0" in ckpt.best_model_path and not _same(best, last) and _same(last, fitted)
    data = regression_data(8, seed=3)

    # ckpt_path="best": the module now holds the best weights, and the metric is theirs.
    (metrics,) = trainer.test(ckpt_path="best", dataloaders=loader(data))
    assert _same(_weights(module), best)
    assert metrics["test_loss"] == pytest.approx(_test_loss(module, data), rel=1e-5)

    trainer.test(ckpt_path="last", dataloaders=loader(data))
    assert _same(_weights(module), last)

    trainer.validate(ckpt_path=ckpt.best_model_path, dataloaders=loader(data))
    assert _same(_weights(module), best)

    # No model and ckpt_path=None after fit: the best checkpoint, as Lightning.
    module.load_state_dict(last)
    trainer.test(dataloaders=loader(data))
    assert _same(_weights(module), best)

    # A model passed with ckpt_path=None: its own weights, nothing loaded.
    other = Regressor(seed=7)
    own = _weights(other)
    (metrics,) = trainer.test(other, dataloaders=loader(data))
    assert _same(_weights(other), own) and metrics["test_loss"] == pytest.approx(_test_loss(other, data), rel=1e-5)


def test_ckpt_path_errors_name_the_fix(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    module = Regressor()
    data = loader(regression_data(8))
    with pytest.raises(ValueError, match="without a model needs a previous trainer.fit"):
        trainer.test(dataloaders=data)
    trainer.fit(module, data)
    with pytest.raises(ValueError, match=r'ckpt_path="best"\) needs a ModelCheckpoint callback'):
        trainer.test(ckpt_path="best", dataloaders=data)
    with pytest.raises(CheckpointError, match="does not exist; pass ckpt_path= an existing"):
        trainer.validate(ckpt_path=tmp_path / "nope.ckpt", dataloaders=data)
    with pytest.raises(ValueError, match=r'ckpt_path="last"\): no last checkpoint'):
        trainer.predict(dataloaders=data, ckpt_path="last")
    # Without a checkpoint callback, a verb after fit runs on the fitted weights.
    fitted = _weights(module)
    trainer.test(dataloaders=data)
    assert _same(_weights(module), fitted)


def test_best_without_a_saved_best_checkpoint_says_so(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, fast_dev_run=1, callbacks=[ModelCheckpoint(monitor="val_loss")])
    trainer.fit(Regressor(), loader(regression_data(8)), loader(regression_data(8)))
    with pytest.raises(ValueError, match="fast_dev_run saves no checkpoints"):
        trainer.test(ckpt_path="best", dataloaders=loader(regression_data(8)))


def test_validate_neither_saves_checkpoints_nor_stops(tmp_path: Path) -> None:
    """As Lightning: ModelCheckpoint and EarlyStopping act while fitting only."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss")
    stopping = EarlyStopping(monitor="val_loss", patience=0, check_finite=True)
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[ckpt, stopping])
    module = ScriptedVal([float("nan")])  # would stop a fit at once (check_finite)
    trainer.validate(module, dataloaders=loader(regression_data(8)))
    trainer.validate(module, dataloaders=loader(regression_data(8)))
    assert not (tmp_path / "ckpts").exists() and not ckpt.best_model_path
    assert not trainer.should_stop and stopping.wait_count == 0


def test_persistent_loader_workers_end_with_the_verb(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    module = Counting()
    data = DataLoader(regression_data(8), batch_size=4, num_workers=1, persistent_workers=True)
    module.predict_step = lambda batch, batch_idx: batch[0].sum()
    trainer.test(module, dataloaders=data)
    assert len(trainer.predict(module, dataloaders=data)) == 2 and module.seen["test"] == 2
    for used in (trainer.test_dataloaders, trainer.predict_dataloaders):
        assert used is not data and used._iterator is None  # its worker process was stopped


class Counting(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, int] = {"val": 0, "test": 0}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.seen["val"] += 1

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.seen["test"] += 1


def test_test_uses_limit_test_batches_not_the_validation_limit(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1, limit_val_batches=3)
    trainer.limit_test_batches = 1  # (a Trainer argument too, as in Lightning)
    module = Counting()
    data = loader(regression_data(20))  # 5 batches
    trainer.test(module, dataloaders=data)
    trainer.validate(module, dataloaders=data)
    assert module.seen == {"val": 3, "test": 1}
    trainer.limit_test_batches = None
    trainer.test(module, dataloaders=data)
    assert module.seen["test"] == 1 + 5


# -- predict ------------------------------------------------------------------------------------------
class Predicts(Regressor):
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        x, _ = batch
        return {"y": self(x), "batch_idx": batch_idx, "dataloader_idx": dataloader_idx}


def test_predict_returns_step_outputs_per_batch_and_per_dataloader(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    module = Predicts()
    data = regression_data(10)
    trainer.fit(module, loader(data))
    out = trainer.predict(dataloaders=loader(data))  # the fitted module
    assert [o["batch_idx"] for o in out] == [0, 1, 2] and all(o["dataloader_idx"] == 0 for o in out)
    with torch.no_grad():
        expected = module(data.tensors[0])
    torch.testing.assert_close(torch.cat([o["y"] for o in out]), expected)
    assert all(o["y"].device.type == "cpu" and not o["y"].requires_grad for o in out)
    assert module.training  # predict restores the training mode it found

    several = trainer.predict(module, [loader(data), loader(regression_data(4))])
    assert [len(p) for p in several] == [3, 1] and several[1][0]["dataloader_idx"] == 1
    assert trainer.predict(module, loader(data), return_predictions=False) is None
    trainer.limit_predict_batches = 2
    assert len(trainer.predict(module, loader(data))) == 2


def test_default_predict_step_is_forward_on_the_batch(tmp_path: Path) -> None:
    module = Regressor()
    x = torch.randn(6, 4)
    out = make_trainer(tmp_path).predict(module, DataLoader(x, batch_size=4))
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(out), module(x))


def test_predict_with_ckpt_path_uses_those_weights(tmp_path: Path) -> None:
    trainer, module, ckpt = _fit_with_best_at_epoch_0(tmp_path)
    best = load_checkpoint(ckpt.best_model_path)["model"]
    x = torch.randn(5, 4)
    out = trainer.predict(dataloaders=DataLoader(x, batch_size=5), ckpt_path="best")
    fresh = Regressor()
    fresh.load_state_dict(best)
    with torch.no_grad():
        torch.testing.assert_close(out[0], fresh(x))


class OwnLoaders(Regressor):
    """Loaders defined on the module itself (Lightning allows this instead of a datamodule)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def train_dataloader(self) -> DataLoader:
        self.calls.append("train_dataloader")
        return loader(regression_data(8))

    def val_dataloader(self) -> DataLoader:
        self.calls.append("val_dataloader")
        return loader(regression_data(4))

    def test_dataloader(self) -> DataLoader:
        self.calls.append("test_dataloader")
        return loader(regression_data(4))

    def predict_dataloader(self) -> DataLoader:
        self.calls.append("predict_dataloader")
        return DataLoader(torch.randn(3, 4), batch_size=2)


def test_dataloaders_defined_on_the_module(tmp_path: Path) -> None:
    module = OwnLoaders()
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module)
    assert trainer.global_step == 2 and "val_loss" in trainer.callback_metrics
    assert "test_loss" in trainer.test()[0]
    assert "val_loss" in trainer.validate(module)[0]
    assert [p.shape[0] for p in trainer.predict()] == [2, 1]
    assert module.calls == [
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
        "val_dataloader",
        "predict_dataloader",
    ]


# -- several validation/test dataloaders -------------------------------------------------------------
class TwoLoaders(Regressor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.seen.append((dataloader_idx, batch_idx))
        self.log("val_n", float(len(batch[0])), reduce_fx="sum")
        self.log("shared", 1.0, add_dataloader_idx=False)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.log("test_loss", float(dataloader_idx))


def test_several_eval_dataloaders_pass_dataloader_idx_and_suffix_the_names(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    module = TwoLoaders()
    vals = [loader(regression_data(8)), loader(regression_data(4))]
    trainer.fit(module, loader(regression_data(8)), vals)
    assert module.seen == [(0, 0), (0, 1), (1, 0)]
    cm = trainer.callback_metrics
    assert cm["val_n/dataloader_idx_0"] == 8 and cm["val_n/dataloader_idx_1"] == 4 and cm["shared"] == 1.0
    results = trainer.test(module, dataloaders=[loader(regression_data(4)), loader(regression_data(4))])
    assert results == [{"test_loss/dataloader_idx_0": 0.0}, {"test_loss/dataloader_idx_1": 1.0}]
    val = trainer.validate(module, dataloaders=vals)
    assert val == [{"shared": 1.0, "val_n/dataloader_idx_0": 8.0}, {"shared": 1.0, "val_n/dataloader_idx_1": 4.0}]


def test_a_step_without_dataloader_idx_given_several_loaders_names_the_fix(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    with pytest.raises(TypeError, match=r"add a `dataloader_idx` argument"):
        trainer.validate(Regressor(), dataloaders=[loader(regression_data(4))] * 2)


# -- logging names ----------------------------------------------------------------------------------
class StepLogs(Regressor):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("v", float(batch_idx), on_step=True)  # on_epoch defaults to True in validation: forked
        self.log("v_only_step", float(batch_idx), on_step=True, on_epoch=False)


def test_on_step_in_validation_logs_step_keys_and_callback_metrics_hold_the_plain_name(tmp_path: Path) -> None:
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=1, logger=logger)
    trainer.fit(StepLogs(), loader(regression_data(8)), loader(regression_data(12)))  # 3 val batches
    cm = trainer.callback_metrics
    assert cm["v_epoch"] == pytest.approx(1.0) and cm["v"] == pytest.approx(1.0)  # the plain name: epoch value
    assert "v_step" not in cm and "v_only_step" not in cm  # Lightning: no step values of evaluation there
    assert [v for _, v in logger.series("v_step")] == [0.0, 1.0, 2.0]
    assert [v for _, v in logger.series("v_only_step")] == [0.0, 1.0, 2.0]
    assert [v for _, v in logger.series("v_epoch")] == [pytest.approx(1.0)]


# -- module hooks and surface ------------------------------------------------------------------------
EVAL_HOOKS = [
    f"on_{s}_{w}"
    for s in ("validation", "test", "predict")
    for w in ("start", "end", "epoch_start", "epoch_end", "batch_start", "batch_end", "model_eval")
] + ["on_validation_model_train", "on_test_model_train"]
TRAIN_HOOKS = ["on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward"]
TRAIN_HOOKS += ["on_before_optimizer_step", "on_train_batch_end"]


class Hooked(Regressor):
    """Records its hooks (and their arguments' shapes) and those of a callback, in one list."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        for hook in EVAL_HOOKS + TRAIN_HOOKS:
            setattr(self, hook, self._recorder(hook))
        for hook in ("prepare_data", "setup", "teardown"):
            setattr(self, hook, self._recorder(hook))

    def _recorder(self, hook: str) -> Any:
        def record(*args: Any) -> None:
            if hook.endswith("model_eval"):
                self.eval()
            elif hook.endswith("model_train"):
                self.train()
            shown = [a for a in args if isinstance(a, (int, str)) and not isinstance(a, bool)]
            self.calls.append(f"{hook}{tuple(shown) if shown else ''}")

        return record

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.calls.append("predict_step")
        return batch[0]


class CallbackRecorder(Callback):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("on_validation_batch", "on_predict", "on_before", "on_after", "teardown")):
            return lambda trainer, module, *args: self.calls.append(f"cb.{name}")
        raise AttributeError(name)


def test_module_and_callback_batch_hooks_in_lightnings_order(tmp_path: Path) -> None:
    module = Hooked()
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[CallbackRecorder(module.calls)])
    data = regression_data(8)
    trainer.fit(module, loader(data, batch_size=8), loader(regression_data(4), batch_size=4))
    assert module.calls == [
        "prepare_data",
        "setup('fit',)",
        "on_train_batch_start(0,)",
        "cb.on_before_zero_grad",
        "on_before_zero_grad",
        "cb.on_before_backward",
        "on_before_backward",
        "cb.on_after_backward",
        "on_after_backward",
        "cb.on_before_optimizer_step",
        "on_before_optimizer_step",
        "on_train_batch_end(0,)",
        "on_validation_model_eval",
        "on_validation_start",
        "on_validation_epoch_start",
        "cb.on_validation_batch_start",
        "on_validation_batch_start(0,)",
        "cb.on_validation_batch_end",
        "on_validation_batch_end(0,)",
        "on_validation_epoch_end",
        "on_validation_end",
        "on_validation_model_train",
        "cb.teardown",
        "teardown('fit',)",
    ]
    module.calls.clear()
    trainer.predict(module, [DataLoader(data, batch_size=8)] * 2)
    assert module.calls == [
        "prepare_data",
        "setup('predict',)",
        "on_predict_model_eval",
        "cb.on_predict_start",
        "on_predict_start",
        "cb.on_predict_epoch_start",
        "on_predict_epoch_start",
        *[
            f(i)
            for i in (0, 1)
            for f in (
                lambda i: "cb.on_predict_batch_start",
                lambda i: f"on_predict_batch_start(0, {i})",
                lambda i: "predict_step",
                lambda i: "cb.on_predict_batch_end",
                lambda i: f"on_predict_batch_end(0, {i})",
            )
        ],
        "cb.on_predict_epoch_end",
        "on_predict_epoch_end",
        "cb.on_predict_end",
        "on_predict_end",
        "cb.teardown",
        "teardown('predict',)",
    ]
    module.calls.clear()
    trainer.test(module, dataloaders=loader(data, batch_size=8))
    assert module.calls[2:5] == ["on_test_model_eval", "on_test_start", "on_test_epoch_start"]
    assert module.calls[-3:] == ["on_test_model_train", "cb.teardown", "teardown('test',)"]


def test_backward_hooks_cost_nothing_unless_defined(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(Regressor(), loader(regression_data(4)))
    assert trainer.fit_loop.backward_fn() is trainer.precision.backward  # the loop calls backward directly
    module = Hooked()
    trainer = make_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2)
    trainer.fit(module, loader(regression_data(16)))  # 4 batches, 2 optimizer steps
    assert module.calls.count("on_before_zero_grad") == 2 and module.calls.count("on_after_backward") == 4


def test_evaluation_restores_each_submodules_mode(tmp_path: Path) -> None:
    module = Regressor()
    module.frozen = nn.BatchNorm1d(4)  # e.g. a frozen backbone's BatchNorm, kept in eval mode while training
    module.frozen.eval()
    seen: list[bool] = []
    module.validation_step = lambda batch, batch_idx: seen.append(module.training)  # type: ignore[method-assign]
    make_trainer(tmp_path).validate(module, dataloaders=loader(regression_data(4)))
    assert seen == [False] and module.training and not module.frozen.training


def test_freeze_unfreeze_print_ranks_loggers_example_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = Regressor()
    module.freeze()
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    module.unfreeze()
    assert module.training and all(p.requires_grad for p in module.parameters())
    module.example_input_array = torch.zeros(2, 4)
    assert module.example_input_array.shape == (2, 4) and "example_input_array" not in dict(module.named_buffers())
    assert Regressor().example_input_array is None
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, max_epochs=1, logger=logger)
    trainer.fit(module, loader(regression_data(4)))
    assert module.logger is logger and module.loggers == [logger]
    assert (module.global_rank, module.local_rank) == (0, 0)
    capsys.readouterr()
    module.print("hello", 3)
    assert capsys.readouterr().out == "hello 3\n"
    trainer.env.rank = 1  # as on another process: nothing printed
    module.print("hidden")
    trainer.env.rank = 0
    assert capsys.readouterr().out == ""


def test_all_gather_in_one_process_returns_the_data_unchanged(tmp_path: Path) -> None:
    module = Regressor()
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, loader(regression_data(4)))
    t = torch.arange(3.0)
    out = module.all_gather({"a": t, "b": [t, 2.0]})
    assert out["a"] is t and out["b"][0] is t and torch.equal(out["b"][1], torch.tensor(2.0))


class WithCallbacks(Regressor):
    def configure_callbacks(self) -> Any:
        return [EarlyStopping(monitor="val_loss", patience=7), ModelCheckpoint(monitor="val_loss")]


def test_configure_callbacks_replaces_same_type_callbacks_and_checkpoints_go_last(tmp_path: Path) -> None:
    mine = Callback()
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[EarlyStopping(monitor="x", patience=1), mine])
    trainer.fit(WithCallbacks(), loader(regression_data(4)), loader(regression_data(4)))
    stopping = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert [c.patience for c in stopping] == [7] and mine in trainer.callbacks
    assert isinstance(trainer.callbacks[-1], ModelCheckpoint) and trainer.callbacks[-1].best_model_path


def test_setup_builds_layers_that_move_with_the_module(tmp_path: Path) -> None:
    class Lazy(Regressor):
        def setup(self, stage: str) -> None:
            if stage == "fit":
                self.extra = nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return super().training_step(batch, batch_idx) + 0 * self.extra(batch[0]).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Lazy()
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, loader(regression_data(4)))
    assert trainer.optimizers[0].param_groups[0]["params"][-1] is module.extra.bias


# -- DataModule --------------------------------------------------------------------------------------
class Data(DataModule):
    def __init__(self, n: int = 16, batch_size: int = 4, tag: str = "x") -> None:
        super().__init__()
        self.save_hyperparameters(ignore="tag")
        self.events: list[str] = []
        self.consumed = 0

    def setup(self, stage: str) -> None:
        self.events.append(f"setup:{stage}:{self.trainer is not None}")
        self.data = regression_data(self.hparams.n)

    def teardown(self, stage: str) -> None:
        self.events.append(f"teardown:{stage}")

    def train_dataloader(self) -> DataLoader:
        return loader(self.data, self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.data.tensors[0], batch_size=8)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed = state["consumed"]


def test_datamodule_hparams_trainer_teardown_predict_and_state(tmp_path: Path) -> None:
    data = Data(n=8, batch_size=2)
    assert data.hparams == {"n": 8, "batch_size": 2} and data.hparams.n == 8
    assert RegressionData().hparams == {}  # a subclass that never calls super().__init__() works too
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[ModelCheckpoint(save_last=True)])
    module = Regressor()
    data.consumed = 5
    trainer.fit(module, datamodule=data)
    assert data.trainer is trainer
    assert [p.shape[0] for p in trainer.predict()] == [8]  # the fit's datamodule, its predict_dataloader
    assert data.events == ["setup:fit:True", "teardown:fit", "setup:predict:True", "teardown:predict"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["datamodule"] == {"consumed": 5}
    resumed = Data(n=8, batch_size=2)
    make_trainer(tmp_path / "b", max_epochs=2).fit(
        Regressor(), datamodule=resumed, ckpt_path=tmp_path / "checkpoints" / "last.ckpt"
    )
    assert resumed.consumed == 5


# -- DDP: what each rank returns -----------------------------------------------------------------------
SCRIPTS = Path(__file__).resolve().parent / "ddp_scripts"


def test_predict_under_ddp_returns_each_ranks_own_shard_and_all_gather_stacks(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(PYTHONPATH=str(SCRIPTS), OMP_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    proc = subprocess.run(
        [*cmd, "-m", "ddpjob.predict", str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ranks = [json.loads((tmp_path / f"predict-rank{r}.json").read_text()) for r in (0, 1)]
    # 7 samples, unpadded shards: rank 0 predicts samples 0, 2, 4, 6 and rank 1 samples 1, 3, 5.
    assert [r["predicted_ids"] for r in ranks] == [[0, 2, 4, 6], [1, 3, 5]]
    for r in ranks:
        assert r["gathered"] == [[0.0, 1.0], [1.0, 2.0]]  # all_gather: (world_size, ...) on every rank
        assert r["gathered_scalar"] == [0.0, 1.0]
