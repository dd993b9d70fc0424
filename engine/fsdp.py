"""FSDP2: shard a plain model, its optimizer state and its checkpoints over processes.

The strategy is a few functions over a plain module, as in TorchTitan's ``apply_fsdp``:
`shard` calls ``fully_shard`` on each block, then on the root, so each process keeps
1/world_size of every parameter, gradient and optimizer state (DTensors). A block's full
weights exist only while it runs: gathered before its forward and backward, freed after.

Checkpoints are Distributed Checkpoint folders (``torch.distributed.checkpoint``):
``.metadata``, one ``__<rank>_0.distcp`` shard per process, and ``state.pt`` with the rest of
the checkpoint (loop position, RNG, callbacks, config) as an ordinary weights-only file.
Weights and optimizer state are saved by parameter name, so a folder written by N processes
loads on any M (and in one process): DCP reshards at load. `save` writes into a hidden
temporary folder and renames it into place, so a crash mid-save leaves the previous
checkpoint as it was. ``python -m <package>.engine.consolidate DIR OUT.ckpt`` turns a
folder into one ordinary ``.ckpt`` (`consolidate`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import (
    SHARDED_STATE_FILE,
    CheckpointError,
    _fsync_dir,
    add_lightning_keys,
    check_model_state,
    engine_layout,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)

STATE_FILE = SHARDED_STATE_FILE  # everything but weights and optimizer state; written last: marks a complete folder
_SHARDED_KEYS = ("model", "optimizers")  # what DCP writes sharded; the rest goes to STATE_FILE
_ALIASES = ("state_dict", "optimizer_states")  # Lightning's names for the same objects


@dataclass
class FSDPOptions:
    """``trainer.fsdp.*`` as the Trainer reads it (see config.FSDPConfig for the meaning)."""

    wrap: list[str] = field(default_factory=list)
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    activation_checkpointing: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, value: Any) -> FSDPOptions:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        items = value if isinstance(value, Mapping) else vars(value)
        unknown = sorted(set(items) - {"wrap", "reshard_after_forward", "cpu_offload", "activation_checkpointing"})
        if unknown:
            raise ValueError(
                f"fsdp options {unknown} are unknown; use wrap, reshard_after_forward, cpu_offload, "
                "activation_checkpointing"
            )
        return cls(**{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in items.items()})


# ----------------------------------------------------------------------------- sharding


def shard(module: nn.Module, options: FSDPOptions, precision: str) -> None:
    """Apply activation checkpointing and ``fully_shard`` to `module` in place.

    Blocks are the modules whose class name is in ``options.wrap``; without a list, each
    direct child that holds parameters. If submodules are sharded already (the module's
    ``configure_model()`` hook, which the trainer runs first, may shard its own blocks),
    those are kept and only the root is added.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

    if options.activation_checkpointing:
        from torch.distributed._composable import checkpoint  # keeps parameter names, unlike checkpoint_wrapper

        for m in _by_class(module, options.activation_checkpointing, "trainer.fsdp.activation_checkpointing"):
            checkpoint(m)
    if precision == "16-mixed":
        raise ValueError(
            "trainer.precision=16-mixed is not supported with trainer.strategy=fsdp (a gradient scaler would "
            "see only its own shard); use trainer.precision=bf16-mixed"
        )
    kwargs: dict[str, Any] = {"reshard_after_forward": options.reshard_after_forward}
    if precision == "bf16-mixed":  # compute in bf16, reduce gradients and keep the weights in fp32
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    on_cpu = all(p.device.type == "cpu" for p in module.parameters())
    if options.cpu_offload and not on_cpu:  # on CPU the shards are there already
        kwargs["offload_policy"] = CPUOffloadPolicy()
    if any(isinstance(m, FSDPModule) for m in module.modules()):
        blocks: list[nn.Module] = []  # configure_model chose the blocks
    elif options.wrap:
        blocks = _by_class(module, options.wrap, "trainer.fsdp.wrap")
    else:
        blocks = [child for child in module.children() if any(True for _ in child.parameters())]
    for block in blocks:
        fully_shard(block, **kwargs)
    if not isinstance(module, FSDPModule):
        if "mp_policy" in kwargs:
            # The root's forward receives the whole batch (the step is routed through it): its policy
            # must not cast inputs, or float targets reach training_step in bf16 (1000.33 -> 1000.0).
            # Autocast covers the root's own compute; the blocks still cast what they receive.
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
            )
        fully_shard(module, **kwargs)


def _by_class(module: nn.Module, names: list[str], key: str) -> list[nn.Module]:
    found = [m for m in module.modules() if type(m).__name__ in names and m is not module]
    missing = sorted(set(names) - {type(m).__name__ for m in found})
    if missing:
        classes = sorted({type(m).__name__ for m in module.modules()} - {type(module).__name__})
        raise ValueError(f"{key}: no submodule of class {', '.join(missing)}; the model has {', '.join(classes)}")
    return found


def redirect(module: nn.Module, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (training_step, validation_step ...) called through ``module``'s forward.

    FSDP gathers the root's parameters and starts its bookkeeping in hooks around the root's
    forward, and the root's forward must run first; a step method is called directly, so it
    is routed through ``module(...)``, as Lightning's strategies do.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        original = module.forward

        def forward(*a: Any, **k: Any) -> Any:
            module.forward = original  # the step's own self(x) calls the real forward
            return method(*a, **k)

        module.forward = forward  # type: ignore[method-assign]
        try:
            return module(*args, **kwargs)
        finally:
            module.__dict__.pop("forward", None)

    return call


class Sharded:
    """The trainer's handle on a sharded module: the step call and the accumulation window."""

    def __init__(self, module: nn.Module, step: Callable[..., Any], reshard_after_forward: bool = True) -> None:
        self.module, self.reshard_after_forward = module, reshard_after_forward
        self.step = redirect(module, step)  # step: training_step, called as (batch, batch_idx)
        self._sync = True  # FSDP's requires_gradient_sync, as last set

    def __call__(self, batch: Any, batch_idx: int) -> Any:
        return self.step(batch, batch_idx)

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool, restore: bool) -> Iterator[None]:
        """Whether the next backward reduce-scatters gradients into the shards.

        Inside an accumulation window gradients stay local, unsharded, until the window's last
        micro-batch. FSDP reads the flag during backward, which the training loop runs after
        this context closes: so the flag stays as set (the loop sets it before every
        micro-batch) unless `restore` (manual optimization: backward runs inside).
        """
        if enabled != self._sync:
            self.module.set_requires_gradient_sync(enabled)
            self._sync = enabled
        try:
            yield
        finally:
            if restore and not self._sync:
                self.module.set_requires_gradient_sync(True)
                self._sync = True

    @contextlib.contextmanager
    def evaluation(self, batches: int) -> Iterator[None]:
        """Around an evaluation loop of `batches` batches on this process.

        Every forward of a sharded module is a collective. The engine's evaluation loaders give
        every process as many batches (`D.EvalBatchSampler`); where the counts differ or are
        unknown (an iterable data set without len()), the whole model is gathered once for this
        evaluation, so a forward talks to no one.
        """
        counts = [None] * dist.get_world_size()
        dist.all_gather_object(counts, batches)
        if len(set(counts)) == 1 and counts[0] < sys.maxsize:  # (maxsize: a loader without len())
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        sharded = [m for m in self.module.modules() if isinstance(m, FSDPModule)]
        for m in sharded:
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()
        try:
            yield
        finally:
            for m in sharded:
                m.reshard()
                m.set_reshard_after_forward(self.reshard_after_forward, recurse=False)


def local_bytes(module: nn.Module, optimizers: list[torch.optim.Optimizer]) -> int:
    """Bytes of parameters and optimizer state held by this process (its shards under FSDP)."""

    def size(t: Any) -> int:
        if not isinstance(t, torch.Tensor):
            return 0
        local = t.to_local() if hasattr(t, "to_local") else t
        return local.numel() * local.element_size()

    total = sum(size(p) for p in module.parameters())
    for opt in optimizers:
        total += sum(size(v) for s in opt.state.values() for v in s.values())
    return total


# ----------------------------------------------------------------------------- checkpoints


def is_sharded_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / ".metadata").is_file()


def save(state: dict[str, Any], path: str | Path, module: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
    """Write `state` as a DCP folder at `path`; every process calls it, each writes its shards.

    `state` is the trainer's checkpoint dict; its weights and optimizer states are taken from
    the live module and optimizers by parameter name (``get_state_dict``), so they load at
    any world size.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    path = Path(path)
    rank = dist.get_rank() if dist.is_initialized() else 0
    token = secrets.token_hex(4) if rank == 0 else None
    if dist.is_initialized():  # every rank writes into the same temporary folder
        box = [token]
        dist.broadcast_object_list(box, src=0)
        token = box[0]
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    error: str | None = None
    try:
        sharded = {
            "model": get_model_state_dict(module),
            "optimizers": [get_optimizer_state_dict(module, opt) for opt in optimizers],
        }
        dcp.save(sharded, checkpoint_id=tmp)  # returns once every rank wrote and rank 0 wrote .metadata
        if rank == 0:  # the rest of the state, last: its presence marks a complete folder
            rest = {k: v for k, v in state.items() if k not in _SHARDED_KEYS + _ALIASES}
            save_checkpoint(rest, tmp / STATE_FILE)
            commit(tmp, path)
    except Exception as e:  # every rank learns of it below, so all raise alike
        error = (
            str(e)
            if isinstance(e, CheckpointError)
            else f"could not write sharded checkpoint {path}: {e} (check free disk space and write permission)"
        )
    if dist.is_initialized():
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = error or box[0]
    if error is not None:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{error.rstrip('.')}. The previous {path.name}, if any, is unchanged.")


def commit(tmp: Path, path: Path) -> None:
    """Move the complete folder `tmp` to `path`, replacing an older one.

    A folder cannot replace another in one atomic rename, so the old one steps aside first
    (``.<name>.<token>.old``) and is deleted after; `recover` puts it back if a crash came
    between the two renames.
    """
    old = step_aside(path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old is not None:
        remove_checkpoint(old)


def step_aside(path: Path) -> Path | None:
    """Rename an existing checkpoint at `path` (file or folder) to a hidden name `recover` knows.

    Also before an unsharded run writes a file where a sharded run left a folder of the same
    name (a resume on one process): a file cannot replace a folder by rename.
    """
    if not path.exists():
        return None
    old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    os.replace(path, old)
    return old


def recover(folder: Path) -> None:
    """Tidy what a crash mid-save left in a checkpoint folder (call with no save running).

    Unfinished temporary folders are removed; an old checkpoint that stepped aside for one
    that never took its place is moved back.
    """
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.glob(".*.old"):
        target = folder / old.name[1:].rsplit(".", 2)[0]
        if not target.exists() and (old.is_file() or (old / STATE_FILE).is_file()):
            os.replace(old, target)
        else:
            remove_checkpoint(old)


def read_state(path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
    """The non-sharded part of a DCP checkpoint folder (loop, RNG, callbacks, config ...)."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(
            f"{path} is an incomplete sharded checkpoint (no {STATE_FILE}); pass resume=<another checkpoint>"
        )
    return load_checkpoint(path / STATE_FILE, "cpu", weights_only)


def _saved(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """From a folder's ``.metadata``: the weights' names and shapes as meta tensors (for
    `check_model_state`), and how many optimizer states it holds."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    shapes = {
        k.removeprefix("model."): torch.empty(v.size, device="meta")
        for k, v in meta.items()
        if k.startswith("model.") and isinstance(v, TensorStorageMetadata)
    }
    return shapes, len({k.split(".", 2)[1] for k in meta if k.startswith("optimizers.")})


def load(
    path: str | Path,
    module: nn.Module,
    optimizers: list[torch.optim.Optimizer] | None,
    weights_only: bool | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into a sharded (or plain) module and its optimizers, in place.

    `path` is a DCP folder (written by any number of processes) or a single ``.ckpt`` file
    (a full state dict: each process keeps its own shard of it). Returns the checkpoint's
    other entries in the engine's layout. ``optimizers`` None loads the weights only.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    if is_sharded_checkpoint(path):
        import torch.distributed.checkpoint as dcp

        ckpt = read_state(path, weights_only)
        shapes, saved = _saved(path)
        check_model_state(module, shapes, path)
        target: dict[str, Any] = {"model": get_model_state_dict(module)}
        if optimizers is not None:
            if saved != len(optimizers):
                raise CheckpointError(
                    f"{path} holds {saved} optimizer states; configure_optimizers returned {len(optimizers)}"
                )
            target["optimizers"] = [get_optimizer_state_dict(module, opt) for opt in optimizers]
        dcp.load(target, checkpoint_id=path)  # reads each process's slice, whatever world size wrote it
        set_model_state_dict(module, target["model"])
        for opt, state in zip(optimizers or [], target.get("optimizers", []), strict=True):
            set_optimizer_state_dict(module, opt, state)
        ckpt["model"], ckpt["optimizers"] = target["model"], target.get("optimizers", [])
        return ckpt
    ckpt = engine_layout(load_checkpoint(path, "cpu", weights_only), path)
    check_model_state(module, ckpt["model"], path)
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(module, ckpt["model"], options=full)
    if optimizers is not None and "optimizers" in ckpt:
        if len(ckpt["optimizers"]) != len(optimizers):
            raise CheckpointError(
                f"{path} holds {len(ckpt['optimizers'])} optimizer states; "
                f"configure_optimizers returned {len(optimizers)}"
            )
        names = {id(p): n for n, p in module.named_parameters()}
        for opt, state in zip(optimizers, ckpt["optimizers"], strict=True):
            order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
            set_optimizer_state_dict(module, opt, by_name(state, order), options=full)
    return ckpt


def by_name(state: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """An ordinary optimizer state dict (keyed by position) keyed by parameter name instead."""
    if not state.get("param_groups") or all(isinstance(p, str) for g in state["param_groups"] for p in g["params"]):
        return state
    ids = [p for g in state["param_groups"] for p in g["params"]]
    if len(ids) != len(order):
        raise CheckpointError(
            f"the checkpoint's optimizer has {len(ids)} parameters, this one {len(order)}; resume with the same model"
        )
    name = dict(zip(ids, order, strict=True))
    return {
        "state": {name[k]: v for k, v in state.get("state", {}).items()},
        "param_groups": [{**g, "params": [name[p] for p in g["params"]]} for g in state["param_groups"]],
    }


def by_position(state: dict[str, Any]) -> dict[str, Any]:
    """`by_name` reversed: what ``optimizer.load_state_dict`` of an unsharded run takes."""
    names = [p for g in state.get("param_groups", []) for p in g["params"]]
    if not all(isinstance(n, str) for n in names):
        return state
    index = {n: i for i, n in enumerate(names)}
    return {
        "state": {index[k]: v for k, v in state.get("state", {}).items() if k in index},
        "param_groups": [{**g, "params": [index[p] for p in g["params"]]} for g in state["param_groups"]],
    }


def consolidate(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Turn the DCP folder `src` into one ordinary checkpoint file `dst` (in this process).

    The result loads like any single-file checkpoint: ``Module.load_from_checkpoint``,
    ``torch.load(weights_only=True)``, resuming an unsharded run. Returns its loop entry.
    """
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    src, dst = Path(src), Path(dst)
    if not is_sharded_checkpoint(src):
        raise CheckpointError(f"{src} is not a sharded checkpoint folder (no .metadata in it); pass such a folder")
    state = read_state(src)
    with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.is_dir() else None) as tmp:
        full = Path(tmp) / "full.pt"
        dcp_to_torch_save(src, full)
        tensors = torch.load(full, map_location="cpu", weights_only=True)
    state["model"] = tensors["model"]
    state["optimizers"] = [by_position(s) for s in tensors.get("optimizers", [])]
    add_lightning_keys(state)
    save_checkpoint(state, dst)
    return state["loop"]
