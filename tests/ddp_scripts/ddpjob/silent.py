"""``torchrun --nproc_per_node=N -m ddpjob.silent SCENARIO OUT [ARG]``: results that used to be
wrong without a message (distributed and precision paths), one scenario per launch.

Each rank writes what the test asserts on to ``OUT/<scenario>-rank<r>.pt``; a scenario that
must fail exits non-zero with the engine's message on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from .engine import Module, Trainer, seed_everything
from .engine import distributed as D


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class Regression(Module):
    """A linear regression that records what each training_step received."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        self.seen: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.seen.append({"x": str(x.dtype), "y": str(y.dtype), "y0": y[0].item()})
        return F.mse_loss(self(x).float().squeeze(-1), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-7)


def targets(out: Path, strategy: str = "fsdp") -> dict[str, Any]:
    """Item 1: a float32 regression target of 1000.33 reaches training_step unchanged under bf16-mixed."""
    seed_everything(0)
    x = torch.randn(16, 4)
    y = torch.full((16,), 1000.33)
    module = Regression()
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        precision="bf16-mixed",
        strategy=strategy,
        progress_bar=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=out / "targets",
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4))
    return {"seen": module.seen}


# -- item 2: mid-epoch resume with the user's own sampler -----------------------------------------------


class Indexed(Dataset):
    """Sample i is (features, index); a random augmentation (noise) is drawn per item when `augment`."""

    def __init__(self, n: int, augment: bool = False) -> None:
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(3))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        if self.augment:
            x = x + torch.rand(4)  # the global torch RNG: a worker's stream
        return x, torch.tensor(i)


class OwnSampler(Sampler[int]):
    """A user's own sampler (reverse order, shuffled per epoch), sharded by rank by hand."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world, self.epoch = n, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(100 + self.epoch)).tolist()
        return iter(order[self.rank :: self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


class Recorder(Module):
    """Records (epoch, sample id, input values) for every sample it trains on; stops at `stop_step`."""

    def __init__(self, stop_step: int = -1) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.stop_step = stop_step
        self.seen: list[tuple[int, int]] = []
        self.inputs: list[torch.Tensor] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, idx = batch
        self.seen += [(self.current_epoch, int(i)) for i in idx]
        self.inputs.append(x.detach().clone())
        self.log("mean_x", x.mean(), on_step=False, on_epoch=True, sync_dist=True)
        return self.net(x).pow(2).mean()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.global_step == self.stop_step:
            self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _record_fit(out: Path, name: str, loader: DataLoader, stop_step: int, resume: bool, **kw: Any) -> dict[str, Any]:
    seed_everything(0)
    module = Recorder(stop_step if not resume else -1)
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        seed=5,
        progress_bar=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=out / name,
        **kw,
    )
    from .engine.callbacks import ModelCheckpoint

    trainer.callbacks.append(ModelCheckpoint(dirpath=out / name / "checkpoints", every_n_train_steps=1, save_last=True))
    trainer.fit(module, loader, ckpt_path="last" if resume else None)
    return {
        "seen": module.seen,
        "inputs": module.inputs,
        "mean_x": trainer.callback_metrics.get("mean_x"),
        "global_step": trainer.global_step,
    }


def own_sampler(out: Path, stop: str = "3") -> dict[str, Any]:
    """Item 2: use_distributed_sampler=False, the user's own sampler; stopped after `stop` steps, resumed."""
    rank, world = _rank(), torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    data = Indexed(32)
    kw = {"use_distributed_sampler": False}

    def loader() -> DataLoader:
        return DataLoader(data, batch_size=2, sampler=OwnSampler(32, rank, world))

    full = _record_fit(out, "own-full", loader(), -1, False, **kw)
    first = _record_fit(out, "own-part", loader(), int(stop), False, **kw)
    rest = _record_fit(out, "own-part", loader(), -1, True, **kw)
    return {"full": full["seen"], "first": first["seen"], "rest": rest["seen"]}


class Stream(torch.utils.data.IterableDataset):
    """An iterable data set shuffled from torch's global RNG each time it is read."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __iter__(self):
        return (self.data[i] for i in torch.randperm(len(self.data)).tolist())


def shuffled(out: Path) -> dict[str, Any]:
    """Item 2 in one process: DataLoader(shuffle=True) (torch's global RNG) and an IterableDataset."""
    result = {}
    data = Indexed(32)
    for name, make in (
        ("random", lambda: DataLoader(data, batch_size=2, shuffle=True)),
        ("iterable", lambda: DataLoader(Stream(data), batch_size=2)),
    ):
        kw = {"use_distributed_sampler": False}
        full = _record_fit(out, f"{name}-full", make(), -1, False, **kw)
        first = _record_fit(out, f"{name}-part", make(), 3, False, **kw)
        rest = _record_fit(out, f"{name}-part", make(), -1, True, **kw)
        result[name] = {"full": full["seen"], "first": first["seen"], "rest": rest["seen"]}
    return result


class SkipLast(Recorder):
    """Returns None on the last micro-batch of chosen accumulation windows (all ranks, or one)."""

    def __init__(self, skip: set[int], rank: int | None) -> None:
        super().__init__()
        self.skip, self.skip_rank = skip, rank

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        loss = super().training_step(batch, batch_idx)
        if batch_idx in self.skip and self.skip_rank in (None, _rank()):
            return None
        return loss


def skip_last(out: Path, strategy: str = "ddp") -> dict[str, Any]:
    """Item 3: DDP, accumulate_grad_batches=2, training_step returns None on a window's last
    micro-batch: on every rank, then on rank 1 alone."""
    return {who: _skip_last(out / who, who, strategy) for who in ("all", "1")}


def _skip_last(out: Path, who: str, strategy: str) -> dict[str, Any]:
    seed_everything(0)
    module = SkipLast({1, 5}, None if who == "all" else int(who))
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        accumulate_grad_batches=2,
        strategy=strategy,
        progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=out / "skip",
    )
    trainer.fit(module, DataLoader(Indexed(32), batch_size=2, shuffle=True))
    return {"weights": {k: v.clone() for k, v in module.state_dict().items()}, "step": trainer.global_step}


def bad_save(out: Path) -> dict[str, Any]:
    """Item 9: rank 0 cannot write its checkpoint (the folder's parent is a file); every rank must stop."""
    from .engine.callbacks import ModelCheckpoint

    blocker = out / "not-a-folder"
    blocker.write_text("")
    seed_everything(0)
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        progress_bar=False,
        logger=False,
        num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=blocker / "checkpoints", every_n_train_steps=2)],
        default_root_dir=out / "bad-save",
    )
    trainer.fit(Recorder(), DataLoader(Indexed(32), batch_size=2))
    return {}


def augment(out: Path) -> dict[str, Any]:
    """Item 4: random augmentations drawn in __getitem__ by 2 workers; stopped mid-epoch, resumed.

    The engine's sampler (with persistent workers too), and a loader the engine leaves alone."""
    result = {}
    data = Indexed(32, augment=True)
    for name, persistent, own in (("engine", False, False), ("persistent", True, False), ("own", False, True)):

        def make(persistent: bool = persistent) -> DataLoader:
            return DataLoader(data, batch_size=2, shuffle=True, num_workers=2, persistent_workers=persistent)

        kw = {"use_distributed_sampler": not own}
        full = _record_fit(out, f"{name}-full", make(), -1, False, **kw)
        first = _record_fit(out, f"{name}-part", make(), 3, False, **kw)
        rest = _record_fit(out, f"{name}-part", make(), -1, True, **kw)
        result[name] = {k: (full[k], first[k], rest[k]) for k in ("seen", "inputs")}
    return result


def elastic(out: Path, phase: str, name: str, batch_size: str) -> dict[str, Any]:
    """Item 6: epoch means logged with sync_dist after a mid-epoch resume on another process count.

    `phase` "full" trains 2 epochs, "part" stops at step 11 (mid-epoch 1 of 8 steps), "rest" resumes."""
    loader = DataLoader(Indexed(32), batch_size=int(batch_size), shuffle=True)
    run = _record_fit(out, name, loader, 11 if phase == "part" else -1, phase == "rest", log_every_n_steps=1)
    return {"mean_x": run["mean_x"], "global_step": run["global_step"]}


class Blocks(Module):
    """Two blocks (sharded one by one under FSDP), and a BatchNorm; records what training_step sees."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)
        self.compiled: dict[str, bool] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        self.compiled = {n or "root": m._compiled_call_impl is not None for n, m in self.named_modules()}
        return self(x).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fsdp_blocks(out: Path) -> dict[str, Any]:
    """Item 8 under FSDP: compile=True compiles the sharded blocks, not the root's step;
    sync_batchnorm=True is not silently ignored (on CPU processes: the clear error DDP gives)."""
    original = nn.Module.compile
    nn.Module.compile = lambda self, *a, **k: original(self, *a, **{**k, "backend": "eager"})  # fast on a CPU
    common = dict(max_epochs=1, accelerator="cpu", strategy="fsdp", progress_bar=False, logger=False)
    common.update(enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=out / "blocks")
    loader = DataLoader(Indexed(16), batch_size=4)
    module = Blocks()
    trainer = Trainer(compile=True, **common)
    trainer.fit(module, loader)
    try:
        Trainer(sync_batchnorm=True, **common).fit(Blocks(), loader)
        error = ""
    except ValueError as e:
        error = str(e)
    return {"compiled": module.compiled, "steps": trainer.global_step, "sync_batchnorm_error": error}


def main(scenario: str, out: Path, *args: str) -> None:
    distributed = "WORLD_SIZE" in os.environ
    env = D.setup("cpu") if distributed else None
    out.mkdir(parents=True, exist_ok=True)
    result = globals()[scenario](out, *args)
    tag = f"{scenario}-{'-'.join(args)}" if scenario == "elastic" else scenario
    torch.save(result, out / f"{tag}-rank{env.rank if env else 0}.pt")
    if distributed:
        D.teardown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)
