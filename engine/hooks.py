"""The one hook dispatcher: who gets called for a hook, in which order, timed by the profiler.

A hook reaches the callbacks first (each as ``hook(trainer, module, *args)``), then the module
when it overrides `Module`'s no-op (Lightning's `trainer/call.py` order). The list per hook is
built once per verb (`for_`), so a step pays only for hooks that do something; under a profiler
each entry is timed under its owner's name. Setup and teardown keep Lightning's order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from .callbacks import Callback, ModelCheckpoint
from .module import Module

if TYPE_CHECKING:
    from .trainer import Trainer

# Module hooks the loops call through the dispatcher: name -> whether they take the hook's arguments.
MODULE_HOOKS = {
    "on_train_batch_start": True,
    "on_train_batch_end": True,
    "on_before_optimizer_step": True,
    "on_fit_start": False,
    "on_train_start": False,
    "on_train_epoch_start": False,
    "on_train_end": False,
    "on_fit_end": False,
    # Called once per batch only where a callback or the module defines them (`FitLoop.backward_fn`).
    "on_before_zero_grad": True,
    "on_before_backward": True,
    "on_after_backward": False,
    # The evaluation and prediction loops (engine/evaluation.py).
    **{f"on_{stage}_{when}": False for stage in ("validation", "test", "predict") for when in ("start", "end")},
    **{f"on_{stage}_epoch_{when}": False for stage in ("validation", "test", "predict") for when in ("start", "end")},
    **{f"on_{stage}_batch_{when}": True for stage in ("validation", "test", "predict") for when in ("start", "end")},
}


def overrides(owner: Any, name: str) -> bool:
    """Whether a module (or its instance) replaces `Module`'s `name`."""
    return name in vars(owner) or getattr(type(owner), name, None) is not getattr(Module, name, None)


class Hooks:
    """`trainer.hooks`: `call(hook, *args)`, or `for_(hook)` for a loop that calls them per batch."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._lists: dict[str, list[Callable[..., Any]]] = {}

    def reset(self) -> None:
        """A verb starts: the module or callbacks may have changed."""
        self._lists = {}

    def for_(self, hook: str) -> list[Callable[..., Any]]:
        hooks = self._lists.get(hook)
        if hooks is None:
            hooks = self._lists[hook] = self._find(hook)
        return hooks

    def call(self, hook: str, *args: Any) -> None:
        for fn in self.for_(hook):
            fn(*args)

    def _find(self, hook: str) -> list[Callable[..., Any]]:
        trainer = self.trainer
        module = trainer.module
        named: list[tuple[str, Callable[..., Any]]] = [
            (f"[Callback]{type(c).__name__}.{hook}", partial(getattr(c, hook), trainer, module))
            for c in trainer.callbacks
            if callable(getattr(c, hook, None)) and getattr(c, "is_disabled", False) is not True
        ]
        if hook in MODULE_HOOKS and overrides(module, hook):
            fn = getattr(module, hook)
            named.append(
                (f"[LightningModule]{type(module).__name__}.{hook}", fn if MODULE_HOOKS[hook] else _no_args(fn))
            )
        wrap = trainer.profiler.wrap  # the identity unless a profiler is on
        return [wrap(name, fn) for name, fn in named]

    def timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` timed as ``[phase] <phase>`` under a profiler; `fn` itself otherwise."""
        return self.trainer.profiler.wrap(f"[phase] {phase}", fn)

    # -- setup and teardown, in Lightning's order ------------------------------------------------
    def setup(self, stage: str) -> None:
        """prepare_data (the datamodule's, the module's) on one process per node, then on every process
        setup: the datamodule's, the callbacks', the module's."""
        trainer = self.trainer
        for owner in (trainer.datamodule, trainer.module):
            # Local rank 0 of each node, or global rank 0 with prepare_data_per_node=False.
            per_node = getattr(owner, "prepare_data_per_node", True)
            if owner is not None and (trainer.env.local_rank == 0 if per_node else trainer.is_global_zero):
                owner.prepare_data()
        trainer.env.barrier()
        if trainer.datamodule is not None:
            trainer.datamodule.setup(stage)
        for c in trainer.callbacks:
            if callable(getattr(c, "setup", None)):
                c.setup(trainer, trainer.module, stage)
        trainer.module.setup(stage)

    def teardown(self, stage: str) -> None:
        """The datamodule's teardown(stage), the callbacks', the module's."""
        trainer = self.trainer
        if trainer.datamodule is not None and callable(getattr(trainer.datamodule, "teardown", None)):
            trainer.datamodule.teardown(stage)
        for c in trainer.callbacks:
            if callable(getattr(c, "teardown", None)):
                c.teardown(trainer, trainer.module, stage)
        trainer.module.teardown(stage)

    def exception(self, exc: BaseException) -> None:
        """on_exception: the callbacks', the module's, the datamodule's."""
        self.call("on_exception", exc)
        datamodule = self.trainer.datamodule
        if datamodule is not None and callable(getattr(datamodule, "on_exception", None)):
            datamodule.on_exception(exc)

    def attach_module_callbacks(self, module: Module) -> None:
        """Add what `module.configure_callbacks()` returns, as Lightning does: a returned callback
        replaces the Trainer's callbacks of its type (or a parent type), and checkpoint callbacks
        move to the end, so they save what the others did."""
        trainer = self.trainer
        extra = module.configure_callbacks()
        if not extra:
            return
        extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
        replaced = {
            type(c) for c in trainer.callbacks if type(c) is not Callback and any(isinstance(e, type(c)) for e in extra)
        }
        if replaced:
            names = ", ".join(sorted(t.__name__ for t in replaced))
            trainer.print(f"configure_callbacks replaces the Trainer's {names}")
        merged = [c for c in trainer.callbacks if type(c) not in replaced] + extra
        trainer.callbacks = [c for c in merged if not isinstance(c, ModelCheckpoint)] + [
            c for c in merged if isinstance(c, ModelCheckpoint)
        ]


def _no_args(fn: Callable[[], Any]) -> Callable[..., Any]:
    return lambda *args: fn()
