"""Lightning's examples/pytorch/basics/backbone_image_classifier.py: fit, test and predict on the best checkpoint.

Exercises: ``save_hyperparameters(ignore=[...])`` and ``self.hparams``, ``on_epoch=True`` in
training (``train_loss_step``/``_epoch``), ``on_step=True`` in validation, ``predict_step``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, predictions_summary, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """cli_main: LightningCLI(LitClassifier, MyDataModule, seed_everything_default=1234)."""
    # Imported here: a missing name fails this port's test, not the collection of the suite.
    from lightning_sources.backbone_image_classifier import LitClassifier, MyDataModule

    import engine as pl

    pl.seed_everything(1234)
    model = LitClassifier(learning_rate=0.001)
    datamodule = MyDataModule(batch_size=16)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=8,
        limit_val_batches=3,
        limit_test_batches=2,
        limit_predict_batches=2,
        deterministic=True,
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=datamodule)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(model),
        "lr": learning_rates(trainer),
        "hparams": dict(model.hparams),
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    test = trainer.test(ckpt_path="best", datamodule=datamodule)
    predictions = trainer.predict(ckpt_path="best", datamodule=datamodule)
    return {**fitted, "test": [metrics(t) for t in test], "predictions": predictions_summary(predictions)}


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 16,
    "weights": {
        "count": 101770,
        "abs_sum": 1895.2786889947495,
        "first": [-0.038626860827207565, -0.011989789083600044, -0.022136537358164787],
        "last": [-0.05304613336920738, -0.00888549629598856, 0.011232725344598293],
        "sha256": "ffc4991054881360",
    },
    "lr": [0.001],
    "hparams": {"learning_rate": 0.001},
    "fit_metrics": {
        "train_loss": 1.9223276376724243,
        "train_loss_epoch": 1.9223276376724243,
        "train_loss_step": 1.8484781980514526,
        "valid_loss": 1.744855523109436,
        "valid_loss_epoch": 1.744855523109436,
    },
    "test": [{"test_loss": 1.8133788108825684}],
    "predictions": {
        "batches": 2,
        "count": 320,
        "abs_sum": 51.136991899460554,
        "first": [0.0, 0.5572471022605896, 1.3364801406860352],
        "last": [0.019895482808351517, 0.0, 1.0169557332992554],
        "sha256": "19cdc849c98dba1d",
    },
}
# -- end of recorded numbers --


def test_backbone_classifier_fits_tests_and_predicts_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
