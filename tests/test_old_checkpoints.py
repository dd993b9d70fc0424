"""Checkpoints written by released engines (0.1.0, 0.2.0) resume with today's engine.

Each released engine is taken from this repository's history (the "Release vX.Y.Z" commit),
trains a few steps in its own process and saves mid-epoch; today's engine resumes from that file
and must end with the weights and optimizer state of an uninterrupted run of today's engine.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine import Module, Trainer

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine import Module, Trainer, __version__

{module}

out = Path(sys.argv[1])
trainer = Trainer(max_steps=3, seed=0, logger=False, enable_checkpointing=False, progress_bar=False,
                  num_sanity_val_steps=0, default_root_dir=out)
trainer.fit(Regressor(), make_loader())
trainer.save_checkpoint(out / "old.ckpt")
print(__version__)
"""

MODULE = """
class Regressor(Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.01)


def make_loader():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8, shuffle=True)
"""
# The same module and data in this process, on today's engine.
TODAY: dict = {"torch": torch, "nn": nn, "DataLoader": DataLoader, "TensorDataset": TensorDataset, "Module": Module}
exec(MODULE, TODAY)


def _release_commit(version: str) -> str | None:
    proc = subprocess.run(
        ["git", "log", "--format=%H", f"--grep=^Release v{version}$", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    commits = proc.stdout.split()
    return commits[0] if proc.returncode == 0 and commits else None


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_a_released_engines_mid_epoch_checkpoint_resumes_exactly(version: str, tmp_path: Path) -> None:
    commit = _release_commit(version)
    if commit is None:
        pytest.skip(f"the Release v{version} commit is not in this clone's history (a shallow clone?)")
    archive = subprocess.run(["git", "archive", commit, "engine"], cwd=ROOT, capture_output=True, check=True).stdout
    old = tmp_path / "old"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(old, filter="data")
    script = tmp_path / "write_old.py"
    script.write_text(SCRIPT.format(module=MODULE))
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        cwd=old,  # `import engine` finds the released engine here, not today's
        env={"PYTHONPATH": str(old), "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1] == version
    saved = torch.load(tmp_path / "run" / "old.ckpt", weights_only=True)
    assert saved["engine_version"] == version and saved["loop"]["batches_done"] == 3  # mid-epoch

    def trainer(root: Path) -> Trainer:
        return Trainer(
            max_steps=10,
            seed=0,
            logger=False,
            enable_checkpointing=False,
            progress_bar=False,
            num_sanity_val_steps=0,
            default_root_dir=root,
        )

    regressor, make_loader = TODAY["Regressor"], TODAY["make_loader"]
    resumed, module = trainer(tmp_path / "resumed"), regressor()
    resumed.fit(module, make_loader(), ckpt_path=tmp_path / "run" / "old.ckpt")
    straight, reference = trainer(tmp_path / "straight"), regressor()
    straight.fit(reference, make_loader())
    assert resumed.global_step == straight.global_step == 10 and resumed.current_epoch == straight.current_epoch
    for a, b in zip(module.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.optimizers[0].state.values(), straight.optimizers[0].state.values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
