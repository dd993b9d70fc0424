"""How the module runs over processes: one process, DDP or FSDP, behind one object (`Strategy`).

The Trainer goes through `setup` (FSDP shards before the optimizers are made), `wrap` (compile,
then DDP, after any checkpoint was loaded: pytorch/examples' order) and `release` (free the
DDP wrapper when a verb ends); the loops train through `strategy.step_fn`. FSDP's own
mechanics are in fsdp.py.
"""

from __future__ import annotations

import gc
import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import distributed as D
from . import fsdp as FSDP
from .precision import NULL_CONTEXT

if TYPE_CHECKING:
    from .module import Module
    from .trainer import Trainer


# Lightning's accelerator names -> the engine's.
ACCELERATORS = {"auto": "auto", "cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}


def parse_strategy(strategy: Any, find_unused_parameters: bool) -> tuple[str, bool]:
    """Lightning's strategy strings -> "auto", "ddp" (DDP runs when processes are launched) or "fsdp"."""
    name = str(strategy) if isinstance(strategy, str) else type(strategy).__name__
    if name in ("auto", "single_device"):
        return "auto", find_unused_parameters
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_false"):
        return "ddp", find_unused_parameters
    if name in ("ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_true"):
        return "ddp", True
    if name.lower().startswith(("fsdp", "modelparallel")):
        return "fsdp", find_unused_parameters
    raise ValueError(
        f"strategy={name!r} is not supported; use 'auto', 'ddp' (also 'ddp_spawn', run as 'ddp') or 'fsdp'"
    )


def parse_devices(devices: Any) -> int | list[int] | None:
    """Lightning's forms: "auto" (None: one per process), an int (-1: all), "2", "0,1", [0, 1]."""
    if devices == "auto" or devices is None:
        return None
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return [int(d) for d in text.split(",") if d.strip()]
        devices = int(text) if text.lstrip("-").isdigit() else devices
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices == -1:
            return max(1, torch.cuda.device_count())
        if devices >= 1:
            return devices
    raise ValueError(f"devices={devices!r}: use 'auto', a count (1, 2, -1 for all), '0,1' or a list of indices")


def training_step_fn(module: Module) -> Callable[[Any, int], Any]:
    """`module.training_step` called as (batch, batch_idx), also when it takes only the batch
    (Lightning inspects the signature and allows both)."""
    step = module.training_step
    try:
        params = list(inspect.signature(step).parameters.values())
    except (TypeError, ValueError):
        return step
    kinds = [p.kind for p in params]
    if inspect.Parameter.VAR_POSITIONAL in kinds or len(params) >= 2:
        return step
    return lambda batch, batch_idx: step(batch)


class StepWrapper(nn.Module):
    """Routes training_step through forward, so DDP sees the call and syncs gradients."""

    def __init__(self, module: Module) -> None:
        super().__init__()
        self.module = module
        self.step = training_step_fn(module)

    def forward(self, batch: Any, batch_idx: int) -> Any:
        return self.step(batch, batch_idx)


class BackwardGate(nn.Module):
    """Manual optimization under DDP: `manual_backward` passes the loss through DDP's forward.

    training_step calls backward and steps before it returns, so it cannot run inside DDP's
    forward (DDP readies its gradient sync after forward returns). Passing each loss through
    this identity forward is DDP's public contract, forward then backward, once per backward.
    """

    def __init__(self, module: Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss


class Strategy(str):
    """`trainer.strategy`: its name ('auto', 'ddp' or 'fsdp': a str, as the config's value), and what
    runs the module over processes.

    Owns the wrapped module: `step_fn` is what the loops call as the training step, `ddp` and
    `fsdp` the wrappers (None when not in use); `no_sync` and `sync_without_loss` are the
    gradient-sync decisions of an accumulation window.
    """

    def __new__(cls, name: str, *args: Any, **kwargs: Any) -> Strategy:
        return super().__new__(cls, name)

    def __init__(
        self, name: str, find_unused_parameters: bool, fsdp_options: FSDP.FSDPOptions, devices: Any = "auto"
    ) -> None:
        self.find_unused_parameters, self.fsdp_options = find_unused_parameters, fsdp_options
        self.devices = parse_devices(devices)  # None (one per process), a count, or the GPU indices
        self.step_fn: Callable[[Any, int], Any] | None = None
        self.ddp: nn.Module | None = None
        self.fsdp: FSDP.Sharded | None = None  # strategy=fsdp with a process group: the sharded module
        self.ddp_buffers: list[torch.Tensor] = []  # manual optimization under DDP: broadcast each batch

    def setup(self, trainer: Trainer, module: Module) -> None:
        """A verb starts: the plain training step; strategy=fsdp shards (before the optimizers are made)."""
        self.step_fn = training_step_fn(module)
        if self != "fsdp":
            return
        if not trainer.env.active:
            warnings.warn(
                "strategy='fsdp' in a single process has nothing to shard over: training unsharded. Launch with "
                "`torchrun --nproc_per_node=N` (or trainer.devices=N) to shard",
                UserWarning,
                stacklevel=4,
            )
            return
        if self.fsdp is None or self.fsdp.module is not module:
            from torch.distributed.fsdp import FSDPModule

            if not isinstance(module, FSDPModule):
                if trainer.sync_batchnorm:  # before sharding: the converted layers are sharded with the rest
                    _sync_batchnorm(trainer, module)
                FSDP.shard(module, self.fsdp_options, trainer.precision_name)
            self.fsdp = FSDP.Sharded(module, training_step_fn(module), self.fsdp_options.reshard_after_forward)
        self.step_fn = self.fsdp

    def wrap(self, trainer: Trainer, module: Module, automatic: bool = True) -> None:
        """Compile, then wrap in DDP (after any checkpoint was loaded: pytorch/examples' order)."""
        if trainer.compile:
            self._compile(module)
        if self.fsdp is not None:
            # Sharded by `setup`; FSDP syncs gradients itself. Manual optimization too runs its
            # training_step (backward and steps included) through the root's forward.
            self.step_fn = self.fsdp
            return
        if not trainer.env.active:
            return
        if trainer.sync_batchnorm:
            _sync_batchnorm(trainer, module)
        from torch.nn.parallel import DistributedDataParallel

        ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        if automatic:
            self.ddp = DistributedDataParallel(
                StepWrapper(module), device_ids=ids, find_unused_parameters=self.find_unused_parameters
            )
            self.step_fn = self.ddp
        else:
            # Unused parameters are looked for: a toggled backward (a GAN's) reaches only some.
            self.ddp = DistributedDataParallel(BackwardGate(module), device_ids=ids, find_unused_parameters=True)
            # Buffers are broadcast by the loop before each training_step (as DDP does before its
            # forward): DDP broadcasting them at manual_backward would change tensors the graph saved.
            # (Set after construction: the constructor's spelling of it differs across torch versions.)
            self.ddp.broadcast_buffers = False
            self.ddp_buffers = list(module.buffers())

    def no_sync(self, skip_sync: bool, restore: bool = False) -> Any:
        """Inside an accumulation window, DDP need not all-reduce until the last micro-batch."""
        if skip_sync and self.ddp is not None:
            return self.ddp.no_sync()
        if self.fsdp is not None:  # FSDP: a flag read in backward, set before every micro-batch
            return self.fsdp.gradient_sync(not skip_sync, restore=restore)
        return NULL_CONTEXT

    def sync_without_loss(self, trainer: Trainer, batch_idx: int) -> None:
        """DDP: training_step returned None on the micro-batch where gradients are all-reduced (the
        last of a window). Without a backward the reducer never runs: the window's gradients stay
        local and the replicas drift apart, silently. A zero loss over every trainable parameter
        runs it, so every rank steps with the same averaged gradients (this batch adds nothing)."""
        if self.find_unused_parameters:  # DDP saw no output to search: a hook would mark a parameter twice
            raise RuntimeError(
                f"training_step returned None on batch {batch_idx}, where DDP all-reduces the gradients "
                "(the last micro-batch of an accumulation window); with find_unused_parameters=True the engine "
                "cannot sync without a loss: return a zero loss there instead (e.g. `return loss * 0`)"
            )
        params = [p for p in trainer.module.parameters() if p.requires_grad]
        if params:
            trainer.precision.backward(sum(p.sum() for p in params) * 0.0)

    def _compile(self, module: Module) -> None:
        """trainer.compile: torch.compile the module in place; under FSDP each sharded block instead.

        Under FSDP the training step runs through the root's forward (`FSDP.redirect`), so
        compiling the root would trace the whole step (its logging, its Python) with graph breaks
        and recompiles; the blocks are what TorchTitan compiles, with FSDP's hooks left to run eagerly.
        """
        if self.fsdp is None:
            module.compile()
            return
        from torch.distributed.fsdp import FSDPModule

        blocks: dict[str, nn.Module] = {}  # the outermost sharded modules below the root
        for name, m in module.named_modules():
            if m is not module and isinstance(m, FSDPModule) and not any(name.startswith(f"{b}.") for b in blocks):
                blocks[name] = m
        for block in blocks.values() or [module]:
            block.compile()

    def release(self) -> None:
        """Free the DDP wrapper now: its reducer holds the process group, and left to the garbage
        collector at interpreter exit (DDP sits in reference cycles), gloo's threads abort the
        process ("terminate called without an active exception")."""
        if self.ddp is not None:
            self.ddp, self.step_fn, self.ddp_buffers = None, None, []
            gc.collect()


def _sync_batchnorm(trainer: Trainer, module: Module) -> None:
    """trainer.sync_batchnorm: BatchNorm layers normalise over the whole global batch (in place)."""
    if trainer.device.type == "cpu":
        raise ValueError(
            "trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm does not run on CPU "
            "processes (gloo); set trainer.sync_batchnorm=false for CPU runs"
        )
    nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces the layers inside `module` in place


def setup_environment(trainer: Trainer) -> None:
    """A verb starts: determinism and thread settings, the process group and this process's device."""
    if trainer.deterministic:
        # True: a non-deterministic op raises (Lightning's meaning; what exact GPU resume needs);
        # "warn": it only warns.
        torch.use_deterministic_algorithms(True, warn_only=trainer.deterministic == "warn")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if trainer.num_threads is not None:
        # Small models gain nothing from more threads, and lose badly when cores are shared.
        torch.set_num_threads(trainer.num_threads)
    if trainer.benchmark is not None or trainer.deterministic:
        torch.backends.cudnn.benchmark = bool(trainer.benchmark) and not trainer.deterministic
    strategy = trainer.strategy
    env = D.setup(trainer.accelerator, cpu_collectives=strategy == "fsdp" and strategy.fsdp_options.cpu_offload)
    ids = strategy.devices
    if isinstance(ids, list) and env.device.type == "cuda":  # devices=[2, 3]: these GPUs
        env = replace(env, device=torch.device("cuda", ids[env.local_rank % len(ids)]))
        torch.cuda.set_device(env.device)
    trainer.env = env
    if trainer.num_devices > 1 and not env.active:
        warnings.warn(
            f"devices={trainer.devices!r} asks for {trainer.num_devices} processes, but this one runs alone: launch "
            f"with `torchrun --nproc_per_node={trainer.num_devices} your_script.py` to train on all of them",
            UserWarning,
            stacklevel=4,
        )
