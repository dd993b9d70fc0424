"""Results that were wrong without a message: distributed and precision paths (CPU, gloo).

Each test launches ``tests/ddp_scripts/ddpjob/silent.py`` with one scenario on 1-2 processes
and reads what the ranks recorded (``<scenario>-rank<r>.pt``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from test_ddp import _check, _run


def _launch(tmp: Path, n: int, scenario: str, *args: str, ok: bool = True) -> Any:
    if n == 0:  # one plain process, no process group
        cmd = [sys.executable, "-m", "ddpjob.silent", scenario, "out", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--standalone"]
        cmd += ["-m", "ddpjob.silent", scenario, "out", *args]
    proc = _run(cmd, tmp)
    if not ok:
        return proc
    _check(proc)
    return [torch.load(tmp / "out" / f"{scenario}-rank{r}.pt", weights_only=False) for r in range(max(n, 1))]


def test_fsdp_bf16_mixed_keeps_float_targets_float32(tmp_path: Path) -> None:
    for rank in _launch(tmp_path, 2, "targets", "fsdp"):
        assert rank["seen"], "training_step never ran"
        for seen in rank["seen"]:
            assert (seen["x"], seen["y"]) == ("torch.float32", "torch.float32")
            assert abs(seen["y0"] - 1000.33) < 1e-3  # bf16 would give 1000.0


def test_own_sampler_resumes_mid_epoch_with_the_samples_the_epoch_had_left(tmp_path: Path) -> None:
    for rank in _launch(tmp_path, 2, "own_sampler", "3"):
        assert 0 < len(rank["first"]) < 16  # stopped in the middle of epoch 0 (16 samples per rank)
        assert rank["first"] + rank["rest"] == rank["full"]


def test_shuffled_and_iterable_loaders_resume_mid_epoch_exactly(tmp_path: Path) -> None:
    proc_result = _launch(tmp_path, 0, "shuffled")[0]
    for name in ("random", "iterable"):
        r = proc_result[name]
        assert len(r["first"]) == 6  # 3 steps of 2 samples, in the middle of epoch 0
        assert r["first"] + r["rest"] == r["full"], name
