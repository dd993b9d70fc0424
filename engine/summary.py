"""The parameter table printed when fit starts (Lightning's model summary)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def human_count(number: float) -> str:
    """1234 -> "1.2 K", 50_400 -> "50.4 K", 123_456_789 -> "123 M" (Lightning's format)."""
    labels = [" ", "K", "M", "B", "T"]
    digits = int(math.floor(math.log10(number)) + 1) if number > 0 else 1
    groups = min(math.ceil(digits / 3), len(labels))
    value = number / 10 ** (3 * (groups - 1))
    if groups == 1 or value >= 100:
        return f"{int(value):,d} {labels[groups - 1]}"
    return f"{value:,.1f} {labels[groups - 1]}"


def _count(params: Any) -> int:
    return sum(p.numel() for p in params if not isinstance(p, nn.parameter.UninitializedParameter))


@dataclass
class Summary:
    """Rows for the submodules down to `max_depth` (-1: all), and the whole model's counts."""

    rows: list[dict[str, str]] = field(default_factory=list)
    trainable: int = 0
    total: int = 0
    train_modules: int = 0
    eval_modules: int = 0

    @property
    def size_mb(self) -> float:
        return self.total * 4 / 1e6  # as Lightning: 32-bit parameters

    def __str__(self) -> str:
        columns = ["", "Name", "Type", "Params", "Mode"]
        if self.rows and "In sizes" in self.rows[0]:
            columns += ["In sizes", "Out sizes"]
        table = [[str(i), *(r[c] for c in columns[1:])] for i, r in enumerate(self.rows)]
        widths = [max([len(c)] + [len(row[j]) for row in table]) for j, c in enumerate(columns)]
        line = " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
        rule = "-" * len(line)
        out = [line, rule, *(" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in table), rule]
        out += [
            f"{human_count(self.trainable):<10}Trainable params",
            f"{human_count(self.total - self.trainable):<10}Non-trainable params",
            f"{human_count(self.total):<10}Total params",
            f"{self.size_mb:<10.3f}Total estimated model params size (MB)",
            f"{self.train_modules:<10}Modules in train mode",
            f"{self.eval_modules:<10}Modules in eval mode",
        ]
        return "\n".join(out)


def _sizes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        sizes = [_sizes(v) for v in value]
        return sizes[0] if len(sizes) == 1 else sizes
    return "?"


def summarize(module: nn.Module, max_depth: int = 1, trainer: Any = None) -> Summary:
    """The summary of `module`; with ``module.example_input_array`` set, also each row's in/out sizes."""
    named = [(name, m) for name, m in module.named_modules() if name and (max_depth < 0 or name.count(".") < max_depth)]
    modes = [m.training for m in module.modules()]
    summary = Summary(
        trainable=_count(p for p in module.parameters() if p.requires_grad),
        total=_count(module.parameters()),
        train_modules=sum(modes),
        eval_modules=len(modes) - sum(modes),
    )
    sizes: dict[str, tuple[Any, Any]] = {}
    example = getattr(module, "example_input_array", None)
    if example is not None:
        sizes = _forward_example(module, named, example, trainer)
    for name, m in named:
        row = {
            "Name": name,
            "Type": type(m).__name__,
            "Params": human_count(_count(m.parameters())),
            "Mode": "train" if m.training else "eval",
        }
        if example is not None:
            row["In sizes"], row["Out sizes"] = (str(s) for s in sizes.get(name, ("?", "?")))
        summary.rows.append(row)
    return summary


def _forward_example(module: nn.Module, named: list[tuple[str, nn.Module]], example: Any, trainer: Any) -> dict:
    """Run the example input once (eval mode, no gradients) and record each row's input and output sizes."""
    from .batch import move_to_device
    from .precision import NULL_CONTEXT

    sizes: dict[str, tuple[Any, Any]] = {}

    def hook(name: str) -> Any:
        def record(_: nn.Module, inputs: Any, output: Any) -> None:
            sizes.setdefault(name, (_sizes(inputs), _sizes(output)))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in named]
    precision = getattr(trainer, "precision", None)
    dtype = getattr(precision, "input_dtype", None)
    autocast = precision.autocast() if precision is not None and hasattr(precision, "autocast") else NULL_CONTEXT
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    modes = [(m, m.training) for m in module.modules()]  # restored one by one: some may be frozen in eval
    module.eval()
    try:
        x = move_to_device(example, device, dtype)
        with torch.no_grad(), autocast:
            if isinstance(x, (list, tuple)):
                module(*x)
            elif isinstance(x, dict):
                module(**x)
            else:
                module(x)
    finally:
        for m, training in modes:
            m.training = training
        for h in handles:
            h.remove()
    return sizes
