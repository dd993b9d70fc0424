"""Lightning's optimization hooks, overridden: the same weights, calls and order as Lightning 2.6.

Each scenario runs here on the engine and, through ``record_lightning_hooks.py``, under
Lightning itself (``engine`` is then ``lightning.pytorch``); the numbers Lightning gave are
recorded at the end of this file. Weights are compared bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import engine as pl


def _data(n: int = 32, d: int = 4) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return TensorDataset(x, x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g))


class Base(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.calls: list[Any] = []

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _fit(module: Base, root: Path, n: int = 32, **kwargs: Any) -> Any:
    kwargs.setdefault("max_epochs", 2)
    trainer = pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )
    trainer.fit(module, DataLoader(_data(n), batch_size=4))
    return trainer


def _weights(module: nn.Module) -> str:
    """Every parameter's float32 bytes, in hex: equal strings are bit-identical weights."""
    return torch.cat([p.detach().flatten() for p in module.parameters()]).numpy().tobytes().hex()


# -- the scenarios (run under the engine here, under Lightning by the recording script) ------------
class WarmUp(Base):
    """The common idiom: the learning rate warmed up in optimizer_step."""

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        scale = min(1.0, (self.trainer.global_step + 1) / 6)
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * scale
        optimizer.step(closure=optimizer_closure)
        self.calls.append([epoch, batch_idx, optimizer.param_groups[0]["lr"]])


def warm_up(root: Path) -> dict[str, Any]:
    module = WarmUp()
    trainer = _fit(module, root, accumulate_grad_batches=2, gradient_clip_val=0.5)
    return {"weights": _weights(module), "calls": module.calls, "global_step": trainer.global_step}


class SkipSteps(Base):
    """optimizer_step runs the closure (training_step, zero_grad, backward) but steps every other batch."""

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        if batch_idx % 2:
            optimizer.step(closure=optimizer_closure)
        else:
            optimizer_closure()


def skip_steps(root: Path) -> dict[str, Any]:
    module = SkipSteps()
    trainer = _fit(module, root)
    return {"weights": _weights(module), "global_step": trainer.global_step}


class ZeroGradEvery4(Base):
    """optimizer_zero_grad overridden: gradients add up over four optimizer steps."""

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if batch_idx % 4 == 0:
            optimizer.zero_grad()


def zero_grad_every_4(root: Path) -> dict[str, Any]:
    module = ZeroGradEvery4()
    _fit(module, root)
    return {"weights": _weights(module)}


class CustomClipping(Base):
    """configure_gradient_clipping overridden: by value in epoch 0, by norm after (Trainer sets none)."""

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        self.calls.append([gradient_clip_val, gradient_clip_algorithm])
        if self.current_epoch == 0:
            self.clip_gradients(optimizer, gradient_clip_val=0.05, gradient_clip_algorithm="value")
        else:
            self.clip_gradients(optimizer, gradient_clip_val=0.2, gradient_clip_algorithm="norm")


def custom_clipping(root: Path) -> dict[str, Any]:
    module = CustomClipping()
    _fit(module, root)
    return {"weights": _weights(module), "first_call": module.calls[0], "calls": len(module.calls)}


class SchedulerEvery3(Base):
    """lr_scheduler_step overridden: the scheduler steps on every third call only."""

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        self.calls.append(metric)
        if len(self.calls) % 3 == 0:
            scheduler.step()


def scheduler_every_3(root: Path) -> dict[str, Any]:
    module = SchedulerEvery3()
    trainer = _fit(module, root)
    return {
        "weights": _weights(module),
        "calls": module.calls,
        "lr": trainer.optimizers[0].param_groups[0]["lr"],
    }


class Order(Base):
    """Every optimization hook overridden, each recording itself; training_step returns a dict."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.calls.append(f"training_step({batch_idx})")
        return {"loss": super().training_step(batch, batch_idx), "seen": batch_idx}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.calls.append(f"on_train_batch_start({batch_idx})")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        shown = {k: round(float(v), 5) for k, v in outputs.items()}
        self.calls.append(f"on_train_batch_end({batch_idx}, {shown}, step={self.trainer.global_step})")

    def on_before_zero_grad(self, optimizer: Any) -> None:
        self.calls.append("on_before_zero_grad")

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        self.calls.append(f"optimizer_zero_grad({epoch}, {batch_idx})")
        optimizer.zero_grad()

    def on_before_backward(self, loss: torch.Tensor) -> None:
        self.calls.append(f"on_before_backward({float(loss):.5f})")

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.calls.append("backward")
        loss.backward(*args, **kwargs)

    def on_after_backward(self) -> None:
        self.calls.append("on_after_backward")

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        self.calls.append(f"optimizer_step({epoch}, {batch_idx})")
        optimizer.step(closure=optimizer_closure)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self.calls.append("on_before_optimizer_step")

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        self.calls.append(f"configure_gradient_clipping({gradient_clip_val}, {gradient_clip_algorithm})")
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 1), "interval": "step"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        self.calls.append(f"lr_scheduler_step({metric})")
        scheduler.step()


class BatchCounter(pl.Callback):
    """A callback counting batches, as EMA and logging-cadence callbacks do."""

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        self.calls.append(f"cb.on_train_batch_start({batch_idx})")

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.calls.append(f"cb.on_train_batch_end({batch_idx}, {sorted(outputs)})")


def order(root: Path) -> dict[str, Any]:
    module = Order()
    trainer = _fit(
        module,
        root,
        n=16,
        max_epochs=1,
        accumulate_grad_batches=2,
        gradient_clip_val=1.0,
        callbacks=[BatchCounter(module.calls)],
    )
    return {"calls": module.calls, "weights": _weights(module), "global_step": trainer.global_step}


class Accumulating(Base):
    """No optimization hook overridden: only the batch hooks, under accumulation (the default loop)."""

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.calls.append([batch_idx, sorted(outputs), round(float(outputs["loss"]), 5), self.trainer.global_step])


def accumulating(root: Path) -> dict[str, Any]:
    module = Accumulating()
    trainer = _fit(module, root, n=16, max_epochs=1, accumulate_grad_batches=2, callbacks=[BatchCounter(module.calls)])
    return {"calls": module.calls, "weights": _weights(module), "global_step": trainer.global_step}


class Manual(Base):
    """Manual optimization: on_train_batch_end gets training_step's dict, the loss detached."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        opt = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss if batch_idx % 2 else {"loss": loss, "seen": batch_idx}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        shown = {k: round(float(v), 5) for k, v in outputs.items()}
        self.calls.append([batch_idx, shown, outputs["loss"].requires_grad])


def manual(root: Path) -> dict[str, Any]:
    module = Manual()
    _fit(module, root, n=16, max_epochs=1)
    return {"calls": module.calls, "weights": _weights(module)}


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    f.__name__: f
    for f in (warm_up, skip_steps, zero_grad_every_4, custom_clipping, scheduler_every_3, order, accumulating, manual)
}


# -- the tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_overridden_optimization_hooks_give_lightnings_numbers(name: str, tmp_path: Path) -> None:
    got, want = SCENARIOS[name](tmp_path), LIGHTNING[name]
    assert got.keys() == want.keys()
    for key in got:
        assert got[key] == want[key], (name, key)  # weights: bit for bit


def test_the_weight_comparison_can_fail(tmp_path: Path) -> None:
    """Without the override, the warm-up scenario trains differently: the comparison detects it."""
    module = Base()
    _fit(module, tmp_path, accumulate_grad_batches=2, gradient_clip_val=0.5)
    assert _weights(module) != LIGHTNING["warm_up"]["weights"]


def test_an_optimizer_step_that_never_runs_the_closure_says_so(tmp_path: Path) -> None:
    class NoClosure(Base):
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            optimizer.step()

    with pytest.raises(RuntimeError, match="optimizer_closure"):
        _fit(NoClosure(), tmp_path)


def test_default_loop_takes_the_plain_path(tmp_path: Path) -> None:
    """A module overriding no optimization hook trains through the loop's own step (no closure)."""
    from engine import automatic

    trainer = _fit(Base(), tmp_path, max_epochs=1)
    assert automatic.hooked_step(trainer) is None
    trainer = _fit(WarmUp(), tmp_path, max_epochs=1)
    assert automatic.hooked_step(trainer) is not None


def test_step_checkpoints_save_once_per_optimizer_step_under_accumulation(tmp_path: Path) -> None:
    """on_train_batch_end runs after every batch now: a window's batches share a step, saved once."""
    saved: list[int] = []

    class Counting(pl.callbacks.ModelCheckpoint):
        def save(self, trainer: Any) -> None:
            saved.append(trainer.global_step)
            super().save(trainer)

    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        accumulate_grad_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Counting(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)],
    )
    trainer.fit(Base(), DataLoader(_data(16), batch_size=4))  # 4 batches, 2 steps
    assert saved == [1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed needs a CUDA GPU")
def test_overridden_optimizer_step_under_16_mixed_steps_as_the_default_loop(tmp_path: Path) -> None:
    """The closure path through the GradScaler (unscale, hooks, clipping, scaler.step, update)
    gives the default loop's weights and scale bit for bit."""

    class PlainStep(Base):
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            optimizer.step(closure=optimizer_closure)

    runs = []
    for module in (Base(), PlainStep()):
        trainer = pl.Trainer(
            default_root_dir=tmp_path,
            max_epochs=2,
            accelerator="gpu",
            devices=1,
            precision="16-mixed",
            accumulate_grad_batches=2,
            gradient_clip_val=0.5,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, DataLoader(_data(), batch_size=4))
        runs.append((torch.cat([p.detach().flatten().cpu() for p in module.parameters()]), trainer.scaler.get_scale()))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_on_gpu_says_where_the_parameters_are(tmp_path: Path) -> None:
    module = Base()
    assert module.on_gpu is False
    if torch.cuda.is_available():
        assert module.cuda().on_gpu is True


# -- recorded under Lightning (record_lightning_hooks.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu
LIGHTNING: dict[str, Any] = {
    "warm_up": {
        "weights": "154647bc1200883ee019d9bef8e4b8bed30426be930a183eab4eaa3d6984ae3e9b5f8bbd4c83043e783845be0a9985bd23a0eabe1fe4b5bec52f67bda927e2bda365863e59289f3e6a7665be5c9195be18dc5d3e6441e13ede00a3bcedd19f3e175008befcc81a3da8dacf3e3cb9cebe11aca8bec376b7bd5fd2c7bedfdd013f0109a6bea4cd66bee7d4b2be50c5f2bef5508ebe6836e63e2691773e98ee453e6086cb3dd8efa63d43b3033e3337f0bd1ac576be28ec8bbd2ef070beaec6203fef5d49be",
        "calls": [
            [0, 1, 0.016666666666666666],
            [0, 3, 0.03333333333333333],
            [0, 5, 0.05],
            [0, 7, 0.06666666666666667],
            [1, 1, 0.08333333333333334],
            [1, 3, 0.1],
            [1, 5, 0.1],
            [1, 7, 0.1],
        ],
        "global_step": 8,
    },
    "skip_steps": {
        "weights": "33e8cfbd0bafe03dc30da0be4072cdbe4723a3bed5d9c83e7928f33d371bc2bdbd0055beb3c26bbeb98719beb217ed3c552f4dbf349d143e2bfba33e35a23cbfa16cf83e0f5d8b3fcf0d593c09303dbf79891a3e061d163f0dc8ba3e4d9f08bdc41a3e3e67fbe23fb93f163f363517bf61af38bfdf6dd9bf141801c04447473f65de32be5259fdbddddb66be683532bfdfc114bda086143ffcf118bfe823973f33aba2bee9d4843e35d70bbe4146ff3e8fb40fbf6ed2d03c83ed9ebf543cbf3f0499cd3d",
        "global_step": 16,
    },
    "zero_grad_every_4": {
        "weights": "619065c1e5d708426f2505c14bc61ec00244ecc1859638424ff39dbf3261adc1d3ce9c421e444742a6620fc295effbc2136ce4c16ee775c20dce19c26597bc417c743ac2e5d55f4153e98fc0de750042a8c1f4c143d7b2414bb93cc02fc01cc258b1eac100564fc20be24842f4dccf41dcc6ac414212b9c09652564222d69442a2e1b3bf7c5482c29dae6242d74d82c2460bf6c1b4e96cc1358359c2680186422eeb464225adac41980b81c2bfa241c213f5f941ff5625c0afdce2415f4ca4c113249142"
    },
    "custom_clipping": {
        "weights": "7775a0bb1328223ea0f1cdbe8f73a7bef2991cbde44b363eb4828f3e62f72f3e488a5bbe3432be3dbfe4ddbe857dd63d445fbfbe7c3dafbedcf6fe3d554f9dbe3015cc3eb021803ef67c063d8052eabeb3adb83e9337b93e840e683e965de53dcd4178bed86b0bbd5c05233edaf465be15a1fabee147b2bda67314bfd0b9253f4044c1beab488cbe265fadbe1ee1fabe98a064be8079d23e193f9a3e85815a3e47ce9e3dea30133d1f205c3ef96950be2063e8be34267bbe9a7089bd48aa413f25caecbd",
        "first_call": [None, None],
        "calls": 16,
    },
    "scheduler_every_3": {
        "weights": "0109e43ba953763ecedbbabed6d3bfbee3f94cbe9752493e32b81cbd6f1bbf3e53cbc4bd0019913d987f5dbeb390cbbc6fa7e4be0b368fbe2fd02cbe50d94cbdc96aa33eab24b73e21ba16bcb1eccbbe5c23643e6b750c3f430ab43c933a413e39d9fb3cc5efb13bf3d31b3f8738f8be1002a9be14b2b8bdb02542bfc79f173f278fafbefd4d47be5866afbeb407ecbe83e486be4dbfd33e4cd2d53d642c4e3e9095893cae382d3ea0c2123e08ad633d97c4eebe76850fbe45081dbfb4728e3fa56416be",
        "calls": [None, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None],
        "lr": 0.016806999999999996,
    },
    "order": {
        "calls": [
            "cb.on_train_batch_start(0)",
            "on_train_batch_start(0)",
            "training_step(0)",
            "on_before_zero_grad",
            "optimizer_zero_grad(0, 0)",
            "on_before_backward(0.72056)",
            "backward",
            "on_after_backward",
            "cb.on_train_batch_end(0, ['loss', 'seen'])",
            "on_train_batch_end(0, {'loss': 0.72056, 'seen': 0.0}, step=0)",
            "cb.on_train_batch_start(1)",
            "on_train_batch_start(1)",
            "optimizer_step(0, 1)",
            "training_step(1)",
            "on_before_backward(0.96065)",
            "backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "configure_gradient_clipping(1.0, None)",
            "lr_scheduler_step(None)",
            "cb.on_train_batch_end(1, ['loss', 'seen'])",
            "on_train_batch_end(1, {'loss': 0.96065, 'seen': 1.0}, step=1)",
            "cb.on_train_batch_start(2)",
            "on_train_batch_start(2)",
            "training_step(2)",
            "on_before_zero_grad",
            "optimizer_zero_grad(0, 2)",
            "on_before_backward(2.86875)",
            "backward",
            "on_after_backward",
            "cb.on_train_batch_end(2, ['loss', 'seen'])",
            "on_train_batch_end(2, {'loss': 2.86875, 'seen': 2.0}, step=1)",
            "cb.on_train_batch_start(3)",
            "on_train_batch_start(3)",
            "optimizer_step(0, 3)",
            "training_step(3)",
            "on_before_backward(4.76436)",
            "backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "configure_gradient_clipping(1.0, None)",
            "lr_scheduler_step(None)",
            "cb.on_train_batch_end(3, ['loss', 'seen'])",
            "on_train_batch_end(3, {'loss': 4.76436, 'seen': 3.0}, step=2)",
        ],
        "weights": "e49a75bb6736893eaf29d3bedf62bcbe96974abee207053e2826ce39a592cb3eb92e31bd392e083e53401ebe7b29cbbd08b1f9be8ea2afbe5e9148be180cb43c6a5b4b3ede119c3e4c0fa8bed06a5fbe48ab333ee4ced03e5fddc1bd47c3c13ea8cf96bd8bdf803d6b2ce33e49dbefbe812aa0be0a2e00be86b450be619ddc3e5d56a6bedb5c60bea552b4be2d07eabe249090be8173e03e09fd583e06fa6e3eac01823d0b0632be317dbc3d1f70a5bef4145dbe565d42beaca6453efece433e31cb60be",
        "global_step": 2,
    },
    "accumulating": {
        "calls": [
            "cb.on_train_batch_start(0)",
            "cb.on_train_batch_end(0, ['loss'])",
            [0, ["loss"], 0.72056, 0],
            "cb.on_train_batch_start(1)",
            "cb.on_train_batch_end(1, ['loss'])",
            [1, ["loss"], 0.96065, 1],
            "cb.on_train_batch_start(2)",
            "cb.on_train_batch_end(2, ['loss'])",
            [2, ["loss"], 2.88529, 1],
            "cb.on_train_batch_start(3)",
            "cb.on_train_batch_end(3, ['loss'])",
            [3, ["loss"], 4.13831, 2],
        ],
        "weights": "be296d3b53188e3e453edfbe5411bdbe434d7fbe0987923def1bd03d838fd33e925a88bce5de303ed9145fbee8c6ffbdea8d13bf108cdebe630c6bbdf17b5b3d38b3453ee3059e3ee58785be616c58bef806ff3d087aaf3ec42700bc1bcacc3ed5460ebd73ff053e96b3bb3ef7ab03bfc99389be46ac90bd5c969cbe43abd33eedb7a9be9b682abe169cbbbef91ac3beab6a79be1a5af73ecb5b323e4ef13d3e4b9afa3e62b252be5cb8b63effb4bfbec2c93b3e06aef4bd4e5ce23b7b3c093d014f08bf",
        "global_step": 2,
    },
    "manual": {
        "calls": [
            [0, {"loss": 1.44113, "seen": 0.0}, False],
            [1, {"loss": 1.53788}, False],
            [2, {"loss": 6.05414, "seen": 2.0}, False],
            [3, {"loss": 3.80903}, False],
        ],
        "weights": "90ab0f3dc1baac3eeae619bfdc90babec7f7a6bec9d79abc80a5933e74d0d83e7691603d7b8eb83ea4e9e4be783464beb6c226bf1f9908bf3d16e13db6aa863d1b99633e7ae0b03ea9d67cbeafe654bed0d5913d35d63f3eb8f6063e9ddefd3e555604bc19d2393e1fd1a43e598805bf6cdd89be552670bc6fadccbe1b41ba3eb018a9bee55be4bd3fd7a1be4379b1be18e874bec1b9e53efc3cfb3ddc003f3e3e758c3f2b55c5be08f82d3fa1ce2fbf0f03383ff611c93ddaf11bbe20af33bd0f87fdbe",
    },
}
# -- end of recorded numbers --
