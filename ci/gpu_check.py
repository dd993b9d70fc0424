"""GPU checks of the engine (run by ci/gpu-check): mixed precision, NCCL DDP, checkpoints, speed.

    python ci/gpu_check.py [--device cuda|cpu] CHECK...       CHECK: precision checkpoint throughput
    torchrun --nproc_per_node=1 ci/gpu_check.py ddp           the DDP check needs a launcher

Each check prints one ``ok``/``FAIL`` line; the exit status is non-zero when any failed.
``--device cpu`` runs what a CPU can (bf16-mixed, gloo), so the suite can test this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


def load_engine():
    """The repository's engine/ as the package ``engine`` (it uses relative imports only)."""
    if "engine" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "engine", ROOT / "engine" / "__init__.py", submodule_search_locations=[str(ROOT / "engine")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["engine"] = module
        spec.loader.exec_module(module)
    return sys.modules["engine"]


engine = load_engine()


class Net(engine.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(32, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 4)
        )
        self.losses: list[torch.Tensor] = []  # kept on the device: no sync per step
        self.ddp_wrapped = False

    def on_train_start(self):
        self.ddp_wrapped = self.trainer._ddp is not None  # (the trainer lets go of DDP when fit ends)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.losses.append(loss.detach())
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def loader(n: int = 1024, batch_size: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    y = (x[:, :4].argmax(dim=1)).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def fit(device: str, precision: str, steps: int, root: Path, width: int = 64, batch_size: int = 64):
    torch.manual_seed(0)
    module = Net(width)
    trainer = engine.Trainer(
        max_steps=steps,
        max_epochs=None,
        precision=precision,
        accelerator=device,
        progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10**9,
        default_root_dir=root,
        seed=0,
    )
    trainer.fit(module, train_dataloaders=loader(n=max(1024, steps * batch_size), batch_size=batch_size))
    return trainer, module


def check_precision(device: str, root: Path) -> str:
    modes = ["bf16-mixed", "16-mixed"] if device == "cuda" else ["bf16-mixed"]  # fp16 autocast needs CUDA
    out = []
    for precision in modes:
        trainer, module = fit(device, precision, 60 if device == "cuda" else 25, root / precision)
        losses = torch.stack(module.losses).float().cpu()
        first, last = losses[:5].mean().item(), losses[-5:].mean().item()
        assert torch.isfinite(losses).all(), f"{precision}: non-finite loss"
        assert last < 0.8 * first, f"{precision}: loss {first:.3f} -> {last:.3f} did not fall"
        assert next(module.parameters()).dtype == torch.float32, f"{precision}: weights must stay fp32"
        if precision == "16-mixed":
            assert trainer.precision.scaler.is_enabled(), "16-mixed must use a GradScaler"
        out.append(f"{precision} loss {first:.3f} -> {last:.3f}")
    return "; ".join(out)


def check_checkpoint(device: str, root: Path) -> str:
    trainer, module = fit(device, "bf16-mixed", 10, root / "ckpt")
    path = root / "ckpt" / "roundtrip.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain containers only
    fresh = Net().to(device)
    fresh.load_state_dict(engine.checkpoint.load_checkpoint(path, map_location=device)["model"])
    for (name, a), b in zip(module.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs after the round trip"
    assert raw["loop"]["global_step"] == 10
    return f"{path.stat().st_size} bytes, {len(raw['model'])} tensors equal after save/load"


def check_throughput(device: str, root: Path) -> str:
    width, batch_size, steps = (1024, 512, 300) if device == "cuda" else (64, 64, 10)
    fit(device, "bf16-mixed", 3, root / "warmup", width, batch_size)  # CUDA context, kernels, allocator
    start = time.perf_counter()
    trainer, _ = fit(device, "bf16-mixed", steps, root / "speed", width, batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return f"{steps * batch_size / elapsed:,.0f} samples/s ({steps / elapsed:.1f} steps/s), MLP width {width}, batch {batch_size}, bf16-mixed, {name}"


def check_ddp(device: str, root: Path) -> str:
    """Under torchrun: the engine joins the process group (NCCL on CUDA) and wraps the model in DDP."""
    import torch.distributed as dist

    assert engine.distributed.under_launcher(), "run the ddp check under torchrun"
    trainer, module = fit(device, "bf16-mixed", 10, root / "ddp")
    backend = dist.get_backend()
    assert backend == ("nccl" if device == "cuda" else "gloo"), f"backend {backend}"
    assert module.ddp_wrapped, "the module was not wrapped in DistributedDataParallel"
    env = trainer.env
    total = env.all_reduce(torch.ones((), device=env.device), "sum").item()
    assert total == env.world_size, f"all_reduce gave {total}"
    assert env.broadcast_object({"rank": env.rank})["rank"] == 0
    engine.distributed.teardown()
    first, last = module.losses[0].item(), module.losses[-1].item()
    return f"{backend}, world size {env.world_size}, DDP-wrapped, loss {first:.3f} -> {last:.3f}"


CHECKS: dict[str, Callable[[str, Path], str]] = {
    "precision": check_precision,
    "checkpoint": check_checkpoint,
    "throughput": check_throughput,
    "ddp": check_ddp,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("checks", nargs="*", default=["precision", "checkpoint", "throughput"])
    args = parser.parse_args(argv)
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("FAIL no CUDA device visible (use --device cpu for a dry run)", file=sys.stderr)
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.checks:
            try:
                print(f"ok   {name}: {CHECKS[name](args.device, Path(tmp))}", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
