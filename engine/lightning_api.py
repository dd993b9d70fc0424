"""Lightning 2.6's public extension points, each honoured or refused out loud (one table).

Every name of Lightning's `LightningModule` hooks (ModelHooks, DataHooks, CheckpointHooks),
the module's and datamodule's other public names, `Callback`'s hooks, and the Trainer's public
names and arguments is listed below with what the engine does with it:

- ``YES``: honoured as Lightning does;
- ``"differs: ..."``: honoured, with the difference stated (the README lists it);
- ``"no: ..."``: not provided; the text says what to do instead.

`check_overrides` runs once when fit/validate/test/predict start: a module, datamodule or
callback that defines a hook marked "no" stops the run with one line naming the hook and the
alternative, so nothing overridden is silently skipped. `missing_attribute` gives the line for
a "no" name that code reads. The README's table is generated from here (`markdown()`), and
tests/test_lightning_api.py checks the names against Lightning's own classes.
"""

from __future__ import annotations

from typing import Any

from .config import ConfigError

YES = "yes"

# LightningModule hooks: ModelHooks, DataHooks and CheckpointHooks (also a datamodule's DataHooks).
MODULE_HOOKS: dict[str, str] = {
    "configure_model": YES,
    "configure_sharded_model": "no: deprecated in Lightning; build the layers in configure_model",
    "on_after_backward": YES,
    "on_after_batch_transfer": YES,
    "on_before_backward": YES,
    "on_before_batch_transfer": YES,
    "on_before_optimizer_step": YES,
    "on_before_zero_grad": YES,
    "on_fit_end": YES,
    "on_fit_start": YES,
    "on_load_checkpoint": YES,
    "on_predict_batch_end": YES,
    "on_predict_batch_start": YES,
    "on_predict_end": YES,
    "on_predict_epoch_end": YES,
    "on_predict_epoch_start": YES,
    "on_predict_model_eval": YES,
    "on_predict_start": YES,
    "on_save_checkpoint": YES,
    "on_test_batch_end": YES,
    "on_test_batch_start": YES,
    "on_test_end": YES,
    "on_test_epoch_end": YES,
    "on_test_epoch_start": YES,
    "on_test_model_eval": YES,
    "on_test_model_train": YES,
    "on_test_start": YES,
    "on_train_batch_end": YES,
    "on_train_batch_start": YES,
    "on_train_end": YES,
    "on_train_epoch_end": YES,
    "on_train_epoch_start": YES,
    "on_train_start": YES,
    "on_validation_batch_end": YES,
    "on_validation_batch_start": YES,
    "on_validation_end": YES,
    "on_validation_epoch_end": YES,
    "on_validation_epoch_start": YES,
    "on_validation_model_eval": YES,
    "on_validation_model_train": YES,
    "on_validation_model_zero_grad": YES,
    "on_validation_start": YES,
    "predict_dataloader": YES,
    "prepare_data": YES,
    "setup": YES,
    "teardown": YES,
    "test_dataloader": YES,
    "train_dataloader": YES,
    "transfer_batch_to_device": YES,
    "val_dataloader": YES,
}

# LightningModule's other public names (torch.nn.Module's own are untouched).
MODULE: dict[str, str] = {
    "CHECKPOINT_HYPER_PARAMS_KEY": YES,
    "CHECKPOINT_HYPER_PARAMS_NAME": YES,
    "CHECKPOINT_HYPER_PARAMS_TYPE": YES,
    "all_gather": YES,
    "automatic_optimization": YES,
    "backward": YES,
    "clip_gradients": YES,
    "configure_callbacks": YES,
    "configure_gradient_clipping": YES,
    "configure_optimizers": YES,
    "current_epoch": YES,
    "device": YES,
    "device_mesh": "no: strategy=fsdp shards over the engine's own mesh; build yours in configure_model",
    "dtype": YES,
    "example_input_array": YES,
    "fabric": "no: there is no Fabric here; use the Trainer",
    "freeze": YES,
    "global_rank": YES,
    "global_step": YES,
    "hparams": YES,
    "hparams_initial": YES,
    "load_from_checkpoint": YES,
    "local_rank": YES,
    "log": YES,
    "log_dict": YES,
    "logger": YES,
    "loggers": YES,
    "lr_scheduler_step": YES,
    "lr_schedulers": YES,
    "manual_backward": YES,
    "on_gpu": YES,
    "optimizer_step": YES,
    "optimizer_zero_grad": YES,
    "optimizers": YES,
    "predict_step": YES,
    "print": YES,
    "remove_ignored_hparams": "no: pass ignore=[...] to save_hyperparameters",
    "save_hyperparameters": YES,
    "strict_loading": "no: pass strict= to load_from_checkpoint",
    "test_step": YES,
    "to_onnx": "no: call torch.onnx.export(model, example_input, path)",
    "to_tensorrt": "no: compile the exported model with torch_tensorrt",
    "to_torchscript": "no: call torch.jit.script(model) or torch.jit.trace(model, example_input)",
    "toggle_optimizer": YES,
    "toggled_optimizer": YES,
    "trainer": YES,
    "training_step": YES,
    "unfreeze": YES,
    "untoggle_optimizer": YES,
    "validation_step": YES,
}

# LightningDataModule's public names besides the DataHooks above.
DATAMODULE: dict[str, str] = {
    "CHECKPOINT_HYPER_PARAMS_KEY": YES,
    "CHECKPOINT_HYPER_PARAMS_NAME": YES,
    "CHECKPOINT_HYPER_PARAMS_TYPE": YES,
    "from_datasets": YES,
    "hparams": YES,
    "hparams_initial": YES,
    "load_from_checkpoint": YES,
    "load_state_dict": YES,
    "name": YES,
    "on_exception": YES,
    "remove_ignored_hparams": "no: pass ignore=[...] to save_hyperparameters",
    "save_hyperparameters": YES,
    "state_dict": YES,
}

# Callback: every hook (callbacks are duck-typed: any object with some of these methods works).
CALLBACK: dict[str, str] = {
    name: YES
    for name in (
        "load_state_dict",
        "on_after_backward",
        "on_before_backward",
        "on_before_optimizer_step",
        "on_before_zero_grad",
        "on_exception",
        "on_fit_end",
        "on_fit_start",
        "on_load_checkpoint",
        "on_predict_batch_end",
        "on_predict_batch_start",
        "on_predict_end",
        "on_predict_epoch_end",
        "on_predict_epoch_start",
        "on_predict_start",
        "on_sanity_check_end",
        "on_sanity_check_start",
        "on_save_checkpoint",
        "on_test_batch_end",
        "on_test_batch_start",
        "on_test_end",
        "on_test_epoch_end",
        "on_test_epoch_start",
        "on_test_start",
        "on_train_batch_end",
        "on_train_batch_start",
        "on_train_end",
        "on_train_epoch_end",
        "on_train_epoch_start",
        "on_train_start",
        "on_validation_batch_end",
        "on_validation_batch_start",
        "on_validation_end",
        "on_validation_epoch_end",
        "on_validation_epoch_start",
        "on_validation_start",
        "setup",
        "state_dict",
        "state_key",
        "teardown",
    )
}

# The Trainer's public names (properties and methods).
TRAINER: dict[str, str] = {
    "accelerator": "differs: the name ('cpu', 'cuda', 'mps'), not an Accelerator object",
    "callback_metrics": YES,
    "checkpoint_callback": YES,
    "checkpoint_callbacks": YES,
    "ckpt_path": "no: read trainer.resumed_from (fit) or checkpoint_callback.best_model_path",
    "current_epoch": YES,
    "default_root_dir": "differs: a pathlib.Path, not a str",
    "device_ids": YES,
    "distributed_sampler_kwargs": "no: the engine shards with its own resumable sampler; "
    "Trainer(use_distributed_sampler=False) keeps yours",
    "early_stopping_callback": YES,
    "early_stopping_callbacks": YES,
    "enable_validation": YES,
    "estimated_stepping_batches": YES,
    "evaluating": YES,
    "fit": YES,
    "global_rank": YES,
    "global_step": YES,
    "init_module": "no: build the model as usual, or its layers in configure_model (on the device)",
    "interrupted": YES,
    "is_global_zero": YES,
    "is_last_batch": "no: compare batch_idx + 1 with trainer.num_training_batches",
    "lightning_module": YES,
    "local_rank": YES,
    "log_dir": YES,
    "logged_metrics": YES,
    "logger": YES,
    "loggers": YES,
    "lr_scheduler_configs": YES,
    "max_epochs": YES,
    "max_steps": YES,
    "min_epochs": YES,
    "min_steps": YES,
    "model": YES,
    "node_rank": YES,
    "num_devices": YES,
    "num_nodes": YES,
    "num_predict_batches": YES,
    "num_sanity_val_batches": YES,
    "num_test_batches": YES,
    "num_training_batches": YES,
    "num_val_batches": YES,
    "optimizers": YES,
    "precision": "differs: an object that compares equal to Lightning's string (trainer.precision == '16-mixed')",
    "precision_plugin": "no: trainer.precision holds the scaler and autocast()",
    "predict": YES,
    "predict_dataloaders": YES,
    "predicting": YES,
    "print": YES,
    "progress_bar_callback": YES,
    "progress_bar_metrics": YES,
    "received_sigterm": YES,
    "sanity_checking": YES,
    "save_checkpoint": YES,
    "scaler": YES,
    "strategy": "differs: the engine's Strategy, a str (its name: 'auto', 'ddp', 'fsdp') that also holds "
    "the DDP/FSDP wrappers; use torch.distributed or self.all_gather for collectives",
    "test": YES,
    "test_dataloaders": YES,
    "testing": YES,
    "train_dataloader": YES,
    "training": YES,
    "val_dataloaders": YES,
    "validate": YES,
    "validating": YES,
    "world_size": YES,
}

# Trainer(...) arguments.
TRAINER_ARGUMENTS: dict[str, str] = {
    **{
        name: YES
        for name in (
            "accelerator",
            "strategy",
            "devices",
            "num_nodes",
            "precision",
            "logger",
            "callbacks",
            "fast_dev_run",
            "max_epochs",
            "min_epochs",
            "max_steps",
            "min_steps",
            "max_time",
            "limit_train_batches",
            "limit_val_batches",
            "limit_test_batches",
            "limit_predict_batches",
            "val_check_interval",
            "check_val_every_n_epoch",
            "num_sanity_val_steps",
            "log_every_n_steps",
            "enable_checkpointing",
            "enable_progress_bar",
            "enable_model_summary",
            "accumulate_grad_batches",
            "gradient_clip_val",
            "gradient_clip_algorithm",
            "deterministic",
            "benchmark",
            "inference_mode",
            "use_distributed_sampler",
            "profiler",
            "detect_anomaly",
            "barebones",
            "sync_batchnorm",
            "reload_dataloaders_every_n_epochs",
            "default_root_dir",
            "enable_autolog_hparams",
            "overfit_batches",
        )
    },
    "plugins": "no: accepted with a warning; precision= and strategy= cover the engine's options",
    "model_registry": "no: accepted with a warning; log the checkpoint as a W&B artifact (wandb.log_model)",
}

TABLES: dict[str, dict[str, str]] = {
    "module_hooks": MODULE_HOOKS,
    "module": MODULE,
    "datamodule": DATAMODULE,
    "callback": CALLBACK,
    "trainer": TRAINER,
    "trainer_arguments": TRAINER_ARGUMENTS,
}
_TITLES = {
    "module_hooks": "LightningModule hooks (also a LightningDataModule's data hooks)",
    "module": "LightningModule: other public names",
    "datamodule": "LightningDataModule: other public names",
    "callback": "Callback hooks",
    "trainer": "Trainer: public names",
    "trainer_arguments": "Trainer(...) arguments",
}
_DATA_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


class UnsupportedHookError(ConfigError):
    """A module, datamodule or callback overrides a Lightning hook the engine does not call."""


def refused(table: dict[str, str]) -> dict[str, str]:
    """The names of `table` the engine does not provide, with what to do instead."""
    return {k: v[len("no: ") :] for k, v in table.items() if v.startswith("no: ")}


_REFUSED_MODULE_HOOKS = refused(MODULE_HOOKS)
_REFUSED_CALLBACK = refused(CALLBACK)
_REFUSED_ATTRIBUTES = {"LightningModule": refused(MODULE), "Trainer": refused(TRAINER)}


def _defines(obj: Any, name: str, base: type | None) -> bool:
    """Whether `obj`'s own class (not `base`, nn.Module or object) defines `name`."""
    for cls in type(obj).__mro__:
        if base is not None and cls is base or cls.__module__.startswith("torch."):
            break
        if name in vars(cls):
            return True
    return name in getattr(obj, "__dict__", {})


def check_overrides(module: Any, datamodule: Any, callbacks: list[Any]) -> None:
    """Stop, before anything runs, when a hook the engine never calls is overridden (checked once per verb)."""
    from .module import DataModule, Module

    found: list[tuple[str, str]] = []
    for name, instead in _REFUSED_MODULE_HOOKS.items():
        if _defines(module, name, Module):
            found.append((f"{type(module).__name__}.{name}", instead))
        if datamodule is not None and name in _DATA_HOOKS and _defines(datamodule, name, DataModule):
            found.append((f"{type(datamodule).__name__}.{name}", instead))
    for callback in callbacks:
        for name, instead in _REFUSED_CALLBACK.items():
            if _defines(callback, name, None):
                found.append((f"{type(callback).__name__}.{name}", instead))
    if found:
        where, instead = found[0]
        more = f" (and {', '.join(w for w, _ in found[1:])})" if len(found) > 1 else ""
        raise UnsupportedHookError(
            f"{where}{more} is a Lightning hook this engine does not call, so it would be skipped: {instead}"
        )


def missing_attribute(owner: str, name: str) -> AttributeError | None:
    """The error for reading a Lightning name the engine does not provide, or None for any other name."""
    instead = _REFUSED_ATTRIBUTES.get(owner, {}).get(name)
    if instead is None:
        return None
    return AttributeError(f"{owner}.{name} is not provided by this engine: {instead}")


def markdown() -> str:
    """The README's table (README.md, "Lightning's API, name by name"), one collapsible block per class."""
    parts = []
    for key, table in TABLES.items():
        yes = sum(v == YES for v in table.values())
        rows = "\n".join(
            f"| `{name}` | {'yes' if status == YES else status.replace(': ', ' — ', 1)} |"
            for name, status in sorted(table.items())
        )
        parts.append(
            f"<details><summary>{_TITLES[key]}: {yes} of {len(table)} as in Lightning</summary>\n\n"
            f"| name | supported |\n|---|---|\n{rows}\n\n</details>"
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(markdown())
