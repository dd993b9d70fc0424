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
        # bf16-true: tensors a step creates (torch.randn, torch.zeros) are bf16 like the weights (Lightning's
        # HalfPrecision); set only inside the steps and restored after, so the loop's own tensors stay fp32.
        self._step_context: AbstractContextManager = (
            DefaultDtype(torch.bfloat16) if precision == "bf16-true" else NULL_CONTEXT
        )
        self._stepped = False  # set by an optimizer step hook: did the scaler let the optimizer step?
        self._hooked: set[int] = set()  # optimizers carrying that hook
        self._pending: set[int] = set()  # optimizers stepped since the scale's last update (manual)
        self.unscaled: set[int] = set()  # optimizers clip_gradients unscaled before their step (manual)
        self.use_scaler(torch.amp.GradScaler(device.type, enabled=precision == "16-mixed"))

    # Lightning's `trainer.precision` is a string ("32-true", "16-mixed", ...): compare like one.
    _LIGHTNING_NAMES = {"32": "32-true"}

    def __str__(self) -> str:
        return self._LIGHTNING_NAMES.get(self.precision, self.precision)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, int)):
            return ALIASES.get(str(other), str(other)) == self.precision
        return self is other

    __hash__ = object.__hash__

    def use_scaler(self, scaler: torch.amp.GradScaler) -> None:
        """Install a GradScaler; a disabled one means no scaling (the per-step paths branch on it once)."""
        self.scaler = scaler
        self.scaling = scaler.is_enabled()
        # Called every step: without scaling it is Tensor.backward itself, one call fewer.
        self.backward: Callable[[torch.Tensor], None] = self._scaled_backward if self.scaling else torch.Tensor.backward

    def autocast(self) -> AbstractContextManager:
        """The context every training/validation/test step runs in (autocast, or bf16-true's default dtype)."""
        if self._autocast_dtype is None:
            return self._step_context
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(torch.bfloat16) if self.precision == "bf16-true" else module

    def _scaled_backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale (before clipping or inspection)."""
        if self.scaling:
            self.scaler.unscale_(optimizer)

    def unscale_for_clipping(self, optimizer: torch.optim.Optimizer) -> None:
        """Manual optimization: clip true gradients, unscaled once per step (the step then does not)."""
        if self.scaling and id(optimizer) not in self.unscaled:
            self.unscale(optimizer)
            self.unscaled.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer, *, update: bool = True, **kwargs: Any) -> bool:
        """Step the optimizer (`kwargs` go to its step); False when the scaler skipped it (inf/nan gradients).

        Whether it stepped comes from a step hook on the optimizer, not from comparing scales:
        each ``get_scale()`` is a device sync, on top of the one ``scaler.step`` makes itself.
        """
        if not self.scaling:
            optimizer.step(**kwargs)
            return True
        if id(optimizer) not in self._hooked:
            optimizer.register_step_post_hook(self._mark_stepped)
            self._hooked.add(id(optimizer))
        if id(optimizer) in self._pending:  # stepped twice before an update: GradScaler needs one between
            self.update()
        self._stepped = False
        self.scaler.step(optimizer, **kwargs)
        if update:
            self.scaler.update()
        else:  # manual optimization: one update per training step (`update`), after all its optimizers
            self._pending.add(id(optimizer))
        return self._stepped  # a skipped step lowers the scale; schedulers must not advance then

    def update(self) -> None:
        """The scale's update after a manual training step's optimizer steps: once, whatever their number.

        Updating after each would let the next optimizer unscale gradients made with the old
        scale by the new one, and grow (or shrink) the scale once per optimizer."""
        if self._pending:
            self._pending.clear()
            self.scaler.update()

    def _mark_stepped(self, *args: Any) -> None:
        self._stepped = True


class DefaultDtype:
    """A reusable context: `dtype` is torch's default floating-point dtype inside, the previous one after."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._previous: list[torch.dtype] = []

    def __enter__(self) -> None:
        self._previous.append(torch.get_default_dtype())
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self._previous.pop())


def matmul_precision_advice(device: torch.device, precision: str, capability: tuple[int, int] | None = None) -> str:
    """What to tell a run in full fp32 on a GPU with TF32 tensor cores (compute capability >= 8.0)
    whose float32 matmul precision is still torch's "highest" (no tensor cores); "" when nothing.

    The engine warns and leaves the choice to the research code, as Lightning does: TF32 changes the
    numbers (about 10 mantissa bits in matmul inputs), so it is not switched on behind your back.
    """
    if precision != "32" or device.type != "cuda" or torch.get_float32_matmul_precision() != "highest":
        return ""
    major, minor = capability if capability is not None else torch.cuda.get_device_capability(device)
    if major < 8:
        return ""
    return (
        f"trainer.precision=32 on a GPU with tensor cores (compute capability {major}.{minor}) runs float32 "
        "matmuls without them: call torch.set_float32_matmul_precision('high') (TF32) in your training script "
        "for several times the matmul speed, or use trainer.precision=bf16-mixed"
    )
