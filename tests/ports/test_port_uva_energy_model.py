"""UvA DL course, tutorial 8: a deep energy-based model trained with Langevin sampling on MNIST.

Exercises: the global torch, numpy and Python RNGs drawn in ``training_step`` (a sample buffer,
``random.choices``, ``np.random.binomial``) and torch's in ``validation_step`` (so the sanity check
must not shift training's draws), input gradients inside ``training_step`` (``torch.enable_grad``
on a frozen network), ``gradient_clip_val``, a per-epoch ``StepLR``, ``LearningRateMonitor``,
``ModelCheckpoint(save_weights_only=True)`` and ``load_from_checkpoint(best_model_path)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """train_model() and the cell that calls it; 2 epochs of 1 batch, validation on 1 batch."""
    from lightning_sources.uva_energy_model import (
        CHECKPOINT_PATH,
        DeepEnergyModel,
        LearningRateMonitor,
        ModelCheckpoint,
        pl,
        test_loader,
        train_loader,
    )

    trainer = pl.Trainer(
        default_root_dir=os.path.join(CHECKPOINT_PATH, "MNIST"),
        accelerator="auto",
        devices=1,
        max_epochs=2,
        gradient_clip_val=0.1,
        callbacks=[
            ModelCheckpoint(save_weights_only=True, mode="min", monitor="val_contrastive_divergence"),
            LearningRateMonitor("epoch"),
        ],
        limit_train_batches=1,
        limit_val_batches=1,
    )
    pl.seed_everything(42)
    model = DeepEnergyModel(img_shape=(1, 28, 28), batch_size=train_loader.batch_size, lr=1e-4, beta1=0.0)
    trainer.fit(model, train_loader, test_loader)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(model),
        "lr": learning_rates(trainer),
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    best = DeepEnergyModel.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    return {**fitted, "best_weights": weights_summary(best)}


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 2,
    "weights": {
        "count": 76993,
        "abs_sum": 2069.473472121248,
        "first": [0.15271498262882233, 0.16581149399280548, -0.04665740951895714],
        "last": [-0.08701495826244354],
        "sha256": "3e37a76a053f8a7e",
    },
    "lr": [9.409e-05],
    "fit_metrics": {
        "loss": 0.0010350862285122275,
        "loss_contrastive_divergence": -0.0007330253720283508,
        "loss_regularization": 0.0017681116005405784,
        "lr-Adam": 9.699999645818025e-05,
        "metrics_avg_fake": -0.09438876062631607,
        "metrics_avg_real": -0.09365573525428772,
        "val_contrastive_divergence": -0.0019614920020103455,
        "val_fake_out": -0.09435829520225525,
        "val_real_out": -0.0923968032002449,
    },
    "best_weights": {
        "count": 76993,
        "abs_sum": 2069.473472121248,
        "first": [0.15271498262882233, 0.16581149399280548, -0.04665740951895714],
        "last": [-0.08701495826244354],
        "sha256": "3e37a76a053f8a7e",
    },
}
# -- end of recorded numbers --


def test_uva_energy_model_samples_and_trains_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
