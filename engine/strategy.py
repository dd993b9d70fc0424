"""How the module runs over processes: one process, DDP or FSDP, behind one seam.

The Trainer goes through `shard` (FSDP: before the optimizers are made), `wrap` (compile,
then DDP, after any checkpoint was loaded: pytorch/examples' order) and `release` (free the
DDP wrapper when a verb ends); both then train through `trainer._step_fn`. FSDP's own
mechanics are in fsdp.py. Each function takes the Trainer first (this file never imports
trainer.py).
"""

from __future__ import annotations

import gc
import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from . import fsdp as FSDP
from . import manual

if TYPE_CHECKING:
    from .module import Module
    from .trainer import Trainer


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


def shard(trainer: Trainer, module: Module) -> None:
    """strategy=fsdp: shard the module over the processes (before its optimizers are made)."""
    if trainer.strategy != "fsdp":
        return
    if not trainer.env.active:
        warnings.warn(
            "strategy='fsdp' in a single process has nothing to shard over: training unsharded. Launch with "
            "`torchrun --nproc_per_node=N` (or trainer.devices=N) to shard",
            UserWarning,
            stacklevel=4,
        )
        return
    if trainer._fsdp is None or trainer._fsdp.module is not module:
        from torch.distributed.fsdp import FSDPModule

        if not isinstance(module, FSDPModule):
            if trainer.sync_batchnorm:  # before sharding: the converted layers are sharded with the rest
                _sync_batchnorm(trainer, module)
            FSDP.shard(module, trainer.fsdp_options, trainer.precision_name)
        trainer._fsdp = FSDP.Sharded(module, training_step_fn(module), trainer.fsdp_options.reshard_after_forward)
    trainer._step_fn = trainer._fsdp


def wrap(trainer: Trainer, module: Module) -> None:
    """Compile, then wrap in DDP (after any checkpoint was loaded)."""
    if trainer.compile:
        _compile(trainer, module)
    if trainer._fsdp is not None:
        # Sharded by `shard`; FSDP syncs gradients itself. Manual optimization too runs its
        # training_step (backward and steps included) through the root's forward.
        trainer._step_fn = trainer._fsdp
        return
    if not trainer.env.active:
        return
    if trainer.sync_batchnorm:
        _sync_batchnorm(trainer, module)
    from torch.nn.parallel import DistributedDataParallel

    ids = [trainer.device.index] if trainer.device.type == "cuda" else None
    if trainer._automatic:
        trainer._ddp = DistributedDataParallel(
            StepWrapper(module), device_ids=ids, find_unused_parameters=trainer.find_unused_parameters
        )
        trainer._step_fn = trainer._ddp
    else:
        # Unused parameters are looked for: a toggled backward (a GAN's) reaches only some.
        trainer._ddp = DistributedDataParallel(manual.BackwardGate(module), device_ids=ids, find_unused_parameters=True)
        # Buffers are broadcast by the loop before each training_step (as DDP does before its
        # forward): DDP broadcasting them at manual_backward would change tensors the graph saved.
        # (Set after construction: the constructor's spelling of it differs across torch versions.)
        trainer._ddp.broadcast_buffers = False
        trainer._ddp_buffers = list(module.buffers())


def sync_without_loss(trainer: Trainer) -> None:
    """DDP: training_step returned None on the micro-batch where gradients are all-reduced (the
    last of a window). Without a backward the reducer never runs: the window's gradients stay
    local and the replicas drift apart, silently. A zero loss over every trainable parameter
    runs it, so every rank steps with the same averaged gradients (this batch adds nothing)."""
    if trainer.find_unused_parameters:  # DDP saw no output to search: a hook would mark a parameter twice
        raise RuntimeError(
            f"training_step returned None on batch {trainer._batches_done}, where DDP all-reduces the gradients "
            "(the last micro-batch of an accumulation window); with find_unused_parameters=True the engine "
            "cannot sync without a loss: return a zero loss there instead (e.g. `return loss * 0`)"
        )
    params = [p for p in trainer.module.parameters() if p.requires_grad]
    if params:
        trainer.precision.backward(sum(p.sum() for p in params) * 0.0)


def _sync_batchnorm(trainer: Trainer, module: Module) -> None:
    """trainer.sync_batchnorm: BatchNorm layers normalise over the whole global batch (in place)."""
    if trainer.device.type == "cpu":
        raise ValueError(
            "trainer.sync_batchnorm=true needs GPUs: torch's SyncBatchNorm does not run on CPU "
            "processes (gloo); set trainer.sync_batchnorm=false for CPU runs"
        )
    nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces the layers inside `module` in place


def _compile(trainer: Trainer, module: Module) -> None:
    """trainer.compile: torch.compile the module in place; under FSDP each sharded block instead.

    Under FSDP the training step runs through the root's forward (`FSDP.redirect`), so
    compiling the root would trace the whole step (its logging, its Python) with graph breaks
    and recompiles; the blocks are what TorchTitan compiles, with FSDP's hooks left to run eagerly.
    """
    if trainer._fsdp is None:
        module.compile()
        return
    from torch.distributed.fsdp import FSDPModule

    blocks: dict[str, nn.Module] = {}  # the outermost sharded modules below the root
    for name, m in module.named_modules():
        if m is not module and isinstance(m, FSDPModule) and not any(name.startswith(f"{b}.") for b in blocks):
            blocks[name] = m
    for block in blocks.values() or [module]:
        block.compile()


def release(trainer: Trainer) -> None:
    """Free the DDP wrapper now: its reducer holds the process group, and left to the garbage
    collector at interpreter exit (DDP sits in reference cycles), gloo's threads abort the
    process ("terminate called without an active exception")."""
    if trainer._ddp is not None:
        trainer._ddp, trainer._step_fn, trainer._ddp_buffers = None, None, []
        gc.collect()
