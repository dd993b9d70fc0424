"""Shared pieces of the benchmarks: the engine under a parent package, timing, result rows.

Each bench_*.py script prints its rows as one JSON line (``--json``) or as a small table;
run_all.py runs every script in its own process and prints the markdown table.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"
TEMPLATE_SRC = ROOT / "template" / "project" / "src" / "{{package_name}}"
PACKAGE = "benchpkg"  # the parent package the engine is imported under, as in a generated project

# In-process comparisons time the training thread's CPU time by default: on a shared machine,
# time spent descheduled is noise, not overhead (each run is one thread). BENCH_CLOCK=wall
# times wall clock instead.
CLOCK_NAME = os.environ.get("BENCH_CLOCK", "cpu")
clock: Callable[[], float] = time.thread_time if CLOCK_NAME == "cpu" else time.perf_counter
CLOCK_NOTE = "thread CPU time" if CLOCK_NAME == "cpu" else "wall clock"


@dataclass
class Row:
    """One line of the results table."""

    bench: str
    run: str
    result: str
    ratio: float | None = None  # against the benchmark's baseline row
    target: str = ""  # e.g. "<= 1.05x"; judged against `ratio`
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if not self.target or self.ratio is None:
            return None
        op, bound = self.target.split()
        value = float(bound.rstrip("x%"))
        if bound.endswith("%"):
            value /= 100
        return self.ratio <= value if op == "<=" else self.ratio >= value


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(values: Sequence[float], baseline: Sequence[float]) -> float:
    """Median over median: the table's ratios (runs alternate, so drift hits both alike)."""
    return median(values) / median(baseline)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def make_package(dest: Path, name: str = PACKAGE, research: bool = True) -> Path:
    """Lay out ``dest/name/`` like a generated project's package: the engine vendored inside.

    With `research`, the template's digits model.py and data.py are copied in too, so the
    benchmarks train the same code that `scaffold new` generates. Returns the folder to put
    on sys.path.
    """
    pkg = dest / name
    if pkg.exists():
        return dest
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copytree(ENGINE, pkg / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    if research:
        for wanted in ("model.py", "data.py"):
            found = [p for p in TEMPLATE_SRC.glob(f"*{wanted}*") if "digits" in p.name] if TEMPLATE_SRC.is_dir() else []
            if found:
                shutil.copy(found[0], pkg / wanted)
    return dest


def tmpdir(label: str) -> str:
    """A fresh temporary folder (under BENCH_TMP if set), removed when this process exits."""
    path = tempfile.mkdtemp(prefix=f"scaffold-bench-{label}-", dir=os.environ.get("BENCH_TMP"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def import_package(name: str = PACKAGE) -> Any:
    """Import ``<name>`` and ``<name>.engine`` from a fresh temporary layout (see `make_package`)."""
    base = Path(tmpdir("pkg"))
    sys.path.insert(0, str(make_package(base, name)))
    importlib.import_module(f"{name}.engine")
    return importlib.import_module(name)


def import_lightning() -> Any:
    """`pytorch_lightning` (or `lightning.pytorch`) with its logs and warnings silenced; None if absent."""
    try:
        import pytorch_lightning as pl
    except ImportError:
        try:
            import lightning.pytorch as pl
        except ImportError:
            return None
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    return pl


def lightning_trainer(pl: Any, root: str, **kwargs: Any) -> Any:
    """A Lightning Trainer on one CPU with what the engine runs without turned off (logger,
    checkpoints, progress bar, model summary)."""
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


def has_digits(pkg_dir: Path) -> bool:
    return (pkg_dir / "model.py").is_file() and (pkg_dir / "data.py").is_file()


def rounds(variants: dict[str, Callable[[], Any]], n: int, warmup: int = 1) -> dict[str, list[Any]]:
    """Call each variant `n + warmup` times, interleaved and rotated; drop the warm-up rounds."""
    names = list(variants)
    out: dict[str, list[Any]] = {k: [] for k in names}
    for r in range(n + warmup):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            value = variants[k]()
            if r >= warmup:
                out[k].append(value)
    return out


def run_py(
    code_or_path: str | Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[float, subprocess.CompletedProcess]:
    """Run python (a script path or ``-c`` code) in a fresh process; wall seconds and the result."""
    cmd = (
        [sys.executable, str(code_or_path), *args]
        if isinstance(code_or_path, Path)
        else [sys.executable, "-c", code_or_path, *args]
    )
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return time.perf_counter() - start, proc


class TimedBatches:
    """`n` batches cycled from a fixed list, stamping the time each one is taken.

    Every loop under test draws from the same object, so the stamps cost all of them the
    same; the gaps between stamps are whole training steps.
    """

    def __init__(self, batches: list[Any], n: int) -> None:
        self.batches, self.n = batches, n
        self.stamps: list[float] = []

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        stamps, batches, k, now = self.stamps, self.batches, len(self.batches), clock
        stamps.clear()
        for i in range(self.n):
            stamps.append(now())
            yield batches[i % k]
        stamps.append(now())

    def step_time(self, skip: int) -> float:
        """Mean seconds per step after the first `skip` steps (periodic work included)."""
        s = self.stamps
        return (s[-2] - s[skip]) / (len(s) - 2 - skip)


class Baton:
    """Lets one of several threads run at a time, passed on in a fixed rotation."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.turn, self.done = names, 0, set[str]()
        self.cond = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.names[self.turn] == name)

    def pass_on(self, finished: str | None = None) -> None:
        with self.cond:
            if finished:
                self.done.add(finished)
            for _ in self.names:  # the next run that has not finished
                self.turn = (self.turn + 1) % len(self.names)
                if self.names[self.turn] not in self.done:
                    break
            self.cond.notify_all()


class Ticker:
    """A run's turn marks: each call ends a block (its CPU time is kept) and waits for the next turn."""

    def __init__(self, name: str, baton: Baton) -> None:
        self.name, self.baton = name, baton
        self.blocks: list[float] = []
        self.start: float | None = None

    def __call__(self) -> None:
        if self.start is not None:
            self.blocks.append(clock() - self.start)
        self.baton.pass_on()
        self.baton.wait(self.name)
        self.start = clock()


def take_turns(runs: dict[str, Callable[[Ticker], Any]]) -> dict[str, list[float]]:
    """Run each of `runs` in its own thread, one at a time, passing the turn at each tick.

    A run calls its ticker at every block boundary (every few ms of steps, every epoch);
    returns the CPU seconds of each run's blocks. Alternating whole runs compares moments
    seconds apart, and a shared machine changes its speed within seconds; blocks put the
    compared work side by side. A thread runs only in its turn (set-up included).
    """
    names = list(runs)
    baton = Baton(names)
    tickers = {name: Ticker(name, baton) for name in names}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        baton.wait(name)
        tickers[name].start = clock()
        try:
            runs[name](tickers[name])
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller)
            errors.append(e)
        finally:
            baton.pass_on(finished=name)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {name: tickers[name].blocks for name in names}


class LockstepBatches(TimedBatches):
    """`n` batches that tick every `block` steps (see `take_turns`)."""

    def __init__(self, batches: list[Any], n: int, tick: Ticker, block: int) -> None:
        super().__init__(batches, n)
        self.tick, self.block = tick, block

    def __iter__(self) -> Iterator[Any]:
        batches, k = self.batches, len(self.batches)
        self.tick()  # the first block starts with the first batch
        for i in range(self.n):
            if i and i % self.block == 0:
                self.tick()
            yield batches[i % k]
        self.tick()  # (not reached by a loop that stops before the end)


def lockstep(
    fits: dict[str, Callable[[Any], None]], batches: list[Any], steps: int, block: int
) -> dict[str, list[float]]:
    """The `fits` trained on `steps` batches in turns of `block` steps; seconds per step of each block."""
    runs = {
        name: (lambda tick, fit=fit: fit(LockstepBatches(batches, steps, tick, block))) for name, fit in fits.items()
    }
    blocks = take_turns(runs)
    # The block before the first batch (set-up) is not a block of steps.
    return {name: [b / block for b in values[1:]] for name, values in blocks.items()}


def main(
    bench: Callable[[argparse.Namespace], list[Row]], add_args: Callable[[argparse.ArgumentParser], None] | None = None
) -> None:
    """Command line of a bench script: ``--json`` prints rows for run_all.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    if add_args:
        add_args(parser)
    args = parser.parse_args()
    rows = bench(args)
    if args.json:
        print("BENCH-ROWS " + json.dumps([asdict(r) for r in rows]))
    else:
        for r in rows:
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
            print(f"{r.bench:40} {r.run:28} {r.result:>14} {ratio:>7} {r.target:>9} {r.note}")
