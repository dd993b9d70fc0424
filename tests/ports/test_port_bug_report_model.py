"""Lightning's examples/pytorch/bug_report/bug_report_model.py (BoringModel), run as its run() does.

Exercises: ``training_step`` returning ``{"loss": ...}``, an optimizer over a submodule's
parameters, the Trainer arguments of every bug report (``limit_test_batches``,
``enable_model_summary``, ``num_sanity_val_steps=0``), ``trainer.test(model, dataloaders=)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from port_data import assert_same_as_lightning, metrics, weights_summary


def scenario(workdir: Path) -> dict[str, Any]:
    """run(), seeded, reporting what it leaves behind."""
    # Imported here: a missing name fails this port's test, not the collection of the suite.
    from lightning_sources.bug_report_model import BoringModel, DataLoader, RandomDataset, Trainer

    from engine import seed_everything

    seed_everything(0)
    train_data = DataLoader(RandomDataset(32, 64), batch_size=2)
    val_data = DataLoader(RandomDataset(32, 64), batch_size=2)
    test_data = DataLoader(RandomDataset(32, 64), batch_size=2)

    model = BoringModel()
    trainer = Trainer(
        default_root_dir=os.getcwd(),
        limit_train_batches=1,
        limit_val_batches=1,
        limit_test_batches=1,
        num_sanity_val_steps=0,
        max_epochs=1,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=train_data, val_dataloaders=val_data)
    fitted = {
        "global_step": trainer.global_step,
        "weights": weights_summary(model),
        "fit_metrics": metrics(trainer.callback_metrics),
    }
    test = trainer.test(model, dataloaders=test_data)
    return {**fitted, "test": [metrics(t) for t in test]}


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 1,
    "weights": {
        "count": 66,
        "abs_sum": 9.925019473885186,
        "first": [0.10611452907323837, 0.2112562209367752, 0.15820613503456116],
        "last": [-0.14309078454971313, -0.19952256977558136],
        "sha256": "262537d9bfe52f0c",
    },
    "fit_metrics": {"train_loss": -1.095433235168457, "valid_loss": 2.9796319007873535},
    "test": [{"test_loss": 2.1341631412506104}],
}
# -- end of recorded numbers --


def test_bug_report_model_runs_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
