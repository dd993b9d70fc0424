"""Real size: the generated project's digits example (its own model.py and data.py), epoch time.

The engine trains the template's `DigitsClassifier` on its `DigitsDataModule`. The hand-written
loop trains the same model on the same data and does the same work: forward, loss, train
accuracy, backward, AdamW step, zero_grad, OneCycleLR step, the loss read every 10 steps, and
a validation pass with loss and accuracy each epoch; it takes the same two files with their
`from .engine import ...` pointing at plain torch stand-ins, so it never imports the engine.
Lightning runs the same two files pointing at Lightning (an info row).

``--child engine|hand|lightning`` trains in this process and prints its peak RSS (for
bench_memory.py).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from benchlib import (
    CLOCK_NOTE,
    PACKAGE,
    Row,
    clock,
    fmt_time,
    has_digits,
    import_lightning,
    lightning_trainer,
    main,
    make_package,
    median,
    take_turns,
    tmpdir,
)
from torch.nn import functional as F
from torch.utils.data import DataLoader

BENCH = "Real size (digits example, epoch: train + val)"
BATCH = 64
LIGHTNING = '''"""Lightning standing in for the engine: the research code imports these names from here."""
import dataclasses
import inspect
from dataclasses import dataclass

try:
    from pytorch_lightning import LightningDataModule as DataModule, LightningModule
except ImportError:
    from lightning.pytorch import LightningDataModule as DataModule, LightningModule


class Module(LightningModule):
    def save_hyperparameters(self, *args, **kwargs):
        # Lightning takes dicts, not dataclasses (the engine takes both).
        args = [dataclasses.asdict(a) if dataclasses.is_dataclass(a) else a for a in args]
        super().save_hyperparameters(*args, frame=inspect.currentframe().f_back, **kwargs)


@dataclass
class DataConfig:
    batch_size: int = 32
    num_workers: int = 0
'''


NO_ENGINE = '''"""No framework: the research code's base classes are plain torch (for the hand-written loop)."""
from dataclasses import dataclass

from torch import nn


class Module(nn.Module):
    def save_hyperparameters(self, *args, **kwargs):
        pass

    def log(self, *args, **kwargs):
        pass


class DataModule:
    pass


@dataclass
class DataConfig:
    batch_size: int = 32
    num_workers: int = 0
'''


def copy_research(base: Path, name: str, engine_init: str) -> None:
    """``base/name``: the template's model.py and data.py over another `engine` (a shim)."""
    pkg = base / name
    if pkg.exists():
        return
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text(engine_init)
    for module in ("model.py", "data.py"):
        (pkg / module).write_text((base / PACKAGE / module).read_text())


def packages(base: Path) -> tuple[Path, Path | None]:
    """The research code three ways: on the engine (`benchpkg`), on nothing (`handpkg`, for the
    hand-written loop, which so never imports the engine) and on Lightning (`plpkg`; None
    without Lightning)."""
    make_package(base, PACKAGE)
    if not has_digits(base / PACKAGE):
        return base, None
    copy_research(base, "handpkg", NO_ENGINE)
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        try:
            import lightning.pytorch  # noqa: F401
        except ImportError:
            return base, None
    copy_research(base, "plpkg", LIGHTNING)
    return base, base / "plpkg"


def research(pkg: str) -> tuple[Any, Any, Any, Any]:
    model = __import__(f"{pkg}.model", fromlist=["x"])
    data = __import__(f"{pkg}.data", fromlist=["x"])
    return model.DigitsClassifier, model.ModelConfig, data.DigitsDataModule, data.DataConfig


def no_tick() -> None:
    pass


def timed_classifier(cls: Any, stamps: list[float], tick: Callable[[], None]) -> Any:
    """The research module, stamping the clock (and ticking) at each epoch start and at the end."""

    class Timed(cls):
        def on_train_epoch_start(self, *args: Any, **kwargs: Any) -> None:
            tick()
            stamps.append(clock())

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            stamps.append(clock())
            tick()

    return Timed


def timed_digits(pkg: str, stamps: list[float], tick: Callable[[], None]) -> tuple[Any, Any]:
    """The research code of package `pkg`: the timed classifier (seeded) and its datamodule."""
    classifier, model_cfg, datamodule, data_cfg = research(pkg)
    torch.manual_seed(0)
    return timed_classifier(classifier, stamps, tick)(model_cfg()), datamodule(
        data_cfg(batch_size=BATCH, num_workers=0)
    )


def run_engine(epochs: int, root: str, tick: Callable[[], None] = no_tick) -> list[float]:
    engine = __import__(f"{PACKAGE}.engine", fromlist=["x"])
    stamps: list[float] = []
    model, dm = timed_digits(PACKAGE, stamps, tick)
    trainer = engine.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[],
        logger=None,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=dm)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def run_lightning(epochs: int, root: str, tick: Callable[[], None] = no_tick) -> list[float]:
    pl = import_lightning()
    stamps: list[float] = []
    model, dm = timed_digits("plpkg", stamps, tick)
    lightning_trainer(pl, root, max_epochs=epochs, num_sanity_val_steps=0).fit(model, datamodule=dm)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def run_hand(epochs: int, root: str, tick: Callable[[], None] = no_tick) -> list[float]:
    """What a researcher writes without a framework, doing the engine's work and no more."""
    classifier, model_cfg, datamodule, data_cfg = research("handpkg")
    torch.manual_seed(0)
    cfg = model_cfg()
    model = classifier(cfg)  # a plain nn.Module here: its forward and its torchmetrics objects
    dm = datamodule(data_cfg(batch_size=BATCH, num_workers=0))
    dm.setup("fit")
    train = DataLoader(dm.train_set, batch_size=BATCH, shuffle=True)
    val = DataLoader(dm.val_set, batch_size=BATCH, shuffle=False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=epochs * len(train))
    stamps, step, history = [], 0, []
    for _ in range(epochs):
        tick()
        stamps.append(clock())
        model.train()
        for x, y in train:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            model.train_acc(logits, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            if step % 10 == 0:
                history.append(loss.item())
        train_acc = model.train_acc.compute().item()
        model.train_acc.reset()
        model.eval()
        total, count = torch.zeros(()), 0
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                total += F.cross_entropy(logits, y) * len(y)
                count += len(y)
                model.val_acc(logits, y)
        history.append((train_acc, (total / count).item(), model.val_acc.compute().item()))
        model.val_acc.reset()
    stamps.append(clock())
    tick()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


RUNNERS = {"engine": run_engine, "hand": run_hand, "lightning": run_lightning}


def child(kind: str, epochs: int) -> None:
    base = Path(tmpdir("digits"))
    packages(base)
    sys.path.insert(0, str(base))
    torch.set_num_threads(1)
    RUNNERS[kind](epochs, tmpdir("run"))
    print(f"MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def count_child(kind: str, epochs: int) -> None:
    """Under callgrind: count the instructions of epochs 2..`epochs` (epoch 1 warms up).

    Every runner stamps `clock()` at each epoch start and once at the end, so replacing it
    turns instrumentation on at the second stamp and off at the last.
    """
    global clock
    calls = iter(range(1, epochs + 2))

    def toggling_clock() -> float:
        n = next(calls)
        if n in (2, epochs + 1):
            subprocess.run(
                ["callgrind_control", "-i", "on" if n == 2 else "off", str(os.getpid())],
                check=True,
                capture_output=True,
            )
        return 0.0

    clock = toggling_clock
    base = Path(tmpdir("digits"))
    packages(base)
    sys.path.insert(0, str(base))
    torch.set_num_threads(1)
    RUNNERS[kind](epochs, tmpdir("run"))


def instruction_rows(epochs: int = 2) -> list[Row]:
    """Instructions per epoch (callgrind): deterministic, unlike times on a shared machine."""
    name = "Real size (digits example, instructions)"
    if shutil.which("valgrind") is None:
        return [Row(name, "engine", "n/a", note="valgrind is not installed")]
    out = tmpdir("cg")
    counts = {}
    for kind, label in (("hand", "hand-written"), ("engine", "engine")):
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p"]
        cmd += [sys.executable, __file__, "--count-child", kind, "--epochs", str(epochs)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or not found:
            return [Row(name, label, "n/a", note=f"callgrind failed (exit {proc.returncode})")]
        counts[label] = int(found.group(1)) / (epochs - 1)
    shutil.rmtree(out, ignore_errors=True)
    base = counts["hand-written"]
    return [
        Row(
            name,
            label,
            f"{n / 1e6:.0f}M instr/epoch",
            n / base,
            "<= 1.02x" if label == "engine" else "",
            f"callgrind, epoch 2 of {epochs}" if label == "hand-written" else f"+{(n - base) / 1e6:.1f}M instr/epoch",
        )
        for label, n in counts.items()
    ]


def bench(args: argparse.Namespace) -> list[Row]:
    if args.child:
        child(args.child, args.epochs)
        return []
    if args.count_child:
        count_child(args.count_child, args.epochs)
        return []
    base, pl_pkg = packages(Path(tmpdir("digits")))
    if not has_digits(base / PACKAGE):
        return [Row(BENCH, "engine", "n/a", note="the template's digits model.py/data.py were not found")]
    sys.path.insert(0, str(base))
    torch.set_num_threads(1)
    root = tmpdir("run")
    epochs, n_rounds = (3, 2) if args.quick else (args.epochs, args.rounds)

    kinds = {"hand-written": "hand", "engine": "engine"}
    if pl_pkg is not None:
        kinds["Lightning"] = "lightning"
    names = list(kinds)
    epoch_times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n_rounds):  # the runs take turns epoch by epoch; each round rotates the order
        order = names[r % len(names) :] + names[: r % len(names)]
        blocks = take_turns(
            {name: (lambda tick, kind=kinds[name]: RUNNERS[kind](epochs, root, tick)) for name in order}
        )
        # Blocks: set-up, then one per epoch; the set-up and the first epoch (warm-up) dropped.
        base = blocks["hand-written"][2:]
        for name in names:
            epoch_times[name] += blocks[name][2:]
            ratios[name] += [v / b for v, b in zip(blocks[name][2:], base, strict=True)]
    base_time = median(epoch_times["hand-written"])
    rows = []
    for name in names:
        value = median(epoch_times[name])
        note = f"lockstep by epoch, {n_rounds} rounds x {epochs - 1} epochs, 1 thread, {CLOCK_NOTE}"
        if name != "hand-written":
            note = f"{'+' if value >= base_time else '-'}{fmt_time(abs(value - base_time))}/epoch"
        target = "<= 1.02x" if name == "engine" else ""
        rows.append(Row(BENCH, name, f"{fmt_time(value)}/epoch", median(ratios[name]), target, note))
    return rows + (instruction_rows() if args.instructions else [])


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--child", choices=sorted(RUNNERS), help="train once and print the peak RSS")
    p.add_argument("--instructions", action="store_true", help="also count instructions per epoch (valgrind)")
    p.add_argument("--count-child", choices=sorted(RUNNERS), help=argparse.SUPPRESS)


if __name__ == "__main__":
    main(bench, add_args)
