"""UvA DL course, tutorial 6: a Transformer encoder learns to reverse sequences.

Exercises: an overridden ``optimizer_step`` that steps a per-iteration warm-up scheduler after
``super().optimizer_step(...)`` (the scheduler is not returned by ``configure_optimizers``),
``gradient_clip_val``, ``ModelCheckpoint(save_weights_only=True, mode="max", monitor="val_acc")``,
``default_root_dir``, the default logger (``trainer.logger._default_hp_metric = None``),
``trainer.test(model, dataloaders=..., verbose=False)`` twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """train_reverse() and the cell that calls it; the Trainer runs 2 epochs of a few batches."""
    from lightning_sources.uva_transformer_reverse import (
        CHECKPOINT_PATH,
        ModelCheckpoint,
        ReversePredictor,
        pl,
        test_loader,
        train_loader,
        val_loader,
    )

    kwargs = dict(
        input_dim=train_loader.dataset.num_categories,
        model_dim=32,
        num_heads=1,
        num_classes=train_loader.dataset.num_categories,
        num_layers=1,
        dropout=0.0,
        lr=5e-4,
        warmup=50,
    )
    root_dir = os.path.join(CHECKPOINT_PATH, "ReverseTask")
    os.makedirs(root_dir, exist_ok=True)
    trainer = pl.Trainer(
        default_root_dir=root_dir,
        callbacks=[ModelCheckpoint(save_weights_only=True, mode="max", monitor="val_acc")],
        accelerator="auto",
        devices=1,
        max_epochs=2,
        gradient_clip_val=5,
        limit_train_batches=10,
        limit_val_batches=2,
        limit_test_batches=2,
    )
    trainer.logger._default_hp_metric = None  # Optional logging argument that we don't need
    model = ReversePredictor(max_iters=trainer.max_epochs * len(train_loader), **kwargs)
    trainer.fit(model, train_loader, val_loader)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(model),
        "lr": [float(lr) for lr in learning_rates(trainer)],  # the scheduler computes with numpy
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    val_result = trainer.test(model, dataloaders=val_loader, verbose=False)
    test_result = trainer.test(model, dataloaders=test_loader, verbose=False)
    return {**fitted, "test": [metrics(val_result[0]), metrics(test_result[0])]}


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 20,
    "weights": {
        "count": 10346,
        "abs_sum": 1087.7428733582908,
        "first": [-0.13893727958202362, -0.2889466881752014, -0.12494589388370514],
        "last": [0.045924458652734756, 0.17500314116477966, 0.025286808609962463],
        "sha256": "a850141ec40e3e9d",
    },
    "lr": [0.00019967573081342103],
    "fit_metrics": {
        "train_acc": 0.09765625,
        "train_loss": 2.3471455574035645,
        "val_acc": 0.098388671875,
        "val_loss": 2.345325469970703,
    },
    "test": [
        {"test_acc": 0.098388671875, "test_loss": 2.345325469970703},
        {"test_acc": 0.098876953125, "test_loss": 2.345036745071411},
    ],
}
# -- end of recorded numbers --


def test_uva_transformer_reverse_warms_up_and_trains_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
