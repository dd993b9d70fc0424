"""GPU checks of the engine (run by ci/gpu-check): mixed precision, NCCL DDP, checkpoints, speed.

    python ci/gpu_check.py [--device cuda|cpu] [--ddp] [CHECK...]   all single-process checks by default
    torchrun --nproc_per_node=1 ci/gpu_check.py ddp fsdp ...          DDP/FSDP checks need a launcher (--ddp starts one)

Prints one table (check, status, detail) and exits non-zero when any check failed. ``--ddp`` also
runs the DDP checks in a ``torchrun --nproc_per_node=1`` child and puts its rows in the same table.
``--device cpu`` runs what a CPU can (bf16, gloo, a CPU GradScaler standing in for 16-mixed's), so
the suite can test this file; the checks that only mean something on a GPU say "skip" there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

# Before any cuBLAS call: the resume check runs with trainer.deterministic=true (strict).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


def load_engine():
    """The repository's engine/ as the package ``engine`` (it uses relative imports only)."""
    if "engine" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "engine", ROOT / "engine" / "__init__.py", submodule_search_locations=[str(ROOT / "engine")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["engine"] = module
        spec.loader.exec_module(module)
    return sys.modules["engine"]


engine = load_engine()


class Net(engine.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(32, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 4)
        )
        self.losses: list[torch.Tensor] = []  # kept on the device: no sync per step
        self.ddp_wrapped = False

    def on_train_start(self):
        self.ddp_wrapped = self.trainer.strategy.ddp is not None  # (the trainer lets go of DDP when fit ends)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.losses.append(loss.detach())
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def loader(n: int = 1024, batch_size: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    y = (x[:, :4].argmax(dim=1)).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def fit(
    device: str, precision: str, steps: int, root: Path, width: int = 64, batch_size: int = 64, strategy: str = "auto"
):
    torch.manual_seed(0)
    module = Net(width)
    trainer = engine.Trainer(
        max_steps=steps,
        max_epochs=None,
        precision=precision,
        accelerator=device,
        progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10**9,
        default_root_dir=root,
        seed=0,
        strategy=strategy,
    )
    trainer.fit(module, train_dataloaders=loader(n=max(1024, steps * batch_size), batch_size=batch_size))
    return trainer, module


def check_precision(device: str, root: Path) -> str:
    modes = ["bf16-mixed", "16-mixed"] if device == "cuda" else ["bf16-mixed"]  # fp16 autocast needs CUDA
    out = []
    for precision in modes:
        trainer, module = fit(device, precision, 60 if device == "cuda" else 25, root / precision)
        losses = torch.stack(module.losses).float().cpu()
        first, last = losses[:5].mean().item(), losses[-5:].mean().item()
        assert torch.isfinite(losses).all(), f"{precision}: non-finite loss"
        assert last < 0.8 * first, f"{precision}: loss {first:.3f} -> {last:.3f} did not fall"
        assert next(module.parameters()).dtype == torch.float32, f"{precision}: weights must stay fp32"
        if precision == "16-mixed":
            assert trainer.precision.scaler.is_enabled(), "16-mixed must use a GradScaler"
        out.append(f"{precision} loss {first:.3f} -> {last:.3f}")
    return "; ".join(out)


def check_checkpoint(device: str, root: Path) -> str:
    trainer, module = fit(device, "bf16-mixed", 10, root / "ckpt")
    path = root / "ckpt" / "roundtrip.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain containers only
    fresh = Net().to(device)
    fresh.load_state_dict(engine.checkpoint.load_checkpoint(path, map_location=device)["model"])
    for (name, a), b in zip(module.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after the round trip"
    assert raw["loop"]["global_step"] == 10
    return f"{path.stat().st_size} bytes, {len(raw['model'])} tensors equal after save/load"


def check_throughput(device: str, root: Path) -> str:
    width, batch_size, steps = (1024, 512, 300) if device == "cuda" else (64, 64, 10)
    fit(device, "bf16-mixed", 3, root / "warmup", width, batch_size)  # CUDA context, kernels, allocator
    start = time.perf_counter()
    trainer, _ = fit(device, "bf16-mixed", steps, root / "speed", width, batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return f"{steps * batch_size / elapsed:,.0f} samples/s ({steps / elapsed:.1f} steps/s), MLP width {width}, batch {batch_size}, bf16-mixed, {name}"


def check_ddp(device: str, root: Path) -> str:
    """Under torchrun: the engine joins the process group (NCCL on CUDA) and wraps the model in DDP."""
    import torch.distributed as dist

    assert engine.distributed.under_launcher(), "run the ddp check under torchrun"
    trainer, module = fit(device, "bf16-mixed", 10, root / "ddp")
    backend = dist.get_backend()
    assert backend == ("nccl" if device == "cuda" else "gloo"), f"backend {backend}"
    assert module.ddp_wrapped, "the module was not wrapped in DistributedDataParallel"
    env = trainer.env
    total = env.all_reduce(torch.ones((), device=env.device), "sum").item()
    assert total == env.world_size, f"all_reduce gave {total}"
    assert env.broadcast_object({"rank": env.rank})["rank"] == 0
    engine.distributed.teardown()
    first, last = module.losses[0].item(), module.losses[-1].item()
    return f"{backend}, world size {env.world_size}, DDP-wrapped, loss {first:.3f} -> {last:.3f}"


def check_fsdp(device: str, root: Path) -> str:
    """Under torchrun: strategy=fsdp shards the model (FSDP2, bf16 compute, fp32 weights and
    reductions), writes a sharded checkpoint folder, and that folder consolidates to the same weights."""
    import torch.distributed as dist

    assert engine.distributed.under_launcher(), "run the fsdp check under torchrun"
    trainer, module = fit(device, "bf16-mixed", 30, root / "fsdp", strategy="fsdp")
    params = list(module.parameters())
    assert all(hasattr(p, "to_local") for p in params), "the weights are not sharded DTensors"
    assert all(p.dtype == torch.float32 for p in params), "bf16-mixed keeps fp32 weights"
    folder = root / "fsdp" / "sharded.ckpt"
    trainer.save_checkpoint(folder)
    assert (folder / ".metadata").is_file() and (folder / "state.pt").is_file(), "no DCP folder written"
    full = {k: v.full_tensor().cpu() for k, v in module.state_dict().items()}
    losses = torch.stack(module.losses).float().cpu()
    first, last = losses[:5].mean().item(), losses[-5:].mean().item()
    assert torch.isfinite(losses).all() and last < first, f"loss {first:.3f} -> {last:.3f} did not fall"
    if dist.get_rank() == 0:
        engine.fsdp.consolidate(folder, root / "fsdp" / "full.ckpt")
        saved = torch.load(root / "fsdp" / "full.ckpt", weights_only=True)["state_dict"]
        for name, value in full.items():
            assert torch.equal(saved[name], value), f"{name} differs after consolidation"
    backend, world = dist.get_backend(), dist.get_world_size()
    return f"{backend}, world size {world}, FSDP2 bf16-mixed, loss {first:.3f} -> {last:.3f}, DCP folder consolidated"


class Skip(Exception):
    """The check means nothing on this device (a CPU dry run)."""


def trainer_for(device: str, precision: str, root: Path, **kwargs) -> engine.Trainer:
    kwargs.setdefault("max_epochs", None)
    kwargs.setdefault("log_every_n_steps", 10**9)
    return engine.Trainer(
        precision=precision,
        accelerator=device,
        progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        seed=0,
        **kwargs,
    )


class UseScaler:
    """A GradScaler starting at 2**10 (so only the deliberate overflow overflows); on a CPU it runs
    16-mixed's scaler path under precision 32."""

    def __init__(self, device: str) -> None:
        self.device = device

    def setup(self, trainer, module, stage):
        trainer.precision.use_scaler(torch.amp.GradScaler(self.device, init_scale=2.0**10))


def scaled(device: str) -> tuple[str, list]:
    """The precision and callbacks that run 16-mixed's GradScaler path on `device`."""
    return ("16-mixed" if device == "cuda" else "32"), [UseScaler(device)]


class SyncCounter:
    """Counts CUDA synchronizations (torch.cuda.set_sync_debug_mode("warn")) from the start of batch
    `first` to the end of batch `last`: the loop, the step and the hooks between them."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.syncs: list[str] = []
        self._catch = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.first:
            self._catch = warnings.catch_warnings(record=True)
            self._records = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.last and self._catch is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._catch.__exit__(None, None, None)
            self._catch = None
            self.syncs = [str(w.message) for w in self._records if "synchroniz" in str(w.message)]


class AuditNet(Net):
    """Logs every step (kept on the device) and steps a fused AdamW: with 16-mixed the GradScaler then
    needs no host read of its inf check (the fused kernel skips the update itself)."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3, fused=self.device.type == "cuda")


def check_sync_audit(device: str, root: Path) -> str:
    """Host syncs per steady-state training step (20 non-logging steps, pinned loader), per precision.

    Under torchrun (the DDP variant) the same count covers the DDP code path; expected: 0 everywhere."""
    if device != "cuda":
        raise Skip("torch.cuda.set_sync_debug_mode needs CUDA")
    out, bad = [], []
    for precision in ("32", "bf16-mixed", "16-mixed", "bf16-true"):
        torch.manual_seed(0)
        counter = SyncCounter(first=5, last=24)
        trainer = trainer_for(device, precision, root / f"audit-{precision}", max_steps=30, callbacks=[counter])
        data = loader(n=30 * 64)
        pinned = DataLoader(data.dataset, batch_size=64, shuffle=True, pin_memory=True)
        trainer.fit(AuditNet(), train_dataloaders=pinned)
        per_step = len(counter.syncs) / 20
        out.append(f"{precision} {per_step:g}")
        if counter.syncs:
            bad.append(f"{precision}: {len(counter.syncs)} syncs in 20 steps, e.g. {counter.syncs[0]!r}")
    assert not bad, "; ".join(bad)
    return "syncs per step: " + ", ".join(out)


class OverflowNet(Net):
    """Batch `k`'s loss overflows once scaled (inf gradients); SGD with a per-step LR schedule."""

    k = 3

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, list] = {"scale": [], "lr": [], "weight": []}

    def on_train_batch_start(self, batch, batch_idx):
        self._record()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self._record()

    def _record(self) -> None:
        trainer = self.trainer
        self.seen["scale"].append(trainer.precision.scaler.get_scale())
        self.seen["lr"].append(trainer.optimizers[0].param_groups[0]["lr"])
        self.seen["weight"].append(self.net[0].weight.detach().clone())

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * 1e37 if batch_idx == self.k else loss  # finite in fp32; inf once scaled by 2**10

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def check_overflow(device: str, root: Path) -> str:
    """16-mixed overflow: the scale halves, the weights and the LR stay as they were; other steps train."""
    precision, callbacks = scaled(device)
    torch.manual_seed(0)
    module = OverflowNet()
    trainer = trainer_for(device, precision, root / "overflow", max_steps=6, callbacks=callbacks)
    trainer.fit(module, train_dataloaders=loader(n=6 * 64))
    seen, k = module.seen, OverflowNet.k
    before, after = 2 * k, 2 * k + 1  # records at the start and the end of batch k
    assert seen["scale"][after] == seen["scale"][before] / 2, f"scale {seen['scale'][before]} -> {seen['scale'][after]}"
    assert torch.equal(seen["weight"][after], seen["weight"][before]), "the overflowing step changed the weights"
    assert seen["lr"][after] == seen["lr"][before], "the LR schedule advanced on a skipped step"
    assert not torch.equal(seen["weight"][before - 1], seen["weight"][before - 2]), "a normal step did not train"
    assert seen["lr"][before - 1] == seen["lr"][before - 2] / 2
    assert all(torch.isfinite(w).all() for w in seen["weight"])
    return f"scale {seen['scale'][before]:g} -> {seen['scale'][after]:g}, weights and LR unchanged at the skipped step"


class NoneWindowNet(Net):
    """training_step returns None for the whole first accumulation window."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        return None if batch_idx < 2 else super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if batch_idx % 2:  # (called after every batch, as Lightning: keep the windows' last ones)
            self.weights.append(self.net[0].weight.detach().clone())


def check_none_window(device: str, root: Path) -> str:
    """16-mixed, accumulate_grad_batches=2, a first window without backward: no GradScaler error, no step."""
    precision, callbacks = scaled(device)
    torch.manual_seed(0)
    module = NoneWindowNet()
    start = module.net[0].weight.detach().clone().to(device)
    trainer = trainer_for(device, precision, root / "none", max_steps=3, accumulate_grad_batches=2, callbacks=callbacks)
    trainer.fit(module, train_dataloaders=loader(n=6 * 64))
    assert trainer.global_step == 3
    # (module.weights: after each window's last batch)
    assert torch.equal(module.weights[0], start), "the window without backward changed the weights"
    assert not torch.equal(module.weights[1], start), "the next window did not train"
    return f"global_step {trainer.global_step}, scale {trainer.precision.scaler.get_scale():g}"


class RandnNet(Net):
    """torch.randn without a dtype inside training_step, as research code writes it."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        noise = torch.randn(x.shape, device=x.device)
        assert noise.dtype == torch.bfloat16, f"randn made {noise.dtype} inside a bf16-true step"
        loss = F.cross_entropy(self.net(x + 0.01 * noise), y)
        self.losses.append(loss.detach())
        self.log("constant", 0.25, sync_dist=True)  # a Python float: made as fp32 on the device
        return loss


def check_bf16_true(device: str, root: Path) -> str:
    torch.manual_seed(0)
    module = RandnNet()
    trainer = trainer_for(device, "bf16-true", root / "bf16-true", max_steps=20, log_every_n_steps=5)
    trainer.fit(module, train_dataloaders=loader(n=20 * 64))
    losses = torch.stack(module.losses).float().cpu()
    assert next(module.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32, "the default dtype leaked out of the step"
    assert torch.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean()
    assert trainer.callback_metrics["constant"] == 0.25
    return f"randn in the step is bf16; loss {losses[:5].mean():.3f} -> {losses[-5:].mean():.3f}"


def _same(a, b, where: str = "state") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.device.type == b.device.type == "cpu", f"{where}: {a.device} / {b.device}"
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


def check_checkpoint_files(device: str, root: Path) -> str:
    """Sync and async saves hold the same CPU tensors; async reuses its pinned staging buffers;
    validate(ckpt_path=...) puts no second copy of the model (nor the optimizer state) on the GPU."""
    width = 2048 if device == "cuda" else 64
    trainer, module = fit(device, "32", 5, root / "files", width=width)
    state = engine.checkpointing.build(trainer)
    engine.checkpoint.SyncSaver().save(state, root / "files" / "sync.ckpt")
    saver = engine.checkpoint.AsyncSaver()
    saver.save(state, root / "files" / "async.ckpt")
    saver.wait()
    first = {k: v.data_ptr() for k, v in saver._staging.items()}
    saver.save(state, root / "files" / "async.ckpt")
    saver.close()
    second = {k: v.data_ptr() for k, v in saver._staging.items()}
    assert first == second, "the async saver did not reuse its staging buffers"
    if device == "cuda":
        assert first and all(v.is_pinned() for v in saver._staging.values()), "no pinned staging buffers"
    loaded = [torch.load(root / "files" / n, weights_only=True) for n in ("sync.ckpt", "async.ckpt")]
    _same(*loaded)  # map_location=None: every tensor comes back on the CPU
    out = (
        f"sync == async, CPU tensors, {len(first)} pinned staging buffers reused"
        if first
        else "sync == async, CPU tensors"
    )
    if device == "cuda":
        model_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        fresh = Net(width).to(device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        trainer_for(device, "32", root / "val").validate(
            fresh, dataloaders=loader(n=256), ckpt_path=root / "files" / "sync.ckpt"
        )
        extra = torch.cuda.max_memory_allocated() - base
        assert extra < model_bytes, (
            f"validate(ckpt_path) peaked {extra / 2**20:.1f} MiB above the model's {model_bytes / 2**20:.1f} MiB"
        )
        out += f"; validate(ckpt_path) peak +{extra / 2**20:.1f} MiB for a {model_bytes / 2**20:.1f} MiB model"
    return out


class DropNet(Net):
    def __init__(self) -> None:
        super().__init__()
        self.net.insert(2, nn.Dropout(0.2))


def check_resume(device: str, root: Path) -> str:
    """Stop after 10 steps, resume in a new Trainer: bit-identical to 20 straight steps (dropout, deterministic)."""
    modes = ["bf16-mixed", "16-mixed"] if device == "cuda" else ["bf16-mixed"]
    try:
        for precision in modes:
            runs = {}
            for name, steps, ckpt in (("straight", 20, None), ("first", 10, None), ("resumed", 20, "first")):
                torch.manual_seed(0)
                module = DropNet()
                trainer = trainer_for(device, precision, root / precision / name, max_steps=steps, deterministic=True)
                path = root / precision / f"{ckpt}.ckpt" if ckpt else None
                trainer.fit(module, train_dataloaders=loader(), ckpt_path=path)
                trainer.save_checkpoint(root / precision / f"{name}.ckpt")
                runs[name] = module.state_dict()
            for key, value in runs["straight"].items():
                assert torch.equal(runs["resumed"][key], value), f"{precision}: {key} differs after the resume"
    finally:
        torch.use_deterministic_algorithms(False)
    return f"{', '.join(modes)}: resumed weights equal the straight run's, bit for bit (one process)"


class SyncDistNet(Net):
    def training_step(self, batch, batch_idx):
        rank = float(self.trainer.global_rank)
        self.log("rank_plus_half", rank + 0.5, on_step=True, on_epoch=True, sync_dist=True)  # a Python float
        self.log("cpu_tensor", torch.tensor(2.0), sync_dist=True)  # a CPU tensor
        return super().training_step(batch, batch_idx)


def check_ddp_sync_dist(device: str, root: Path) -> str:
    """Under torchrun: self.log(<Python float or CPU tensor>, sync_dist=True) reduces over NCCL."""
    assert engine.distributed.under_launcher(), "run the DDP checks under torchrun"
    torch.manual_seed(0)
    trainer = trainer_for(device, "bf16-mixed", root / "sync-dist", max_steps=4, max_epochs=1, log_every_n_steps=1)
    trainer.fit(SyncDistNet(), train_dataloaders=loader(n=4 * 64))
    expected = (trainer.world_size - 1) / 2 + 0.5
    m = trainer.callback_metrics
    assert m["rank_plus_half_step"] == m["rank_plus_half_epoch"] == expected and m["cpu_tensor"] == 2.0, m
    return f"{torch.distributed.get_backend()}: rank_plus_half {m['rank_plus_half_step']}, cpu_tensor {m['cpu_tensor']}"


# -- issue 22: results that were wrong without a message ------------------------------------------
class Targets(engine.Module):
    """A regression on float targets far from bf16's grid (1000.33 -> 1000.0 in bf16)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 1))
        self.target_dtypes: set[str] = set()
        self.target_values: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.target_dtypes.add(str(y.dtype))
        self.target_values.append(y[:1].detach())
        return F.mse_loss(self.net(x).float().squeeze(-1), y - 1000.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-2)


def _targets_fit(device: str, root: Path, strategy: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = Targets()
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    y = 1000.33 + x[:, 0]
    trainer = trainer_for(device, "bf16-mixed", root / strategy, max_steps=20, strategy=strategy)
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=32))
    assert module.target_dtypes == {"torch.float32"}, f"{strategy}: targets arrived as {module.target_dtypes}"
    assert torch.equal(module.target_values[0].cpu(), y[:1]), f"{strategy}: target {module.target_values[0]} != {y[:1]}"
    return {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().float().cpu()
        for k, v in module.state_dict().items()
    }


def check_fsdp_targets(device: str, root: Path) -> str:
    """Under torchrun: FSDP bf16-mixed keeps float32 targets (the root's policy casts no inputs) and
    trains the weights DDP trains, within bf16 rounding."""
    assert engine.distributed.under_launcher(), "run the fsdp-targets check under torchrun"
    ddp, fsdp = _targets_fit(device, root, "ddp"), _targets_fit(device, root, "fsdp")
    worst = max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp)
    assert worst < 0.05, f"FSDP and DDP weights differ by {worst:.3g}"
    return f"targets float32 under ddp and fsdp; weights within {worst:.2g} of DDP's"


def check_fsdp_offload_clip(device: str, root: Path) -> str:
    """Under torchrun: FSDP cpu_offload with norm clipping (offloaded gradients reduce on a gloo backend)."""
    import torch.distributed as dist

    if device != "cuda":
        raise Skip("cpu_offload is a GPU option (on a CPU the shards are in CPU memory already)")
    torch.manual_seed(0)
    module = Net()
    trainer = trainer_for(
        device,
        "bf16-mixed",
        root,
        max_steps=10,
        strategy="fsdp",
        fsdp={"cpu_offload": True},
        gradient_clip_val=0.5,
    )
    trainer.fit(module, train_dataloaders=loader())
    assert all(p.device.type == "cpu" for p in module.parameters()), "the shards are not offloaded"
    losses = torch.stack([v.float().cpu() for v in module.losses])
    assert torch.isfinite(losses).all(), "non-finite loss"
    return f"{dist.get_backend()}: 10 clipped steps with offloaded shards, loss {losses[0]:.3f} -> {losses[-1]:.3f}"


class TwoOptimizers(Net):
    """Manual optimization: one backward, two optimizers (one per half of the network)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt1, opt2 = self.optimizers()
        loss = F.cross_entropy(self.net(x), y)
        opt1.zero_grad()
        opt2.zero_grad()
        self.manual_backward(loss)
        opt1.step()
        opt2.step()
        self.losses.append(loss.detach())
        return loss

    def configure_optimizers(self):
        first, rest = list(self.net[0].parameters()), list(self.net[1:].parameters())
        return torch.optim.AdamW(first, lr=3e-3), torch.optim.AdamW(rest, lr=3e-3)


class GrowingScaler:
    """A GradScaler that doubles at every update without overflow: counts the updates."""

    def __init__(self, device: str) -> None:
        self.device = device

    def setup(self, trainer, module, stage):
        self.scaler = torch.amp.GradScaler(self.device, init_scale=2.0**4, growth_interval=1)
        trainer.precision.use_scaler(self.scaler)


def check_manual_16_mixed(device: str, root: Path) -> str:
    """16-mixed, manual optimization, one backward and two optimizers: one scale update per training step."""
    precision = "16-mixed" if device == "cuda" else "32"
    scaler = GrowingScaler(device)
    torch.manual_seed(0)
    module = TwoOptimizers()
    trainer = trainer_for(device, precision, root, max_steps=20, callbacks=[scaler])
    trainer.fit(module, train_dataloaders=loader())
    steps = len(module.losses)  # training steps; global_step counts both optimizers' steps
    assert trainer.global_step == 2 * steps, f"global_step {trainer.global_step} for {steps} training steps"
    scale = scaler.scaler.get_scale()
    assert scale == 2.0 ** (4 + steps), (
        f"scale {scale:g} after {steps} training steps (one update each: {2.0 ** (4 + steps):g})"
    )
    assert torch.isfinite(torch.stack(module.losses).float()).all(), "non-finite loss"
    return f"{precision}: {steps} training steps, 2 optimizers, scale 2^4 -> 2^{4 + steps} (one update per step)"


def check_resume_32_in_16(device: str, root: Path) -> str:
    """A 32-bit checkpoint resumed under 16-mixed: a fresh gradient scale (said once), then finite training."""
    precision, callbacks = scaled(device)
    torch.manual_seed(0)
    first = trainer_for(device, "32", root / "fp32", max_steps=10)
    first.fit(Net(), train_dataloaders=loader())
    first.save_checkpoint(root / "fp32.ckpt")
    torch.manual_seed(0)
    module = Net()
    second = trainer_for(device, precision, root / "mixed", max_steps=20, callbacks=callbacks)
    second.fit(module, train_dataloaders=loader(), ckpt_path=root / "fp32.ckpt")
    assert second.global_step == 20 and second.precision.scaler.is_enabled(), "did not resume with a scaler"
    losses = torch.stack(module.losses).float().cpu()
    assert len(losses) == 10 and torch.isfinite(losses).all(), f"{len(losses)} steps, losses {losses.tolist()}"
    return f"{precision}: resumed at step 10 of a 32-bit run, 10 finite steps, scale {second.precision.scaler.get_scale():g}"


def _gpus_for_replicas(device: str) -> None:
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if device != "cuda" or world < 2:
        raise Skip(f"needs 2+ GPUs under torchrun (this run: {world} process(es) on {device})")


def check_replicas(device: str, root: Path) -> str:
    """2+ GPUs (NCCL): every rank holds the same weights after N DDP steps, bit for bit."""
    _gpus_for_replicas(device)
    trainer, module = fit(device, "bf16-mixed", 30, root, strategy="ddp")
    flat = torch.cat([p.detach().float().reshape(-1) for p in module.parameters()])
    everyone = trainer.env.all_gather(flat)
    worst = (everyone - everyone[0]).abs().max().item()
    assert worst == 0.0, f"replicas differ by {worst:g} after {trainer.global_step} steps"
    return f"{trainer.world_size} replicas identical after {trainer.global_step} steps"


class SignalOneRank(engine.Callback):
    """At step 5, rank 0 sends SIGUSR1 to the last rank only."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == 5 and not getattr(self, "sent", False):
            self.sent = True
            pids = trainer.env.gather_object(os.getpid())
            if trainer.is_global_zero:
                os.kill(pids[-1], __import__("signal").SIGUSR1)


def check_usr1_nccl(device: str, root: Path) -> str:
    """2+ GPUs (NCCL): SIGUSR1 to one rank stops every rank after the same step, as preempted."""
    _gpus_for_replicas(device)
    torch.manual_seed(0)
    trainer = trainer_for(device, "bf16-mixed", root, max_steps=10**6, strategy="ddp", callbacks=[SignalOneRank()])
    start = time.monotonic()
    trainer.fit(Net(), train_dataloaders=loader(n=1 << 20))
    steps = trainer.env.gather_object((trainer.global_step, trainer.stop_reason))
    assert len(set(steps)) == 1 and steps[0][1] == "preempted", f"ranks stopped at {steps}"
    return f"all {len(steps)} ranks stopped as preempted at step {steps[0][0]} ({time.monotonic() - start:.1f} s)"


CHECKS: dict[str, Callable[[str, Path], str]] = {
    "precision": check_precision,
    "checkpoint": check_checkpoint,
    "checkpoint-files": check_checkpoint_files,
    "overflow": check_overflow,
    "none-window": check_none_window,
    "bf16-true": check_bf16_true,
    "sync-audit": check_sync_audit,
    "resume": check_resume,
    "throughput": check_throughput,
    # under torchrun (check_ddp last: it leaves the process group)
    "ddp-sync-dist": check_ddp_sync_dist,
    "ddp-sync-audit": check_sync_audit,
    "fsdp": check_fsdp,
    "fsdp-targets": check_fsdp_targets,
    "ddp": check_ddp,
    # single process
    "manual-16-mixed": check_manual_16_mixed,
    "resume-32-in-16": check_resume_32_in_16,
    # in a torchrun child of their own: the process group needs a gloo backend beside NCCL
    "fsdp-offload-clip": check_fsdp_offload_clip,
    # under torchrun on every visible GPU (2+): skipped with the reason on one GPU
    "replicas": check_replicas,
    "usr1-nccl": check_usr1_nccl,
}
DDP_CHECKS = ["ddp-sync-dist", "ddp-sync-audit", "fsdp", "fsdp-targets", "ddp"]
OFFLOAD_CHECKS = ["fsdp-offload-clip"]
MULTI_GPU_CHECKS = ["replicas", "usr1-nccl"]
DEFAULT_CHECKS = [name for name in CHECKS if name not in DDP_CHECKS + OFFLOAD_CHECKS + MULTI_GPU_CHECKS]


def environment(device: str) -> str:
    parts = [f"torch {torch.__version__}", f"float32 matmul precision {torch.get_float32_matmul_precision()}"]
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        version = torch.cuda.nccl.version()
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        parts = [
            f"{torch.cuda.get_device_name()} (sm {major}.{minor})",
            *parts,
            f"CUDA {torch.version.cuda}",
            f"NCCL {nccl}",
        ]
    return ", ".join(parts)


def run_checks(names: list[str], device: str) -> list[list[str]]:
    """Each check as a row: [name, ok | FAIL | skip, detail]."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            start = time.perf_counter()
            try:
                detail, status = CHECKS[name](device, Path(tmp) / name), "ok"
            except Skip as exc:
                detail, status = str(exc), "skip"
            except Exception as exc:
                print(f"{name}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
                detail, status = f"{type(exc).__name__}: {exc}".splitlines()[0], "FAIL"
            rows.append([name, status, f"{detail} ({time.perf_counter() - start:.1f} s)"])
    return rows


def run_ddp_child(device: str, names: list[str], nproc: int = 1) -> list[list[str]]:
    """The DDP checks in a `torchrun --nproc_per_node=nproc` child (the engine's real DDP path); its rows."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__]
        try:
            code = subprocess.run([*cmd, "--device", device, "--rows", str(rows_file), *names], timeout=600).returncode
        except subprocess.TimeoutExpired:
            code = "a timeout (600 s)"
        if rows_file.is_file():
            return json.loads(rows_file.read_text())
        return [[name, "FAIL", f"the torchrun child ended with {code} before reporting"] for name in names]


def print_table(rows: list[list[str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'check':<{width}}  status  detail")
    for name, status, detail in rows:
        print(f"{name:<{width}}  {status:<6}  {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda, or skip without one")
    parser.add_argument("--ddp", action="store_true", help="also run the DDP checks under torchrun (one process)")
    parser.add_argument("--rows", type=Path, help=argparse.SUPPRESS)  # a torchrun child writes its rows here
    parser.add_argument("checks", nargs="*")
    args = parser.parse_args(argv)
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if args.device is None and not torch.cuda.is_available():
        print("gpu-check: skipped, no CUDA device visible (--device cpu runs a dry run on the CPU)")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("FAIL no CUDA device visible (use --device cpu for a dry run)", file=sys.stderr)
        return 1
    args.device = args.device or "cuda"
    names = args.checks or DEFAULT_CHECKS
    rows = run_checks(names, args.device)
    if args.rows is not None:  # a torchrun child: rank 0 writes the rows, the parent prints the table
        if int(os.environ.get("RANK", "0")) == 0:
            args.rows.write_text(json.dumps(rows))
        return 0
    if args.ddp:
        rows += run_ddp_child(args.device, DDP_CHECKS)
        rows += run_ddp_child(args.device, OFFLOAD_CHECKS)
        gpus = torch.cuda.device_count() if args.device == "cuda" else 0
        if gpus >= 2:
            rows += run_ddp_child(args.device, MULTI_GPU_CHECKS, nproc=gpus)
        else:
            reason = f"needs 2+ GPUs ({gpus} visible)"
            rows += [[name, "skip", reason] for name in MULTI_GPU_CHECKS]
    print(f"environment: {environment(args.device)}")
    print_table(rows)
    failed = [r[0] for r in rows if r[1] == "FAIL"]
    print(f"gpu-check: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
