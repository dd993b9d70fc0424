"""``torchrun --nproc_per_node=2 -m ddpjob.stops OUT``: agreement checks, several fits in one launch.

Each scenario stops (or fails) on one rank only; every rank writes what it saw to
``OUT/stops-rank<r>.json`` for the test to compare.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .engine import Trainer, seed_everything
from .engine import distributed as D
from .job import DataConfig, ModelConfig, RankStop, ToyClassifier, ToyData


class NanOnRank1(ToyClassifier):
    """A loss that is not finite on rank 1 only, from step 2 on."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.trainer.env.rank == 1 and self.trainer.global_step >= 2:
            return loss * float("nan")
        return loss


SCENARIOS: dict[str, dict[str, Any]] = {
    # name: ModelConfig overrides, Trainer overrides
    "batch_end": {"model": {"stop_hook": "on_train_batch_end", "stop_step": 3}},
    "mid_window": {"model": {"stop_hook": "training_step", "stop_step": 2}, "trainer": {"accumulate_grad_batches": 2}},
    "epoch_end": {"model": {"stop_hook": "on_train_epoch_end", "stop_step": 1}},
    "epoch_start": {"model": {"stop_hook": "on_train_epoch_start", "stop_step": 1}},
    "val_end": {"model": {"stop_hook": "on_validation_end", "stop_step": 1}, "trainer": {"val_check_interval": 2}},
    "nonfinite": {"module": NanOnRank1},
}


def fit(name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    seed_everything(42)
    cfg = replace(ModelConfig(), **spec.get("model", {}))
    module = spec.get("module", ToyClassifier)(cfg)
    trainer = Trainer(
        max_epochs=3,
        accelerator="cpu",
        seed=42,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        progress_bar=False,
        default_root_dir=out / name,
        callbacks=[RankStop(cfg)],
        **spec.get("trainer", {}),
    )
    trainer.fit(module, datamodule=ToyData(DataConfig(batch_size=8, n_train=64, n_val=17)))
    return {
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "batches_done": trainer.fit_loop.state.batches_done,
        "stop_reason": trainer.stop_reason,
    }


def verbs(env: D.DistEnv) -> dict[str, Any]:
    x = torch.tensor([float(env.rank + 1)])
    return {
        "sum": env.all_reduce(x, "sum").item(),
        "mean": env.all_reduce(x, "mean").item(),
        "max": env.all_reduce(x, "max").item(),
        "min": env.all_reduce(x, "min").item(),
        "any_rank1": env.any(env.rank == 1),
        "any_none": env.any(False),
        "broadcast": env.broadcast_object({"from": env.rank}),
        "gather": env.gather_object(env.rank * 10),
        "input_unchanged": x.item() == env.rank + 1,
    }


def main(out: Path) -> None:
    env = D.setup("cpu")
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"rank": env.rank, "verbs": verbs(env)}
    env.barrier()
    for name, spec in SCENARIOS.items():
        record[name] = fit(name, spec, out)
    try:  # SyncBatchNorm has no CPU kernel: the engine says so before training starts
        Trainer(
            max_epochs=1, accelerator="cpu", sync_batchnorm=True, progress_bar=False, default_root_dir=out / "syncbn"
        ).fit(ToyClassifier(), datamodule=ToyData())
        record["syncbn_error"] = None
    except ValueError as exc:
        record["syncbn_error"] = str(exc)
    (out / f"stops-rank{env.rank}.json").write_text(json.dumps(record, indent=1))
    D.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
