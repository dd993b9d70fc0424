"""Results that were wrong without a message: distributed and precision paths (CPU, gloo).

Each test launches ``tests/ddp_scripts/ddpjob/silent.py`` with one scenario on 1-2 processes
and reads what the ranks recorded (``<scenario>-rank<r>.pt``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_ddp import _check, _run


def _launch(tmp: Path, n: int, scenario: str, *args: str, ok: bool = True) -> Any:
    tmp.mkdir(parents=True, exist_ok=True)
    if n == 0:  # one plain process, no process group
        cmd = [sys.executable, "-m", "ddpjob.silent", scenario, "out", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--standalone"]
        cmd += ["-m", "ddpjob.silent", scenario, "out", *args]
    proc = _run(cmd, tmp)
    if not ok:
        return proc
    _check(proc)
    tag = f"{scenario}-{'-'.join(args)}" if scenario == "elastic" else scenario
    return [torch.load(tmp / "out" / f"{tag}-rank{r}.pt", weights_only=False) for r in range(max(n, 1))]


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


def test_ddp_replicas_stay_equal_when_a_windows_last_micro_batch_returns_none(tmp_path: Path) -> None:
    ranks = _launch(tmp_path, 2, "skip_last")
    for who in ("all", "1"):  # every rank skips the window's last micro-batch, or rank 1 alone
        first, second = ranks[0][who], ranks[1][who]
        assert first["step"] == second["step"] == 4
        for name, value in first["weights"].items():
            torch.testing.assert_close(second["weights"][name], value, rtol=0, atol=0)

    # With find_unused_parameters=True DDP cannot be synced without a loss: every rank stops, saying why.
    proc = _launch(tmp_path / "unused", 2, "skip_last", "ddp_find_unused_parameters_true", ok=False)
    assert proc.returncode != 0 and "training_step returned None on batch" in proc.output
    assert "return a zero loss there instead" in proc.output


def test_a_failed_save_on_rank_0_stops_every_rank_at_once_with_its_message(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = _launch(tmp_path, 2, "bad_save", ok=False)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    for rank in (0, 1):  # both ranks fail with rank 0's reason, not a timeout in a barrier
        assert f"[rank{rank}]: " in proc.output
        lines = [x for x in proc.output.splitlines() if x.startswith(f"[rank{rank}]: ") and "CheckpointError: " in x]
        assert lines and "not-a-folder" in lines[-1], proc.output[-3000:]


def test_worker_augmentations_after_a_mid_epoch_resume_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    result = _launch(tmp_path, 0, "augment")[0]
    for name, r in result.items():
        (full, first, rest), (full_x, first_x, rest_x) = r["seen"], r["inputs"]
        assert len(first) == 6 and first + rest == full, name  # the same samples ...
        assert len(first_x) + len(rest_x) == len(full_x)
        for got, want in zip(first_x + rest_x, full_x, strict=True):  # ... with the same random draws
            assert torch.equal(got, want), name


def test_epoch_means_after_an_elastic_mid_epoch_resume_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    """A global batch of 4: batch_size=2 on 2 processes or 4 on 1; stopped at step 11 of 16 (mid-epoch 1)."""
    full = _launch(tmp_path, 0, "elastic", "full", "full", "4")[0]
    for before, after, name in ((2, 0, "two-to-one"), (0, 2, "one-to-two")):
        part = _launch(tmp_path, before, "elastic", "part", name, str(4 // max(before, 1)))[0]
        assert 11 <= part["global_step"] < 16
        for rank in _launch(tmp_path, after, "elastic", "rest", name, str(4 // max(after, 1))):
            assert rank["global_step"] == 16
            assert abs(rank["mean_x"] - full["mean_x"]) < 1e-6, name


def test_fsdp_compiles_the_sharded_blocks_and_honours_sync_batchnorm(tmp_path: Path) -> None:
    for rank in _launch(tmp_path, 2, "fsdp_blocks"):
        assert rank["steps"] == 2
        compiled = {name for name, yes in rank["compiled"].items() if yes}
        assert compiled == {"encoder", "head"}  # the blocks, not the root (whose forward runs the step)
        assert rank["sync_batchnorm_error"].startswith("trainer.sync_batchnorm=true needs GPUs")


def test_fsdp_cpu_offload_on_gpus_adds_a_cpu_backend_for_clipping() -> None:
    from engine import distributed as D

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert D.backend_for(cuda) == "nccl" and D.backend_for(cpu, cpu_collectives=True) == "gloo"
    assert D.backend_for(cuda, cpu_collectives=True) == "cpu:gloo,cuda:nccl"  # offloaded gradients reduce on gloo


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, ci/gpu-check runs its checks")
def test_gpu_check_without_a_gpu_says_it_skipped_and_exits_0() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(root / "ci" / "gpu-check")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "gpu-check: skipped, no CUDA device visible" in proc.stdout, proc.stderr
