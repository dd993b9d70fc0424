"""Porting Lightning code: its import paths resolve under the engine, and `python -m <pkg>.engine.port`
rewrites real files, reports what the engine lacks, and writes nothing with --check."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(__file__).resolve().parent / "ports" / "lightning_sources"

# Every import line of Lightning 2.6's documentation (docs/source-pytorch) and examples
# (examples/pytorch, src/lightning/pytorch/demos) at commit 7f0c3436cd3f, lightning.fabric aside.
DOC_IMPORTS = """
from lightning.pytorch import LightningDataModule
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, callbacks, cli_lightning_logo
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch import LightningDataModule, LightningModule, cli_lightning_logo
from lightning.pytorch import LightningModule
from lightning.pytorch import LightningModule, LightningDataModule, Trainer, Callback
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch import LightningModule, Trainer, cli_lightning_logo
from lightning.pytorch import LightningModule, Trainer, cli_lightning_logo, seed_everything
from lightning.pytorch import Trainer
from lightning.pytorch import Trainer, LightningModule
from lightning.pytorch import Trainer, LightningModule, seed_everything
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch import cli_lightning_logo
from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.accelerators import find_usable_cuda_devices
from lightning.pytorch.callbacks import BackboneFinetuning
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.callbacks import BatchSizeFinder
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import DeviceStatsMonitor
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks import GradientAccumulationScheduler
from lightning.pytorch.callbacks import LearningRateFinder
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks import ModelPruning
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks import StochasticWeightAveraging
from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.early_stopping import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStopping, EarlyStoppingReason
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.callbacks.finetuning import BaseFinetuning
from lightning.pytorch.callbacks.progress import TQDMProgressBar
from lightning.pytorch.callbacks.progress import Tqdm
from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme
from lightning.pytorch.cli import ArgsType, LightningCLI
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.cli import OptimizerCallable, LRSchedulerCallable, LightningCLI
from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE as _JSONARGPARSE_AVAILABLE
from lightning.pytorch.core import LightningModule
from lightning.pytorch.core.module import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.demos import BoringModel
from lightning.pytorch.demos import LightningTransformer
from lightning.pytorch.demos import Transformer
from lightning.pytorch.demos import Transformer, WikiText
from lightning.pytorch.demos import WikiText
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel, DemoModel
from lightning.pytorch.demos.boring_classes import DemoModel, BoringDataModule
from lightning.pytorch.demos.boring_classes import RandomDataset
from lightning.pytorch.demos.lstm import LightningLSTM, SequenceSampler, SimpleLSTM
from lightning.pytorch.demos.mnist_datamodule import MNIST
from lightning.pytorch.demos.mnist_datamodule import MNISTDataModule
from lightning.pytorch.demos.transformer import LightningTransformer, Transformer, WikiText
from lightning.pytorch.demos.transformer import WikiText
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import CometLogger
from lightning.pytorch.loggers import LitLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.comet import _COMET_AVAILABLE
from lightning.pytorch.loggers.litlogger import _LITLOGGER_AVAILABLE
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.loggers.mlflow import _MLFLOW_AVAILABLE
from lightning.pytorch.loggers.wandb import _WANDB_AVAILABLE
from lightning.pytorch.plugins import BitsandbytesPrecision
from lightning.pytorch.plugins.environments import ClusterEnvironment
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.profilers import AdvancedProfiler
from lightning.pytorch.profilers import Profiler
from lightning.pytorch.profilers import PyTorchProfiler
from lightning.pytorch.profilers import PytorchProfiler
from lightning.pytorch.profilers import SimpleProfiler, AdvancedProfiler
from lightning.pytorch.profilers import SimpleProfiler, PassThroughProfiler
from lightning.pytorch.profilers import XLAProfiler
from lightning.pytorch.profilers.pytorch import PyTorchProfiler
from lightning.pytorch.serve import ServableModule, ServableModuleValidator
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry, CheckpointIO
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.strategies.model_parallel import ModelParallelStrategy
from lightning.pytorch.trainer import Trainer
from lightning.pytorch.trainer.trainer import Trainer
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities import CombinedLoader
from lightning.pytorch.utilities import disable_possible_user_warnings
from lightning.pytorch.utilities import grad_norm
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp
from lightning.pytorch.utilities.imports import _TORCHVISION_AVAILABLE
from lightning.pytorch.utilities.model_helpers import get_torchvision_model
from lightning.pytorch.utilities.model_summary import ModelSummary
from lightning.pytorch.utilities.types import STEP_OUTPUT
import lightning.pytorch
import lightning.pytorch.cli
""".strip().splitlines()
NO_COUNTERPART = {"lightning.pytorch.serve"}  # model serving: out of the engine's scope


def _module_of(line: str) -> str:
    return line.split()[1]


@pytest.mark.parametrize("module", sorted({_module_of(line) for line in DOC_IMPORTS} - NO_COUNTERPART))
def test_every_lightning_import_path_in_the_docs_resolves_under_the_engine(module: str) -> None:
    from engine.port import lightning_path

    rel = lightning_path(module)
    assert rel is not None
    importlib.import_module(f"engine.{rel}" if rel else "engine")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "engine.port", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def _unport(text: str) -> str:
    """A ported source as Lightning's original: `engine` -> `lightning.pytorch` in its import lines."""
    text = re.sub(r"^import engine as (\w+)$", r"import lightning.pytorch as \1", text, flags=re.M)
    text = re.sub(r"^from engine(\.[\w.]+)? import", r"from lightning.pytorch\1 import", text, flags=re.M)
    return re.sub(r"^(\s*)from engine import", r"\1from lightning.pytorch import", text, flags=re.M)


def test_port_rewrites_the_ported_programs_back_to_what_was_ported_by_hand_and_they_import(tmp_path: Path) -> None:
    originals = {p.name: p.read_text() for p in SOURCES.glob("*.py") if p.name != "__init__.py"}
    pkg = tmp_path / "lightning_sources"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in originals.items():
        (pkg / name).write_text(_unport(text))
    lightning_files = [n for n in originals if "lightning.pytorch" in (pkg / n).read_text()]
    assert len(lightning_files) >= 12
    (tmp_path / "port_data.py").write_text((SOURCES.parent / "port_data.py").read_text())

    check = _run("--check", "lightning_sources", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "+import engine as pl" in check.stdout and "-import lightning.pytorch as pl" in check.stdout
    assert f"would rewrite {len(lightning_files)} of {len(originals) + 1} file(s)" in check.stderr
    assert all("lightning.pytorch" in (pkg / n).read_text() for n in lightning_files)  # --check wrote nothing

    done = _run("lightning_sources", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name, text in originals.items():
        assert (pkg / name).read_text() == text, name
    code = "import lightning_sources.dlf_cosine_warmup as m, lightning_sources.generative_adversarial_net as g; print(m.L.Trainer)"
    imported = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{ROOT}:{tmp_path}"},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0 and "engine.trainer.Trainer" in imported.stdout, imported.stderr


LIGHTNING_PROGRAM = """\
import lightning as L
import lightning.pytorch
import pytorch_lightning as pl
from lightning.pytorch.callbacks.progress import TQDMProgressBar
from lightning.pytorch.utilities.types import STEP_OUTPUT
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from lightning.pytorch.core.optimizer import LightningOptimizer
from pytorch_lightning.strategies import DDPStrategy
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.demos.boring_classes import (
    BoringModel,
    RandomDataset,
)
from lightning.fabric import Fabric
import lightningnotit


class Model(BoringModel):
    def training_step(self, batch, batch_idx) -> STEP_OUTPUT:
        return super().training_step(batch, batch_idx)


trainer = lightning.pytorch.Trainer(max_steps=1, logger=False, callbacks=[TQDMProgressBar()])
"""


def test_port_lists_what_the_engine_lacks_and_rewrites_every_import_form(tmp_path: Path) -> None:
    program = tmp_path / "train.py"
    program.write_text(LIGHTNING_PROGRAM)
    result = _run("train.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "train.py:8: DDPStrategy from pytorch_lightning.strategies" in result.stderr
    assert "train.py:14: module lightning.fabric (the engine has no counterpart" in result.stderr
    assert result.stderr.count("\n  ") == 2, result.stderr  # nothing else is reported missing
    new = program.read_text()
    assert new.splitlines()[:10] == [
        "import engine as L",
        "import engine as lightning",
        "import engine as pl",
        "from engine.callbacks.progress import TQDMProgressBar",
        "from engine.utilities.types import STEP_OUTPUT",
        "from engine.utilities.rank_zero import rank_zero_only",
        "from engine.core.optimizer import LightningOptimizer",
        "from engine.strategies import DDPStrategy",
        "from engine.tuner import Tuner",
        "from engine.demos.boring_classes import (",
    ]
    assert "from lightning.fabric import Fabric" in new and "import lightningnotit" in new
    # Without the two imports the engine lacks, the ported program runs.
    runnable = "\n".join(
        line for line in new.splitlines() if "DDPStrategy" not in line and "Fabric" not in line and "notit" not in line
    )
    (tmp_path / "train.py").write_text(runnable + "\ntrainer.fit(Model())\nprint('steps', trainer.global_step)\n")
    ran = subprocess.run(
        [sys.executable, "train.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0 and "steps 1" in ran.stdout, ran.stderr


def test_port_refuses_a_missing_file_and_changes_nothing(tmp_path: Path) -> None:
    present = tmp_path / "a.py"
    present.write_text("import lightning.pytorch as pl\n")
    result = _run("a.py", "nope.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "port: no such file or folder: nope.py (nothing was changed)"
    assert present.read_text() == "import lightning.pytorch as pl\n"
