# Ported from Lightning-AI/pytorch-lightning, examples/pytorch/bug_report/bug_report_model.py at
# commit 7f0c3436cd3f6ad3753125672024fc415cbcb414 (Apache-2.0, as the repository). The starting
# point of every Lightning bug report. Verbatim up to run(); only the Lightning import changed.
import os

import torch
from torch.utils.data import DataLoader, Dataset

from engine import LightningModule, Trainer


class RandomDataset(Dataset):
    def __init__(self, size, length):
        self.len = length
        self.data = torch.randn(length, size)

    def __getitem__(self, index):
        return self.data[index]

    def __len__(self):
        return self.len


class BoringModel(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(32, 2)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        loss = self(batch).sum()
        self.log("train_loss", loss)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        loss = self(batch).sum()
        self.log("valid_loss", loss)

    def test_step(self, batch, batch_idx):
        loss = self(batch).sum()
        self.log("test_loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)
