# Ported from Lightning-AI/dl-fundamentals (Sebastian Raschka's "Deep Learning Fundamentals" course),
# unit06-dl-tips/exercises/solutions/1_cosine-with-warmup/exercise-1-solution.ipynb at commit
# 3074b8c8e993d5a5d7bfc55424d3feef191841c5 (the repository states no license; copied unchanged, with attribution,
# as a test fixture): the notebook's import cell and its LightningModel cell, verbatim; the cells
# that plot and train are scenario() in test_port_dlf_cosine_warmup.py. Only import lines changed:
# lightning -> engine, pl_bolts -> its file beside this one (bolts_lr_scheduler.py), shared_utilities
# -> dlf_learning_rates (the 6.2 folder's copy, which the exercise imports).
import engine as L
import torch
import torch.nn.functional as F
import torchmetrics
from engine.loggers import CSVLogger

from lightning_sources.dlf_learning_rates import CustomDataModule, PyTorchMLP
from lightning_sources.bolts_lr_scheduler import LinearWarmupCosineAnnealingLR


class LightningModel(L.LightningModule):
    def __init__(self, model, learning_rate, num_epochs):  # New!
        super().__init__()

        self.learning_rate = learning_rate
        self.num_epochs = num_epochs  # New!
        self.model = model

        self.save_hyperparameters(ignore=["model"])

        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=2)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=2)
        self.test_acc = torchmetrics.Accuracy(task="multiclass", num_classes=2)

    def forward(self, x):
        return self.model(x)

    def _shared_step(self, batch):
        features, true_labels = batch
        logits = self(features)

        loss = F.cross_entropy(logits, true_labels)
        predicted_labels = torch.argmax(logits, dim=1)
        return loss, true_labels, predicted_labels

    def training_step(self, batch, batch_idx):
        loss, true_labels, predicted_labels = self._shared_step(batch)

        self.log("train_loss", loss)
        self.train_acc(predicted_labels, true_labels)
        self.log(
            "train_acc", self.train_acc, prog_bar=True, on_epoch=True, on_step=False
        )
        return loss

    def validation_step(self, batch, batch_idx):
        loss, true_labels, predicted_labels = self._shared_step(batch)

        self.log("val_loss", loss, prog_bar=True)
        self.val_acc(predicted_labels, true_labels)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        loss, true_labels, predicted_labels = self._shared_step(batch)
        self.test_acc(predicted_labels, true_labels)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self): # New! 
        opt = torch.optim.SGD(self.parameters(), lr=self.learning_rate)
        sch = LinearWarmupCosineAnnealingLR(
            opt, 
            warmup_epochs=self.num_epochs*0.25, 
            max_epochs=self.num_epochs,
            warmup_start_lr=0.0)

        return {
            "optimizer": opt,
            "lr_scheduler": {
                "scheduler": sch,
                "monitor": "train_loss",
                "interval": "epoch",
                "frequency": 1,
            },
        }
