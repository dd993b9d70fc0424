"""Input bottleneck: a deliberately slow dataset, the engine's report, and its advice applied.

1. Compute-bound reference: the model trained on in-memory data (num_workers=0).
2. The same data behind a dataset that sleeps in `__getitem__` (storage or decoding latency:
   the process waits and uses no CPU), 1.25x the compute time per batch, num_workers=0.
   The ThroughputMonitor's report must name the data loader as the bottleneck and suggest a
   `data.num_workers=N`.
3. The slow dataset again with the suggested N: throughput must recover >= 80% of the
   compute-bound run (runs alternate with compute-bound ones; ratios of medians).

Throughput is samples per second of wall time over the steps after the first few (worker
start-up excluded), taken from module-hook stamps. An info row runs the in-memory data with
the same N: the ceiling with loader processes (their transfers and CPU share) on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import time
from typing import Any

import torch
from benchlib import Row, import_package, main, median, ratio, rounds, tmpdir
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

BENCH = "Input bottleneck (slow dataset)"
BATCH, IN, HIDDEN, OUT = 32, 256, 1024, 10
SKIP = 8  # steps dropped at the start of each run (worker start-up)
LOAD = 1.25  # loading a batch takes this many times as long as computing it


class SlowDataset(Dataset):
    """In-memory samples that take `delay` seconds a batch to "load" (one sleep per batch:
    sub-millisecond sleeps per sample would overshoot by their timer slack)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, delay: float) -> None:
        self.x, self.y, self.delay = x, y, delay

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The DataLoader fetches a whole batch through this method when a dataset has it.
        if self.delay:
            time.sleep(self.delay)
        return [(self.x[i], self.y[i]) for i in indices]


def make_module(engine: Any, stamps: list[float]) -> Any:
    class MLP(engine.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def on_train_batch_end(self, *args: Any) -> None:
            stamps.append(time.perf_counter())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return MLP()


def fit(engine: Any, dataset: Dataset, workers: int, root: str) -> tuple[float, str]:
    """Samples/s after warm-up, and what the run printed (the bottleneck report)."""
    stamps: list[float] = []
    # One epoch per run, so persistent workers would change nothing here (and a Trainer that is
    # garbage-collected with their iterator waits 2 x 5 s for them to exit; see the report).
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
    monitor = engine.ThroughputMonitor()
    trainer = engine.Trainer(
        max_epochs=1,
        accelerator="cpu",
        progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[monitor],
        logger=None,
        default_root_dir=root,
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer.fit(make_module(engine, stamps), train_dataloaders=loader)
    steps = len(stamps) - 1 - SKIP
    return steps * BATCH / (stamps[-1] - stamps[SKIP]), out.getvalue()


def bench(args: argparse.Namespace) -> list[Row]:
    torch.set_num_threads(1)
    engine = import_package().engine
    root = tmpdir("input")
    n = (24 if args.quick else args.steps) * BATCH
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, IN, generator=g), torch.randint(0, OUT, (n,), generator=g)

    fit(engine, SlowDataset(x, y, 0.0), 0, root)  # warm-up
    compute_s = BATCH / fit(engine, SlowDataset(x, y, 0.0), 0, root)[0]  # seconds of compute per batch
    delay = LOAD * compute_s
    slow, report = fit(engine, SlowDataset(x, y, delay), 0, root)
    advice = re.search(r"data\.num_workers=(\d+)", report)
    waiting = re.search(r"\d+% of each step is spent waiting for data", report)
    workers = int(advice.group(1)) if advice and "the data loader is the bottleneck" in report else 0
    variants = {"fast": lambda: fit(engine, SlowDataset(x, y, 0.0), 0, root)[0]}
    if workers:
        variants["advised"] = lambda: fit(engine, SlowDataset(x, y, delay), workers, root)[0]
        variants["instant"] = lambda: fit(engine, SlowDataset(x, y, 0.0), workers, root)[0]
    runs = rounds(variants, 1 if args.quick else 3, warmup=0)
    fast = median(runs["fast"])
    rows = [
        Row(
            BENCH,
            "compute-bound (in-memory data)",
            f"{fast:.0f} samples/s",
            1.0,
            note=f"{1000 * BATCH / fast:.1f} ms/batch compute",
        ),
        Row(
            BENCH,
            "slow dataset, num_workers=0",
            f"{slow:.0f} samples/s",
            slow / fast,
            note=f"{1000 * delay:.1f} ms/batch loading",
        ),
    ]
    if not workers:
        summary = next(
            (line.strip() for line in report.splitlines() if "bottleneck report" in line), "no report printed"
        )
        rows.append(
            Row(BENCH, "the report's advice", "n/a", note=f"the report named no num_workers fix: {summary[:120]}")
        )
        return rows
    recovered = ratio(runs["advised"], runs["fast"])
    rows.append(
        Row(
            BENCH,
            f"slow dataset, data.num_workers={workers} (the advice)",
            f"{median(runs['advised']):.0f} samples/s",
            recovered,
            ">= 0.80x",
            note=f"the report: {waiting.group(0) if waiting else 'the data loader is the bottleneck'}",
        )
    )
    instant = ratio(runs["instant"], runs["fast"])
    rows.append(
        Row(
            BENCH,
            f"in-memory data, num_workers={workers} (for reference)",
            f"{median(runs['instant']):.0f} samples/s",
            instant,
            note="the ceiling with loader processes on this machine",
        )
    )
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=60)


if __name__ == "__main__":
    main(bench, add_args)
