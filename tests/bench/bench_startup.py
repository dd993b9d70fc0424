"""Startup: import time and time to the first training step (fresh processes), and the CLI.

Each measurement is a new Python process, timed from launch to exit; variants alternate,
the first round (cold file cache, bytecode compilation) is dropped, and the table shows
medians. The first-step scripts exit with os._exit right after the first optimizer step, so
interpreter teardown is not counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import PACKAGE, Row, fmt_time, main, make_package, median, ratio, rounds, run_py, tmpdir

IMPORTS = "Startup: import"
FIRST = "Startup: launch to first training step (tiny MLP)"
CLI = "Startup: scaffold CLI (wall time)"

COMMON = """
import os, torch
from torch import nn
from torch.nn import functional as F
torch.manual_seed(0)
class Batches:  # an iterable, not a list (Lightning reads a list as several loaders)
    def __init__(self, n):
        self.items = [(torch.randn(32, 32), torch.randint(0, 10, (32,))) for _ in range(n)]
    def __len__(self):
        return len(self.items)
    def __iter__(self):
        return iter(self.items)
data = Batches(4)
def net():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
"""

# The same module for the engine and for Lightning: only the base class differs.
MODULE = """
class M({base}):
    def __init__(self):
        super().__init__()
        self.net = net()
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)
    def on_train_batch_end(self, *args):
        os._exit(0)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
"""

FIRST_STEP = {
    "hand-written": COMMON
    + """
model = net()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for x, y in data:
    F.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    os._exit(0)
""",
    "engine": COMMON.replace("import os, torch", f"import os, torch\nfrom {PACKAGE}.engine import Module, Trainer")
    + MODULE.format(base="Module")
    + """Trainer(max_epochs=1, accelerator="cpu", progress_bar=False, callbacks=[], logger=None,
        enable_checkpointing=False, enable_model_summary=False,
        default_root_dir=os.environ["BENCH_ROOT"]).fit(M(), train_dataloaders=data)
""",
    "Lightning": COMMON.replace("import os, torch", "import os, torch\nimport pytorch_lightning as pl")
    + MODULE.format(base="pl.LightningModule")
    + """pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
           enable_progress_bar=False, enable_model_summary=False,
           default_root_dir=os.environ["BENCH_ROOT"]).fit(M(), train_dataloaders=data)
""",
}


GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def lightning_module() -> str | None:
    for name in ("pytorch_lightning", "lightning.pytorch"):
        if run_py(f"import {name}")[1].returncode == 0:
            return name
    return None


def timed(code: str, env: dict[str, str]) -> float:
    seconds, proc = run_py(code, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{proc.stderr[-2000:]}")
    return seconds


def scaffold_cli() -> str | None:
    found = Path(sys.executable).with_name("scaffold")
    return str(found) if found.exists() else shutil.which("scaffold")


def cli_rows(n: int) -> list[Row]:
    exe = scaffold_cli()
    if exe is None:
        return [Row(CLI, "scaffold", "n/a", note="the scaffold CLI is not installed (ci/bench installs it)")]
    work = Path(tmpdir("cli"))
    made: list[Path] = []

    def run(*args: str) -> float:
        start = time.perf_counter()
        proc = subprocess.run([exe, *args], capture_output=True, text=True, env=GIT_ENV)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
            raise RuntimeError(f"scaffold {args[0]} exited {proc.returncode}: {lines[-1]}")
        return seconds

    def new() -> float:
        made.append(work / f"project{len(made)}")
        return run("new", str(made[-1]), "--defaults")

    def update() -> float:
        if not made:
            raise RuntimeError("no project to update (scaffold new failed)")
        dest = made.pop()
        if not (dest / ".git").exists():  # update wants a clean git tree
            subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=GIT_ENV)
        subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=GIT_ENV)
        subprocess.run(["git", "commit", "-qm", "project", "--allow-empty"], cwd=dest, check=True, env=GIT_ENV)
        return run("update", str(dest))

    rows = []
    commands = [
        ("scaffold --help", lambda: run("--help"), ""),
        ("scaffold new --defaults", new, "renders the digits example"),
        ("scaffold update", update, "already current: checks and exits"),
    ]
    for label, fn, note in commands:
        try:
            values = rounds({label: fn}, n)[label]
        except (RuntimeError, subprocess.CalledProcessError) as e:
            rows.append(Row(CLI, label, "n/a", note=str(e)[:160]))
            continue
        rows.append(Row(CLI, label, fmt_time(median(values)), note=note))
    shutil.rmtree(work, ignore_errors=True)
    return rows


def bench(args: argparse.Namespace) -> list[Row]:
    n = 2 if args.quick else args.rounds
    base = Path(tmpdir("startup"))
    make_package(base, PACKAGE, research=False)
    env = {
        "PYTHONPATH": str(base),
        "BENCH_ROOT": tmpdir("run"),
        "OMP_NUM_THREADS": "1",
    }
    lightning = lightning_module()
    rows: list[Row] = []

    imports = {"import torch": "import torch", f"import {PACKAGE}.engine": f"import {PACKAGE}.engine"}
    if lightning:
        imports[f"import {lightning}"] = f"import {lightning}"
    times = rounds({k: (lambda code=code: timed(code, env)) for k, code in imports.items()}, n)
    base_times = times["import torch"]
    for name, values in times.items():
        note = f"fresh process each, median of {n}" if name == "import torch" else ""
        if name.endswith(".engine"):
            note = "the engine under a parent package, as vendored"
        rows.append(Row(IMPORTS, name, fmt_time(median(values)), ratio(values, base_times), note=note))

    scripts = {k: v for k, v in FIRST_STEP.items() if k != "Lightning" or lightning == "pytorch_lightning"}
    times = rounds({k: (lambda code=code: timed(code, env)) for k, code in scripts.items()}, n)
    base_times = times["hand-written"]
    for name, values in times.items():
        rows.append(Row(FIRST, name, fmt_time(median(values)), ratio(values, base_times)))
    rows += cli_rows(n)
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=5)


if __name__ == "__main__":
    main(bench, add_args)
