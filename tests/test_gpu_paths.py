"""The GPU code paths, shown on a CPU: NCCL-safe logging, GradScaler edge cases, bf16-true, pinned
loaders, per-rank RNG and epoch sums, checkpoint loading and saving, determinism.

Each test runs the path a GPU run takes with a real component standing in for the GPU: the
``meta`` device, ``torch.amp.GradScaler("cpu")`` swapped into the run, bf16 on the CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import Regressor, loader, make_trainer, regression_data
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from engine import Module, checkpointing
from engine import distributed as D
from engine.batch import move_to_device
from engine.checkpoint import (
    AsyncSaver,
    SyncSaver,
    capture_rng_state,
    cuda_rng_state_for,
    load_checkpoint,
)
from engine.config import load_config
from engine.precision import DefaultDtype, matmul_precision_advice
from engine.results import Results


# -- sync_dist values are made on the run's device ------------------------------------------------
def test_sync_dist_values_reach_the_reduction_on_the_runs_device() -> None:
    seen: list[torch.device] = []

    def nccl_like(tensor: torch.Tensor, op: str) -> torch.Tensor:
        """Like NCCL, refuses tensors that are not on the run's device."""
        if tensor.device.type != "meta":
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        seen.append(tensor.device)
        return torch.ones(tensor.shape)  # the reduced value, back on the CPU for the readers

    results = Results(nccl_like)
    results.device = torch.device("meta")  # a real device that is not the CPU
    results.log("a_float", 0.5, **_opts(on_step=True, on_epoch=False, sync_dist=True))
    results.log("a_cpu_tensor", torch.tensor(2.0), **_opts(on_step=True, on_epoch=True, sync_dist=True))
    results.log("not_synced", 3.0, **_opts(on_step=True, on_epoch=False, sync_dist=False))
    assert len(seen) == 2  # both on-step reductions got a tensor on the device
    assert results.step["not_synced"].device.type == "cpu"  # no sync_dist: no device tensor (no copy) made
    assert results.compute_epoch() == {"a_cpu_tensor_epoch": 1.0}  # the epoch's [total, weight] too
    assert len(seen) == 3


def _opts(**kwargs: Any) -> dict[str, Any]:
    return dict(prog_bar=False, logger=True, batch_size=None, reduce_fx="mean", **kwargs)


# -- 16-mixed: GradScaler edge cases --------------------------------------------------------------
class CountingScaler(torch.amp.GradScaler):
    """A CPU GradScaler that counts get_scale() calls (each one a device sync on a GPU)."""

    def __init__(self) -> None:
        super().__init__("cpu", init_scale=2.0**16)
        self.get_scale_calls = 0

    def get_scale(self) -> float:
        self.get_scale_calls += 1
        return super().get_scale()


class UseScaler:
    """Swaps an enabled GradScaler into the run, so the 16-mixed code path runs on CPU."""

    def __init__(self, scaler: torch.amp.GradScaler | None = None) -> None:
        self.scaler = scaler

    def setup(self, trainer: Any, module: Any, stage: str) -> None:
        self.scaler = self.scaler or torch.amp.GradScaler("cpu", init_scale=2.0**16)
        trainer.precision.use_scaler(self.scaler)


class SkipsFirstWindow(Regressor):
    """training_step returns None for the whole first accumulation window (batches 0 and 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch_idx < 2:
            return None
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx % 2:  # after every batch (as Lightning): keep each window's last
            self.weights.append(self.layer.weight.detach().clone())


def test_16_mixed_window_without_backward_takes_no_scaler_step(tmp_path: Path) -> None:
    module = SkipsFirstWindow()
    start = module.layer.weight.detach().clone()
    scaler = UseScaler()
    trainer = make_trainer(tmp_path, max_epochs=1, accumulate_grad_batches=2, callbacks=[scaler])
    trainer.fit(module, loader(regression_data(16)))  # 4 batches, 2 windows; the first has no backward
    assert trainer.global_step == 2  # counted as under 32
    assert torch.equal(module.weights[0], start)  # nothing stepped for the empty window
    assert not torch.equal(module.weights[1], start)  # the second window trained
    assert scaler.scaler.get_scale() == 2.0**16  # the scaler was not updated without a step


def test_16_mixed_takes_no_get_scale_sync_per_step(tmp_path: Path) -> None:
    scaler = CountingScaler()
    trainer = make_trainer(tmp_path, max_epochs=2, log_every_n_steps=10**6, callbacks=[UseScaler(scaler)])
    trainer.fit(Regressor(), loader(regression_data(16)))
    assert trainer.global_step == 8 and scaler.get_scale_calls == 0


def test_16_mixed_resumes_a_checkpoint_saved_without_a_scaler(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = make_trainer(tmp_path / "a", max_epochs=1)
    first.fit(Regressor(), loader(regression_data(16)))
    first.save_checkpoint(tmp_path / "fp32.ckpt")
    assert load_checkpoint(tmp_path / "fp32.ckpt")["scaler"] == {}  # a disabled scaler saves nothing
    capsys.readouterr()
    scaler = UseScaler()
    second = make_trainer(tmp_path / "b", max_epochs=2, callbacks=[scaler])
    second.fit(Regressor(), loader(regression_data(16)), ckpt_path=tmp_path / "fp32.ckpt")
    out = capsys.readouterr().out
    assert out.count("holds no GradScaler state (saved without 16-mixed): the gradient scale starts fresh") == 1
    assert second.global_step == 8 and scaler.scaler.get_scale() == 2.0**16


# -- bf16-true ---------------------------------------------------------------------------------------
class Copies(TorchDispatchMode):
    """Records every copy torch makes: (source device, target device, target dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[str, str, torch.dtype]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default:
            source = args[0]
            target = kwargs.get("device") or source.device
            self.copies.append((source.device.type, target.type, kwargs.get("dtype") or source.dtype))
        return func(*args, **kwargs)


def test_bf16_true_moves_batches_first_then_casts_on_the_device() -> None:
    batch = {"x": torch.ones(2, 3), "labels": torch.zeros(2, dtype=torch.long)}
    with Copies() as mode:
        moved = move_to_device(batch, torch.device("meta"), torch.bfloat16)
    assert moved["x"].dtype == torch.bfloat16 and moved["labels"].dtype == torch.long
    assert mode.copies == [
        ("cpu", "meta", torch.float32),  # the copy carries the loader's (pinned) float32 tensor
        ("meta", "meta", torch.bfloat16),  # the cast runs on the device
        ("cpu", "meta", torch.long),
    ]


class RandnInStep(Regressor):
    """Draws noise with torch.randn in its steps (no dtype given), as research code does."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: dict[str, set[torch.dtype]] = {"train": set(), "val": set(), "batch_end": set()}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.dtypes["train"].add(torch.get_default_dtype())
        out = self(x + 0.01 * torch.randn(x.shape))  # bf16 noise meets bf16 weights
        self.log("constant", 0.1)  # a Python float: logged as float32, not bf16
        return F.mse_loss(out, y.to(out.dtype))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.dtypes["val"].add(torch.get_default_dtype())
        self.log("val_loss", F.mse_loss(self(x + torch.randn(x.shape)), y.to(torch.bfloat16)))

    def on_train_batch_end(self, *args: Any) -> None:
        self.dtypes["batch_end"].add(torch.get_default_dtype())


def test_bf16_true_makes_bf16_the_default_dtype_inside_the_steps_only(tmp_path: Path) -> None:
    module = RandnInStep()
    trainer = make_trainer(tmp_path, max_epochs=1, precision="bf16-true", log_every_n_steps=1)
    trainer.fit(module, loader(regression_data(16)), loader(regression_data(8, seed=1)))
    assert module.layer.weight.dtype == torch.bfloat16
    assert module.dtypes == {"train": {torch.bfloat16}, "val": {torch.bfloat16}, "batch_end": {torch.float32}}
    assert torch.get_default_dtype() == torch.float32  # restored after the run
    assert trainer.callback_metrics["constant"] == torch.tensor(0.1, dtype=torch.float32).item() != 0.10009765625


def test_default_dtype_context_restores_the_previous_dtype_when_nested() -> None:
    context = DefaultDtype(torch.bfloat16)
    with context:
        with context:
            assert torch.get_default_dtype() == torch.bfloat16
        assert torch.get_default_dtype() == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32


# -- pinned loaders, TF32 advice ---------------------------------------------------------------------
def test_loaders_are_pinned_on_cuda_unless_the_device_is_a_cpu() -> None:
    assert D.pin_memory_default(torch.device("cuda", 1)) is True
    assert D.pin_memory_default(torch.device("cpu")) is False
    data = regression_data(8)
    on_gpu = D.DistEnv(device=torch.device("cuda", 0))  # only read: nothing touches a GPU
    assert D.prepare_loader(DataLoader(data, batch_size=2), on_gpu, 0, train=True).pin_memory is True
    assert D.prepare_loader(DataLoader(data, batch_size=2), D.DistEnv(), 0, train=True).pin_memory is False
    asked = DataLoader(data, batch_size=2, pin_memory=True)
    assert D.prepare_loader(asked, D.DistEnv(), 0, train=False).pin_memory is True  # a choice is kept


def test_fp32_on_tensor_core_gpus_advises_a_matmul_precision() -> None:
    cuda = torch.device("cuda", 0)
    advice = matmul_precision_advice(cuda, "32", capability=(9, 0))
    assert "torch.set_float32_matmul_precision('high')" in advice and "bf16-mixed" in advice
    assert matmul_precision_advice(cuda, "32", capability=(7, 0)) == ""  # V100: no TF32 tensor cores
    assert matmul_precision_advice(cuda, "bf16-mixed", capability=(9, 0)) == ""
    assert matmul_precision_advice(torch.device("cpu"), "32", capability=(9, 0)) == ""
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # the research code chose: nothing to say
        assert matmul_precision_advice(cuda, "32", capability=(9, 0)) == ""
    finally:
        torch.set_float32_matmul_precision(previous)


# -- RNG per device the rank uses ---------------------------------------------------------------------
def test_cuda_rng_state_follows_the_rank_not_the_device_index() -> None:
    mine, other = torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)
    # Saved by a rank that ran on cuda:1; after a restart the same rank runs on cuda:0 (or cuda:3).
    saved = {"cuda_device": mine}
    for index in (0, 1, 3):
        assert cuda_rng_state_for(saved, torch.device("cuda", index)) is mine
    assert cuda_rng_state_for(saved, torch.device("cpu")) is None
    # An older checkpoint held every visible device's state (here 2 GPUs): the device's own index.
    old = {"cuda": [other, mine]}
    assert cuda_rng_state_for(old, torch.device("cuda", 1)) is mine
    with pytest.warns(RuntimeWarning, match="CUDA RNG states for 2 device"):
        assert cuda_rng_state_for(old, torch.device("cuda", 3)) is None
    # A run that never initialised CUDA saves no CUDA state at all.
    assert not {"cuda", "cuda_device"} & set(capture_rng_state(torch.device("cuda", 0)))


# -- checkpoints: per-rank epoch sums, CPU loads, identical sync and async files ------------------------
class LogsEpochMean(Regressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log("batch_idx", float(batch_idx), on_step=False, on_epoch=True, sync_dist=True)
        return super().training_step(batch, batch_idx)


def test_partial_epoch_sums_are_saved_per_rank_and_old_checkpoints_still_load(tmp_path: Path) -> None:
    straight = make_trainer(tmp_path / "straight", max_epochs=1)
    straight.fit(LogsEpochMean(), loader(regression_data(16)))
    assert straight.callback_metrics["batch_idx"] == 1.5  # mean of 0, 1, 2, 3

    first = make_trainer(tmp_path / "a", max_steps=2)
    first.fit(LogsEpochMean(), loader(regression_data(16)))
    first.save_checkpoint(tmp_path / "mid.ckpt")
    ckpt = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    assert isinstance(ckpt["results"], list) and len(ckpt["results"]) == 1  # one entry per rank
    assert ckpt["results"][0]["batch_idx"]["total"].item() == 4.0  # (0 + 1) * batch size 4

    ckpt["results"] = ckpt["results"][0]  # the layout older engines wrote: rank 0's dict
    torch.save(ckpt, tmp_path / "old.ckpt")
    for name in ("mid.ckpt", "old.ckpt"):
        resumed = make_trainer(tmp_path / f"run-{name}", max_epochs=1)
        resumed.fit(LogsEpochMean(), loader(regression_data(16)), ckpt_path=tmp_path / name)
        assert resumed.callback_metrics["batch_idx"] == 1.5, name


def test_validate_with_ckpt_path_loads_the_weights_into_the_modules_own_parameters(tmp_path: Path) -> None:
    trained = Regressor()
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(trained, loader(regression_data(16)))
    trainer.save_checkpoint(tmp_path / "w.ckpt")

    fresh = Regressor(seed=5)
    params = [p for p in fresh.parameters()]
    metrics = make_trainer(tmp_path / "v").validate(
        fresh, loader(regression_data(8, seed=1)), ckpt_path=tmp_path / "w.ckpt"
    )
    assert [p for p in fresh.parameters()] == params  # the same tensors, loaded in place: no second copy
    assert all(p is q for p, q in zip(fresh.parameters(), params, strict=True))
    for a, b in zip(fresh.parameters(), trained.parameters(), strict=True):
        assert torch.equal(a, b)
    assert metrics[0]["val_loss"] > 0


def _same(a: Any, b: Any, where: str = "state") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.device.type == b.device.type == "cpu", where
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_sync_and_async_saves_write_the_same_cpu_checkpoint(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_epochs=1, gradient_clip_val=1.0)
    trainer.fit(Regressor(), loader(regression_data(16)))
    state = checkpointing.build(trainer)
    SyncSaver().save(state, tmp_path / "sync.ckpt")
    saver = AsyncSaver()
    saver.save(state, tmp_path / "async.ckpt")
    saver.close()
    assert saver._staging == {}  # CPU tensors are cloned: no pinned staging buffers on a CPU run
    sync, async_ = (torch.load(tmp_path / n, weights_only=True) for n in ("sync.ckpt", "async.ckpt"))
    _same(sync, async_)
    assert (tmp_path / "sync.ckpt").read_bytes() == (tmp_path / "async.ckpt").read_bytes()


# -- determinism ---------------------------------------------------------------------------------------
def test_deterministic_true_is_strict_and_warn_only_warns(tmp_path: Path) -> None:
    try:
        for value, warn_only in ((True, False), ("warn", True)):
            make_trainer(tmp_path, max_steps=1, deterministic=value).fit(Regressor(), loader(regression_data(8)))
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled() is warn_only
    finally:
        torch.use_deterministic_algorithms(False)
    with pytest.raises(ValueError, match="use True \\(strict\\), 'warn' or False"):
        make_trainer(tmp_path, deterministic="strict")
    assert load_config(["trainer.deterministic=warn"], path=False).trainer.deterministic == "warn"


def test_no_warning_about_matmul_precision_on_a_cpu(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, max_steps=1).fit(Regressor(), loader(regression_data(8)))
    assert not [w for w in caught if "set_float32_matmul_precision" in str(w.message)]


def test_more_processes_than_gpus_is_a_clear_error() -> None:
    """trainer.devices > GPUs would map two ranks to one GPU (NCCL: "Duplicate GPU detected")."""
    from engine.config import ConfigError
    from engine.distributed import gpu_index

    assert [gpu_index(r, 2) for r in range(2)] == [0, 1]
    with pytest.raises(
        ConfigError,
        match=r"process 2 on this node has no GPU of its own: 2 GPU\(s\) are visible.*"
        r"trainer\.devices=2",
    ):
        gpu_index(2, 2)


class TwoOptimizersOneBackward(Module):
    """Manual optimization: one loss, one backward, two optimizers (one per layer) stepped after it."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        opt1, opt2 = self.optimizers()
        loss = torch.nn.functional.mse_loss(self.second(self.first(x)), y)
        opt1.zero_grad()
        opt2.zero_grad()
        self.manual_backward(loss)
        opt1.step()
        opt2.step()
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.first.parameters(), lr=0.1), torch.optim.SGD(self.second.parameters(), lr=0.1)


def test_16_mixed_manual_several_optimizers_update_the_scale_once_per_training_step(tmp_path: Path) -> None:
    scaler = UseScaler(torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1))  # doubles per update
    scaled, plain = TwoOptimizersOneBackward(), TwoOptimizersOneBackward()
    trainer = make_trainer(tmp_path / "scaled", max_epochs=1, callbacks=[scaler])
    trainer.fit(scaled, loader(regression_data(16)))  # 4 training steps, 8 optimizer steps
    assert trainer.global_step == 8
    assert scaler.scaler.get_scale() == 2.0 ** (8 + 4)  # one update per training step
    make_trainer(tmp_path / "plain", max_epochs=1).fit(plain, loader(regression_data(16)))
    for name, value in plain.state_dict().items():  # both optimizers unscaled with the scale their gradients had
        torch.testing.assert_close(scaled.state_dict()[name], value, rtol=1e-6, atol=1e-7)
