"""Run the scenarios of test_optimization_hooks.py (and test_lightning_rng_metrics.py) under
Lightning and record the numbers in the test file.

    .venv-bench/bin/python tests/record_lightning_hooks.py           # print them
    .venv-bench/bin/python tests/record_lightning_hooks.py --write   # rewrite the LIGHTNING block

(a venv with torch==2.13.0, lightning and pytest; see tests/ports/record_lightning.py). Here
``engine`` *is* ``lightning.pytorch``: the same scenario code runs under Lightning's loop.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pprint
import re
import sys
import tempfile
import types
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BEGIN, END = "# -- recorded under Lightning (record_lightning_hooks.py --write) --", "# -- end of recorded numbers --"
FILES = ("test_optimization_hooks", "test_lightning_rng_metrics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", default=list(FILES))
    parser.add_argument("--write", action="store_true", help="rewrite each file's LIGHTNING block")
    args = parser.parse_args()
    os.environ.update(PYTHONHASHSEED="0")
    warnings.filterwarnings("ignore")
    import lightning
    import lightning.pytorch as pl

    sys.modules["engine"] = pl
    try:
        import pytest  # noqa: F401
    except ImportError:  # the test module's decorators only: nothing of pytest runs here
        stub = types.ModuleType("pytest")
        stub.mark = types.SimpleNamespace(parametrize=lambda *a, **k: lambda f: f)  # type: ignore[attr-defined]
        stub.fixture = lambda *a, **k: (lambda f: f) if not (a and callable(a[0])) else a[0]  # type: ignore[attr-defined]
        sys.modules["pytest"] = stub
    sys.path.insert(0, str(HERE))
    torch.set_num_threads(1)
    for name in args.files:
        test = importlib.import_module(name)
        numbers = {}
        for scenario, fn in test.SCENARIOS.items():
            with tempfile.TemporaryDirectory() as tmp:
                cwd = os.getcwd()
                os.chdir(tmp)
                try:
                    numbers[scenario] = fn(Path(tmp))
                finally:
                    os.chdir(cwd)
        text = pprint.pformat(numbers, width=110, sort_dicts=False)
        print(f"== {name} (lightning {lightning.__version__})\n{text}", flush=True)
        if args.write:
            path = HERE / f"{name}.py"
            block = (
                f"{BEGIN}\n# lightning=={lightning.__version__}, torch=={torch.__version__}\n"
                f"LIGHTNING: dict[str, Any] = {text}\n{END}"
            )
            new, n = re.subn(
                re.escape(BEGIN) + r".*?" + re.escape(END), lambda _, b=block: b, path.read_text(), flags=re.S
            )
            if n != 1:
                raise SystemExit(f"{path}: no single recorded block between the markers")
            path.write_text(new)


if __name__ == "__main__":
    main()
