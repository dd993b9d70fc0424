"""`Module` and `DataModule`: the research code's side of the engine (Lightning's names)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from . import lightning_api
from .batch import infer_batch_size, move_to_device
from .optim import LightningOptimizer, clip_gradients

if TYPE_CHECKING:
    from .trainer import Trainer

_T = TypeVar("_T")


class AttributeDict(dict):
    """Lightning's `hparams`: ``self.hparams.lr`` and ``self.hparams["lr"]`` both work."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(f"hparams has no '{name}' (saved: {', '.join(self) or 'none'})") from exc

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class Module(nn.Module):
    """A `torch.nn.Module` with training hooks.

    Override `training_step` (return a loss tensor or a dict with ``"loss"``), optionally
    `validation_step`/`test_step`/`predict_step`, and `configure_optimizers`. Hooks (all
    optional, Lightning's names and arguments):
    prepare_data, setup(stage), teardown(stage), configure_callbacks,
    on_fit_start, on_train_start, on_train_epoch_start, on_train_batch_start(batch, batch_idx),
    on_before_zero_grad(optimizer), on_before_backward(loss), on_after_backward,
    on_before_optimizer_step(optimizer), on_train_batch_end(outputs, batch, batch_idx),
    on_train_epoch_end, on_train_end, on_fit_end;
    for each of validation, test and predict: on_<stage>_model_eval, on_<stage>_start,
    on_<stage>_epoch_start, on_<stage>_batch_start(batch, batch_idx[, dataloader_idx]),
    on_<stage>_batch_end(outputs, batch, batch_idx[, dataloader_idx]), on_<stage>_epoch_end,
    on_<stage>_end, on_validation_model_train / on_test_model_train;
    on_save_checkpoint(checkpoint), on_load_checkpoint(checkpoint).
    Loaders may be defined here too (train/val/test/predict_dataloader), used when neither
    loaders nor a datamodule are passed to the Trainer.

    Set ``self.automatic_optimization = False`` to step the optimizers yourself in
    training_step (GANs, RL): see the manual-optimization section below.
    """

    # Which __init__ argument `hparams` came from: "kwargs" (all of them) or one argument's name
    # when save_hyperparameters got a single dict/dataclass (Lightning's `hparams_name`).
    _hparams_name: str | None = None
    automatic_optimization: bool = True  # False: training_step calls manual_backward and opt.step()
    # Lightning's checkpoint keys for the hyperparameters (the engine writes them too).
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self.hparams = AttributeDict()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters, buffers and submodules
        except AttributeError:
            error = lightning_api.missing_attribute("LightningModule", name)
            if error is None:
                raise
            raise error from None  # a Lightning name the engine does not provide: say what instead

    # -- what the trainer provides -------------------------------------------------------
    @property
    def hparams_initial(self) -> AttributeDict:
        """A copy of the hyperparameters as save_hyperparameters stored them."""
        return AttributeDict(self.hparams)

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the parameters (torch's default without any)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError("this module is not attached to a Trainer; call trainer.fit(module) first")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        # Bypass nn.Module.__setattr__ so the trainer is not registered as a submodule.
        object.__setattr__(self, "_trainer", trainer)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return self._trainer.device if self._trainer is not None else torch.device("cpu")

    @property
    def on_gpu(self) -> bool:
        """Whether the module's parameters are on a CUDA device (Lightning's property)."""
        return self.device.type == "cuda"

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.env.rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.env.local_rank if self._trainer is not None else 0

    @property
    def logger(self) -> Any:
        """The Trainer's (first) logger; None when not attached."""
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Any]:
        if self._trainer is None:
            return []
        loggers = getattr(self._trainer, "loggers", None)
        return list(loggers) if loggers is not None else [self._trainer.logger]

    @property
    def example_input_array(self) -> Any:
        """An example input for `forward` (the model summary shows output shapes with it)."""
        return self.__dict__.get("_example_input_array")

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self.__dict__["_example_input_array"] = value

    def print(self, *args: Any, **kwargs: Any) -> None:
        """`print` on global rank 0 only (one line per job, not one per process)."""
        if self._trainer is None or self._trainer.is_global_zero:
            print(*args, **kwargs)

    def freeze(self) -> None:
        """No gradients for any parameter, and eval mode (as Lightning)."""
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = True
        self.train()

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Every process's tensors (in nested dicts/lists/tuples), stacked on a new leading dim of size
        world_size. In one process the data come back unchanged, as in Lightning; numbers become
        tensors. With `sync_grads`, gradients flow back through the gather."""
        env = self._trainer.env if self._trainer is not None else None
        device = self.device

        def gather(t: torch.Tensor) -> torch.Tensor:
            return env.all_gather(t, group, sync_grads) if env is not None and env.active else t

        return _map_tensors(data, gather, device)

    # -- logging ---------------------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        prog_bar: bool = False,
        logger: bool = True,
        sync_dist: bool = False,
        batch_size: int | None = None,
        reduce_fx: str = "mean",
        add_dataloader_idx: bool = True,
    ) -> None:
        """Record a metric; epoch values are sample-weighted means (torchmetrics: `compute()`).

        With several validation/test dataloaders the name gets ``/dataloader_idx_N`` (unless
        add_dataloader_idx=False). Logged with both on_step and on_epoch, a value is logged as
        ``<name>_step`` and ``<name>_epoch``, and trainer.callback_metrics also holds ``<name>``.
        """
        if self._trainer is None:
            return
        self._trainer.results.log(
            name,
            value,
            on_step=on_step,
            on_epoch=on_epoch,
            prog_bar=prog_bar,
            logger=logger,
            sync_dist=sync_dist,
            batch_size=batch_size,
            reduce_fx=reduce_fx,
            add_dataloader_idx=add_dataloader_idx,
        )

    def log_dict(self, metrics: Mapping[str, Any], **kwargs: Any) -> None:
        for name, value in metrics.items():
            self.log(name, value, **kwargs)

    def save_hyperparameters(
        self, *args: Any, ignore: str | Sequence[str] | None = None, logger: bool = True, **kwargs: Any
    ) -> None:
        """Store hyperparameters in `self.hparams` (saved in checkpoints, sent to W&B).

        Accepts dataclasses, dicts and keyword arguments; with no arguments, the caller's
        ``__init__`` arguments are collected, and names (strings) pick some of them, as in
        Lightning. `ignore` drops names (e.g. submodules passed to ``__init__``).
        """
        names = [a for a in args if isinstance(a, str)]
        args = tuple(a for a in args if not isinstance(a, str))
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        init_args: dict[str, Any] = {}
        if caller is not None:
            info = inspect.getargvalues(caller)
            init_args = {k: info.locals[k] for k in info.args if k != "self"}
            if info.keywords:  # **kwargs of __init__
                init_args.update(info.locals[info.keywords])
        if len(args) == 1 and not names and not kwargs:  # one object: remember which argument it was
            self._hparams_name = next((k for k, v in init_args.items() if v is args[0]), None)
        if names or (not args and not kwargs):
            self._hparams_name = "kwargs"
            missing = [n for n in names if n not in init_args]
            if missing:
                raise ValueError(f"save_hyperparameters: {missing} are not arguments of __init__ ({list(init_args)})")
            kwargs = {**({n: init_args[n] for n in names} if names else init_args), **kwargs}
        for key in [ignore] if isinstance(ignore, str) else list(ignore or ()):
            kwargs.pop(key, None)
        for arg in args:
            if dataclasses.is_dataclass(arg) and not isinstance(arg, type):
                self.hparams.update(dataclasses.asdict(arg))
            elif isinstance(arg, Mapping):
                self.hparams.update(arg)
            else:
                raise TypeError(f"save_hyperparameters takes dataclasses, dicts or keywords, not {type(arg).__name__}")
        for key, value in kwargs.items():
            self.hparams[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

    @classmethod
    def load_from_checkpoint(
        cls: type[_T],
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> _T:
        """The module rebuilt from a checkpoint (the engine's or Lightning's) with its weights.

        ``cls(**saved hparams)`` is called, keyword arguments replacing saved values (an
        ``__init__`` argument, or a field of the one dict/dataclass given to save_hyperparameters),
        then the weights load (``strict``: every key must fit). ``map_location`` as in
        ``torch.load``; with None the module ends on the device the weights were saved from.
        ``weights_only=False`` unpickles a trusted checkpoint whose hparams hold Python objects.
        """
        ckpt, obj = _rebuild(cls, checkpoint_path, map_location, hparams_file, weights_only, kwargs, "")
        from .checkpoint import load_weights

        obj.on_load_checkpoint(ckpt)  # before the weights load, as in Lightning (it may edit them)
        state = ckpt.get("state_dict", ckpt["model"])
        advice = "Pass the hparams that built it, or strict=False to load what fits."
        load_weights(obj, state, checkpoint_path, strict, advice)
        device = next((t.device for t in state.values() if isinstance(t, torch.Tensor)), None)
        return obj.to(device) if device is not None else obj  # where map_location put the weights

    # -- manual optimization (automatic_optimization = False) --------------------------------
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer from configure_optimizers, or a list of them when there are several.

        Each is wrapped so that ``opt.step()`` goes through the run's precision (gradient
        scaling) and counts one global step; ``use_pl_optimizer=False`` gives the torch objects.
        """
        trainer = self.trainer
        opts = trainer.lightning_optimizers if use_pl_optimizer else trainer.optimizers
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        """The scheduler, a list of them, or None; under manual optimization you step them."""
        schedulers = [s.scheduler for s in self.trainer.lr_schedulers]
        if not schedulers:
            return None
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """``loss.backward()`` with the run's gradient scaling and, under DDP, the gradient sync
        (skipped inside ``opt.toggle_model(sync_grad=False)``); extra arguments go to backward."""
        if self.automatic_optimization:
            raise RuntimeError(
                "manual_backward needs manual optimization: set self.automatic_optimization = False "
                "in __init__ (or return the loss from training_step and let the trainer step)"
            )
        self.trainer.fit_loop.manual_backward(loss, *args, **kwargs)

    def toggle_optimizer(self, optimizer: torch.optim.Optimizer | LightningOptimizer) -> None:
        """Only `optimizer`'s parameters require grad until `untoggle_optimizer` (as Lightning):
        every parameter of the other optimizers is switched off, its previous state kept."""
        state: dict[nn.Parameter, bool] = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    if param not in state:
                        state[param] = param.requires_grad
                        param.requires_grad = False
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.requires_grad = state[param]
        self._param_requires_grad_state = state

    def untoggle_optimizer(self, optimizer: torch.optim.Optimizer | LightningOptimizer) -> None:
        """Give the other optimizers' parameters back the requires_grad they had before toggling."""
        optimizer = optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        state = getattr(self, "_param_requires_grad_state", {})
        for opt in self.trainer.optimizers:
            if opt is optimizer:
                continue
            for group in opt.param_groups:
                for param in group["params"]:
                    if param in state:
                        param.requires_grad = state[param]
        self._param_requires_grad_state = {}

    @contextmanager
    def toggled_optimizer(self, optimizer: torch.optim.Optimizer | LightningOptimizer) -> Iterator[None]:
        """``with self.toggled_optimizer(opt):`` toggles on entry and untoggles on exit."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def clip_gradients(
        self,
        optimizer: torch.optim.Optimizer | LightningOptimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip `optimizer`'s gradients by norm (default) or value; under 16-mixed they are
        unscaled first, so the threshold applies to the true gradients."""
        trainer = self.trainer
        if gradient_clip_val is None:
            gradient_clip_val = trainer.gradient_clip_val or 0.0
        elif trainer.gradient_clip_val is not None and trainer.gradient_clip_val != gradient_clip_val:
            raise ValueError(
                f"clip_gradients(gradient_clip_val={gradient_clip_val}) contradicts "
                f"Trainer(gradient_clip_val={trainer.gradient_clip_val}); set one of them"
            )
        algorithm = (gradient_clip_algorithm or trainer.gradient_clip_algorithm or "norm").lower()
        if algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm {algorithm!r} is invalid; use 'norm' or 'value'")
        if gradient_clip_val <= 0:
            return
        optimizer = optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        if not trainer.fit_loop.automatic:  # (automatic optimization unscaled before its hooks)
            trainer.precision.unscale_for_clipping(optimizer)
        clip_gradients(optimizer, gradient_clip_val, algorithm)

    # -- optimization hooks (automatic optimization): Lightning's defaults, overridable ---------
    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None
    ) -> None:
        """Step the optimizer once per accumulation window. Override to act around the step (e.g. warm the
        learning rate up); ``optimizer_closure`` runs training_step, zero_grad and backward, so call
        ``optimizer.step(closure=optimizer_closure)``, or ``optimizer_closure()`` to skip the step."""
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        """Zero the gradients, on the first batch of each window (after training_step, before backward)."""
        optimizer.zero_grad()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step one scheduler when its interval and frequency are due (`metric`: ReduceLROnPlateau's value)."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip before each optimizer step (the Trainer's gradient_clip_val/algorithm are passed in)."""
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """The backward pass of automatic optimization (override for e.g. ``retain_graph``)."""
        loss.backward(*args, **kwargs)

    # -- batch transfer hooks (Lightning's DataHooks; a datamodule's override wins) --------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The batch as the loader gave it, before it moves to the device."""
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move the batch to `device` (tensors in nested dicts, lists, tuples and dataclasses)."""
        return move_to_device(batch, device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The batch on the device, before the step (e.g. GPU augmentation)."""
        return batch

    # -- the research code overrides these ----------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        raise NotImplementedError("define training_step(self, batch, batch_idx) in your Module")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Lightning's default: the module's forward on the whole batch."""
        return self(batch)

    def configure_model(self) -> None:
        """Build (part of) the model here, not in ``__init__``, when it should be built on its
        device or under sharding (strategy=fsdp: may call ``fully_shard`` on its own blocks).
        Called at the start of every fit/validate/test, so guard against building twice."""

    def configure_optimizers(self) -> Any:
        raise NotImplementedError("define configure_optimizers(self) in your Module")

    def configure_callbacks(self) -> Any:
        """Callbacks this module needs (a callback or a list); each replaces the Trainer's callbacks of its type."""
        return []

    def prepare_data(self) -> None:
        """Download or build files; runs on one process per node, before `setup`."""

    def setup(self, stage: str) -> None:
        """Runs on every process at the start of fit/validate/test/predict (`stage`), before the move to the device."""

    def teardown(self, stage: str) -> None:
        """Runs on every process at the end of fit/validate/test/predict (`stage`)."""

    # Modes around evaluation: Lightning's defaults (the loops restore each submodule's mode afterwards
    # unless the *_model_train hook is overridden).
    def on_validation_model_eval(self) -> None:
        self.eval()

    def on_validation_model_train(self) -> None:
        self.train()

    def on_validation_model_zero_grad(self) -> None:
        """Called when a validation in fit starts at an optimizer step (not inside an accumulation window)."""
        self.zero_grad(set_to_none=True)

    def on_test_model_eval(self) -> None:
        self.eval()

    def on_test_model_train(self) -> None:
        self.train()

    def on_predict_model_eval(self) -> None:
        self.eval()

    # Hooks: no-ops unless overridden (Lightning's defaults).
    def on_fit_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_test_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_test_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_fit_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_load_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_before_optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_before_zero_grad(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_before_backward(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_after_backward(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_batch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_test_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_test_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_test_batch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_epoch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_batch_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass


class DataModule:
    """Owns the data: `prepare_data` (once per node), `setup(stage)`, the loaders, `teardown(stage)`.

    `save_hyperparameters()` and `hparams` work as on the Module; `trainer` is set by the Trainer;
    `state_dict`/`load_state_dict` travel in checkpoints (e.g. a data curriculum's position).
    """

    prepare_data_per_node = True  # False: prepare_data runs on global rank 0 only (a shared filesystem)
    trainer: Trainer | None = None
    name: str | None = None  # Lightning's optional display name
    save_hyperparameters = Module.save_hyperparameters
    CHECKPOINT_HYPER_PARAMS_KEY = "datamodule_hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "datamodule_hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "datamodule_hparams_type"

    @property
    def hparams(self) -> AttributeDict:
        if "_hparams" not in self.__dict__:  # subclasses need not call super().__init__()
            self.__dict__["_hparams"] = AttributeDict()
        return self.__dict__["_hparams"]

    @property
    def hparams_initial(self) -> AttributeDict:
        return AttributeDict(self.hparams)

    def on_exception(self, exception: BaseException) -> None:
        """Called when fit fails or is interrupted, after the callbacks' on_exception."""

    def prepare_data(self) -> None:
        """Download or build files; runs on local rank 0 only."""

    def setup(self, stage: str) -> None:
        """Build datasets for `stage` ("fit", "validate", "test" or "predict"); runs on every process."""

    def teardown(self, stage: str) -> None:
        """Release what `setup(stage)` built; runs on every process at the end of the stage."""

    def train_dataloader(self) -> Any:
        raise NotImplementedError("define train_dataloader(self) in your DataModule")

    def val_dataloader(self) -> Any:
        return None

    def test_dataloader(self) -> Any:
        return None

    def predict_dataloader(self) -> Any:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def from_datasets(
        cls,
        train_dataset: Any = None,
        val_dataset: Any = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
        batch_size: int = 1,
        num_workers: int = 0,
        **datamodule_kwargs: Any,
    ) -> Any:
        """A datamodule serving these datasets (each a Dataset, or a list/dict of them), as Lightning's:
        training shuffled, the others in order; batch_size/num_workers go to __init__ where it takes them."""
        from torch.utils.data import DataLoader, Dataset, IterableDataset

        def loaders(data: Any, shuffle: bool = False) -> Any:
            if isinstance(data, Mapping):
                return {k: loaders(v, shuffle) for k, v in data.items()}
            if isinstance(data, (list, tuple)) and not isinstance(data, Dataset):
                return [loaders(v, shuffle) for v in data]
            shuffle = shuffle and not isinstance(data, IterableDataset)
            pin = torch.cuda.is_available()
            return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=pin)

        params = {} if cls.__init__ is object.__init__ else dict(inspect.signature(cls.__init__).parameters)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        special = {
            k: v for k, v in {"batch_size": batch_size, "num_workers": num_workers}.items() if takes_any or k in params
        }
        datamodule = cls(**datamodule_kwargs, **special)
        for name, data, shuffle in (
            ("train_dataloader", train_dataset, True),
            ("val_dataloader", val_dataset, False),
            ("test_dataloader", test_dataset, False),
            ("predict_dataloader", predict_dataset, False),
        ):
            if data is not None:
                setattr(datamodule, name, lambda data=data, shuffle=shuffle: loaders(data, shuffle))
        return datamodule

    on_before_batch_transfer = Module.on_before_batch_transfer
    transfer_batch_to_device = Module.transfer_batch_to_device
    on_after_batch_transfer = Module.on_after_batch_transfer

    @classmethod
    def load_from_checkpoint(
        cls: type[_T],
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> _T:
        """The DataModule rebuilt from the hparams it saved in a checkpoint (keywords replace them)."""
        return _rebuild(cls, checkpoint_path, map_location, hparams_file, weights_only, kwargs, "datamodule_")[1]


# -- rebuilding from a checkpoint ---------------------------------------------------------------
def _rebuild(
    cls: type[_T],
    path: str | Path,
    map_location: Any,
    hparams_file: str | Path | None,
    weights_only: bool | None,
    overrides: dict[str, Any],
    prefix: str,
) -> tuple[dict[str, Any], _T]:
    """Load ``path`` and call ``cls`` with the saved hparams (``prefix``: "" or "datamodule_")."""
    from .checkpoint import CheckpointError, engine_layout, load_checkpoint

    ckpt = engine_layout(load_checkpoint(path, map_location, weights_only), path)
    hparams = dict(ckpt.get("datamodule_hyper_parameters" if prefix else "hparams") or {})
    if hparams_file is not None:  # Lightning's hparams.yaml instead of the saved values
        import yaml

        hparams = dict(yaml.safe_load(Path(hparams_file).read_text()) or {})
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    name = ckpt.get(f"{prefix}hparams_name")
    unknown = [k for k in overrides if k not in params and k not in hparams and not takes_any]
    if unknown:
        raise TypeError(
            f"{cls.__name__}.load_from_checkpoint got {', '.join(unknown)}, which is neither an __init__ argument "
            f"nor a saved hparam (saved: {', '.join(hparams) or 'none'})"
        )
    missing = [k for k in (ckpt.get("hparams_unsaved") or []) if k not in overrides and not prefix]
    if missing and name in overrides:  # the whole object they were part of is passed
        missing = []
    if missing:
        shown = ", ".join(f"{k}={hparams.get(k)!r}" for k in missing)
        raise CheckpointError(
            f"{path} saved the hparams {shown} only as text (they are not plain data). Pass them: "
            f"{cls.__name__}.load_from_checkpoint(path, {missing[0]}=...), or leave them out of "
            f"save_hyperparameters(ignore=[{missing[0]!r}]) and build them in __init__"
        )
    if name and name != "kwargs" and name in params:  # save_hyperparameters(cfg): rebuild `cfg`
        fields = {k: v for k, v in overrides.items() if k not in params}
        kwargs = {name: _as_annotated(cls, name, {**hparams, **fields})}
        kwargs.update({k: v for k, v in overrides.items() if k in params})
    else:
        kwargs = {**hparams, **overrides}
        if not takes_any:  # Lightning's rule: saved values __init__ does not take are dropped
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    return ckpt, cls(**kwargs)


def _as_annotated(cls: type, name: str, value: dict[str, Any]) -> Any:
    """``value`` as the dataclass ``cls.__init__`` annotates argument ``name`` with, else the dict."""
    try:
        hint = typing.get_type_hints(cls.__init__).get(name)
    except Exception:  # an annotation that names something only imported for type checking
        return value
    return _build(hint, value)


def _build(hint: Any, value: Any) -> Any:
    for option in typing.get_args(hint) or (hint,):  # `Config | None` -> Config
        if isinstance(option, type) and dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            hints = typing.get_type_hints(option)
            fields = {f.name for f in dataclasses.fields(option) if f.init}
            return option(**{k: _build(hints.get(k), v) for k, v in value.items() if k in fields})
    return value


_TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def batch_preparer(module: Module, datamodule: Any) -> Callable[..., tuple[Any, int]] | None:
    """Where the module or the datamodule overrides a batch transfer hook, what the loops call on each
    batch instead of moving it themselves: Lightning's chain (the datamodule's override first),
    on_before_batch_transfer, transfer_batch_to_device, on_after_batch_transfer. None otherwise
    (chosen once per loop: no hook, no cost)."""

    def pick(name: str) -> Callable[..., Any] | None:
        for owner, base in ((datamodule, DataModule), (module, Module)):
            fn = getattr(owner, name, None) if owner is not None else None
            if callable(fn) and getattr(type(owner), name, None) is not getattr(base, name, None):
                return fn
        return None

    before, transfer, after = (pick(name) for name in _TRANSFER_HOOKS)
    if before is None and transfer is None and after is None:
        return None

    def prepare(
        batch: Any, device: torch.device, dtype: torch.dtype | None, dataloader_idx: int = 0
    ) -> tuple[Any, int]:
        if before is not None:
            batch = before(batch, dataloader_idx)
        batch = move_to_device(batch, device, dtype) if transfer is None else transfer(batch, device, dataloader_idx)
        if after is not None:
            batch = after(batch, dataloader_idx)
        return batch, infer_batch_size(batch)

    return prepare


def is_datamodule(obj: Any) -> bool:
    """A DataModule (ours or duck-typed), as opposed to a DataLoader or other iterable."""
    if isinstance(obj, nn.Module):
        return False  # a Module has setup() too
    return callable(getattr(obj, "train_dataloader", None)) or callable(getattr(obj, "setup", None))


def _map_tensors(data: Any, fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> Any:
    """`fn` applied to every tensor (and number, as a tensor on `device`) in nested dicts, lists, tuples."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return fn(torch.tensor(data, device=device))
    if isinstance(data, Mapping):
        return type(data)({k: _map_tensors(v, fn, device) for k, v in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_map_tensors(v, fn, device) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(_map_tensors(v, fn, device) for v in data)
    return data
