"""What `self.log` records: step values and sample-weighted epoch means, kept on the device.

Values stay tensors until someone reads them (the logger every `log_every_n_steps`, the
progress bar, callbacks at epoch end), so logging never forces a device sync per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_REDUCE = ("mean", "sum", "max", "min")
_NEUTRAL = {"mean": 0.0, "sum": 0.0, "max": -float("inf"), "min": float("inf")}


@dataclass
class _Epoch:
    total: torch.Tensor
    weight: torch.Tensor | float
    reduce_fx: str
    sync_dist: bool


class Results:
    """Metrics logged during one stage ("train", "val", "test") of the loop."""

    def __init__(self, all_reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> None:
        self.stage = "train"
        self.batch_size = 1
        self._all_reduce = all_reduce
        self.device = torch.device("cpu")  # the run's device: where sync_dist values are reduced (NCCL: the GPU)
        self.step: dict[str, torch.Tensor] = {}  # last on_step values
        self.epoch: dict[str, _Epoch] = {}  # running epoch reductions
        self.metric_objects: dict[str, Any] = {}  # torchmetrics logged on_epoch: compute() at epoch end
        self.prog_bar: set[str] = set()
        self.hidden: set[str] = set()  # logger=False
        self.step_metric_objects: list[Any] = []  # torchmetrics logged on_step only: reset at epoch end too
        self.enabled = True
        self.epoch_end = False  # inside on_train_epoch_end: self.log defaults to on_epoch (Lightning)
        self.dataloader_suffix = ""  # "/dataloader_idx_N" while evaluating one of several dataloaders
        self.copy = False  # an evaluation batch that copies another rank's sample: epoch values skip it
        self.copies_only: set[str] = set()  # epoch names that only copies have fed (on this rank)
        self.forked: dict[str, str] = {}  # "x_step"/"x_epoch" -> "x" for values logged on_step and on_epoch

    def log(
        self,
        name: str,
        value: Any,
        *,
        on_step: bool | None,
        on_epoch: bool | None,
        prog_bar: bool,
        logger: bool,
        sync_dist: bool,
        batch_size: int | None,
        reduce_fx: str,
        add_dataloader_idx: bool = True,
    ) -> None:
        if not self.enabled:
            return
        if self.dataloader_suffix and add_dataloader_idx:
            name += self.dataloader_suffix
        training = self.stage == "train" and not self.epoch_end
        on_step = training if on_step is None else on_step
        on_epoch = (not training) if on_epoch is None else on_epoch
        if reduce_fx not in _REDUCE:
            raise ValueError(f"self.log('{name}', reduce_fx={reduce_fx!r}): use one of {_REDUCE}")
        # Lightning's naming: both on_step and on_epoch -> name_step and name_epoch.
        if on_step and on_epoch:
            step_name, epoch_name = f"{name}_step", f"{name}_epoch"
            self.forked[step_name] = self.forked[epoch_name] = name
        else:
            step_name = epoch_name = name
        for n in (step_name, epoch_name):
            if prog_bar:
                self.prog_bar.add(n)
            if not logger:
                self.hidden.add(n)

        if not isinstance(value, torch.Tensor) and _is_metric(value):  # (a tensor is never a metric: skip 3 hasattr)
            if on_step:
                cache = getattr(value, "_forward_cache", None)
                self.step[step_name] = _as_tensor(cache if cache is not None else value.compute())
            if on_epoch:
                self.metric_objects[epoch_name] = value
            elif all(m is not value for m in self.step_metric_objects):
                self.step_metric_objects.append(value)
            return

        tensor = _as_tensor(value, self.device if sync_dist else None)
        if tensor.numel() != 1:
            raise ValueError(f"self.log('{name}', ...) needs a scalar, got a tensor of shape {tuple(tensor.shape)}")
        tensor = tensor.detach() if tensor.ndim == 0 else tensor.detach().reshape(())
        if on_step:
            self.step[step_name] = self._all_reduce(tensor, "mean") if sync_dist else tensor
        if on_epoch:
            weight = float(batch_size if batch_size is not None else self.batch_size)
            entry = self.epoch.get(epoch_name)
            if self.copy:  # the reduction's neutral value: the name still joins the epoch's all-reduce
                weight = 0.0
                value_in = torch.full_like(tensor, _NEUTRAL[reduce_fx], dtype=torch.float32)
                if entry is None:
                    self.copies_only.add(epoch_name)
            else:
                value_in = tensor.float() * weight if reduce_fx == "mean" else tensor.float()
                if self.copies_only:  # (always empty in training) a real value after a copy's
                    self.copies_only.discard(epoch_name)
            if entry is None:
                self.epoch[epoch_name] = _Epoch(value_in.clone(), weight, reduce_fx, sync_dist)
            elif reduce_fx in ("mean", "sum"):
                entry.total = entry.total + value_in
                entry.weight = entry.weight + weight
            elif reduce_fx == "max":
                entry.total = torch.maximum(entry.total, value_in)
            else:
                entry.total = torch.minimum(entry.total, value_in)

    def with_plain_names(self, values: dict[str, float]) -> dict[str, float]:
        """`values` plus, for names logged with both on_step and on_epoch, the plain name (Lightning's
        callback_metrics): later entries win, so an epoch value placed after a step value is kept."""
        if not self.forked:
            return values
        out = dict(values)
        for key, value in values.items():
            plain = self.forked.get(key)
            if plain is not None:
                out[plain] = value
        return out

    def step_values(self) -> dict[str, float]:
        """Last step values as floats (one device sync for all of them)."""
        return _to_floats(self.step)

    def compute_epoch(self) -> dict[str, float]:
        """Reduce the epoch's values (across processes where asked), then reset them."""
        out: dict[str, torch.Tensor] = {}
        for name, e in self.epoch.items():
            if not e.sync_dist and name in self.copies_only:
                continue  # this rank has no value of its own for it (a copy's is not one)
            total = e.total
            if e.reduce_fx == "mean":
                weight = torch.as_tensor(e.weight, dtype=torch.float32, device=total.device)
                if e.sync_dist:
                    pair = self._all_reduce(torch.stack([total, weight]), "sum")
                    total, weight = pair[0], pair[1]
                out[name] = total / weight
            else:
                out[name] = self._all_reduce(total, e.reduce_fx) if e.sync_dist else total
        for name, metric in self.metric_objects.items():
            out[name] = _as_tensor(metric.compute())  # torchmetrics syncs across processes itself
            metric.reset()
        for metric in self.step_metric_objects:
            metric.reset()
        self.epoch.clear()
        self.copies_only.clear()
        self.metric_objects.clear()
        self.step_metric_objects.clear()
        return _to_floats(out)

    def state_dict(self) -> dict[str, Any]:
        """Partial epoch sums, so a mid-epoch resume reports the same epoch means."""
        return {
            name: {
                "total": e.total.detach().cpu(),
                "weight": float(e.weight),
                "reduce_fx": e.reduce_fx,
                "sync": e.sync_dist,
            }
            for name, e in self.epoch.items()
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.epoch = {
            name: _Epoch(s["total"].to(device), s["weight"], s["reduce_fx"], s["sync"]) for name, s in state.items()
        }

    @staticmethod
    def fold(saved: list[dict[str, Any]], rank: int, world_size: int) -> dict[str, Any]:
        """This rank's share of the partial epoch sums that `len(saved)` ranks saved mid-epoch.

        The same world size: each rank its own. Another one (an elastic resume): values logged
        with sync_dist are reduced over the ranks at epoch end, so the saved ranks' sums are
        folded into rank 0 and the other ranks start from the reduction's neutral value (for
        max/min every rank takes the folded value); the epoch means come out as if no process
        had changed. A value each rank keeps for itself goes to the rank with the same number.
        """
        if len(saved) == world_size:
            return saved[rank]
        out: dict[str, Any] = {}
        for state in saved:
            for name, s in state.items():
                if not s["sync"]:
                    continue
                entry = out.get(name)
                if entry is None:
                    out[name] = dict(s, total=s["total"].clone())
                elif s["reduce_fx"] in ("mean", "sum"):
                    entry["total"], entry["weight"] = entry["total"] + s["total"], entry["weight"] + s["weight"]
                else:
                    pick = torch.maximum if s["reduce_fx"] == "max" else torch.minimum
                    entry["total"] = pick(entry["total"], s["total"])
        if rank > 0:
            for entry in out.values():
                if entry["reduce_fx"] in ("mean", "sum"):
                    entry["total"], entry["weight"] = torch.zeros_like(entry["total"]), 0.0
        if rank < len(saved):
            out.update({name: s for name, s in saved[rank].items() if not s["sync"]})
        return out

    def reset(self, stage: str) -> None:
        self.stage = stage
        self.copy = False
        self.copies_only.clear()
        self.forked.clear()
        self.step.clear()
        self.epoch.clear()
        self.metric_objects.clear()
        self.step_metric_objects.clear()


def _is_metric(value: Any) -> bool:
    return hasattr(value, "compute") and hasattr(value, "reset") and hasattr(value, "update")


def _as_tensor(value: Any, device: torch.device | None = None) -> torch.Tensor:
    """A logged value as a tensor: fp32 for Python numbers (whatever the default dtype); on `device`
    when given, because NCCL reduces only tensors on the GPU (gloo accepts CPU ones, so CPU runs can't tell)."""
    if isinstance(value, torch.Tensor):
        return value if device is None or value.device == device else value.to(device)
    if device is None:
        return torch.tensor(float(value), dtype=torch.float32)
    return torch.full((), float(value), dtype=torch.float32, device=device)  # a fill kernel, no host copy


def _to_floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    if not values:
        return {}
    names = list(values)
    device = values[names[0]].device
    flat = torch.stack([values[n].detach().float().reshape(()).to(device) for n in names]).cpu()
    return dict(zip(names, flat.tolist(), strict=True))
