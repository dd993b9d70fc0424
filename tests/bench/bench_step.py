"""Per-step overhead: one tiny MLP, the same batches and optimizer, CPU, one thread.

Hand-written loop vs the engine's Trainer vs Lightning, with progress output, logger and
checkpointing off in both frameworks. Runs alternate in this process; the first round and
the first steps of every run are dropped; the table shows medians over rounds.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from typing import Any

import torch
from benchlib import Row, TimedBatches, fmt_time, import_package, main, median, rounds
from torch import nn
from torch.nn import functional as F

BENCH = "Per-step overhead (tiny MLP, CPU, 1 thread)"
BATCH, IN, HIDDEN, OUT = 32, 32, 64, 10


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT))


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(BATCH, IN, generator=g), torch.randint(0, OUT, (BATCH,), generator=g)) for _ in range(64)]


def optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01)


def hand_written(data: TimedBatches, log: bool = False) -> None:
    model = make_net()
    opt = optimizer(model.parameters())
    model.train()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def engine_run(pkg: Any, root: str, log: bool) -> Any:
    class TinyMLP(pkg.engine.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            if log:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return optimizer(self.parameters())

    def fit(data: TimedBatches) -> None:
        trainer = pkg.engine.Trainer(
            max_epochs=1, accelerator="cpu", progress_bar=False, callbacks=[], logger=None, default_root_dir=root
        )
        trainer.fit(TinyMLP(), train_dataloaders=data)

    return fit


def lightning_run(root: str, log: bool) -> Any:
    try:
        import pytorch_lightning as pl
    except ImportError:
        try:
            import lightning.pytorch as pl
        except ImportError:
            return None
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    class TinyMLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            if log:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return optimizer(self.parameters())

    def fit(data: TimedBatches) -> None:
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
        )
        trainer.fit(TinyMLP(), train_dataloaders=data)

    return fit


def bench(args: argparse.Namespace) -> list[Row]:
    torch.set_num_threads(1)
    steps, n_rounds, skip = (300, 3, 30) if args.quick else (args.steps, args.rounds, 50)
    pkg = import_package()
    root = tempfile.mkdtemp(prefix="scaffold-bench-step-")
    batches = make_batches()

    def timed(fn: Any) -> Any:
        def once() -> float:
            data = TimedBatches(batches, steps)
            fn(data)
            return data.step_time(skip)

        return once

    variants = {"hand-written": timed(hand_written), "engine": timed(engine_run(pkg, root, log=False))}
    lightning = lightning_run(root, log=False)
    if lightning is not None:
        variants["Lightning"] = timed(lightning)
    if args.with_log:
        variants["engine, self.log each step"] = timed(engine_run(pkg, root, log=True))
        if lightning is not None:
            variants["Lightning, self.log each step"] = timed(lightning_run(root, log=True))
    times = rounds(variants, n_rounds)
    base = times["hand-written"]
    rows = []
    for name, values in times.items():
        # Ratios pair each run with the hand-written run of the same round (drift cancels).
        ratio = median([v / b for v, b in zip(values, base, strict=True)])
        target = "<= 1.05x" if name == "engine" else ""
        note = "" if name != "hand-written" else f"median of {n_rounds} runs x {steps} steps"
        rows.append(Row(BENCH, name, f"{fmt_time(median(values))}/step", ratio, target, note))
    if lightning is None:
        rows.append(Row(BENCH, "Lightning", "n/a", note="pytorch_lightning not installed (ci/bench installs it)"))
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--with-log", action="store_true", help="also time runs that self.log the loss each step")


if __name__ == "__main__":
    main(bench, add_args)
