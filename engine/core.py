"""Lightning's `lightning.pytorch.core` names, so `from <pkg>.engine.core import LightningModule` works."""

from .module import DataModule, Module

LightningModule = Module
LightningDataModule = DataModule

__all__ = ["LightningDataModule", "LightningModule"]
