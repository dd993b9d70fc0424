"""What a checkpoint holds and how a run comes back from one: build, save, resolve, restore.

`build` gathers everything a resumed fit needs (weights, optimizers, schedulers, scaler, each
rank's random streams and partial epoch sums, the loop's `LoopState`, callbacks, logger,
config); `restore` puts it back. `resolve_resume` picks the file a fit resumes from
(``last``/``auto``/a path); `resolve_for_verb` the one validate/test/predict use (``best``,
``last``, a path, or after a fit its best). The file format itself (atomic writes, loading,
Lightning's layout) is checkpoint.py's; sharded (FSDP) folders are fsdp.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import distributed as D
from . import fsdp as FSDP
from .checkpoint import (
    CheckpointError,
    add_lightning_keys,
    capture_rng_state,
    check_model_state,
    engine_layout,
    find_resume_checkpoint,
    load_checkpoint,
    load_weights,
    restore_rng_state,
)
from .loop_state import LoopState
from .results import Results
from .version import __version__

if TYPE_CHECKING:
    from .module import Module
    from .trainer import Trainer


def build(trainer: Trainer) -> dict[str, Any]:
    """Everything needed to resume (plain containers: every checkpoint loads with weights_only=True)."""
    module, loop = trainer.module, trainer.fit_loop
    # Per rank, in one gather: the random streams and the partial epoch sums (each rank's own).
    per_rank = trainer.env.gather_object(
        {
            "rng": capture_rng_state(trainer.device),
            "results": trainer.metrics.train.state_dict(),
            "epoch_rng": loop.epoch_rng if not loop.state.epoch_done else None,
        }
    )
    batch_size = getattr(trainer.train_loader, "batch_size", None)
    state = {
        "engine_version": __version__,
        "model": module.state_dict(),
        "optimizers": [o.state_dict() for o in trainer.optimizers],
        "lr_schedulers": [s.scheduler.state_dict() for s in trainer.lr_schedulers],
        "scaler": trainer.precision.scaler.state_dict(),
        "rng": [r["rng"] for r in per_rank],
        "epoch_rng": [r["epoch_rng"] for r in per_rank],  # mid-epoch, for a loader the engine did not shard
        "loop": loop.state.state_dict(batch_size, trainer.world_size),
        "callbacks": {
            c.state_key: c.state_dict()
            for c in trainer.callbacks
            if hasattr(c, "state_dict") and hasattr(c, "state_key")
        },
        "logger": trainer.logger.state_dict(),
        "results": [r["results"] for r in per_rank],
        "callback_metrics": dict(trainer.callback_metrics),  # a resumed finished run still reports them
        "config": plain(trainer.config),
        "hparams": plain(module.hparams),
        "datamodule": trainer.datamodule.state_dict() if trainer.datamodule is not None else {},
    }
    # What load_from_checkpoint needs to rebuild the module (and datamodule), Lightning's keys.
    unsaved = [k for k, v in module.hparams.items() if not is_plain(v)]
    if unsaved:  # saved as their str(): load_from_checkpoint asks for them instead of passing text
        state["hparams_unsaved"] = unsaved
    if getattr(module, "_hparams_name", None):
        state["hparams_name"] = module._hparams_name
    dm_hparams = getattr(trainer.datamodule, "hparams", None)
    if dm_hparams:
        state["datamodule_hyper_parameters"] = plain(dm_hparams)
        if getattr(trainer.datamodule, "_hparams_name", None):
            state["datamodule_hparams_name"] = trainer.datamodule._hparams_name
    add_lightning_keys(state)
    module.on_save_checkpoint(state)
    trainer.hooks.call("on_save_checkpoint", state)
    if state.get("state_dict") is not state["model"]:  # a Lightning-style hook replaced the weights
        state["model"] = state["state_dict"]
    return state


def save(trainer: Trainer, path: Path, weights_only: bool) -> None:
    """Write `build`'s state: global rank 0 writes (FSDP: every rank its shards), all ranks wait."""
    state = build(trainer)
    if weights_only:
        for key in ("optimizers", "optimizer_states", "lr_schedulers", "scaler", "callbacks"):
            state.pop(key, None)
    if trainer.strategy.fsdp is not None:  # every process writes its shards into one folder
        trainer.checkpoint_io.wait()
        FSDP.save(state, path, trainer.module, [] if weights_only else trainer.optimizers)
        return
    error: Exception | None = None
    if trainer.is_global_zero:
        try:
            if path.is_dir():  # a sharded checkpoint of that name (resumed without fsdp): set aside
                FSDP.step_aside(path)
            trainer.checkpoint_io.save(state, path)
        except Exception as e:  # the other ranks learn of it below and stop with it, instead of waiting
            error = e
    if trainer.env.active:  # the barrier: every rank waits for rank 0's outcome
        failed = trainer.env.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if failed is not None and error is None:
            raise CheckpointError(f"rank 0 could not save {path}: {failed}")
    if error is not None:
        raise error


# -- which checkpoint ------------------------------------------------------------------------------
def resolve_resume(trainer: Trainer, ckpt_path: str | Path) -> Path | None:
    """The file fit resumes from: "last" (an error when there is none), "auto" (None: start
    fresh), or a path."""
    if str(ckpt_path) in ("last", "auto"):
        # resume=auto (a requeued job, maybe on another node count) falls back to an epoch-end checkpoint
        why = _other_global_batch(trainer) if str(ckpt_path) == "auto" else None
        found = _newest_in_folder(trainer, why, recover=True)
        if found is None and str(ckpt_path) == "last":
            raise CheckpointError(
                f"resume=last but {trainer.default_root_dir / 'checkpoints'} holds no checkpoint; "
                "check run_name/output_dir, or use resume=auto to start fresh when there is none"
            )
        return found
    path = Path(ckpt_path)
    if not path.is_file() and not FSDP.is_sharded_checkpoint(path):
        raise CheckpointError(f"checkpoint {path} does not exist; pass resume=last or an existing .ckpt path")
    return path


def _newest_in_folder(trainer: Trainer, unusable: Any = None, recover: bool = False) -> Path | None:
    """The newest loadable checkpoint in <default_root_dir>/checkpoints (`unusable(state)`: why not).

    `recover` (a fit resuming, on rank 0): first put back what a crash mid-save of a sharded
    checkpoint left; validate/test/predict only read the folder (a fit may be saving into it)."""
    folder = Path(trainer.default_root_dir) / "checkpoints"
    if recover and folder.is_dir():
        FSDP.recover(folder)
    return find_resume_checkpoint(folder, unusable)


def _other_global_batch(trainer: Trainer) -> Any:
    """Why this run cannot continue a checkpoint's state: saved mid-epoch with another global batch."""

    def why(state: dict[str, Any]) -> str | None:
        loop = state.get("loop") or {}
        if not LoopState.mid_epoch(loop):
            return None
        saved = LoopState.global_batch(loop)
        mine = (getattr(trainer.train_loader, "batch_size", None) or 0) * trainer.world_size
        return None if saved == mine else f"was saved mid-epoch with a global batch of {saved}, this run's is {mine}"

    return why


def resolve_for_verb(trainer: Trainer, verb: str, ckpt_path: str | Path | None, model_given: bool) -> Path | None:
    """The checkpoint whose weights `verb` (validate/test/predict) uses, or None for the module's
    weights as they are."""
    checkpoints = trainer.checkpoint_callbacks
    if ckpt_path in ("best", "last") and trainer.fast_dev_run:
        raise ValueError(f'{verb}(ckpt_path="{ckpt_path}"): fast_dev_run saves no checkpoints; pass a checkpoint path')
    if ckpt_path is None:
        if model_given or trainer.fast_dev_run or not checkpoints or not checkpoints[0].best_model_path:
            return None
        best = checkpoints[0].best_model_path  # as Lightning: a verb after fit uses the best weights
        trainer.print(f"{verb}: using the best checkpoint of the fit, {best} (pass ckpt_path= to choose)")
        return _existing(Path(best), verb)
    if ckpt_path == "best":
        if not checkpoints:
            raise ValueError(
                f'{verb}(ckpt_path="best") needs a ModelCheckpoint callback in Trainer(callbacks=[...]); '
                "or pass a checkpoint path"
            )
        if not checkpoints[0].best_model_path:
            raise ValueError(
                f'{verb}(ckpt_path="best"): the ModelCheckpoint has saved no best checkpoint yet (fit first; '
                'fast_dev_run saves none); pass ckpt_path="last" or a checkpoint path'
            )
        return _existing(Path(checkpoints[0].best_model_path), verb)
    if ckpt_path == "last":
        saved = [Path(c.last_model_path) for c in checkpoints if c.last_model_path]
        saved = [p for p in saved if p.is_file() or FSDP.is_sharded_checkpoint(p)]
        found = max(saved, key=lambda p: p.stat().st_mtime) if saved else _newest_in_folder(trainer)
        if found is None:
            raise ValueError(
                f'{verb}(ckpt_path="last"): no last checkpoint was saved (ModelCheckpoint(save_last=True) '
                "writes one); pass a checkpoint path"
            )
        return found
    return _existing(Path(ckpt_path), verb)


def _existing(path: Path, verb: str) -> Path:
    if not path.is_file() and not FSDP.is_sharded_checkpoint(path):
        raise CheckpointError(f"{verb}: checkpoint {path} does not exist; pass ckpt_path= an existing .ckpt file")
    return path


# -- coming back -----------------------------------------------------------------------------------
def load_module_weights(trainer: Trainer, module: Module, path: Path, weights_only: bool | None = None) -> None:
    """validate/test/predict: the module's weights from `path` (every rank reads the file rank 0 chose)."""
    path = trainer.env.broadcast_object(path)
    if trainer.strategy.fsdp is not None or FSDP.is_sharded_checkpoint(path):  # into the shards (or a plain module)
        ckpt = FSDP.load(path, module, None, weights_only)
        module.on_load_checkpoint(ckpt)
        trainer.print(f"loaded the weights of {path}")
        return
    # The weights only: the file is mapped on the CPU (the optimizer state in it is never read), then
    # load_state_dict copies the weights into the module's parameters: no second copy on the device.
    ckpt = engine_layout(load_checkpoint(path, "cpu", weights_only, mmap=True), path)
    state = ckpt.get("model", ckpt.get("state_dict"))
    if state is None:
        raise CheckpointError(f"{path} holds no model weights (no 'model' or 'state_dict' entry)")
    module.on_load_checkpoint(ckpt)
    load_weights(module, state, path)
    trainer.print(f"loaded the weights of {path}")


def restore(trainer: Trainer, ckpt_path: str | Path, weights_only: bool | None = None) -> None:
    """fit(ckpt_path=...): continue the saved fit exactly (see the module docstring)."""
    # Rank 0 picks the file (resume=last may skip unreadable ones); every rank loads that one.
    path = trainer.env.broadcast_object(resolve_resume(trainer, ckpt_path) if trainer.is_global_zero else None)
    if path is None:
        return
    module, loop = trainer.module, trainer.fit_loop
    sharded = trainer.strategy.fsdp is not None or FSDP.is_sharded_checkpoint(path)
    if sharded:  # loads weights and optimizer state in place, resharded for this world size
        ckpt = FSDP.load(path, module, trainer.optimizers, weights_only)
    else:
        # On the CPU first: load_state_dict copies the weights into the parameters and the optimizer
        # moves its state to them, so the device never holds a second copy of the model.
        ckpt = engine_layout(load_checkpoint(path, "cpu", weights_only), path)
    for key in ("model", "optimizers", "loop"):
        if key not in ckpt:
            raise CheckpointError(
                f"{path} holds no '{key}' entry, so training cannot resume from it (weights only: "
                "ModelCheckpoint(save_weights_only=True) or save_checkpoint(weights_only=True)?); "
                "load its weights with YourModule.load_from_checkpoint(path) and fit without ckpt_path"
            )
    if not sharded:
        check_model_state(module, ckpt["model"], path)
    _check_data_position(trainer, path, ckpt["loop"])
    if not sharded:
        module.load_state_dict(ckpt["model"])
        if len(ckpt["optimizers"]) != len(trainer.optimizers):
            raise CheckpointError(
                f"{path} holds {len(ckpt['optimizers'])} optimizer states; "
                f"configure_optimizers returned {len(trainer.optimizers)}"
            )
        for opt, s in zip(trainer.optimizers, ckpt["optimizers"], strict=True):
            opt.load_state_dict(s)
    for sched, s in zip(trainer.lr_schedulers, ckpt.get("lr_schedulers", []), strict=False):
        sched.scheduler.load_state_dict(s)
    scaler_state = ckpt.get("scaler") or {}  # empty: saved without gradient scaling (32, bf16)
    if scaler_state:
        trainer.precision.scaler.load_state_dict(scaler_state)
    elif trainer.precision.scaling:
        trainer.print(f"{path} holds no GradScaler state (saved without 16-mixed): the gradient scale starts fresh")
    loop.state.load_state_dict(ckpt["loop"])
    if not ckpt["loop"]["epoch_done"]:  # each rank's own partial epoch sums (an older checkpoint: rank 0's dict)
        results = ckpt.get("results", {})
        if isinstance(results, list):  # folded where the process count changed
            results = Results.fold(results, trainer.env.rank, trainer.world_size)
        trainer.metrics.train.load_state_dict(results, trainer.device)
    saved = ckpt.get("callbacks", {})
    for c in trainer.callbacks:
        key = getattr(c, "state_key", None)
        if key in saved and hasattr(c, "load_state_dict"):
            c.load_state_dict(saved[key])
    trainer.callback_metrics.update(ckpt.get("callback_metrics", {}))
    trainer.logger.load_state_dict({**ckpt.get("logger", {}), "checkpoint": str(path)})  # W&B: a parent's path
    if trainer.datamodule is not None:
        trainer.datamodule.load_state_dict(ckpt.get("datamodule", {}))
    rank, rng, epoch_rng = trainer.env.rank, ckpt.get("rng", []), ckpt.get("epoch_rng") or []
    loop.epoch_rng = epoch_rng[rank] if loop.state.batches_done and rank < len(epoch_rng) else None
    if rng and rank < len(rng):  # a rank the saving run did not have keeps its own seeded streams
        restore_rng_state(rng[rank], trainer.device)  # its CUDA one on the device this rank uses
    module.on_load_checkpoint(ckpt)
    trainer.hooks.call("on_load_checkpoint", ckpt)  # the callbacks' hook (after the module's, as Lightning)
    trainer.resumed_from = str(path)
    if ckpt["loop"].get("note"):
        trainer.print(ckpt["loop"]["note"])
    trainer.print(f"resumed from {path} at epoch {trainer.current_epoch}, step {trainer.global_step}")


def _check_data_position(trainer: Trainer, path: Path, loop: dict[str, Any]) -> None:
    """A mid-epoch checkpoint continues its epoch's data order only with the same global batch
    (the engine's sampler), or the same processes and batch size (your own sampler or an iterable)."""
    if not LoopState.mid_epoch(loop):
        return
    world, batch_size = trainer.world_size, getattr(trainer.train_loader, "batch_size", None)
    saved_global = LoopState.global_batch(loop)
    if not isinstance(getattr(trainer.train_loader, "sampler", None), D.ResumableSampler):
        try:
            note = D.resume_check(trainer.train_loader, loop, world)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        if note:
            trainer.print(note)
    elif batch_size is None or saved_global != batch_size * world:
        # The sampler resumes at a global position, so the process count may change as long as the
        # global batch (batch_size x processes) does not: the same batches, split differently.
        raise CheckpointError(
            f"{path} was saved mid-epoch with a global batch of {saved_global} (batch_size="
            f"{loop.get('batch_size')} on {loop.get('world_size')} process(es)); this run has batch_size="
            f"{batch_size} on {world}. Keep data.batch_size x processes = {saved_global} "
            "(e.g. data.batch_size="
            f"{saved_global // world if saved_global % world == 0 else '?'}), "
            "or resume from a checkpoint saved at an epoch end"
        )


# -- config and hparams as plain data -------------------------------------------------------------
def plain(value: Any) -> Any:
    """Config and hparams as plain containers (checkpoints load with weights_only=True)."""
    from .config import to_dict

    if isinstance(value, (list, tuple)):  # a tuple stays one: torch.load(weights_only=True) reads tuples
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if not isinstance(value, Mapping):
        value = to_dict(value)  # a dataclass
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def is_plain(value: Any) -> bool:
    """Whether a hyperparameter survives `plain` unchanged (numbers, str, None, lists, dicts)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False
