"""Parity: on CPU in fp32 the engine's final weights equal, bit for bit, a hand-written PyTorch loop.

The engine replaces a shuffled DataLoader's sampler with `distributed.ResumableSampler`, whose
order in epoch e is ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))``;
the hand-written loop below draws the same order, and does nothing else the engine doesn't.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from engine_fixtures import make_trainer, regression_data
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from engine import Module

N, BATCH, EPOCHS, SEED, LR = 22, 4, 3, 5, 0.05  # 6 batches per epoch, the last one of 2 samples


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))


def _optimizer(params: Any) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)


class Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt, sched = _optimizer(self.parameters())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _hand_written(k: int, clip: float | None, algorithm: str, seed: int = SEED) -> nn.Module:
    data = regression_data(N)
    x_all, y_all = data.tensors
    torch.manual_seed(123)  # the global RNG (dropout) starts where the engine run's does
    model = _net()
    torch.manual_seed(123)
    opt, sched = _optimizer(model.parameters())
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        batches = [order[i : i + BATCH] for i in range(0, N, BATCH)]
        for i, idx in enumerate(batches):
            window_start = i - i % k
            window = min(k, len(batches) - window_start)  # the last window may be short
            loss = F.mse_loss(model(x_all[idx]), y_all[idx])
            (loss / window).backward()
            if i + 1 == window_start + window:
                if clip is not None and algorithm == "norm":
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                elif clip is not None:
                    nn.utils.clip_grad_value_(model.parameters(), clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
    return model


def _engine(tmp_path: Any, k: int, clip: float | None, algorithm: str) -> nn.Module:
    torch.manual_seed(123)
    module = Net()
    torch.manual_seed(123)
    data = regression_data(N)
    trainer = make_trainer(
        tmp_path,
        max_epochs=EPOCHS,
        seed=SEED,
        accumulate_grad_batches=k,
        gradient_clip_val=clip,
        gradient_clip_algorithm=algorithm,
        num_sanity_val_steps=2,
        log_every_n_steps=1,
    )
    trainer.fit(module, DataLoader(data, batch_size=BATCH, shuffle=True), DataLoader(data, batch_size=BATCH))
    assert trainer.global_step == EPOCHS * -(-6 // k)
    return module.net


@pytest.mark.parametrize(
    ("k", "clip", "algorithm"),
    [(1, None, "norm"), (4, None, "norm"), (1, 0.05, "norm"), (4, 0.05, "norm"), (3, 0.02, "value")],
)
def test_engine_weights_equal_a_hand_written_loop(tmp_path: Any, k: int, clip: float | None, algorithm: str) -> None:
    ours = _engine(tmp_path, k, clip, algorithm)
    reference = _hand_written(k, clip, algorithm)
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs by {(a - b).abs().max().item():.3g}"


def test_the_comparison_can_fail(tmp_path: Any) -> None:
    """Another sample order gives other weights: parity above is not vacuous."""
    ours = _engine(tmp_path, 1, None, "norm").state_dict()
    other_order = _hand_written(1, None, "norm", seed=SEED + 1).state_dict()
    assert not any(torch.equal(a, b) for a, b in zip(ours.values(), other_order.values(), strict=True))
