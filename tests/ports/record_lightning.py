"""Run every port under PyTorch Lightning and record its numbers in the port's file.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 lightning pytest wandb rich
    .venv-bench/bin/python tests/ports/record_lightning.py            # print the numbers
    .venv-bench/bin/python tests/ports/record_lightning.py --write    # and rewrite each file's LIGHTNING block

Each port file imports the engine as ``engine`` (``import engine as pl``, ``from engine.callbacks
import ...``). Here ``engine`` *is* ``lightning.pytorch``: the very same module code and the same
``scenario()`` run under Lightning, so the recorded numbers are Lightning's for that code.

Lightning runs with the engine's sample order, so that a shuffled loader and a module that draws
random numbers (dropout, GAN noise) can be compared bit for bit. Two things differ by design and
are aligned here, in Lightning's data plumbing only (not in its loop, precision or optimizer code):
- order: the engine shuffles with ``torch.randperm(n, generator=Generator().manual_seed(seed +
  epoch))`` (resumable mid-epoch); ``RandomSampler`` is given that order, with seed 0, the
  engine's seed when the Trainer gets none;
- the global RNG: ``torch.utils.data.DataLoader`` draws a worker base seed from the global RNG
  each time the trainer starts iterating a loader (every epoch, every validation); the engine's
  loaders use their own generator (a resumed run must draw the same dropout masks). The global
  RNG state is kept across Lightning's ``iter(loader)``.
Without ``--aligned=no`` nothing else is touched; ``--aligned=no`` shows Lightning's own numbers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pprint
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
PORTS = sorted(p.stem for p in HERE.glob("test_port_*.py"))
ENGINE_SHUFFLE_SEED = 0  # the engine's sampler seed when Trainer(seed=...) is not given
BEGIN, END = "# -- recorded under Lightning (record_lightning.py --write) --", "# -- end of recorded numbers --"


def alias_engine_to_lightning() -> str:
    import lightning
    import lightning.pytorch as pl
    import lightning.pytorch.callbacks
    import lightning.pytorch.loggers
    import lightning.pytorch.utilities

    sys.modules["engine"] = pl
    for sub in ("callbacks", "loggers", "utilities", "core", "trainer", "tuner"):  # what the ports import
        sys.modules[f"engine.{sub}"] = importlib.import_module(f"lightning.pytorch.{sub}")
    return lightning.__version__


def align_data_plumbing() -> None:
    from lightning.pytorch.loops import fetchers
    from torch.utils.data import RandomSampler

    def set_epoch(self: RandomSampler, epoch: int) -> None:
        self._engine_epoch = epoch

    def engine_order(self: RandomSampler) -> Any:
        g = torch.Generator().manual_seed(ENGINE_SHUFFLE_SEED + getattr(self, "_engine_epoch", 0))
        return iter(torch.randperm(len(self.data_source), generator=g).tolist())

    RandomSampler.set_epoch = set_epoch  # Lightning calls it at every epoch start
    RandomSampler.__iter__ = engine_order

    original_iter = fetchers._DataFetcher.__iter__

    def iter_keeping_global_rng(self: Any) -> Any:
        state = torch.get_rng_state()
        try:
            return original_iter(self)
        finally:
            torch.set_rng_state(state)

    fetchers._DataFetcher.__iter__ = iter_keeping_global_rng


def run(name: str) -> dict[str, Any]:
    module = importlib.import_module(name)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # Lightning's default_root_dir and the ports' relative paths
        try:
            return module.scenario(Path(tmp))
        finally:
            os.chdir(cwd)


def write(name: str, version: str, numbers: dict[str, Any]) -> None:
    path = HERE / f"{name}.py"
    text = path.read_text()
    block = (
        f"{BEGIN}\n# lightning=={version}, torch=={torch.__version__}: "
        f".venv-bench/bin/python tests/ports/record_lightning.py --write\n"
        f"LIGHTNING = {pprint.pformat(numbers, width=100, sort_dicts=False)}\n{END}"
    )
    new, n = re.subn(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no single recorded block between the markers")
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ports", nargs="*", default=PORTS, help="port modules (default: all)")
    parser.add_argument("--write", action="store_true", help="rewrite each file's LIGHTNING block")
    parser.add_argument("--aligned", choices=("yes", "no"), default="yes", help="engine sample order (default yes)")
    args = parser.parse_args()
    os.environ.update(WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONHASHSEED="0")
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(HERE))
    version = alias_engine_to_lightning()
    if args.aligned == "yes":
        align_data_plumbing()
    torch.set_num_threads(1)
    for name in args.ports:
        numbers = {"cpu": torch.backends.cpu.get_cpu_capability(), **run(name)}
        print(f"== {name} (lightning {version})\n{pprint.pformat(numbers, width=100, sort_dicts=False)}", flush=True)
        if args.write:
            write(name, version, numbers)


if __name__ == "__main__":
    main()
