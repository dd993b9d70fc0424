"""Deep Learning Fundamentals, unit 6.8 part 3: ``overfit_batches=1`` on a BatchNorm MLP.

Exercises: ``Trainer(overfit_batches=1)`` (one training batch, taken unshuffled, and the same count
of validation batches, for every epoch), BatchNorm running statistics, ``example_input_array``,
``save_hyperparameters(ignore=...)`` and the default logger (no ``logger=`` argument).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """The notebook's cells, verbatim (the run is already small)."""
    from lightning_sources.dlf_overfit_batches import CustomDataModule, L, LightningModel, PyTorchMLP

    L.seed_everything(123)
    dm = CustomDataModule()
    pytorch_model = PyTorchMLP(num_features=100, num_classes=2)
    lightning_model = LightningModel(model=pytorch_model, learning_rate=0.15)
    trainer = L.Trainer(
        overfit_batches=1,
        max_epochs=10,
        accelerator="cpu",
        devices="auto",
        deterministic=True,
    )
    trainer.fit(model=lightning_model, datamodule=dm)
    return {
        "global_step": trainer.global_step,
        "weights": weights_summary(lightning_model),
        "fit_metrics": metrics(trainer.callback_metrics),
    }


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 10,
    "weights": {
        "count": 15852,
        "abs_sum": 1209.851528634206,
        "first": [-0.03345904499292374, 0.00396267743781209, -0.06372780352830887],
        "last": [0.011694974265992641, -0.18950751423835754],
        "sha256": "c0714f70bedffab8",
    },
    "fit_metrics": {
        "train_acc": 0.78125,
        "train_loss": 0.4443727135658264,
        "val_acc": 0.5,
        "val_loss": 0.9872371554374695,
    },
}
# -- end of recorded numbers --


def test_dlf_overfit_batches_trains_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
