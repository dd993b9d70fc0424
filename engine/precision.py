"""Numeric precision: autocast and gradient scaling as no-op objects when unused."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from .config import ConfigError

NULL_CONTEXT = nullcontext()  # reusable: entering it does nothing, and `is` tells the loop so

# Lightning's spellings of the same settings, so Trainer(precision=16) ports unchanged.
ALIASES = {
    "32": "32",
    "32-true": "32",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
    "bf16-true": "bf16-true",
}


class Precision:
    """`trainer.precision`: "32", "bf16-mixed", "16-mixed" (CUDA, with GradScaler) or "bf16-true"."""

    def __init__(self, precision: str, device: torch.device) -> None:
        precision = ALIASES.get(str(precision), str(precision))
        if precision not in ALIASES.values():
            raise ConfigError(
                f"trainer.precision={precision!r} is not supported; use one of 32, bf16-mixed, 16-mixed, bf16-true"
            )
        if precision == "16-mixed" and device.type != "cuda":
            raise ConfigError(
                f"trainer.precision=16-mixed needs a CUDA GPU (this run is on {device.type}); "
                "use trainer.precision=bf16-mixed instead"
            )
        self.precision = precision
        self.device = device
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self._autocast_dtype = dtype
        # bf16-true: floating-point inputs are cast to bf16 to match the weights (as Lightning does).
        self.input_dtype = torch.bfloat16 if precision == "bf16-true" else None
        self.use_scaler(torch.amp.GradScaler(device.type, enabled=precision == "16-mixed"))

    def use_scaler(self, scaler: torch.amp.GradScaler) -> None:
        """Install a GradScaler; a disabled one means no scaling (the per-step paths branch on it once)."""
        self.scaler = scaler
        self.scaling = scaler.is_enabled()
        # Called every step: without scaling it is Tensor.backward itself, one call fewer.
        self.backward: Callable[[torch.Tensor], None] = self._scaled_backward if self.scaling else torch.Tensor.backward

    def autocast(self) -> AbstractContextManager:
        if self._autocast_dtype is None:
            return NULL_CONTEXT
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(torch.bfloat16) if self.precision == "bf16-true" else module

    def _scaled_backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale (before clipping or inspection)."""
        if self.scaling:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> bool:
        """Step the optimizer (`kwargs` go to its step); False when the scaler skipped it (inf/nan gradients)."""
        if not self.scaling:
            optimizer.step(**kwargs)
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        # A skipped step lowers the scale; schedulers must not advance then.
        return self.scaler.get_scale() >= scale
