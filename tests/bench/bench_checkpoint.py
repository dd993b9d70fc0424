"""Checkpoint stall: how long the training loop is blocked by saving a ~100M-parameter model.

The engine's savers, as the Trainer uses them (`trainer.async_checkpoint`): SyncSaver writes
before `save` returns; AsyncSaver copies the state on the caller's thread and writes it in a
background thread. Blocked time is how long `save` takes to return; the async row also shows
when its background write finished. Files go to a temporary folder (BENCH_TMP to choose one).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from benchlib import Row, fmt_time, import_package, main, median, ratio, rounds, tmpdir
from torch import nn

BENCH = "Checkpoint stall (~100M params, fp32)"


def big_model() -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        return nn.Sequential(*[nn.Linear(4000, 2500) for _ in range(10)])  # 100.0M parameters


def bench(args: argparse.Namespace) -> list[Row]:
    pkg = import_package()
    checkpoint = pkg.engine.checkpoint
    model = big_model()
    params = sum(p.numel() for p in model.parameters())
    state = {"model": model.state_dict(), "loop": {"global_step": 1}}
    folder = Path(tmpdir("ckpt"))
    n = 1 if args.quick else args.rounds
    background: list[float] = []

    def sync_save() -> float:
        path = folder / "sync.ckpt"
        start = time.perf_counter()
        checkpoint.SyncSaver().save(state, path)
        blocked = time.perf_counter() - start
        path.unlink()
        return blocked

    def async_save() -> float:
        path, saver = folder / "async.ckpt", checkpoint.AsyncSaver()
        start = time.perf_counter()
        saver.save(state, path)
        blocked = time.perf_counter() - start
        saver.close()  # waits for the write
        background.append(time.perf_counter() - start)
        path.unlink()
        return blocked

    try:
        times = rounds({"synchronous (SyncSaver)": sync_save, "async (AsyncSaver)": async_save}, n)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    sync = times["synchronous (SyncSaver)"]
    written = median(background[-n:])
    return [
        Row(
            BENCH,
            "synchronous (SyncSaver)",
            f"{fmt_time(median(sync))} blocked",
            1.0,
            note=f"{params / 1e6:.0f}M params, {params * 4 / 2**20:.0f} MiB",
        ),
        Row(
            BENCH,
            "async (AsyncSaver)",
            f"{fmt_time(median(times['async (AsyncSaver)']))} blocked",
            ratio(times["async (AsyncSaver)"], sync),
            note=f"the background write finished {fmt_time(written)} after save()",
        ),
    ]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=3)


if __name__ == "__main__":
    main(bench, add_args)
