"""Deep Learning Fundamentals, unit 6 exercise 1: linear warm-up + cosine annealing from Lightning Bolts.

Exercises: ``configure_optimizers`` returning ``{"optimizer", "lr_scheduler": {"scheduler",
"monitor", "interval": "epoch", "frequency"}}`` with a non-plateau scheduler, a third-party
``_LRScheduler`` subclass, ``save_hyperparameters(ignore=["model"])``, ``L.seed_everything``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """The notebook's training cells; the Trainer runs 3 of the 100 epochs, on a few batches."""
    from lightning_sources.dlf_cosine_warmup import CSVLogger, CustomDataModule, L, LightningModel, PyTorchMLP

    num_epochs = 100
    L.seed_everything(123)
    dm = CustomDataModule()
    pytorch_model = PyTorchMLP(num_features=100, num_classes=2)
    lightning_model = LightningModel(model=pytorch_model, learning_rate=0.1, num_epochs=num_epochs)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices="auto",
        logger=CSVLogger(save_dir="logs/", name="my-model"),
        deterministic=True,
        limit_train_batches=8,
        limit_val_batches=3,
        limit_test_batches=3,
    )
    trainer.fit(model=lightning_model, datamodule=dm)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(lightning_model),
        "lr": learning_rates(trainer),
        "fit_metrics": metrics(trainer.callback_metrics),
        "hparams": dict(lightning_model.hparams),
    }
    test = trainer.test(model=lightning_model, datamodule=dm)
    return {**fitted, "test": [metrics(t) for t in test]}


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 24,
    "weights": {
        "count": 15252,
        "abs_sum": 767.1433656786166,
        "first": [-0.04074342921376228, 0.0024139918386936188, -0.05087713897228241],
        "last": [-0.035090066492557526, -0.1427224725484848],
        "sha256": "75eca1447e4cfc24",
    },
    "lr": [0.0125],
    "fit_metrics": {
        "train_acc": 0.4453125,
        "train_loss": 0.7299694418907166,
        "val_acc": 0.4479166567325592,
        "val_loss": 0.7153170108795166,
    },
    "hparams": {"learning_rate": 0.1, "num_epochs": 100},
    "test": [{"test_acc": 0.4375}],
}
# -- end of recorded numbers --


def test_dlf_cosine_warmup_schedules_and_trains_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
