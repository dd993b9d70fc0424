"""Per-step overhead: the same MLP, batches and optimizer, CPU, one thread.

Hand-written loop vs the engine's Trainer vs Lightning, with progress output, logger and
checkpointing off in both frameworks. The runs go in lockstep (`benchlib.lockstep`): each
in its own thread, taking turns every block of a few milliseconds of steps, so that compared
steps run side by side on a machine whose speed drifts within seconds. Each round rotates
the order; the first block of every run is dropped. The table shows the median time per
step over all blocks and the median of the per-block ratios to the hand-written block run
just before or after. Two sizes: a tiny MLP, where a step is almost all framework overhead,
and an MNIST-size one, so the fixed overhead can be read both ways.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import torch
from benchlib import (
    CLOCK_NOTE,
    Row,
    TimedBatches,
    fmt_time,
    import_lightning,
    import_package,
    lightning_trainer,
    lockstep,
    main,
    median,
    tmpdir,
)
from torch import nn
from torch.nn import functional as F

INSTRUCTIONS = "Per-step overhead (tiny MLP, instructions)"
# label -> (batch, in, hidden, out, steps per run, steps per block)
SIZES = {
    "tiny MLP 32-64-10, batch 32": (32, 32, 64, 10, 2000, 50),
    "MNIST-size MLP 784-256-10, batch 64": (64, 784, 256, 10, 600, 20),
}
SIZE = SIZES["tiny MLP 32-64-10, batch 32"]


def make_net() -> nn.Module:
    torch.manual_seed(0)
    _, n_in, hidden, n_out, _, _ = SIZE
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batch, n_in, _, n_out, _, _ = SIZE
    return [(torch.randn(batch, n_in, generator=g), torch.randint(0, n_out, (batch,), generator=g)) for _ in range(64)]


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


def tiny_module(base: type, log: bool) -> type:
    """The same module for the engine and for Lightning: only the base class differs."""

    class TinyMLP(base):
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

    return TinyMLP


def engine_run(pkg: Any, root: str, log: bool) -> Any:
    TinyMLP = tiny_module(pkg.engine.Module, log)

    def fit(data: TimedBatches) -> None:
        trainer = pkg.engine.Trainer(
            max_epochs=1,
            accelerator="cpu",
            progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[],
            logger=None,
            default_root_dir=root,
        )
        trainer.fit(TinyMLP(), train_dataloaders=data)

    return fit


def lightning_run(root: str, log: bool) -> Any:
    pl = import_lightning()
    if pl is None:
        return None
    TinyMLP = tiny_module(pl.LightningModule, log)

    def fit(data: TimedBatches) -> None:
        lightning_trainer(pl, root, max_epochs=1).fit(TinyMLP(), train_dataloaders=data)

    return fit


def count_child(kind: str, steps: int) -> None:
    """Under callgrind: train `steps` steps with instruction counting on (after a warm-up)."""
    torch.set_num_threads(1)
    fit = hand_written if kind == "hand-written" else engine_run(import_package(), tmpdir("run"), log=False)
    batches = make_batches()
    fit(TimedBatches(batches, 50))
    toggle = ["callgrind_control", "-i"]
    subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)
    fit(TimedBatches(batches, steps))
    subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)


def instruction_rows() -> list[Row]:
    """Instructions per step (callgrind): the difference of a 300- and a 100-step run, so setup
    cancels out. Deterministic, unlike times on a shared machine; takes a few minutes."""
    if shutil.which("valgrind") is None:
        return [Row(INSTRUCTIONS, "engine", "n/a", note="valgrind is not installed")]
    counts: dict[str, float] = {}
    out = tmpdir("cg")
    for kind in ("hand-written", "engine"):
        collected = []
        for steps in (100, 300):
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p"]
            cmd += [sys.executable, __file__, "--count-child", kind, str(steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = re.search(r"Collected : (\d+)", proc.stderr)
            if proc.returncode != 0 or not found:
                return [Row(INSTRUCTIONS, kind, "n/a", note=f"callgrind failed (exit {proc.returncode})")]
            collected.append(int(found.group(1)))
        counts[kind] = (collected[1] - collected[0]) / 200
    shutil.rmtree(out, ignore_errors=True)
    base = counts["hand-written"]
    return [
        Row(
            INSTRUCTIONS,
            kind,
            f"{n / 1e3:.0f}k instr/step",
            n / base,
            "<= 1.05x" if kind == "engine" else "",
            "callgrind, 300 - 100 steps" if kind == "hand-written" else f"+{(n - base) / 1e3:.0f}k instr/step",
        )
        for kind, n in counts.items()
    ]


def bench(args: argparse.Namespace) -> list[Row]:
    global SIZE
    if args.count_child:
        count_child(args.count_child[0], int(args.count_child[1]))
        return []
    torch.set_num_threads(1)
    pkg = import_package()
    root = tmpdir("step")
    rows = []
    for label, size in SIZES.items():
        SIZE = size
        steps, block = size[-2:]
        steps, n_rounds = (steps // 4, 2) if args.quick else (steps, args.rounds)
        batches = make_batches()
        fits = {"hand-written": hand_written, "engine": engine_run(pkg, root, log=False)}
        lightning = lightning_run(root, log=False)
        if lightning is not None:
            fits["Lightning"] = lightning
        if args.with_log:
            fits["engine, self.log each step"] = engine_run(pkg, root, log=True)
            if lightning is not None:
                fits["Lightning, self.log each step"] = lightning_run(root, log=True)
        per_step: dict[str, list[float]] = {name: [] for name in fits}
        ratios: dict[str, list[float]] = {name: [] for name in fits}
        names = list(fits)
        for r in range(n_rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            times = lockstep({name: fits[name] for name in order}, batches, steps, block)
            n = min(len(v) for v in times.values())  # a loop may stop before its last block ends
            base = times["hand-written"][1:n]  # the first block (warm-up) dropped
            for name, values in times.items():
                per_step[name] += values[1:n]
                ratios[name] += [v / b for v, b in zip(values[1:n], base, strict=True)]
        bench_name = f"Per-step overhead ({label}, CPU, 1 thread)"
        base_time = median(per_step["hand-written"])
        for name in names:
            step_time, rel = median(per_step[name]), median(ratios[name])
            if name == "hand-written":
                note = f"lockstep, {n_rounds} rounds x {steps} steps in blocks of {block}, {CLOCK_NOTE}"
            else:
                extra = step_time - base_time
                note = f"{'+' if extra >= 0 else '-'}{fmt_time(abs(extra))}/step"
            target = "<= 1.05x" if name == "engine" else ""
            rows.append(Row(bench_name, name, f"{fmt_time(step_time)}/step", rel, target, note))
        if lightning is None:
            rows.append(
                Row(bench_name, "Lightning", "n/a", note="pytorch_lightning not installed (ci/bench installs it)")
            )
    return rows + (instruction_rows() if args.instructions else [])


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--with-log", action="store_true", help="also time runs that self.log the loss each step")
    p.add_argument("--instructions", action="store_true", help="also count instructions per step (valgrind)")
    p.add_argument("--count-child", nargs=2, metavar=("KIND", "STEPS"), help=argparse.SUPPRESS)


if __name__ == "__main__":
    main(bench, add_args)
