"""Manual optimization and several optimizers (Lightning 2's model for GANs and RL)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import RecordingLogger, Regressor, loader, make_trainer, regression_data
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from engine import Module
from engine.callbacks import ModelCheckpoint
from engine.optim import LightningOptimizer

D_IN, D_Z = 4, 3


def real_data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    return TensorDataset(torch.randn(n, D_IN, generator=g) * 0.5 + 1.0)


def make_nets(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    generator = nn.Sequential(nn.Linear(D_Z, 8), nn.ReLU(), nn.Linear(8, D_IN))
    discriminator = nn.Sequential(nn.Linear(D_IN, 8), nn.ReLU(), nn.Linear(8, 1))
    return generator, discriminator


def d_loss_of(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    d_real, d_fake = d(real), d(fake)
    return F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(
        d_fake, torch.zeros_like(d_fake)
    )


def g_loss_of(d: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    d_fake = d(fake)
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


class GAN(Module):
    """The Lightning docs' GAN shape: two optimizers, toggling, manual_backward, clipping."""

    def __init__(self, clip: float | None = None, schedulers: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = make_nets()
        self.clip, self.schedulers = clip, schedulers
        self.seen: list[dict[str, Any]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), D_Z, device=real.device)  # the global RNG: a checkpoint must restore it

        self.toggle_optimizer(opt_g)
        self.seen.append({"g_grad": [p.requires_grad for p in self.parameters()]})
        g_loss = g_loss_of(self.discriminator, self.generator(z))
        self.manual_backward(g_loss)
        if self.clip is not None:
            self.clip_gradients(opt_g, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        d_loss = d_loss_of(self.discriminator, real, self.generator(z).detach())
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)
        self.seen[-1]["after"] = [p.requires_grad for p in self.parameters()]
        if self.schedulers:
            for s in self.lr_schedulers():
                s.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss}, prog_bar=True)
        return d_loss

    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=0.01, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=0.02, betas=(0.5, 0.999))
        if not self.schedulers:
            return [opt_g, opt_d], []
        return [
            {"optimizer": opt_g, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt_g, 2, gamma=0.5)},
            {"optimizer": opt_d, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ExponentialLR(opt_d, 0.9)}},
        ]


def hand_written_gan(batches: int, clip: float | None = None) -> dict[str, torch.Tensor]:
    """The same GAN as plain PyTorch: what the engine must reproduce bit for bit."""
    generator, discriminator = make_nets()
    opt_g = torch.optim.Adam(generator.parameters(), lr=0.01, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=0.02, betas=(0.5, 0.999))
    batches_ = list(loader(real_data(), batch_size=4))[:batches]  # (iterating draws from the global RNG)
    torch.manual_seed(1234)
    for (real,) in batches_:
        z = torch.randn(len(real), D_Z)
        for p in discriminator.parameters():
            p.requires_grad_(False)
        g_loss_of(discriminator, generator(z)).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(generator.parameters()), clip)
        opt_g.step()
        opt_g.zero_grad()
        for p in discriminator.parameters():
            p.requires_grad_(True)
        for p in generator.parameters():
            p.requires_grad_(False)
        d_loss_of(discriminator, real, generator(z).detach()).backward()
        opt_d.step()
        opt_d.zero_grad()
        for p in generator.parameters():
            p.requires_grad_(True)
    return {**{f"generator.{k}": v for k, v in generator.state_dict().items()}} | {
        f"discriminator.{k}": v for k, v in discriminator.state_dict().items()
    }


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"weights differ at {key}"


@pytest.mark.parametrize("clip", [None, 0.05])
def test_gan_matches_a_hand_written_loop_bit_for_bit(tmp_path: Path, clip: float | None) -> None:
    module = GAN(clip=clip)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=5)
    torch.manual_seed(1234)  # the hand-written loop's noise stream (rank 0 keeps it)
    trainer.fit(module, loader(real_data(), batch_size=4))
    assert_same_weights(module.state_dict(), hand_written_gan(5, clip))
    assert trainer.global_step == 10  # each opt.step() is one global step, as in Lightning
    # toggle: during the generator step only its parameters require grad; all are back afterwards
    n_gen = len(list(module.generator.parameters()))
    assert module.seen[0]["g_grad"] == [True] * n_gen + [False] * (len(module.seen[0]["g_grad"]) - n_gen)
    assert all(all(s["after"]) for s in module.seen)


def test_optimizers_are_wrapped_and_global_step_stops_at_max_steps(tmp_path: Path) -> None:
    module = GAN()
    logger = RecordingLogger()
    ends: list[int] = []
    module.on_train_batch_end = lambda outputs, batch, batch_idx: ends.append(module.global_step)
    trainer = make_trainer(tmp_path, max_steps=5, log_every_n_steps=4, logger=logger)
    trainer.fit(module, loader(real_data(), batch_size=4))
    # Lightning checks max_steps after each batch: 3 batches of two steps each.
    assert trainer.global_step == 6 and trainer.fit_loop.state.batches_done == 3 and trainer.stop_reason == "max_steps"
    assert ends == [2, 4, 6]
    opt_g, opt_d = module.optimizers()
    assert isinstance(opt_g, LightningOptimizer) and opt_g.optimizer is trainer.optimizers[0]
    assert opt_d.param_groups is trainer.optimizers[1].param_groups  # the rest passes through
    assert module.optimizers(use_pl_optimizer=False) == trainer.optimizers
    assert module.lr_schedulers() is None
    # logged when global_step crosses a multiple of log_every_n_steps (step 4), with the loop's step
    assert [step for step, _ in logger.series("g_loss")] == [4]
    assert set(trainer.callback_metrics) >= {"g_loss", "d_loss"}


def test_the_user_steps_the_schedulers_and_the_loop_does_not(tmp_path: Path) -> None:
    module = GAN(schedulers=True)
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3)
    trainer.fit(module, loader(real_data(), batch_size=4))
    sched_g, sched_d = module.lr_schedulers()
    assert sched_g.last_epoch == 6 and sched_d.last_epoch == 6  # 6 batches, one user step each
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**3)
    assert trainer.optimizers[1].param_groups[0]["lr"] == pytest.approx(0.02 * 0.9**6)


class OneOpt(Regressor):
    """One optimizer, manual: returns the lr scheduler alone from lr_schedulers()."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.lr_schedulers().step()
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}


def test_one_manual_optimizer_equals_automatic_optimization(tmp_path: Path) -> None:
    class Auto(Regressor):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    manual, auto = OneOpt(), Auto()
    for m in (manual, auto):
        make_trainer(tmp_path, max_epochs=2).fit(m, loader(regression_data(16)))
    assert isinstance(manual.optimizers(), LightningOptimizer)
    assert_same_weights(manual.state_dict(), auto.state_dict())


class NaNAtBatch(OneOpt):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == 2 else loss


def test_a_non_finite_returned_loss_stops_before_anything_is_saved(tmp_path: Path) -> None:
    module = NaNAtBatch()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=2, log_every_n_steps=2, callbacks=[ckpt])
    trainer.fit(module, loader(regression_data(20)))
    assert trainer.stop_reason == "nonfinite_loss"
    assert "step 3" in trainer.stop_message  # read at the logging step right after it
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["loop"]["global_step"] == 2  # the weights of step 3 were never saved


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gradient_clip_val": 1.0}, "Automatic gradient clipping is not supported for manual optimization"),
        ({"accumulate_grad_batches": 2}, "Automatic gradient accumulation is not supported for manual optimization"),
        ({"on_nonfinite_loss": "skip"}, "on_nonfinite_loss=skip needs automatic optimization"),
    ],
)
def test_trainer_settings_that_mean_automatic_optimization_fail_early(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, max_epochs=1, **kwargs).fit(OneOpt(), loader(regression_data()))


def test_several_optimizers_need_manual_optimization(tmp_path: Path) -> None:
    class TwoAuto(Regressor):
        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())

    with pytest.raises(RuntimeError, match="multiple optimizers is only supported with manual optimization"):
        make_trainer(tmp_path, max_epochs=1).fit(TwoAuto(), loader(regression_data()))
    with pytest.raises(RuntimeError, match="set self.automatic_optimization = False"):
        Regressor().manual_backward(torch.tensor(1.0))


@pytest.mark.parametrize(
    "form",
    ["list", "tuple_of_lists", "list_of_dicts", "dict_monitor"],
)
def test_configure_optimizers_return_forms_with_several_optimizers(form: str) -> None:
    from engine.trainer import parse_optimizers

    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    oa, ob = torch.optim.SGD(a.parameters(), lr=1), torch.optim.SGD(b.parameters(), lr=1)
    sa = torch.optim.lr_scheduler.StepLR(oa, 1)
    sb = torch.optim.lr_scheduler.ReduceLROnPlateau(ob)
    value = {
        "list": [oa, ob],
        "tuple_of_lists": ([oa, ob], [sa, {"scheduler": sb, "monitor": "val_loss"}]),
        "list_of_dicts": [{"optimizer": oa, "lr_scheduler": sa}, {"optimizer": ob}],
        "dict_monitor": ({"optimizer": oa}, {"optimizer": ob, "lr_scheduler": sb, "monitor": "val_loss"}),
    }[form]
    optimizers, schedulers = parse_optimizers(value)
    assert optimizers == [oa, ob]
    expected = {"list": [], "tuple_of_lists": [sa, sb], "list_of_dicts": [sa], "dict_monitor": [sb]}[form]
    assert [s.scheduler for s in schedulers] == expected
    assert all(s.monitor == "val_loss" for s in schedulers if s.scheduler is sb)


def test_toggle_keeps_frozen_parameters_frozen_and_toggled_optimizer_restores(tmp_path: Path) -> None:
    module = GAN()
    trainer = make_trainer(tmp_path, max_steps=0)
    trainer.fit(module, loader(real_data()))  # attaches the optimizers, trains nothing
    frozen = module.generator[0].bias
    frozen.requires_grad_(False)
    opt_g, opt_d = module.optimizers()
    with module.toggled_optimizer(opt_d):
        assert not any(p.requires_grad for p in module.generator.parameters())
        assert all(p.requires_grad for p in module.discriminator.parameters())
    assert not frozen.requires_grad  # it was frozen before toggling: it stays frozen
    assert all(p.requires_grad for p in module.parameters() if p is not frozen)
    with opt_g.toggle_model():  # the optimizer-side spelling (sync_grad matters under DDP only)
        assert not any(p.requires_grad for p in module.discriminator.parameters())
        assert not frozen.requires_grad
    assert all(p.requires_grad for p in module.discriminator.parameters())


def test_clip_gradients_by_value_and_contradicting_the_trainer(tmp_path: Path) -> None:
    module = GAN()
    make_trainer(tmp_path, max_steps=0).fit(module, loader(real_data()))
    opt_g, _ = module.optimizers()
    for p in module.generator.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.clip_gradients(opt_g, gradient_clip_val=0.5, gradient_clip_algorithm="value")
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in module.generator.parameters())
    with pytest.raises(ValueError, match="gradient_clip_algorithm 'bogus' is invalid"):
        module.clip_gradients(opt_g, 0.5, "bogus")
    module.trainer.gradient_clip_val = 1.0
    with pytest.raises(ValueError, match="contradicts"):
        module.clip_gradients(opt_g, 0.5)


def resume_run(root: Path, max_steps: int, ckpt_path: Path | None = None) -> tuple[GAN, Any]:
    module = GAN(schedulers=True)
    trainer = make_trainer(root, max_steps=max_steps, max_epochs=3, seed=7)
    trainer.fit(module, loader(real_data(), batch_size=4, shuffle=True), ckpt_path=ckpt_path)
    return module, trainer


def test_stopped_and_resumed_equals_straight_through_bit_for_bit(tmp_path: Path) -> None:
    straight, t_straight = resume_run(tmp_path / "a", 22)  # 11 batches: mid-epoch 2 (8 per epoch)
    first, t_first = resume_run(tmp_path / "b", 6)  # stopped after 3 batches
    t_first.save_checkpoint(tmp_path / "b" / "stop.ckpt")
    ckpt = torch.load(tmp_path / "b" / "stop.ckpt", weights_only=True)
    assert len(ckpt["optimizers"]) == 2 and len(ckpt["lr_schedulers"]) == 2
    resumed, t_resumed = resume_run(tmp_path / "c", 22, ckpt_path=tmp_path / "b" / "stop.ckpt")
    assert t_resumed.global_step == t_straight.global_step == 22
    assert_same_weights(resumed.state_dict(), straight.state_dict())
    for a, b in zip(t_resumed.optimizers, t_straight.optimizers, strict=True):
        for pa, pb in zip(a.state.values(), b.state.values(), strict=True):
            assert all(torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])) for k in pa)
    assert [s.scheduler.state_dict() for s in t_resumed.lr_schedulers] == [
        s.scheduler.state_dict() for s in t_straight.lr_schedulers
    ]


class CpuScaler:
    """Swaps an enabled GradScaler into the run, so the 16-mixed code path runs on CPU."""

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        trainer.precision.use_scaler(torch.amp.GradScaler("cpu", init_scale=2.0**16))


class ScaledManual(OneOpt):
    """Batch 0's loss overflows once scaled: the scaler skips that step (still a global step)."""

    def __init__(self, clip: float) -> None:
        super().__init__()
        self.clip, self.norms, self.deltas = clip, [], []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        before = [p.detach().clone() for p in self.parameters()]
        x, y = batch
        loss = F.mse_loss(self(x), y) * (1e35 if batch_idx == 0 else 1.0)
        self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=self.clip)
        opt.step()
        opt.zero_grad()
        diff = torch.cat([(p.detach() - b).flatten() for p, b in zip(self.parameters(), before, strict=True)])
        self.deltas.append(float(diff.norm()))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()]))))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_grad_scaler_path_scales_backward_unscales_once_and_counts_skipped_steps(tmp_path: Path) -> None:
    module = ScaledManual(clip=0.05)
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[CpuScaler()], on_nonfinite_loss="stop")
    trainer.fit(module, loader(regression_data(16)))  # 4 batches
    assert trainer.global_step == 4  # the skipped step counts, as Lightning's optimizer step does
    assert module.deltas[0] == 0.0  # inf gradients: the scaler skipped the step
    # clip_gradients clipped true (unscaled) gradients: SGD with lr 1 moves by exactly the clip norm
    assert module.deltas[1:] == pytest.approx([0.05] * 3, rel=1e-4)
    assert all(n == pytest.approx(0.05, rel=1e-4) for n in module.norms[1:])  # the hook saw them unscaled
    assert trainer.precision.scaler.get_scale() == 2.0**15


def test_bf16_mixed_manual_autocasts_training_step(tmp_path: Path) -> None:
    seen: list[torch.dtype] = []

    class Probe(OneOpt):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            seen.append(out.dtype)
            return out

    module = Probe()
    trainer = make_trainer(tmp_path, max_epochs=1, precision="bf16-mixed")
    trainer.fit(module, loader(regression_data(8)))
    assert seen == [torch.bfloat16, torch.bfloat16] and trainer.global_step == 2
    assert module.layer.weight.dtype == torch.float32


# -- DDP: two gloo processes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of tests/ddp_scripts/ddpjob/manual.py under torchrun (2 ranks), one without (1)."""
    from test_ddp import _check, _run, _torchrun

    out = tmp_path_factory.mktemp("manual-ddp")
    _check(_run(_torchrun("ddpjob.manual", str(out / "two")), out))
    _check(_run([sys.executable, "-m", "ddpjob.manual", str(out / "one")], out))
    return out


@pytest.mark.parametrize("scenario", ["gan", "accumulate"])
def test_ddp_manual_backward_syncs_gradients_like_one_process_with_the_global_batch(
    ddp_runs: Path, scenario: str
) -> None:
    one = torch.load(ddp_runs / "one" / f"{scenario}-rank0.pt", weights_only=True)
    ranks = [torch.load(ddp_runs / "two" / f"{scenario}-rank{r}.pt", weights_only=True) for r in range(2)]
    assert (
        one["global_step"]
        == ranks[0]["global_step"]
        == ranks[1]["global_step"]
        == {"gan": 16, "accumulate": 4}[scenario]
    )
    assert_same_weights(ranks[0]["weights"], ranks[1]["weights"])  # synced: the ranks never drift apart
    for name, value in one["weights"].items():  # (tolerance of tests/test_ddp.py)
        torch.testing.assert_close(ranks[0]["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_no_sync_window_and_buffer_broadcast(ddp_runs: Path) -> None:
    ranks = [torch.load(ddp_runs / "two" / f"accumulate-rank{r}.pt", weights_only=True) for r in range(2)]
    # inside toggle_model(sync_grad=False) each rank holds only its own gradient
    assert not any(torch.equal(a, b) for a, b in zip(ranks[0]["local_grads"], ranks[1]["local_grads"], strict=True))
    # each rank adds rank+1 to a buffer every batch; rank 0's value is broadcast before each step
    assert [r["weights"]["count"].item() for r in ranks] == [8.0, 8.0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_16_mixed_gan_on_cuda_scales_every_backward_and_steps_both_optimizers(tmp_path: Path) -> None:
    module = GAN(clip=1.0)
    trainer = make_trainer(tmp_path, accelerator="cuda", precision="16-mixed", max_epochs=1, limit_train_batches=4)
    trainer.fit(module, loader(real_data(), batch_size=4))
    assert trainer.precision.scaler.is_enabled() and trainer.global_step == 8
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert not trainer.precision.unscaled  # every clip's unscale was consumed by its step


class ValidatedGAN(GAN):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        self.log("val_d_real", torch.sigmoid(self.discriminator(real)).mean())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 4:  # a preemption notice: the loop stops after this batch, every rank alike
            os.kill(os.getpid(), signal.SIGTERM)


def test_validation_checkpoints_and_signals_keep_working(tmp_path: Path) -> None:
    module = ValidatedGAN()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=3, val_check_interval=3, callbacks=[ckpt])
    trainer.fit(module, loader(real_data(), batch_size=4), loader(real_data(8), batch_size=4))
    assert trainer.stop_reason == "preempted" and trainer.global_step == 10  # 5 batches, 2 steps each
    assert "val_d_real" in trainer.callback_metrics  # validated after batch 3
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == ["epoch=0-step=8.ckpt", "last.ckpt"]  # every 4 global steps (the latest kept), and the last
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["loop"]["global_step"] == 10
