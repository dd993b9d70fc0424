"""``torchrun --nproc_per_node=2 -m ddpjob.fsdp_options OUT``: strategy=fsdp's options, one fit each.

Every scenario trains the same small classifier on the same data; each rank writes the full
weights, parameter dtypes and any error to ``OUT/options-rank<r>.pt`` for the test to compare.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from .engine import Trainer, seed_everything
from .engine import distributed as D
from .job import DataConfig, ModelConfig, ToyClassifier, ToyData
from .manual import GAN, GLOBAL_BATCH, gan_data


class BuiltInConfigureModel(ToyClassifier):
    """Builds a layer in configure_model and shards it there itself (as for models built under sharding)."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        if not hasattr(self, "head"):
            self.head = nn.Linear(3, 3)
            with torch.no_grad():
                self.head.weight.copy_(torch.eye(3))
                self.head.bias.zero_()
            fully_shard(self.head)
            fully_shard(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


SCENARIOS: dict[str, dict[str, Any]] = {
    "ddp": {"strategy": "ddp"},
    "default": {},
    "options": {
        "fsdp": {
            "wrap": ["Linear"],
            "activation_checkpointing": ["Linear"],
            "cpu_offload": True,
            "reshard_after_forward": False,
        }
    },
    "bf16-mixed": {"precision": "bf16-mixed"},
    "bf16-true": {"precision": "bf16-true"},
    "16-mixed": {"precision": "16-mixed"},
    "bad-wrap": {"fsdp": {"wrap": ["Block"]}},
    "configure_model": {"module": BuiltInConfigureModel},
}


def fit(name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    seed_everything(42)
    spec = dict(spec)
    module = spec.pop("module", ToyClassifier)(ModelConfig())
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        seed=42,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        progress_bar=False,
        enable_checkpointing=False,
        gradient_clip_val=0.5,
        default_root_dir=out / name,
        **{"strategy": "fsdp", **spec},
    )
    try:
        trainer.fit(module, datamodule=ToyData(DataConfig(batch_size=8, n_train=64, n_val=17)))
    except ValueError as e:
        return {"error": str(e)}
    return _record(trainer, module)


def _record(trainer: Trainer, module: nn.Module) -> dict[str, Any]:
    full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in module.state_dict().items()}
    return {
        "weights": {k: v.detach().float().cpu() for k, v in full.items()},
        "dtypes": sorted({str(p.dtype) for p in module.parameters()}),
        "sharded": sorted(type(m).__name__ for m in module.modules() if type(m).__name__.startswith("FSDP")),
        "global_step": trainer.global_step,
        "val_loss": trainer.callback_metrics.get("val_loss"),
    }


def manual(strategy: str, out: Path) -> dict[str, Any]:
    """The GAN of test_manual_optimization (two optimizers, toggling) under `strategy`."""
    module = GAN()
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        seed=1,
        progress_bar=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        strategy=strategy,
        default_root_dir=out / f"gan-{strategy}",
    )
    trainer.fit(module, DataLoader(gan_data(), batch_size=GLOBAL_BATCH // trainer_world(), shuffle=True))
    return _record(trainer, module)


def reload(out: Path) -> dict[str, Any]:
    """Fit with checkpoints, then validate from the last one: the same module, and a fresh one."""
    data = ToyData(DataConfig(batch_size=8, n_train=64, n_val=17))
    kwargs = dict(accelerator="cpu", seed=42, progress_bar=False, strategy="fsdp", default_root_dir=out / "reload")
    seed_everything(42)
    module = ToyClassifier(ModelConfig())
    trainer = Trainer(max_epochs=2, num_sanity_val_steps=0, **kwargs)
    trainer.fit(module, datamodule=data)
    last = trainer.checkpoint_callback.best_model_path  # the default callback: the newest epoch's checkpoint
    same = trainer.validate(module, datamodule=data, ckpt_path=last)[0]
    # An iterable data set sharded by rank: 9 samples (3 batches) on rank 0, 8 (2 batches) on rank 1.
    uneven = trainer.validate(module, dataloaders=DataLoader(RankShard(data.val), batch_size=4))[0]
    seed_everything(7)  # other initial weights: the checkpoint must replace them
    fresh = Trainer(**kwargs).validate(ToyClassifier(ModelConfig()), datamodule=data, ckpt_path=last)[0]
    return {
        "fit": trainer.callback_metrics["val_loss"],
        "same": same["val_loss"],
        "fresh": fresh["val_loss"],
        "uneven": uneven,
    }


class RankShard(IterableDataset):
    """Samples rank, rank + world_size, ...: ranks yield different numbers of batches."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __iter__(self) -> Any:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return (self.data[i] for i in range(rank, len(self.data), world))


def trainer_world() -> int:
    return torch.distributed.get_world_size()


def main(out: Path) -> None:
    env = D.setup("cpu")
    out.mkdir(parents=True, exist_ok=True)
    results = {name: fit(name, spec, out) for name, spec in SCENARIOS.items()}
    results["reload"] = reload(out)
    for strategy in ("ddp", "fsdp"):
        results[f"gan-{strategy}"] = manual(strategy, out)
    torch.save(results, out / f"options-rank{env.rank}.pt")
    D.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
