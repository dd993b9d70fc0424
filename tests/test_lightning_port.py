"""LightningModules from Lightning's documentation run on the engine with only the imports changed.

Each module below is written as Lightning's docs show it; the only edits are the import lines
(``from engine import Module as LightningModule, Trainer`` instead of Lightning's) and, where
the docs elide code with ``...``, the few lines that fill it in. MNIST (torchvision, a
download) is replaced by random tensors of the same shape: the data is not the module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchmetrics
from engine_fixtures import RecordingLogger
from torch import nn, optim, utils
from torch.nn import functional as F
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

from engine import EarlyStopping, Trainer
from engine import Module as LightningModule


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # Lightning's default_root_dir is the working directory


def fake_mnist(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


# -- "Lightning in 15 minutes" (LitAutoEncoder) + "Validate and test a model" -------------------
# define any number of nn.Modules (or use your current ones)
encoder = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 3))
decoder = nn.Sequential(nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 28 * 28))


# define the LightningModule
class LitAutoEncoder(LightningModule):
    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def training_step(self, batch, batch_idx):
        # training_step defines the train loop.
        # it is independent of forward
        x, _ = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        loss = nn.functional.mse_loss(x_hat, x)
        # Logging to TensorBoard (if installed) by default
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        # this is the validation loop
        x, _ = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        val_loss = F.mse_loss(x_hat, x)
        self.log("val_loss", val_loss)

    def test_step(self, batch, batch_idx):
        # this is the test loop
        x, _ = batch
        x = x.view(x.size(0), -1)
        z = self.encoder(x)
        x_hat = self.decoder(z)
        test_loss = F.mse_loss(x_hat, x)
        self.log("test_loss", test_loss)

    def configure_optimizers(self):
        optimizer = optim.Adam(self.parameters(), lr=1e-3)
        return optimizer


def _reconstruction_loss(model: LitAutoEncoder, data: TensorDataset) -> float:
    with torch.no_grad():
        x = data.tensors[0].view(len(data), -1)
        return F.mse_loss(model.decoder(model.encoder(x)), x).item()


def test_lit_autoencoder_trains_validates_and_tests() -> None:
    torch.manual_seed(0)
    # init the autoencoder
    autoencoder = LitAutoEncoder(encoder, decoder)
    dataset = fake_mnist(32)
    train_loader = utils.data.DataLoader(dataset)
    before = _reconstruction_loss(autoencoder, dataset)

    trainer = Trainer(limit_train_batches=100, max_epochs=1)
    trainer.fit(model=autoencoder, train_dataloaders=train_loader)
    assert trainer.global_step == 32  # batch_size 1, fewer batches than the limit
    assert _reconstruction_loss(autoencoder, dataset) < before

    valid_set, test_set = fake_mnist(16, seed=1), fake_mnist(8, seed=2)
    train_loader, valid_loader = DataLoader(dataset, batch_size=8), DataLoader(valid_set, batch_size=8)
    trainer = Trainer(max_epochs=2)
    trainer.fit(autoencoder, train_loader, valid_loader)
    assert trainer.global_step == 8
    assert trainer.callback_metrics["val_loss"] == pytest.approx(_reconstruction_loss(autoencoder, valid_set), rel=1e-5)

    # test the model
    result = trainer.test(autoencoder, dataloaders=DataLoader(test_set))
    assert result == [{"test_loss": pytest.approx(_reconstruction_loss(autoencoder, test_set), rel=1e-5)}]


# -- examples/pytorch/basics/backbone_image_classifier.py ----------------------------------------
class Backbone(torch.nn.Module):
    def __init__(self, hidden_dim=128):
        super().__init__()
        self.l1 = torch.nn.Linear(28 * 28, hidden_dim)
        self.l2 = torch.nn.Linear(hidden_dim, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = torch.relu(self.l1(x))
        return torch.relu(self.l2(x))


class LitClassifier(LightningModule):
    def __init__(self, backbone: Backbone | None = None, learning_rate: float = 0.0001):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        if backbone is None:
            backbone = Backbone()
        self.backbone = backbone

    def forward(self, x):
        # use forward for inference/predictions
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        y_hat = self(x)
        loss = F.cross_entropy(y_hat, y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        y_hat = self(x)
        loss = F.cross_entropy(y_hat, y)
        self.log("valid_loss", loss, on_step=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        y_hat = self(x)
        loss = F.cross_entropy(y_hat, y)
        self.log("test_loss", loss)

    def predict_step(self, batch, batch_idx, dataloader_idx=None):
        x, y = batch
        return self(x)

    def configure_optimizers(self):
        # self.hparams available because we called self.save_hyperparameters()
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def test_lit_classifier_with_hparams_and_early_stopping() -> None:
    torch.manual_seed(0)
    model = LitClassifier(learning_rate=0.001)
    assert dict(model.hparams) == {"learning_rate": 0.001}  # the backbone was ignored
    logger = RecordingLogger()
    trainer = Trainer(
        max_epochs=3, precision="32-true", logger=logger, callbacks=[EarlyStopping(monitor="valid_loss_epoch")]
    )
    trainer.fit(model, DataLoader(fake_mnist(32), batch_size=8), DataLoader(fake_mnist(16, 1), batch_size=8))
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.001
    assert trainer.global_step == 12
    # on_step and on_epoch in training: train_loss_step and train_loss_epoch (Lightning's names).
    assert {"train_loss_step", "train_loss_epoch", "valid_loss_epoch"} <= set(trainer.callback_metrics)
    assert logger.hparams[0] == {"learning_rate": 0.001}  # flat, as Lightning logs them
    assert trainer.test(model, DataLoader(fake_mnist(8, 2)))[0]["test_loss"] > 0


# -- torchmetrics' "TorchMetrics in PyTorch Lightning" + configure_optimizers' scheduler dict -----
class MyModel(LightningModule):
    def __init__(self, num_classes):
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))  # fills in `...`
        self.accuracy = torchmetrics.classification.Accuracy(task="multiclass", num_classes=num_classes)

    def forward(self, x):  # fills in `...`
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        preds = self(x)
        loss = F.cross_entropy(preds, y)  # fills in `...`
        # log step metric
        self.accuracy(preds, y)
        self.log("train_acc_step", self.accuracy)
        return loss  # fills in `...`

    def on_train_epoch_end(self):
        # log epoch metric
        self.log("train_acc_epoch", self.accuracy)

    def configure_optimizers(self):
        optimizer = optim.SGD(self.parameters(), lr=0.1)  # the docs' `Adam(...)`
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": ReduceLROnPlateau(optimizer, mode="max", patience=0, factor=0.5),
                "monitor": "train_acc_epoch",
                "frequency": 1,
            },
        }


def test_torchmetrics_logged_per_step_and_per_epoch_with_a_plateau_scheduler() -> None:
    torch.manual_seed(0)
    model, logger = MyModel(num_classes=10), RecordingLogger()
    trainer = Trainer(max_epochs=4, logger=logger, log_every_n_steps=1, precision=32)
    trainer.fit(model, DataLoader(fake_mnist(32), batch_size=8))  # 4 equal batches per epoch
    steps = [v for _, v in logger.series("train_acc_step")]
    epochs = [v for _, v in logger.series("train_acc_epoch")]
    assert len(steps) == 16 and len(epochs) == 4
    # The epoch value is computed over that epoch only (equal batches: the mean of its steps).
    for e in range(4):
        assert epochs[e] == pytest.approx(sum(steps[4 * e : 4 * e + 4]) / 4, abs=1e-6)
    assert trainer.callback_metrics["train_acc_epoch"] == pytest.approx(epochs[-1])
    # The scheduler saw the same values a hand-driven ReduceLROnPlateau would.
    ref_opt = optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = ReduceLROnPlateau(ref_opt, mode="max", patience=0, factor=0.5)
    for value in epochs:
        ref.step(value)
    assert trainer.optimizers[0].param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]


def test_save_hyperparameters_like_lightning() -> None:
    class Collects(LightningModule):
        def __init__(self, layer_1_dim: int = 128, learning_rate: float = 1e-2, **kwargs):
            super().__init__()
            self.save_hyperparameters()

    class Picks(LightningModule):
        def __init__(self, layer_1_dim: int = 128, learning_rate: float = 1e-2, loss_fx=None):
            super().__init__()
            self.save_hyperparameters("layer_1_dim", "learning_rate")

    collected = Collects(64, extra="x").hparams
    assert collected == {"layer_1_dim": 64, "learning_rate": 1e-2, "extra": "x"}
    assert collected.layer_1_dim == 64 and collected["extra"] == "x"
    assert Picks(32).hparams == {"layer_1_dim": 32, "learning_rate": 1e-2}
    with pytest.raises(AttributeError, match="hparams has no 'lr'"):
        _ = Picks().hparams.lr
