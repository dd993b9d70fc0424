"""``[torchrun --nproc_per_node=2] python -m ddpjob.manual OUT``: manual optimization under DDP.

Each scenario trains a manually optimized module on a global batch of 16 (8 per rank under two
processes); every rank writes its final weights and step count to ``OUT/<scenario>-rank<r>.pt``
so the test can compare the ranks with each other and with a one-process run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .engine import Module, Trainer
from .engine import distributed as D

GLOBAL_BATCH = 16


def gan_data() -> TensorDataset:
    """(real sample, noise) pairs: the noise travels with the sample, so the ranks' shards of a
    global batch see exactly what the one-process batch sees."""
    g = torch.Generator().manual_seed(3)
    return TensorDataset(torch.randn(64, 4, generator=g) * 0.5 + 1.0, torch.randn(64, 3, generator=g))


class GAN(Module):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))
        self.discriminator = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        real, z = batch
        opt_g, opt_d = self.optimizers()
        with self.toggled_optimizer(opt_g):
            fake = self.discriminator(self.generator(z))
            g_loss = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
            self.manual_backward(g_loss)
            opt_g.step()
            opt_g.zero_grad()
        with self.toggled_optimizer(opt_d):
            d_real, d_fake = self.discriminator(real), self.discriminator(self.generator(z).detach())
            d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            d_loss = d_loss + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            self.manual_backward(d_loss)
            opt_d.step()
            opt_d.zero_grad()
        self.log("d_loss", d_loss, sync_dist=True)
        return d_loss

    def configure_optimizers(self) -> Any:
        return (
            torch.optim.SGD(self.generator.parameters(), lr=0.5, momentum=0.9),
            torch.optim.SGD(self.discriminator.parameters(), lr=0.3, momentum=0.9),
        )


class Accumulating(Module):
    """One optimizer stepped every second batch; the first backward of a pair skips the sync."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        self.register_buffer("count", torch.zeros(()))  # DDP's buffer sync: rank 0's value before each step

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.count += self.trainer.env.rank + 1

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, z = batch
        opt = self.optimizers()
        last = batch_idx % 2 == 1
        with opt.toggle_model(sync_grad=last):
            self.manual_backward(F.mse_loss(self.net(x), z) / 2)
            if not last:  # only the rank's own gradient so far: the sync waits for the window's end
                self.local_grads = [p.grad.clone() for p in self.net.parameters()]
        if last:
            opt.step()
            opt.zero_grad()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.2)


def main(out: Path) -> None:
    env = D.setup("cpu")
    out.mkdir(parents=True, exist_ok=True)
    batch_size = GLOBAL_BATCH // env.world_size
    for name, module in (("gan", GAN()), ("accumulate", Accumulating())):
        trainer = Trainer(
            max_epochs=2,
            accelerator="cpu",
            seed=1,
            progress_bar=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            default_root_dir=out / name,
        )
        trainer.fit(module, DataLoader(gan_data(), batch_size=batch_size, shuffle=True))
        record = {"weights": module.state_dict(), "global_step": trainer.global_step}
        if name == "accumulate":
            record["local_grads"] = module.local_grads
        torch.save(record, out / f"{name}-rank{env.rank}.pt")
    D.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
