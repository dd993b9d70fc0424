"""A small training job for checkpoint/resume tests, run as a subprocess.

    python -m jobs.resume_job KEY=VALUE ...   (with tests/ on PYTHONPATH)

Test-only environment variables make it die at a chosen instant:
KILL_AT_STEP=N (SIGKILL itself before optimizer step N), KILL_IN_SAVE=N (SIGKILL itself in
the middle of writing its N-th checkpoint), STEP_FILE=path (write the step after each
optimizer step, so a test can signal it at a known point), SLOW=seconds (sleep per batch),
SLOW_SAVE=seconds (sleep while building each checkpoint), SLOW_VAL=seconds (sleep per validation
batch), VAL_LOG=path (append "epoch batch_idx" at each validation batch of fit, sanity check aside).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import conftest  # noqa: E402,F401  (makes the repo's engine importable as `engine`)
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import engine  # noqa: E402
from engine import checkpoint as ckpt_io  # noqa: E402


@dataclass
class ModelConfig:
    hidden: int = 16
    lr: float = 0.01
    nan_at_step: int = -1  # make the loss NaN at this step (non-finite handling tests)


@dataclass
class DataConfig(engine.DataConfig):
    batch_size: int = 8
    n_train: int = 84  # 10.5 batches: a short last batch
    n_val: int = 30


class Net(engine.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.save_hyperparameters(cfg)
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(6, cfg.hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(cfg.hidden, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if self.global_step == self.cfg.nan_at_step:
            loss = loss * float("nan")
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Data(engine.DataModule):
    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg

    def setup(self, stage):
        g = torch.Generator().manual_seed(123)
        x = torch.randn(self.cfg.n_train + self.cfg.n_val, 6, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        self.train = TensorDataset(x[: self.cfg.n_train], y[: self.cfg.n_train])
        self.val = TensorDataset(x[self.cfg.n_train :], y[self.cfg.n_train :])

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.cfg.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=self.cfg.batch_size)


class Chaos(engine.Callback):
    """Dies or reports at the instants the environment asks for."""

    def __init__(self) -> None:
        self.kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))
        self.step_file = os.environ.get("STEP_FILE")
        self.slow = float(os.environ.get("SLOW", "0"))
        self.slow_save = float(os.environ.get("SLOW_SAVE", "0"))
        self.slow_val = float(os.environ.get("SLOW_VAL", "0"))
        self.val_log = os.environ.get("VAL_LOG")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.slow:
            time.sleep(self.slow)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.step_file:  # replaced whole, so a test polling it never reads a half-written file
            tmp = Path(f"{self.step_file}.{os.getpid()}.tmp")  # (each rank of a DDP job writes it)
            tmp.write_text(str(trainer.global_step))
            os.replace(tmp, self.step_file)

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            return
        if self.val_log and trainer.is_global_zero:
            with open(self.val_log, "a") as f:
                f.write(f"{trainer.current_epoch} {batch_idx}\n")
        time.sleep(self.slow_val)

    def on_save_checkpoint(self, trainer, module, checkpoint):
        time.sleep(self.slow_save)


def _die_in_nth_save(n: int) -> None:
    """Replace torch.save so the n-th checkpoint write is cut off halfway by SIGKILL."""
    real_save, count = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        count[0] += 1
        if count[0] == n:
            real_save(obj, f, *args, **kwargs)
            if hasattr(f, "flush"):
                f.flush()
                f.truncate(max(1, f.tell() // 2))
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    ckpt_io.torch.save = save


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("KILL_IN_SAVE"):
        _die_in_nth_save(int(os.environ["KILL_IN_SAVE"]))
    cfg = engine.load_config(argv, model=ModelConfig, data=DataConfig, path=False)
    engine.seed_everything(cfg.trainer.seed)
    module = Net(cfg.model)
    code = engine.run(cfg, module, Data(cfg.data), callbacks=[Chaos()])
    if os.environ.get("WEIGHTS_OUT"):
        torch.save(
            {"model": module.state_dict(), "optimizer": module.trainer.optimizers[0].state_dict()},
            os.environ["WEIGHTS_OUT"],
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
