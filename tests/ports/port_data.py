"""Offline stand-ins for what the ported Lightning code downloads, and the numbers a port reports.

The ported modules import torchvision's MNIST/CIFAR10 and transforms; these stand-ins have the
same constructor arguments, lengths, item types and shapes, and build every item from a fixed
generator (item i of a split is the same on every machine), so a port runs offline and a run
under Lightning and one under the engine read identical data. Each image carries a
label-dependent band, so the classifiers have something to learn.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import Dataset

_TORCHVISION_AVAILABLE = True  # what the ported files test before using the stand-ins


class _SyntheticImages(Dataset):
    """Images as torchvision hands them to a transform: uint8, H x W (gray) or H x W x C."""

    def __init__(self, length: int, shape: tuple[int, ...], seed: int, transform: Callable | None) -> None:
        self.length, self.shape, self.seed, self.transform = length, shape, seed, transform

    def _label(self, index: int) -> int:
        return (index * 7 + self.seed) % 10

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = torch.randint(0, 128, self.shape, dtype=torch.uint8, generator=g)
        label = self._label(index)
        band = slice(2 * label + 4, 2 * label + 7)
        image[band] = image[band] + 127  # rows 4..26 of 28 (or 32): the label, visibly
        return (self.transform(image) if self.transform is not None else image), label


class MNIST(_SyntheticImages):
    """torchvision.datasets.MNIST: 60000 train / 10000 test 28x28 gray images, labels 0..9."""

    def __init__(
        self,
        root: str = "",
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(60_000 if train else 10_000, (28, 28), 1 if train else 2, transform)


class CIFAR10(_SyntheticImages):
    """torchvision.datasets.CIFAR10: 50000 train / 10000 test 32x32 RGB images, labels 0..9."""

    def __init__(
        self,
        root: str = "",
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
    ) -> None:
        super().__init__(50_000 if train else 10_000, (32, 32, 3), 3 if train else 4, transform)


class _ToTensor:
    """uint8 H x W [x C] -> float C x H x W in [0, 1], as torchvision's ToTensor."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = image.unsqueeze(-1) if image.dim() == 2 else image
        return image.permute(2, 0, 1).contiguous().float().div(255)


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _Compose:
    def __init__(self, transforms: Iterable[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


transforms = SimpleNamespace(ToTensor=_ToTensor, Normalize=_Normalize, Compose=_Compose)


def _make_grid(tensor: torch.Tensor, nrow: int = 8, padding: int = 2, **kwargs: Any) -> torch.Tensor:
    """torchvision.utils.make_grid, enough for a picture that is only handed to a logger."""
    n, c, h, w = tensor.shape
    rows = math.ceil(n / nrow)
    grid = tensor.new_zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        y, x = divmod(i, nrow)
        top, left = y * (h + padding) + padding, x * (w + padding) + padding
        grid[:, top : top + h, left : left + w] = tensor[i]
    return grid


torchvision = SimpleNamespace(utils=SimpleNamespace(make_grid=_make_grid), transforms=transforms)


# -- the numbers a port reports (the same function runs under Lightning and under the engine) --
def tensors_summary(tensors: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Exact fingerprint (sha256 of the float32 bytes) plus readable numbers to see how far off."""
    flat = [t.detach().cpu().float().reshape(-1) for t in tensors]
    digest = hashlib.sha256()
    for t in flat:
        digest.update(t.numpy().tobytes())
    return {
        "count": sum(t.numel() for t in flat),
        "abs_sum": sum(t.double().abs().sum().item() for t in flat),
        "first": [t.item() for t in flat[0][:3]] if flat else [],
        "last": [t.item() for t in flat[-1][-3:]] if flat else [],
        "sha256": digest.hexdigest()[:16],
    }


def weights_summary(module: torch.nn.Module) -> dict[str, Any]:
    """Every floating tensor of the state_dict (parameters and BatchNorm statistics), in order."""
    return tensors_summary(t for t in module.state_dict().values() if t.is_floating_point())


def metrics(values: Any) -> dict[str, float]:
    """callback_metrics / a test result dict as plain floats, sorted by name."""
    return {k: float(v) for k, v in sorted(dict(values).items())}


def learning_rates(trainer: Any) -> list[float]:
    return [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]


def predictions_summary(predictions: Sequence[Any]) -> dict[str, Any]:
    return {"batches": len(predictions), **tensors_summary(predictions)}


# -- the comparison ------------------------------------------------------------------------
METRIC_REL = 1e-5
"""Logged epoch values are means accumulated by the trainer (Lightning: sample-weighted float32
sums; the engine: its own accumulation), so they may differ in the last bits though every
step's value is identical. Weights, predictions, steps and learning rates are compared exactly."""


TENSOR_REL_OTHER_CPU = 1e-4
"""Float kernels differ in their last bits between CPU instruction sets (AVX2, AVX512...): a
recording made on another one is compared within this tolerance instead of bit for bit."""


def _close_tensors(got: dict[str, Any], ref: dict[str, Any]) -> bool:
    if got.get("count") != ref["count"]:
        return False
    pairs = [
        (got["abs_sum"], ref["abs_sum"]),
        *zip(got["first"] + got["last"], ref["first"] + ref["last"], strict=False),
    ]
    return all(math.isclose(g, r, rel_tol=TENSOR_REL_OTHER_CPU, abs_tol=1e-6) for g, r in pairs)


def differences(
    ours: dict[str, Any], lightning: dict[str, Any], path: str = "", exact: bool | None = None
) -> list[str]:
    """Where a port's report differs from Lightning's: one line each (empty when they agree).

    A summary of tensors agrees when its sha256 does (recorded on this CPU instruction set; on
    another, within `TENSOR_REL_OTHER_CPU`); metric dicts (``*metrics``, ``test``) must hold
    Lightning's keys with values within `METRIC_REL` (the engine may log more).
    """
    if exact is None:
        exact = lightning.get("cpu") == torch.backends.cpu.get_cpu_capability()
    out: list[str] = []
    for key, ref in lightning.items():
        if key == "cpu" and not path:
            continue
        where = f"{path}{key}"
        if key not in ours:
            out.append(f"{where}: missing (Lightning: {ref!r})")
            continue
        got = ours[key]
        if isinstance(ref, dict) and "sha256" in ref:
            same = isinstance(got, dict) and got.get("sha256") == ref["sha256"]
            if not same and not (isinstance(got, dict) and not exact and _close_tensors(got, ref)):
                out.append(f"{where}: differs: ours {got!r}, Lightning {ref!r}")
        elif isinstance(ref, dict) and (key.endswith("metrics") or path.startswith("test")):
            for name, value in ref.items():
                if name not in got:
                    out.append(f"{where}[{name!r}]: missing (Lightning: {value!r}; ours has {sorted(got)})")
                elif not math.isclose(got[name], value, rel_tol=METRIC_REL, abs_tol=1e-7):
                    out.append(f"{where}[{name!r}]: ours {got[name]!r}, Lightning {value!r}")
        elif isinstance(ref, dict):
            out += differences(got, ref, f"{where}.", exact)
        elif isinstance(ref, list) and ref and isinstance(ref[0], dict):
            if not isinstance(got, list) or len(got) != len(ref):
                out.append(f"{where}: ours {got!r}, Lightning {ref!r}")
            else:
                for i, (g, r) in enumerate(zip(got, ref, strict=True)):
                    out += differences({"metrics": g}, {"metrics": r}, f"{where}[{i}].", exact)
        elif got != ref:
            out.append(f"{where}: ours {got!r}, Lightning {ref!r}")
    return out


def assert_same_as_lightning(ours: dict[str, Any], lightning: dict[str, Any]) -> None:
    diffs = differences(ours, lightning)
    assert not diffs, "the port's run differs from Lightning's:\n" + "\n".join(diffs)


def save_image(tensor: torch.Tensor, fp: str, **kwargs: Any) -> None:
    """torchvision.utils.save_image's stand-in: the tensor, in torch's format, at that path."""
    torch.save(tensor.detach().cpu(), fp)


datasets = SimpleNamespace(MNIST=MNIST, CIFAR10=CIFAR10)  # `from torchvision import datasets`


def under_review() -> Callable[[Any], Any]:
    """pl_bolts.utils.stability.under_review's stand-in: bolts' decorator only warns."""
    return lambda obj: obj
