"""Lightning's examples/pytorch/domain_templates/generative_adversarial_net.py: a GAN, manual optimization.

Exercises: ``automatic_optimization = False``, two optimizers from ``configure_optimizers``,
``self.optimizers()``, ``toggle_optimizer``/``untoggle_optimizer``, ``manual_backward``,
``training_step(self, batch)`` without ``batch_idx``, ``example_input_array``, ``self.loggers``,
and the step count (each optimizer step counts, as in Lightning: two per batch here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from port_data import MNIST, assert_same_as_lightning, learning_rates, metrics, transforms, weights_summary
from torch.utils.data import DataLoader, Subset


def scenario(workdir: Path) -> dict[str, Any]:
    """main(): GAN() with the default arguments, trained on MNIST; on the CPU, a few batches."""
    # Imported here: a missing name fails this port's test, not the collection of the suite.
    from lightning_sources.generative_adversarial_net import GAN, Trainer

    from engine import seed_everything

    seed_everything(42)
    model = GAN()
    data = Subset(MNIST(train=True, transform=transforms.ToTensor()), range(8 * 16))
    # The global RNG draws the noise: a loader with its own generator leaves it to the module.
    loader = DataLoader(data, batch_size=16, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, deterministic=True)
    trainer.fit(model, loader)
    return {
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "weights": weights_summary(model),
        "lr": learning_rates(trainer),
        "fit_metrics": metrics(trainer.callback_metrics),
    }


# -- recorded under Lightning (record_lightning.py --write) --
# lightning==2.6.6, torch==2.13.0+cpu: .venv-bench/bin/python tests/ports/record_lightning.py --write
LIGHTNING = {
    "cpu": "AVX2",
    "global_step": 32,
    "epoch": 2,
    "weights": {
        "count": 2047121,
        "abs_sum": 42856.694695183294,
        "first": [0.07717727869749069, 0.08405110985040665, -0.02474772185087204],
        "last": [0.03325836360454559],
        "sha256": "626a63dc5546e47d",
    },
    "lr": [0.0002, 0.0002],
    "fit_metrics": {"d_loss": 0.5208402276039124, "g_loss": 0.5314130783081055},
}
# -- end of recorded numbers --


def test_gan_trains_two_optimizers_by_hand_as_under_lightning(tmp_path: Path) -> None:
    assert_same_as_lightning(scenario(tmp_path), LIGHTNING)
