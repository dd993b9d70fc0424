"""DDP overhead: 2 processes on gloo, a tiny MLP, one thread each (CPU).

Hand-written DDP loop vs the engine's Trainer vs Lightning's strategy="ddp", in the same two
processes (torchrun starts them; every loop joins the one process group). Two gloo processes
on two shared cores are noisy, so the loops go in lockstep as in the per-step benchmark
(`benchlib.lockstep`): in each process every loop trains in its own thread and they take
turns every block of steps, in the same order on both ranks (so their collectives line up);
each round rotates the order and trains one 512-step epoch of each. Times are rank 0's wall
clock (waiting for the other process is the cost being measured); the first block of each
run is dropped; the ratio is the median of the paired blocks' ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from benchlib import Row, fmt_time, import_lightning, import_package, lockstep, main, median, tmpdir
from torch import nn
from torch.nn import functional as F

BENCH = "DDP epoch (2 processes, gloo, MLP 64-64-2, batch 32, 1 thread each)"
STEPS = 512  # per rank per epoch
BLOCK = 32  # steps per turn


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))


def make_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(rank)
    return [(torch.randn(32, 64, generator=g), torch.randint(0, 2, (32,), generator=g)) for _ in range(64)]


def hand_written(data: Any) -> None:
    from torch.nn.parallel import DistributedDataParallel

    model = DistributedDataParallel(make_net())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def tiny_module(base: type) -> type:
    class TinyMLP(base):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return TinyMLP


def engine_fit(root: str) -> Any:
    pkg = import_package()
    TinyMLP = tiny_module(pkg.engine.Module)

    def fit(data: Any) -> None:
        trainer = pkg.engine.Trainer(
            max_epochs=1,
            accelerator="cpu",
            strategy="ddp",
            progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            logger=None,
            default_root_dir=root,
        )
        trainer.fit(TinyMLP(), train_dataloaders=data)

    return fit


def lightning_fit(root: str) -> Any:
    pl = import_lightning()
    if pl is None:
        return None
    TinyMLP = tiny_module(pl.LightningModule)

    def fit(data: Any) -> None:
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=int(os.environ["WORLD_SIZE"]),
            strategy="ddp",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=root,
        )
        trainer.fit(TinyMLP(), train_dataloaders=data)

    return fit


def worker(rounds: int, out: Path) -> None:
    """One of the two processes: join the group, then `rounds` rounds of the loops in lockstep."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    root = tmpdir("ddp")
    fits = {"hand-written": hand_written, "engine": engine_fit(root)}
    lightning = lightning_fit(root)
    if lightning is not None:
        fits["Lightning"] = lightning
    names = list(fits)
    per_step: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    batches = make_batches(rank)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        dist.barrier()
        times = lockstep({name: fits[name] for name in order}, batches, STEPS, BLOCK)
        n = min(len(v) for v in times.values())  # a loop may stop before its last block ends
        base = times["hand-written"][1:n]  # the first block (warm-up) dropped
        for name, values in times.items():
            per_step[name] += values[1:n]
            ratios[name] += [v / b for v, b in zip(values[1:n], base, strict=True)]
    if rank == 0:
        out.write_text(json.dumps({"per_step": per_step, "ratios": ratios}))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(args: argparse.Namespace) -> list[Row]:
    if args.worker:
        worker(args.rounds, Path(args.worker))
        return []
    rounds = 2 if args.quick else args.rounds
    out = Path(tmpdir("ddp-out")) / "times.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "TORCHELASTIC_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BENCH_CLOCK="wall")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1"]
    cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", __file__]
    cmd += ["--worker", str(out), "--rounds", str(rounds)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(proc.stderr[-3000:], file=sys.stderr)
        return [Row(BENCH, "all", "n/a", note=f"failed (exit {proc.returncode}): {tail[:150]}")]
    got = json.loads(out.read_text())
    per_step, ratios = got["per_step"], got["ratios"]
    base_time = median(per_step["hand-written"])
    rows = []
    for name, values in per_step.items():
        if name == "hand-written":
            note = f"lockstep, {rounds} rounds x {STEPS} steps in blocks of {BLOCK}, rank 0's wall clock"
        else:
            extra = median(values) - base_time
            note = f"{'+' if extra >= 0 else '-'}{fmt_time(abs(extra))}/step"
        target = "<= 1.05x" if name == "engine" else ""
        rows.append(Row(BENCH, name, f"{fmt_time(median(values) * STEPS)}/epoch", median(ratios[name]), target, note))
    if "Lightning" not in per_step:
        rows.append(Row(BENCH, "Lightning", "n/a", note="pytorch_lightning not installed (ci/bench installs it)"))
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--worker", help=argparse.SUPPRESS)


if __name__ == "__main__":
    main(bench, add_args)
