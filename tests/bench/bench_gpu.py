"""GPU (optional): bf16-mixed training throughput of a small transformer, engine vs hand-written;
and the input pipeline: batches from a DataLoader on the CPU, copied to the GPU every step.

A 6-layer, 384-wide causal transformer language model (about 11M parameters with its
embedding), batches of 32 x 256 tokens already on the device, AdamW. The engine runs
`Trainer(precision="bf16-mixed")`; the hand-written loop wraps the forward in
`torch.autocast(..., dtype=torch.bfloat16)` and does nothing else. Throughput is tokens per
second between a synchronize after the warm-up steps and one at the end; runs alternate.

The loader rows train a small conv net on 64 x 3 x 64 x 64 float images (3 MiB a batch) that
a DataLoader serves from the CPU: hand-written with ``pin_memory=True`` and non-blocking
copies (the baseline), hand-written with the DataLoader's default (unpinned: each copy blocks
the CPU), and the engine given the unpinned loader (it pins on CUDA by itself).
Without a CUDA GPU the rows say so and nothing runs (``--device cpu``: a small dry run).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from benchlib import Row, import_package, main, median, rounds, tmpdir
from torch import nn
from torch.nn import functional as F

BENCH = "GPU: bf16-mixed small transformer"
VOCAB = 4096


class TinyLM(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, seq: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.zeros(seq, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        return self.head(self.blocks(h, mask=self.mask, is_causal=True))


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def bench(args: argparse.Namespace) -> list[Row]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return [Row(BENCH, "engine", "skipped", note="no CUDA GPU on this machine")]
    small = device.type == "cpu" or args.quick
    width, layers, heads, seq, batch = (64, 2, 2, 32, 8) if small else (384, 6, 6, 256, 32)
    warmup, steps = (3, 10) if small else (20, 100)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, VOCAB, (batch, seq + 1), generator=g).to(device) for _ in range(8)]
    batches = [(d[:, :-1], d[:, 1:]) for d in data]
    engine = import_package().engine
    root = tmpdir("gpu")

    def make() -> nn.Module:
        torch.manual_seed(0)
        return TinyLM(width, layers, heads, seq).to(device)

    def hand() -> float:
        model = make()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_of(model, batches[i % len(batches)])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync()
        return steps * batch * seq / (time.perf_counter() - start)

    def with_engine() -> float:
        stamps: list[float] = []

        class LM(engine.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = make()

            def training_step(self, b: Any, batch_idx: int) -> torch.Tensor:
                return loss_of(self.model, b)

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.AdamW(self.parameters(), lr=3e-4)

            def on_train_batch_end(self, *a: Any) -> None:
                if self.trainer.global_step == warmup:
                    sync()
                    stamps.append(time.perf_counter())

            def on_train_end(self) -> None:
                sync()
                stamps.append(time.perf_counter())

        trainer = engine.Trainer(
            max_steps=warmup + steps,
            precision="bf16-mixed",
            accelerator=device.type,
            progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[],
            logger=None,
            default_root_dir=root,
        )
        trainer.fit(LM(), train_dataloaders=[batches[i % len(batches)] for i in range(warmup + steps)])
        return steps * batch * seq / (stamps[-1] - stamps[0])

    runs = rounds({"hand-written": hand, "engine": with_engine}, 1 if small else 3)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU dry run"
    rows = []
    for label, values in runs.items():
        time_ratio = median(runs["hand-written"]) / median(values)  # throughputs: hand / engine is a time ratio
        note = f"{name}; {width}x{layers} layers, {batch}x{seq} tokens" if label == "hand-written" else ""
        rows.append(Row(BENCH, label, f"{median(values) / 1e3:.1f}k tokens/s", time_ratio, note=note))
    return rows + loader_rows(device, small, engine, root, name)


LOADER_BENCH = "GPU: images from a CPU DataLoader, fp32 conv net"


def loader_rows(device: torch.device, small: bool, engine: Any, root: str, name: str) -> list[Row]:
    """Throughput with batches copied from the CPU each step: pinned + non_blocking vs not, vs the engine."""
    from torch.utils.data import DataLoader, TensorDataset

    size, count = (16, 64 * 6) if small else (64, 64 * 40)
    warmup = 2  # batches before the clock starts (both loops)
    timed = count - warmup * 64
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(count, 3, size, size, generator=g), torch.randint(0, 10, (count,), generator=g))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def make() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 10)
        ).to(device)

    def hand(pin: bool) -> Callable[[], float]:
        def run() -> float:
            model, loader = make(), DataLoader(data, batch_size=64, pin_memory=pin and device.type == "cuda")
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            for i, (x, y) in enumerate(loader):
                if i == warmup:
                    sync()
                    start = time.perf_counter()
                x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
                F.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync()
            return timed / (time.perf_counter() - start)

        return run

    def with_engine() -> float:
        stamps: list[float] = []

        class Net(engine.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = make()

            def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
                if batch_idx == warmup:
                    sync()
                    stamps.append(time.perf_counter())

            def on_train_end(self) -> None:
                sync()
                stamps.append(time.perf_counter())

            def training_step(self, b: Any, batch_idx: int) -> torch.Tensor:
                x, y = b
                return F.cross_entropy(self.net(x), y)

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.SGD(self.parameters(), lr=0.01)

        trainer = engine.Trainer(
            max_epochs=1,
            accelerator=device.type,
            progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            logger=None,
            default_root_dir=root,
        )
        trainer.fit(Net(), train_dataloaders=DataLoader(data, batch_size=64))  # unpinned: the engine pins
        return timed / (stamps[-1] - stamps[0])

    variants = {"hand-written, pinned": hand(True), "hand-written, unpinned": hand(False), "engine": with_engine}
    runs = rounds(variants, 1 if small else 3)
    base = median(runs["hand-written, pinned"])
    rows = []
    for label, values in runs.items():
        note = f"{name}; {count} images of 3x{size}x{size} in batches of 64" if label == "hand-written, pinned" else ""
        if label == "engine":
            note = "given the unpinned loader"
        rows.append(Row(LOADER_BENCH, label, f"{median(values):.0f} images/s", base / median(values), note=note))
    return rows


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a small dry run of this script")


if __name__ == "__main__":
    main(bench, add_args)
