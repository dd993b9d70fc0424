"""Deep Learning Fundamentals, unit 5 exercise 2: an MLP on MNIST with a custom callback.

Exercises: a ``LightningDataModule`` with ``prepare_data``/``setup(stage)``, torchmetrics objects
logged with ``on_epoch=True, on_step=False``, a ``Callback.on_validation_epoch_end`` that reads the
module's metrics (also during the sanity check), ``CSVLogger(save_dir, name)``, and
``trainer.test(dataloaders=...)`` / ``trainer.test(datamodule=...)`` after fit without a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """training.py's ``__main__`` block, limited to a few batches."""
    from lightning_sources.dlf_custom_callback import (
        CSVLogger,
        CustomCallback,
        L,
        LightningModel,
        MNISTDataModule,
        PyTorchMLP,
        torch,
        train_val_diff,
    )

    train_val_diff.clear()
    torch.manual_seed(123)
    dm = MNISTDataModule()
    pytorch_model = PyTorchMLP(num_features=784, num_classes=10)
    lightning_model = LightningModel(model=pytorch_model, learning_rate=0.05)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=CSVLogger(save_dir="logs/", name="my-model"),
        callbacks=[CustomCallback()],
        limit_train_batches=6,
        limit_val_batches=3,
        limit_test_batches=3,
    )
    trainer.fit(model=lightning_model, datamodule=dm)
    fitted = {"global_step": trainer.global_step, "weights": weights_summary(lightning_model)}
    train_acc = trainer.test(dataloaders=dm.train_dataloader())[0]["test_acc"]
    val_acc = trainer.test(dataloaders=dm.val_dataloader())[0]["test_acc"]
    test_acc = trainer.test(datamodule=dm)[0]["test_acc"]
    return {
        **fitted,
        "test": [metrics({"train_acc": train_acc, "val_acc": val_acc, "test_acc": test_acc})],
        "train_val_diff": [round(d, 6) for d in train_val_diff],
        "log_dir": Path(trainer.logger.log_dir).resolve().relative_to(workdir.resolve()).as_posix(),
    }


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 12,
    "weights": {
        "count": 40785,
        "abs_sum": 813.0975691885525,
        "first": [-0.014519142918288708, 0.0015074486145749688, -0.017567018046975136],
        "last": [-0.1549283266067505, -0.028719091787934303, 0.14721161127090454],
        "sha256": "5246baf56519d73e",
    },
    "test": [{"test_acc": 0.109375, "train_acc": 0.1041666641831398, "val_acc": 0.1354166716337204}],
    "train_val_diff": [-0.179688, -0.044271, -0.023438],
    "log_dir": "logs/my-model/version_0",
}
# -- end of recorded numbers --


def test_dlf_custom_callback_runs_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
