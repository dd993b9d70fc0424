"""Deep Learning Fundamentals, unit 6.2 part 3: the learning-rate finder, then training at its suggestion.

Exercises: ``Tuner(trainer).lr_find(model, datamodule=dm)`` (Lightning's exponential schedule,
smoothed loss and steepest-descent suggestion; model and trainer restored afterwards),
``lr_finder.plot(suggest=True)`` where matplotlib is installed, ``lr_finder.suggestion()``, then
``fit`` and ``test`` with the same trainer on sklearn's ``make_classification`` data.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, learning_rates, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """The notebook's cells, on fewer batches per epoch."""
    import torch
    from lightning_sources.dlf_learning_rates import CustomDataModule, LightningModel, PyTorchMLP

    import engine as L
    from engine.loggers import CSVLogger
    from engine.tuner import Tuner

    torch.manual_seed(123)
    dm = CustomDataModule()
    pytorch_model = PyTorchMLP(num_features=100, num_classes=2)
    lightning_model = LightningModel(model=pytorch_model, learning_rate=0.1)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices="auto",
        logger=CSVLogger(save_dir="logs/", name="my-model"),
        deterministic=True,
        limit_train_batches=120,
        limit_val_batches=5,
        limit_test_batches=5,
    )
    tuner = Tuner(trainer)
    lr_finder = tuner.lr_find(lightning_model, datamodule=dm)
    untouched = weights_summary(lightning_model)  # lr_find restores the initial weights
    if importlib.util.find_spec("matplotlib") is not None:
        lr_finder.plot(suggest=True)
    new_lr = lr_finder.suggestion()
    lightning_model.learning_rate = new_lr
    trainer.fit(model=lightning_model, datamodule=dm)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(lightning_model),
        "lr": learning_rates(trainer),
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    test = trainer.test(model=lightning_model, dataloaders=dm)
    results = lr_finder.results
    return {
        "suggestion": round(new_lr, 12),
        "finder_steps": len(results["lr"]),
        "finder_lr": [round(x, 12) for x in results["lr"][::10]],
        "finder_loss": [round(x, 6) for x in results["loss"][::10]],
        "weights_after_finder": untouched,
        **fitted,
        "test": [metrics(t) for t in test],
    }


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "suggestion": 3.31131e-07,
    "finder_steps": 100,
    "finder_lr": [
        1e-08,
        7.5858e-08,
        4.7863e-07,
        3.019952e-06,
        1.9054607e-05,
        0.000120226443,
        0.000758577575,
        0.004786300923,
        0.030199517204,
        0.190546071796,
    ],
    "finder_loss": [0.392491, 0.698376, 0.733049, 0.754761, 0.764956, 0.762134, 0.755332, 0.758525, 0.75068, 0.733823],
    "weights_after_finder": {
        "count": 15252,
        "abs_sum": 767.3701555703265,
        "first": [-0.04077761247754097, 0.0033124566543847322, -0.04966585710644722],
        "last": [-0.041020702570676804, -0.13679184019565582],
        "sha256": "40d9bf75c064ec74",
    },
    "global_step": 120,
    "weights": {
        "count": 15252,
        "abs_sum": 767.3699981635389,
        "first": [-0.04077761992812157, 0.0033121423330157995, -0.049666378647089005],
        "last": [-0.041017573326826096, -0.13679496943950653],
        "sha256": "75c1514899fbd9ce",
    },
    "lr": [3.311311214825911e-07],
    "fit_metrics": {
        "train_acc": 0.4104166626930237,
        "train_loss": 0.799304187297821,
        "val_acc": 0.4000000059604645,
        "val_loss": 0.7593480348587036,
    },
    "test": [{"test_acc": 0.44999998807907104}],
}
# -- end of recorded numbers --


def test_dlf_lr_finder_suggests_and_trains_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
