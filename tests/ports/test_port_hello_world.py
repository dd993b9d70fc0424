"""Lightning tutorials' "mnist-hello-world": MNISTModel, then LitMNIST with its data on the module.

Exercises: ``prepare_data``/``setup``/``*_dataloader`` defined on the LightningModule,
``trainer.fit(model)`` with no loaders, Dropout (the global RNG inside the step), a torchmetrics
object updated by hand and logged, ``CSVLogger(save_dir=)`` with Lightning's
``save_dir/lightning_logs/version_0/metrics.csv`` (``trainer.logger.log_dir``), and
``trainer.test(ckpt_path="best")`` after fit.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """The notebook's cells, seeded (it is not) and limited to a few batches."""
    # Imported here: a missing name fails this port's test, not the collection of the suite.
    from lightning_sources.hello_world import MNIST, CSVLogger, DataLoader, LitMNIST, MNISTModel, config, pl, transforms

    pl.seed_everything(7)
    # -- "Simplest example" --
    mnist_model = MNISTModel()
    train_ds = MNIST(config.data_dir, train=True, download=True, transform=transforms.ToTensor())
    train_loader = DataLoader(train_ds, batch_size=config.batch_size)
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        max_epochs=config.max_epochs,
        limit_train_batches=4,
        deterministic=True,
    )
    trainer.fit(mnist_model, train_loader)
    simplest = {"global_step": trainer.global_step, "weights": weights_summary(mnist_model)}

    # -- "A more complete MNIST Lightning Module Example" --
    model = LitMNIST()
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        max_epochs=config.max_epochs,
        logger=CSVLogger(save_dir=config.save_dir),
        limit_train_batches=5,
        limit_val_batches=2,
        limit_test_batches=2,
        deterministic=True,
    )
    trainer.fit(model)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(model),
        "lr": learning_rates(trainer),
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    test = trainer.test(ckpt_path="best")
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        columns = sorted(csv.DictReader(f).fieldnames or [])
    return {
        "simplest": simplest,
        **fitted,
        "test": [metrics(t) for t in test],
        "log_dir": Path(trainer.logger.log_dir).resolve().relative_to(workdir.resolve()).as_posix(),
        "csv_columns": [c for c in columns if c in ("epoch", "step", "val_loss", "val_acc", "test_loss", "test_acc")],
    }


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "simplest": {
        "global_step": 12,
        "weights": {
            "count": 7850,
            "abs_sum": 525.329473154221,
            "first": [-0.08767455071210861, -0.11168061941862106, -0.07879674434661865],
            "last": [-0.07470902800559998, 0.007549826987087727, -0.07772764563560486],
            "sha256": "7e965cb7adb477a9",
        },
    },
    "global_step": 15,
    "weights": {
        "count": 55050,
        "abs_sum": 1199.3130035654378,
        "first": [0.014625648967921734, 0.0031273113563656807, 0.026816019788384438],
        "last": [-0.005692609585821629, 0.06592243909835815, 0.051636483520269394],
        "sha256": "2085bc15c9547f4e",
    },
    "lr": [0.0002],
    "fit_metrics": {"val_acc": 0.5546875, "val_loss": 2.061954975128174},
    "test": [{"test_acc": 0.5625, "test_loss": 2.064970016479492}],
    "log_dir": "logs/lightning_logs/version_0",
    "csv_columns": ["epoch", "step", "test_acc", "test_loss", "val_acc", "val_loss"],
}
# -- end of recorded numbers --


def test_hello_world_modules_train_and_test_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
