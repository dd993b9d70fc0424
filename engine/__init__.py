"""A small, readable PyTorch training engine (the Lightning subset), vendored by scaffold.

How it is built (the layers, the life of one batch, where to add a callback, a logger or a
strategy): ARCHITECTURE.md in this folder. `scaffold update` replaces this folder wholesale;
keep research code outside it.
"""

from .version import __version__ as __version__  # first: before any submodule that reads engine.__version__

# isort: split
from . import (  # Lightning's submodules: pl.callbacks.X, pl.loggers.X
    callbacks,
    lightning_paths,
    loggers,
    profilers,
    utilities,
)
from .callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, ProgressBar, ThroughputMonitor
from .checkpoint import CheckpointError
from .config import Config, ConfigError, DataConfig, load_config
from .loggers import CSVLogger, NullLogger, WandbLogger
from .module import DataModule, Module
from .run import run, run_main
from .trainer import PREEMPTED_EXIT_CODE, Trainer, seed_everything

lightning_paths.install(__name__)  # Lightning's deeper paths: engine.callbacks.progress, engine.utilities.types ...

# Lightning's names, so `import lightning.pytorch as pl` ports as `from <package> import engine as pl`.
LightningModule = Module
LightningDataModule = DataModule

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "CSVLogger",
    "Callback",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataModule",
    "EarlyStopping",
    "LearningRateMonitor",
    "LightningDataModule",
    "LightningModule",
    "ModelCheckpoint",
    "Module",
    "NullLogger",
    "ProgressBar",
    "ThroughputMonitor",
    "Trainer",
    "WandbLogger",
    "callbacks",
    "load_config",
    "loggers",
    "profilers",
    "run",
    "run_main",
    "seed_everything",
    "utilities",
]
