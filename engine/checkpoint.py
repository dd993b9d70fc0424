"""Checkpoint files: atomic writes, safe loading, RNG state, resume lookup and async saving.

A checkpoint is one dict of tensors and plain containers, so it always loads with
``torch.load(path, weights_only=True)``: the engine never unpickles arbitrary objects unless
told to (``weights_only=False``, or torch's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``).

Layout: the engine's own keys (``model``, ``optimizers``, ``loop`` ...) plus Lightning's
top-level keys (``state_dict``, ``optimizer_states``, ``epoch`` ...) that refer to the same
objects, so tools written for Lightning checkpoints read ours and the file holds every tensor
once. `engine_layout` reads a checkpoint Lightning wrote into the engine's keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import secrets
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # numpy is optional; its global RNG is saved when it is installed
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

# Types that torch.load(weights_only=True) accepts as they are.
_ATOMS = (str, bytes, int, float, complex, bool, type(None), torch.Size, torch.dtype, torch.device)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and what to do."""


# ----------------------------------------------------------------------------- plain state


def _convert(
    obj: Any, tensor_fn: Callable[[torch.Tensor], torch.Tensor], where: str, memo: dict[int, Any] | None = None
) -> Any:
    # `memo` maps id(original) -> (original, converted): an object referenced twice (the Lightning keys name
    # the same state dicts as the engine's) converts once, so torch.save stores it once.
    if isinstance(obj, _ATOMS):  # before tuple: torch.Size is a tuple
        return obj
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, torch.Tensor):
        out: Any = tensor_fn(obj)
    elif isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        memo[id(obj)] = (obj, out)  # before the values: a dict that contains itself stays finite
        for key, value in obj.items():
            out[key] = _convert(value, tensor_fn, f"{where}[{key!r}]", memo)
        if hasattr(obj, "_metadata"):  # Module.state_dict() keeps per-module versions here
            out._metadata = obj._metadata
    elif isinstance(obj, (list, tuple)):
        items = [_convert(value, tensor_fn, f"{where}[{i}]", memo) for i, value in enumerate(obj)]
        out = items if isinstance(obj, list) else tuple(items)
    else:
        return _convert_leaf(obj, tensor_fn, where, memo)
    memo[id(obj)] = (obj, out)  # holding `obj` keeps its id from being reused by a temporary
    return out


def _convert_leaf(obj: Any, tensor_fn: Callable[[torch.Tensor], torch.Tensor], where: str, memo: dict[int, Any]) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return _convert(fields, tensor_fn, where, memo)
    if np is not None and isinstance(obj, np.ndarray):
        return tensor_fn(torch.from_numpy(obj.copy()))
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(
        f"{where} is a {type(obj).__qualname__}, which torch.load(weights_only=True) refuses; "
        "store tensors, numbers, strings, lists, tuples or dicts instead (e.g. its state_dict())"
    )


def to_plain(obj: Any) -> Any:
    """Return ``obj`` made of tensors and plain containers only, loadable with weights_only.

    numpy arrays become tensors, numpy scalars Python numbers, paths strings and dataclasses
    dicts; anything else raises TypeError naming where it sits.
    """
    return _convert(obj, lambda t: t, "state")


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


def _on_cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()  # no copy for a CPU tensor


# ----------------------------------------------------------------------------- files


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash at any instant leaves the old file."""
    path = Path(path)
    try:
        # CPU tensors only: the file loads on a machine without the GPU, and a synchronous and
        # an asynchronous save of the same state hold the same thing.
        state = _convert(state, _on_cpu, "state")
    except TypeError as e:
        raise CheckpointError(f"cannot save checkpoint {path}: {e}") from e
    # Same folder as the target, so os.replace is an atomic rename on one filesystem.
    # The hidden name never matches *.ckpt; find_resume_checkpoint removes stale ones.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except Exception as e:
        raise CheckpointError(
            f"could not write checkpoint {path}: {e}. Check free disk space and write "
            f"permission in {path.parent}; the previous {path.name}, if any, is unchanged."
        ) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # only still there when the write failed
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Best effort: Windows cannot open folders and some
    # network filesystems refuse to fsync them; the new file is in place either way.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None, mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; bad files raise CheckpointError.

    ``weights_only=False`` unpickles Python objects too (a Lightning checkpoint whose hparams
    hold objects): only for files you trust. ``None`` means True unless torch's own
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set (the switch for ``resume=`` in a config).
    ``mmap=True`` maps the file (CPU only): tensors nobody touches are never read.
    """
    return _load(Path(path), map_location, mmap=mmap, weights_only=resolve_weights_only(weights_only))


def resolve_weights_only(weights_only: bool | None) -> bool:
    if weights_only is not None:
        return bool(weights_only)
    return os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0").lower() not in ("1", "y", "yes", "true")


def _load(path: Path, map_location: Any, mmap: bool = False, weights_only: bool = True) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or pass resume=null to start fresh")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except PermissionError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from e
    except Exception as e:
        if mmap:  # a load without mmap names the problem better ("mmap can only be used...")
            return _load(path, map_location, weights_only=weights_only)
        cause = _first_line(e)
        with open(path, "rb") as f:  # torch.save writes a zip; garbage can look like a pickle
            is_zip = f.read(4) == b"PK\x03\x04"
        if is_zip and "Unsupported global" in str(e):
            raise CheckpointError(
                f"checkpoint {path} contains Python objects that torch.load(weights_only=True) "
                f"refuses ({cause}). If you trust the file, load it with weights_only=False "
                "(Module.load_from_checkpoint(path, weights_only=False), trainer.fit/validate/test(..., "
                "weights_only=False), or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for resume=); else pass another path."
            ) from e
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({cause}); delete it or pass resume=<another path>"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict; "
            "pass resume=<a checkpoint written by the engine>"
        )
    return state


def _first_line(e: Exception) -> str:
    # torch's own messages run to a dozen lines; keep the sentence that names the problem.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    line = next((x for x in lines if "Unsupported" in x), lines[0] if lines else type(e).__name__)
    return line.split(". ")[0].removeprefix("WeightsUnpickler error: ")


def find_resume_checkpoint(
    ckpt_dir: str | Path, unusable: Callable[[dict[str, Any]], str | None] | None = None
) -> Path | None:
    """The checkpoint to resume from: ``last.ckpt`` if loadable, else the newest loadable one.

    `unusable(state)` says why this run cannot continue a loadable checkpoint (None: it can), e.g.
    one saved mid-epoch on another number of processes: the newest usable one is taken instead.
    Warns about each file it skips; None when the folder has no checkpoint; raises
    CheckpointError when it has checkpoints but none loads.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    # Temp files are what a crash mid-write leaves; nothing writes here while a run starts.
    for tmp in ckpt_dir.glob(".*.ckpt.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    last = ckpt_dir / "last.ckpt"
    # A sharded (strategy=fsdp) checkpoint is a folder of that name; its SHARDED_STATE_FILE is written last.
    others = [p for p in ckpt_dir.glob("*.ckpt") if p != last and (p.is_file() or _is_sharded(p))]
    others.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    problems = []
    for candidate in ([last] if last.is_file() or _is_sharded(last) else []) + others:
        try:
            # mmap: checks the file without reading tensors
            state = _load(candidate / SHARDED_STATE_FILE if candidate.is_dir() else candidate, "cpu", mmap=True)
        except CheckpointError as e:
            problems.append(str(e).rstrip("."))
            continue
        why = unusable(state) if unusable is not None else None
        if why:
            problems.append(f"{candidate} {why}")
            continue
        if problems:
            warnings.warn(
                f"{'; '.join(problems)}. Resuming from {candidate} instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        return candidate
    if problems:
        raise CheckpointError(
            f"no loadable checkpoint in {ckpt_dir}: {'; '.join(problems)}. "
            "Delete them, or pass resume=null to start fresh."
        )
    return None


SHARDED_STATE_FILE = "state.pt"
"""In a sharded checkpoint folder: everything but the weights and optimizer state (written last)."""


def _is_sharded(path: Path) -> bool:
    return path.is_dir() and (path / ".metadata").is_file()


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint file, or a sharded checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- checks


def load_weights(
    model: nn.Module, state: dict[str, Any], path: str | Path, strict: bool = True, advice: str | None = None
) -> None:
    """Load `state` into `model`; with `strict`, a misfit first raises the full list (`check_model_state`)."""
    if strict:
        check_model_state(model, state, path, advice)
    model.load_state_dict(state, strict=strict)


def check_model_state(
    model: nn.Module, state_dict: dict[str, Any], path: str | Path, advice: str | None = None
) -> None:
    """Raise CheckpointError listing every key and shape where ``state_dict`` misfits ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected
        and isinstance(v, torch.Tensor)
        and isinstance(expected[k], torch.Tensor)
        and v.shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"checkpoint {path} does not fit the model; it was probably written by another model or config."]
    if missing:
        lines.append(f"  missing keys (in the model, not in the checkpoint): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys (in the checkpoint, not in the model): {_listing(unexpected)}")
    if mismatched:
        lines.append("  shape mismatches:")
        lines += [f"    {m}" for m in mismatched[:20]]
        if len(mismatched) > 20:
            lines.append(f"    ... and {len(mismatched) - 20} more")
    lines.append(
        advice
        or "Resume with the model config that wrote it, pass resume=<another path>, or resume=null to start fresh."
    )
    raise CheckpointError("\n".join(lines))


def _listing(keys: list[str], limit: int = 20) -> str:
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# ----------------------------------------------------------------------------- Lightning layout

LIGHTNING_VERSION = "2.6.6"
"""Written as ``pytorch-lightning_version``: the Lightning release whose checkpoint keys ours carry
(Lightning's own loaders read this key before anything else)."""


def add_lightning_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Add Lightning's top-level keys to an engine checkpoint, naming the same objects (no copies).

    ``lr_schedulers`` and ``callbacks`` already have Lightning's names and meaning.
    """
    state["epoch"] = state["loop"]["epoch"]
    state["global_step"] = state["loop"]["global_step"]
    state["pytorch-lightning_version"] = LIGHTNING_VERSION
    state["state_dict"] = state["model"]
    state["optimizer_states"] = state["optimizers"]
    state["hyper_parameters"] = state["hparams"]
    return state


def engine_layout(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint with the engine's keys, whether the engine or Lightning wrote it.

    A Lightning checkpoint keeps its own keys (hooks may read them) and gains ``model``,
    ``optimizers`` (absent when it holds weights only), ``loop`` and ``hparams``. Lightning's
    mid-epoch loop state has no exact equivalent here: such a checkpoint resumes at the start of
    the next epoch, and ``loop["note"]`` says so. Callback states are not carried over (their keys
    differ).
    """
    if "model" in ckpt:
        return ckpt
    if "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is neither an engine nor a Lightning checkpoint (its keys: {_listing(sorted(map(str, ckpt)))}); "
            "pass the path of a .ckpt file written by a Trainer"
        )
    out = dict(ckpt)
    next_epoch, note = _lightning_next_epoch(ckpt, path)
    out.update(
        model=ckpt["state_dict"],
        hparams=ckpt.get("hyper_parameters") or {},
        scaler=ckpt.get("MixedPrecision") or {},  # Lightning's 16-mixed plugin keeps the GradScaler here
        callbacks={},
        loop={
            "epoch": next_epoch - 1,
            "global_step": int(ckpt.get("global_step", 0)),
            "batches_done": 0,
            "epoch_done": True,  # so the loop starts `next_epoch` from its first batch
            "note": note,
        },
    )
    if "optimizer_states" in ckpt:
        out["optimizers"] = ckpt["optimizer_states"]
    return out


def _lightning_next_epoch(ckpt: dict[str, Any], path: str | Path) -> tuple[int, str]:
    """The epoch a resumed run starts, from Lightning's fit-loop progress counters."""
    epoch = int(ckpt.get("epoch", 0))
    fit_loop = (ckpt.get("loops") or {}).get("fit_loop") or {}
    progress = (fit_loop.get("epoch_progress") or {}).get("current") or {}
    batches = fit_loop.get("epoch_loop.batch_progress") or {}
    if not progress:  # no loop state (an old or hand-made file): it was saved at an epoch end
        return epoch + 1, ""
    if batches.get("is_last_batch", True):  # every training batch of the epoch ran
        return int(progress.get("processed", epoch + 1)), ""
    next_epoch = int(progress.get("started", epoch + 1))
    done = int((batches.get("current") or {}).get("processed", 0))
    return next_epoch, (
        f"{path} is a Lightning checkpoint saved in the middle of epoch {next_epoch - 1} (after {done} batches); "
        f"its mid-epoch loop state cannot be resumed exactly, so training resumes at the start of epoch {next_epoch}"
    )


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch CPU) and the CUDA one of `device`, as plain data.

    Only the CUDA device this process uses (default: the current one) is saved, under
    ``cuda_device``: a checkpoint is read back by rank, so a rank placed on another GPU index
    after a restart still gets its own stream, not the stream of whatever GPU has that index.
    """
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if np is not None:
        name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        keys = torch.from_numpy(keys.astype(np.int64))  # a tensor, not an ndarray: weights_only
        state["numpy"] = (name, keys, int(pos), int(has_gauss), float(cached_gaussian))
    # is_initialized, not is_available: a run that never touched CUDA has drawn nothing from
    # it, and initialising CUDA here would break DataLoader workers forked later.
    device = _cuda_device(device)
    if device is not None:
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what capture_rng_state returned, so the next random numbers match exactly.

    The CUDA stream goes to `device` (default: the current one), whichever index it had when saved.
    """
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    torch.set_rng_state(state["torch"].cpu())
    if np is not None and "numpy" in state:
        name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    device = _cuda_device(device)
    cuda_state = cuda_rng_state_for(state, device)
    if cuda_state is not None and device is not None:
        torch.cuda.set_rng_state(cuda_state.cpu(), device)


@contextlib.contextmanager
def isolate_rng(device: torch.device | None = None) -> Iterator[None]:
    """Lightning's `isolate_rng`: every global random stream (python, numpy, torch CPU, the CUDA one
    of `device`) as it was on entry, again on exit; what runs inside draws nothing from the outside's."""
    state = capture_rng_state(device)
    try:
        yield
    finally:
        restore_rng_state(state, device)


def _cuda_device(device: torch.device | None) -> torch.device | None:
    """The CUDA device whose RNG this process uses; None when CUDA was never initialised."""
    if device is not None and device.type != "cuda":
        return None
    if not torch.cuda.is_initialized():
        return None
    if device is None or device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def cuda_rng_state_for(state: dict[str, Any], device: torch.device | None) -> torch.Tensor | None:
    """The saved CUDA RNG state that belongs on `device` (None: nothing to restore there).

    A ``cuda_device`` entry is this rank's own stream, restored on whatever device the rank
    uses now. An older checkpoint's ``cuda`` list holds every visible device's stream by
    index: the entry at the device's index is the best guess (it was right when the layout
    was the same).
    """
    if device is None or device.type != "cuda":
        return None
    if "cuda_device" in state:
        return state["cuda_device"]
    saved = state.get("cuda", [])
    index = device.index or 0
    if not saved:
        return None
    if index >= len(saved):
        warnings.warn(
            f"the checkpoint holds CUDA RNG states for {len(saved)} device(s), none for cuda:{index}; "
            "random numbers on this GPU will differ from the original run",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return saved[index]


# ----------------------------------------------------------------------------- savers


class SyncSaver:
    """Writes each checkpoint before ``save`` returns; same interface as AsyncSaver."""

    def save(self, state: dict[str, Any], path: str | Path) -> None:
        save_checkpoint(state, path)

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


class AsyncSaver:
    """Copies the state to CPU on the caller's thread, then writes it in one background thread.

    The training loop stalls only for the copy (and for a previous write still running, so at
    most one CPU copy exists). A failed background write is raised by the next ``save``,
    ``wait`` or ``close``: nothing is skipped silently.

    GPU tensors are copied into pinned staging buffers kept from one save to the next (one per
    tensor, matched by its place in the state, shape and dtype): every copy is queued without
    blocking and the saver waits once, for all of them. CPU tensors are plainly cloned.
    """

    def __init__(self) -> None:
        # Worker threads of an executor are joined at interpreter exit, so a pending write
        # finishes even if close() is never reached (SIGKILL aside: the atomic write covers it).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-saver")
        self._pending: Future[None] | None = None
        self._staging: dict[int, torch.Tensor] = {}  # the n-th GPU tensor of the state -> its pinned buffer

    def save(self, state: dict[str, Any], path: str | Path) -> None:
        self.wait()  # the previous write has read the staging buffers: they can be filled again
        devices: set[torch.device] = set()
        count = iter(range(1 << 62))

        def copy(t: torch.Tensor) -> torch.Tensor:
            if t.device.type != "cuda":
                return _cpu_copy(t)
            slot = next(count)
            buffer = self._staging.get(slot)
            if buffer is None or buffer.shape != t.shape or buffer.dtype != t.dtype:
                buffer = self._staging[slot] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            buffer.copy_(t.detach(), non_blocking=True)
            devices.add(t.device)
            return buffer

        try:
            cpu_state = _convert(state, copy, "state")  # the caller may mutate state once this returns
        except TypeError as e:
            raise CheckpointError(f"cannot save checkpoint {path}: {e}") from e
        for device in devices:  # one wait for every queued copy
            torch.cuda.current_stream(device).synchronize()
        self._pending = self._executor.submit(save_checkpoint, cpu_state, path)

    def wait(self) -> None:
        """Block until the pending write is done; re-raise its error as CheckpointError."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        error = pending.exception()
        if isinstance(error, CheckpointError):
            raise error
        if error is not None:
            raise CheckpointError(f"background checkpoint write failed: {error}") from error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
