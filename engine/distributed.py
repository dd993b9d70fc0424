"""torch.distributed in a few verbs: each does nothing extra in a single process.

Processes come from `torchrun` (or from `launch`, which calls torch's own elastic launcher
when `trainer.devices > 1`). Rank, world size and the rendezvous come from the environment.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce a tensor over processes: sum, mean, max or min."""
        if not self.active:
            return tensor
        out = tensor.clone()
        reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(out, op=reduce_op[op])
        return out / self.world_size if op == "mean" else out

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any (stop decisions, preemption)."""
        if not self.active:
            return flag
        t = torch.tensor(float(flag), device=self.device)
        return bool(self.all_reduce(t, "max").item())

    def broadcast_object(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def select_device(accelerator: str, local_rank: int) -> torch.device:
    if accelerator in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if accelerator == "cuda":
        raise RuntimeError("trainer.accelerator=cuda but no CUDA GPU is visible; use trainer.accelerator=cpu")
    mps = getattr(torch.backends, "mps", None)
    if accelerator in ("auto", "mps") and mps is not None and mps.is_available():
        return torch.device("mps")
    if accelerator == "mps":
        raise RuntimeError("trainer.accelerator=mps but MPS is not available; use trainer.accelerator=cpu")
    return torch.device("cpu")


def setup(accelerator: str) -> DistEnv:
    """Join the process group that torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(accelerator, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def under_launcher() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(devices: int, module: str, argv: list[str]) -> int:
    """Start `devices` processes of ``python -m module argv`` through torch's elastic launcher."""
    from torch.distributed.run import get_args_parser, run  # lazy: only multi-process runs need it

    args = get_args_parser().parse_args(
        ["--nproc_per_node", str(devices), "--standalone", "-m", module, *argv]
    )
    try:
        run(args)
    except Exception as exc:  # ChildFailedError carries the failing rank's traceback
        print(exc, file=sys.stderr)
        return 1
    return 0


class ResumableSampler(Sampler[int]):
    """Seeded shuffle per epoch, sharded over processes, able to start mid-epoch.

    Order depends only on (seed, epoch), so a resumed run replays exactly the batches an
    uninterrupted run would see; `start` skips the samples the checkpoint already consumed.
    """

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int, world_size: int, pad: bool) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.world_size > 1:
            if self.pad:  # training: equal shards so every process takes the same number of steps
                total = -(-self.length // self.world_size) * self.world_size
                order += order[: total - len(order)]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self):
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return len(self._indices()) - self.start


def prepare_loader(loader: Any, env: DistEnv, seed: int, train: bool) -> Any:
    """Rebuild a DataLoader around a ResumableSampler; other iterables pass through.

    The rebuilt loader has its own generator, so creating its iterator never consumes the
    global RNG (which would make a resumed run draw different dropout masks).
    """
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        return loader
    sampler = loader.sampler
    if isinstance(sampler, (RandomSampler, DistributedSampler)):
        shuffle = getattr(sampler, "shuffle", True)
    elif isinstance(sampler, SequentialSampler):
        shuffle = False
    else:
        if env.active:
            raise ValueError(
                f"the {'train' if train else 'validation'} DataLoader uses a custom sampler "
                f"({type(sampler).__name__}); under DDP use shuffle=True/False and let the engine shard it"
            )
        return loader
    new_sampler = ResumableSampler(len(loader.dataset), shuffle, seed, env.rank, env.world_size, pad=train)
    kwargs = dict(
        batch_size=loader.batch_size,
        sampler=new_sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)
