"""The evaluation and prediction loops, and the `validate`/`test`/`predict` verbs around them.

Each function takes the Trainer as its first argument. After `fit`, the verbs run on the fitted module when none is passed; `ckpt_path` chooses the
weights: None (a passed module's own weights; otherwise the best checkpoint of the fit when
there is one, else the fitted weights), "best", "last" or a path.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import checkpointing
from . import distributed as D
from . import fsdp as FSDP
from .batch import infer_batch_size, move_to_device
from .hooks import overrides
from .module import Module, batch_preparer, is_datamodule
from .states import RunningStage, TrainerFn, TrainerStatus

if TYPE_CHECKING:
    from .trainer import Trainer

_HOOK_NAME = {"val": "validation", "test": "test", "predict": "predict"}


def as_list(loaders: Any) -> list[Any]:
    """Several dataloaders arrive as a list or tuple; one as itself; none as None."""
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def request_loader(source: Any, method: str) -> Any:
    """`source.<method>()` (a datamodule's or the module's own loader), or None where it has none."""
    fn = getattr(source, method, None)
    return fn() if callable(fn) else None


def batches(loader: Any, limit: int | float | None) -> int:
    """How many batches of `loader` a loop runs: all, a fraction (float) or a count (int)."""
    if loader is None:
        return 0
    try:
        total = len(loader)
    except TypeError:
        total = sys.maxsize  # an iterable without len: run until it ends
    if limit is None:
        return total
    if isinstance(limit, float):
        return min(total, int(total * limit)) if limit < 1.0 else total
    return min(total, int(limit))


def prepare_loaders(trainer: Trainer, loaders: Any) -> Any:
    """Shard evaluation loaders over the processes (`D.EvalBatchSampler`); a list stays a list.
    With ``use_distributed_sampler=False`` they stay as they are."""
    if not trainer.use_distributed_sampler:
        return loaders
    seed = trainer.seed if trainer.seed is not None else 0
    if isinstance(loaders, (list, tuple)):
        return [D.prepare_loader(loader, trainer.env, seed, train=False) for loader in loaders]
    return D.prepare_loader(loaders, trainer.env, seed, train=False)


# -- the evaluation loop ---------------------------------------------------------------------
def run_eval(
    trainer: Trainer,
    stage: str,
    loaders: Any,
    limit: int | float | None,
    cap: int | None = None,
    stoppable: bool = False,
) -> dict[str, float] | None:
    """One validation ("val") or test epoch over one or several loaders; returns the epoch metrics.

    `stoppable` (fit's validations): a stop signal (SLURM's USR1 before the time limit, SIGTERM,
    Ctrl-C) ends the validation at the next batch, so a long validation cannot make the save
    miss the time limit. Such a cut validation returns None and runs none of the end hooks (its
    metrics would cover part of the data); the resumed run runs it again.

    Lightning's hook order: on_<stage>_model_eval, on_<stage>_start, on_<stage>_epoch_start, per
    batch (on_<stage>_batch_start, the step, on_<stage>_batch_end), on_<stage>_epoch_end,
    on_<stage>_end, on_<stage>_model_train. With several loaders, the steps and batch hooks get a
    `dataloader_idx` and logged names end in ``/dataloader_idx_N``.
    """
    module = trainer.module
    loaders = as_list(loaders)
    metrics, hooks = trainer.metrics, trainer.hooks
    results = metrics.current = metrics.eval
    results.reset(stage)
    name = _HOOK_NAME[stage]
    step = module.validation_step if stage == "val" else module.test_step
    if trainer.strategy.fsdp is not None:
        step = FSDP.redirect(module, step)  # through the root's forward, where FSDP gathers weights
    if len(loaders) > 1:
        _check_takes_dataloader_idx(step, f"{name}_step")
    outer_stage = trainer.state.stage
    if trainer.sanity_checking:
        trainer.state.stage = RunningStage.SANITY_CHECKING
    else:
        trainer.state.stage = RunningStage.VALIDATING if stage == "val" else RunningStage.TESTING
    modes = _model_eval(module, name)
    hooks.call(f"on_{name}_start")
    hooks.call(f"on_{name}_epoch_start")
    cut = not _run_batches(trainer, name, step, loaders, limit, cap, stage if stoppable else None)
    results.dataloader_suffix, results.copy = "", False
    if cut:
        _model_train(module, name, modes)
        trainer.state.stage = outer_stage
        return None
    hooks.call(f"on_{name}_epoch_end")
    values = results.compute_epoch()
    metrics.eval_end(trainer, values)
    hooks.call(f"on_{name}_end")
    _model_train(module, name, modes)
    trainer.state.stage = outer_stage
    return values


def _stop_signalled(trainer: Trainer) -> bool:
    """Whether a stop signal arrived (on any rank: every rank cuts at the same batch)."""
    flag = trainer.fit_loop.state.signal is not None
    return trainer.env.any(flag) if trainer.env.active else flag


def _metric_states(module: Module) -> list[tuple[Any, dict[str, Any], int]]:
    """The states of the module's torchmetrics metrics, to undo what a copied batch adds to them."""
    saved = []
    for m in module.modules():
        state = getattr(m, "metric_state", None)  # a torchmetrics Metric: its accumulated state
        if isinstance(state, dict) and hasattr(m, "_update_count"):
            copies = {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in state.items()}
            saved.append((m, copies, m._update_count))
    return saved


def _restore_metric_states(saved: list[tuple[Any, dict[str, Any], int]]) -> None:
    for m, state, count in saved:
        for name, value in state.items():
            setattr(m, name, value)
        m._update_count, m._computed = count, None


def _sharded_eval(trainer: Trainer, batches: int) -> AbstractContextManager[None]:
    """strategy=fsdp: agree on the batch counts, and gather the weights once when they differ
    (each forward of a sharded model is a collective); nothing otherwise."""
    fsdp = trainer.strategy.fsdp
    return fsdp.evaluation(max(batches, 0)) if fsdp is not None else nullcontext()


def _model_eval(module: Module, name: str) -> dict[torch.nn.Module, bool]:
    """Call on_<name>_model_eval (default: module.eval()); returns every submodule's mode to restore."""
    modes = {m: m.training for m in module.modules()}
    getattr(module, f"on_{name}_model_eval")()
    return modes


def _model_train(module: Module, name: str, modes: dict[torch.nn.Module, bool]) -> None:
    """Restore each submodule's mode (a frozen BatchNorm stays in eval), unless the module overrides the hook."""
    hook = f"on_{name}_model_train"
    if overrides(module, hook):
        getattr(module, hook)()
        return
    for m, training in modes.items():
        m.training = training


def _check_takes_dataloader_idx(fn: Callable[..., Any], name: str) -> None:
    params = inspect.signature(fn).parameters
    if "dataloader_idx" not in params and not any(p.kind is p.VAR_POSITIONAL for p in params.values()):
        raise TypeError(
            f"{name} is given several dataloaders: add a `dataloader_idx` argument, "
            f"e.g. def {name}(self, batch, batch_idx, dataloader_idx=0)"
        )


# -- validate / test / predict after (or without) fit ---------------------------------------------------
_LOADER_METHOD = {"validate": "val_dataloader", "test": "test_dataloader", "predict": "predict_dataloader"}
_FN = {"validate": TrainerFn.VALIDATING, "test": TrainerFn.TESTING, "predict": TrainerFn.PREDICTING}


@contextmanager
def _verb(
    trainer: Trainer,
    verb: str,
    module: Module | None,
    datamodule: Any,
    loaders: Any,
    ckpt_path: str | Path | None,
    weights_only: bool | None,
) -> Iterator[tuple[Module, Any]]:
    """Set up `verb` (the module, its data, its weights) and yield (module, prepared loaders); then
    teardown, and whatever happened, the loaders' workers and the DDP wrapper freed."""
    method = _LOADER_METHOD[verb]
    model_given = module is not None
    module = _target(trainer, verb, module)
    datamodule = _data_source(trainer, module, datamodule, loaders, method)
    path = checkpointing.resolve_for_verb(trainer, verb, ckpt_path, model_given)  # before setup: "best" is the fit's
    trainer.connect(module, datamodule, verb)
    trainer.state.fn, trainer.state.status = _FN[verb], TrainerStatus.RUNNING
    prepared: Any = None
    try:
        if loaders is None:
            loaders = request_loader(datamodule if datamodule is not None else module, method)
        if not as_list(loaders):
            raise ValueError(
                f"{verb} needs dataloaders=, a datamodule with {method}(), or a {method}() method on the module"
            )
        prepared = prepare_loaders(trainer, loaders)
        if path is not None:
            checkpointing.load_module_weights(trainer, module, path, weights_only)
        trainer.strategy.wrap(trainer, module, trainer.fit_loop.automatic)
        yield module, prepared
        trainer.hooks.teardown(verb)
        trainer.state.status = TrainerStatus.FINISHED
    finally:
        if trainer.state.status != TrainerStatus.FINISHED:
            trainer.state.status = TrainerStatus.INTERRUPTED
        for loader in as_list(prepared):  # persistent workers end with the verb (as Lightning)
            D.shutdown_workers(loader)
        trainer.strategy.release()
        trainer.checkpoint_io.wait()


def evaluate_only(
    trainer: Trainer,
    verb: str,
    module: Module | None,
    datamodule: Any,
    loaders: Any,
    ckpt_path: str | Path | None,
    verbose: bool = True,
    weights_only: bool | None = None,
) -> list[dict[str, float]]:
    """`trainer.validate` / `trainer.test`: one epoch; a metrics dict per dataloader (as Lightning)."""
    if datamodule is not None and not is_datamodule(datamodule):
        datamodule, loaders = None, datamodule  # Lightning's positional order: test(model, dataloaders)
    elif datamodule is None and is_datamodule(loaders):
        datamodule, loaders = loaders, None
    with _verb(trainer, verb, module, datamodule, loaders, ckpt_path, weights_only) as (module, prepared):
        if verb == "validate":
            trainer.val_loader, limit = prepared, trainer.limit_val_batches
        else:  # Lightning's own limit for testing, not the validation one
            trainer.test_loader, limit = prepared, trainer.limit_test_batches
            limit = trainer.fast_dev_run if limit is None and trainer.fast_dev_run else limit
        metrics = run_eval(trainer, "val" if verb == "validate" else "test", prepared, limit)
        assert metrics is not None  # (only a stoppable validation inside fit returns None)
        trainer.metrics.flush(trainer)
        if verbose:
            trainer.print(f"{verb}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return _per_dataloader(metrics, len(as_list(prepared)))


def _per_dataloader(metrics: dict[str, float], count: int) -> list[dict[str, float]]:
    """One dict per dataloader: its own ``/dataloader_idx_N`` values plus those logged without the suffix."""
    if count <= 1:
        return [metrics]
    shared = {k: v for k, v in metrics.items() if "/dataloader_idx_" not in k}
    return [
        {**shared, **{k: v for k, v in metrics.items() if k.endswith(f"/dataloader_idx_{i}")}} for i in range(count)
    ]


def predict(
    trainer: Trainer,
    module: Module | None,
    loaders: Any,
    datamodule: Any,
    return_predictions: bool | None,
    ckpt_path: str | Path | None,
) -> list[Any] | None:
    """`trainer.predict`: run `predict_step` over the predict loaders, gradients off, module in eval mode.

    Returns the steps' outputs, moved to the CPU: a list over batches, or a list of such lists with
    several dataloaders; None with return_predictions=False. Under DDP each process predicts its own
    shard (`D.EvalBatchSampler`: each sample on one process) and returns those: gather them with
    `self.all_gather` in predict_step, or write each rank's to its own file.
    """
    if datamodule is None and is_datamodule(loaders):
        datamodule, loaders = loaders, None
    with _verb(trainer, "predict", module, datamodule, loaders, ckpt_path, None) as (module, prepared):
        prepared = as_list(prepared)
        trainer.predict_loader = prepared[0] if len(prepared) == 1 else prepared
        outputs = _run_predict(trainer, module, prepared, trainer.limit_predict_batches)
    if return_predictions is False:
        return None
    return outputs[0] if len(outputs) == 1 else outputs


def _run_predict(trainer: Trainer, module: Module, loaders: list[Any], limit: int | float | None) -> list[list[Any]]:
    """Lightning's order: on_predict_model_eval, on_predict_start, on_predict_epoch_start, per batch
    (on_predict_batch_start, predict_step, on_predict_batch_end), on_predict_epoch_end, on_predict_end."""
    hooks = trainer.hooks
    results = trainer.metrics.current = trainer.metrics.eval
    results.reset("predict")
    results.enabled = False  # nothing is logged while predicting
    if len(loaders) > 1:
        _check_takes_dataloader_idx(module.predict_step, "predict_step")
    predictions: list[list[Any]] = [[] for _ in loaders]
    predict_step = module.predict_step
    if trainer.strategy.fsdp is not None:
        predict_step = FSDP.redirect(module, predict_step)
    trainer.state.stage = RunningStage.PREDICTING
    modes = _model_eval(module, "predict")
    try:
        hooks.call("on_predict_start")
        hooks.call("on_predict_epoch_start")
        _run_batches(trainer, "predict", predict_step, loaders, limit, predictions=predictions)
        hooks.call("on_predict_epoch_end")
        hooks.call("on_predict_end")
    finally:
        results.enabled = True
        results.dataloader_suffix, results.copy = "", False
        trainer.state.stage = None
        for m, training in modes.items():
            m.training = training
    return predictions


def _run_batches(
    trainer: Trainer,
    name: str,
    step: Callable[..., Any],
    loaders: list[Any],
    limit: int | float | None,
    cap: int | None = None,
    stoppable: str | None = None,
    predictions: list[list[Any]] | None = None,
) -> bool:
    """The batches of an evaluation or prediction epoch, each loader in turn, gradients off.

    A batch past the loader's real ones (`D.EvalBatchSampler` evens the ranks' counts) runs only
    for the step's collectives: its metric states are undone and its prediction dropped. With
    `stoppable` (the stage's name), a stop signal ends the epoch: False.
    """
    module, results, hooks = trainer.module, trainer.metrics.eval, trainer.hooks
    several = len(loaders) > 1
    batch_start, batch_end = hooks.for_(f"on_{name}_batch_start"), hooks.for_(f"on_{name}_batch_end")
    device, dtype, precision = trainer.device, trainer.precision.input_dtype, trainer.precision
    prepare, cpu = batch_preparer(module, trainer.datamodule), torch.device("cpu")
    with torch.no_grad():
        for dataloader_idx, loader in enumerate(loaders):
            n = batches(loader, limit)
            n = min(n, cap) if cap is not None else n
            with _sharded_eval(trainer, n):
                if n <= 0:
                    continue
                results.dataloader_suffix = f"/dataloader_idx_{dataloader_idx}" if several else ""
                extra = (dataloader_idx,) if several else ()
                real = D.real_batches(loader)
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= n:
                        break
                    if stoppable and _stop_signalled(trainer):
                        trainer.print(
                            f"{stoppable} stopped at batch {batch_idx} of {n} by a stop signal; "
                            "it runs again when the run resumes"
                        )
                        return False
                    results.copy = batch_idx >= real  # a copy run only for the step's collectives: not counted
                    saved = _metric_states(module) if results.copy else None
                    if prepare is None:
                        batch = move_to_device(batch, device, dtype)
                        results.batch_size = infer_batch_size(batch)
                    else:  # the module's or datamodule's batch transfer hooks
                        batch, results.batch_size = prepare(batch, device, dtype, dataloader_idx)
                    for fn in batch_start:
                        fn(batch, batch_idx, *extra)
                    with precision.autocast():
                        outputs = step(batch, batch_idx, *extra)
                    for fn in batch_end:
                        fn(outputs, batch, batch_idx, *extra)
                    if saved is not None:
                        _restore_metric_states(saved)
                    elif predictions is not None:
                        predictions[dataloader_idx].append(move_to_device(outputs, cpu))
                    if results.step:  # self.log(..., on_step=True): each batch's value goes to the logger
                        trainer.metrics.eval_step(trainer)
    return True


# -- which module, which data, which weights ------------------------------------------------------------
def _target(trainer: Trainer, verb: str, module: Module | None) -> Module:
    if module is not None:
        return module
    if trainer.module is None:
        raise ValueError(f"trainer.{verb}() without a model needs a previous trainer.fit(model): pass the model")
    return trainer.module


def _data_source(trainer: Trainer, module: Module, datamodule: Any, loaders: Any, method: str) -> Any:
    """The datamodule to set up: the one passed; with no data passed, none when the module defines
    `method` itself, else the fit's datamodule."""
    if datamodule is not None or loaders is not None:
        return datamodule
    if callable(getattr(module, method, None)):
        return None
    return trainer.datamodule
