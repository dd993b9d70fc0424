"""Lightning's utilities: run, print or warn on global rank 0 only; `seed_everything`.

`rank_zero_only.rank` starts from the launcher's environment and the Trainer sets it to the
process's global rank when it joins the process group, as Lightning does.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)


def _rank_from_env() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def rank_zero_only(fn: Callable[..., T], default: T | None = None) -> Callable[..., T | None]:
    """Decorate `fn` so it runs on global rank 0 only; other ranks get `default`."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> T | None:
        if rank_zero_only.rank == 0:
            return fn(*args, **kwargs)
        return default

    return wrapped


rank_zero_only.rank = _rank_from_env()  # type: ignore[attr-defined]


@rank_zero_only
def rank_zero_info(*args: Any, **kwargs: Any) -> None:
    """Print on rank 0 (Lightning logs these at INFO level, which its default setup prints)."""
    print(*args, **kwargs, flush=True)


@rank_zero_only
def rank_zero_debug(*args: Any, **kwargs: Any) -> None:
    _log.debug(*args, **kwargs)


@rank_zero_only
def rank_zero_warn(message: str | Warning, category: type[Warning] = UserWarning, stacklevel: int = 4) -> None:
    warnings.warn(message, category, stacklevel=stacklevel)


def grad_norm(module: Any, norm_type: float | int | str, group_separator: str = "/") -> dict[str, Any]:
    """Lightning's: each parameter's gradient p-norm and their total (``'inf'`` for the max norm), as
    ``{"grad_2.0_norm/<name>": ..., "grad_2.0_norm_total": ...}``, ready for ``self.log_dict``."""
    import torch  # lazy: this module is a leaf imported before anything needs torch

    norm_type = float(norm_type)
    if norm_type <= 0:
        raise ValueError(f"`norm_type` must be a positive number or 'inf' (infinity norm). Got {norm_type}")
    norms = {
        f"grad_{norm_type}_norm{group_separator}{name}": p.grad.data.norm(norm_type)
        for name, p in module.named_parameters()
        if p.grad is not None
    }
    if norms:
        norms[f"grad_{norm_type}_norm_total"] = torch.tensor(list(norms.values())).norm(norm_type)
    return norms


__all__ = ["grad_norm", "rank_zero_debug", "rank_zero_info", "rank_zero_only", "rank_zero_warn"]


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed python, numpy and torch (all devices); Lightning's function, also for the research code.

    `seed` None takes ``PL_GLOBAL_SEED`` from the environment, else 0. ``workers=True`` also
    gives every DataLoader worker its own seeds, derived from the loader's seed, the worker's
    id and the process's rank (``PL_SEED_WORKERS=1``; the engine's loaders read it).
    """
    import random

    import torch

    if seed is None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    seed = int(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = str(int(workers))
    return seed
