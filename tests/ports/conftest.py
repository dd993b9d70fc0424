"""Ports run in a fresh working directory, on one CPU thread, with W&B off (as recorded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _port_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # Lightning's default_root_dir is the working directory
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference ran on one thread: reductions split alike
    yield
    torch.set_num_threads(threads)
