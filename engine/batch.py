"""Batches: moving nested tensors to a device and reading their size (shared by every loop)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch


def move_to_device(batch: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """Move tensors in nested dicts, lists, tuples, namedtuples and dataclasses to `device`.

    With `dtype`, floating-point tensors are also cast to it (bf16-true inputs), on `device`
    after the copy (as Lightning): a cast on the CPU would make an unpinned tensor, whose copy blocks.
    """
    if isinstance(batch, torch.Tensor):
        if batch.device != device:
            batch = batch.to(device, non_blocking=batch.is_pinned())
        if dtype is not None and batch.dtype != dtype and batch.is_floating_point():
            batch = batch.to(dtype)
        return batch
    if type(batch) is tuple or type(batch) is list:  # the common case first (no ABC or hasattr checks)
        moved = [move_to_device(v, device, dtype) for v in batch]
        return moved if type(batch) is list else tuple(moved)
    if isinstance(batch, Mapping):
        items = {k: move_to_device(v, device, dtype) for k, v in batch.items()}
        return items if type(batch) is dict else type(batch)(items)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, dtype) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, dtype) for v in batch)
    if is_dataclass(batch) and not isinstance(batch, type):
        moved = {f.name: move_to_device(getattr(batch, f.name), device, dtype) for f in fields(batch) if f.init}
        return replace(batch, **moved)
    return batch


def infer_batch_size(batch: Any) -> int:
    """The leading dimension of the first tensor found (the weight of epoch means)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim > 0 else 1
    if type(batch) is tuple or type(batch) is list:
        pass  # the common case: skip the Mapping and dataclass checks
    elif isinstance(batch, Mapping):
        batch = list(batch.values())
    elif is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in fields(batch)]
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = infer_batch_size(item)
            if size:
                return size
    return 0 if not isinstance(batch, (list, tuple)) else 1


def prepare_batch(batch: Any, device: torch.device, dtype: torch.dtype | None) -> tuple[Any, int]:
    """The batch on `device` and its size; a tuple or list of tensors already there costs one pass."""
    if dtype is None and (type(batch) is tuple or type(batch) is list) and batch:
        for value in batch:
            if type(value) is not torch.Tensor or value.device != device:
                break
        else:  # the common case: nothing to move
            return batch, batch[0].shape[0] if batch[0].ndim else 1
    batch = move_to_device(batch, device, dtype)
    return batch, infer_batch_size(batch)
