"""Lightning's examples/pytorch/basics/autoencoder.py: fit, then test and predict on the best checkpoint.

Exercises: LightningModule/LightningDataModule, a Callback subclass from ``pl.callbacks`` with
``@rank_zero_only``, ``trainer.datamodule``, ``on_step=True`` in validation/test,
``predict_step`` with ``predict_dataloader`` on the datamodule, ``ckpt_path="best"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, predictions_summary, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """cli_main: LightningCLI(seed_everything_default=1234, trainer_defaults={"callbacks": ImageSampler()})."""
    # Imported here: a missing name fails this port's test, not the collection of the suite.
    from lightning_sources.autoencoder import ImageSampler, LitAutoEncoder, MyDataModule, Trainer

    from engine import seed_everything

    seed_everything(1234)
    model = LitAutoEncoder()
    datamodule = MyDataModule()
    trainer = Trainer(
        callbacks=ImageSampler(),
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=3,
        limit_test_batches=3,
        limit_predict_batches=2,
        deterministic=True,
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=datamodule)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(model),
        "lr": learning_rates(trainer),
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    test = trainer.test(ckpt_path="best", datamodule=datamodule)
    predictions = trainer.predict(ckpt_path="best", datamodule=datamodule)
    return {
        **fitted,
        "test": [metrics(t) for t in test],
        "predictions": predictions_summary(predictions),
        "images": sorted(p.name for p in workdir.glob("grid_*.png")),
    }


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 12,
    "weights": {
        "count": 101651,
        "abs_sum": 5260.296285639928,
        "first": [-0.06200038269162178, -0.03543173149228096, -0.04561446234583855],
        "last": [0.011463126167654991, -0.07079068571329117, -0.09298688173294067],
        "sha256": "577eb3c1f80c9ec5",
    },
    "lr": [0.01],
    "fit_metrics": {
        "train_loss": 0.0495428591966629,
        "val_loss": 0.04888124391436577,
        "val_loss_epoch": 0.04888124391436577,
    },
    "test": [{"test_loss_epoch": 0.048363570123910904}],
    "predictions": {
        "batches": 2,
        "count": 50176,
        "abs_sum": 16326.211327813566,
        "first": [0.3508250117301941, 0.23175710439682007, 0.2788972556591034],
        "last": [0.22944548726081848, 0.12950095534324646, 0.23977598547935486],
        "sha256": "c4a3bb242ae61522",
    },
    "images": ["grid_generated_0.png", "grid_generated_1.png", "grid_ori_0.png"],
}
# -- end of recorded numbers --


def test_autoencoder_fits_tests_and_predicts_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
