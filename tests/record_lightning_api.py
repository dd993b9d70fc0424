"""Write Lightning's public extension points to tests/data/lightning_api.json (run under Lightning).

    .venv-bench/bin/python tests/record_lightning_api.py

The lists come from Lightning's classes themselves: the hooks of ModelHooks, DataHooks and
CheckpointHooks; LightningModule's and LightningDataModule's other public names (not those of
torch.nn.Module); Callback's hooks; the Trainer's public names and its arguments.
test_lightning_api.py checks engine/lightning_api.py against this file, so a name added in a
new Lightning release shows up as a failing test.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "lightning_api.json"


def public(cls: type, exclude: type | tuple[type, ...] = ()) -> list[str]:
    excluded = set().union(*(dir(c) for c in (exclude if isinstance(exclude, tuple) else (exclude,))))
    return sorted(n for n in dir(cls) if not n.startswith("_") and n not in excluded)


def main() -> None:
    import lightning
    import torch
    from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.core.hooks import CheckpointHooks, DataHooks, ModelHooks

    hooks = sorted({*public(ModelHooks), *public(DataHooks), *public(CheckpointHooks)})
    api = {
        "lightning": lightning.__version__,
        "module_hooks": hooks,
        "module": [n for n in public(LightningModule, torch.nn.Module) if n not in hooks],
        "datamodule": [n for n in public(LightningDataModule) if n not in hooks],
        "callback": public(Callback),
        "trainer": public(Trainer),
        "trainer_arguments": [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"],
    }
    OUT.write_text(json.dumps(api, indent=1) + "\n")
    print(f"{OUT}: " + ", ".join(f"{k} {len(v)}" for k, v in api.items() if isinstance(v, list)))


if __name__ == "__main__":
    main()
