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
    "global_step": 12,
    "weights": {
        "count": 101651,
        "abs_sum": 5260.296212934558,
        "first": [-0.06200038641691208, -0.03543173149228096, -0.04561446234583855],
        "last": [0.011463128961622715, -0.07079069316387177, -0.09298688918352127],
        "sha256": "043aa8965d77b486",
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
        "abs_sum": 16326.210986986756,
        "first": [0.3508250415325165, 0.23175713419914246, 0.278897225856781],
        "last": [0.22944551706314087, 0.12950102984905243, 0.23977592587471008],
        "sha256": "aada14612d955b06",
    },
    "images": ["grid_generated_0.png", "grid_generated_1.png", "grid_ori_0.png"],
}
# -- end of recorded numbers --


def test_autoencoder_fits_tests_and_predicts_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
