"""Checkpoints that survive anything: kills, preemption, bad files (issue: checkpoints/resume)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
BASE = [
    "trainer.max_epochs=3",
    "trainer.progress_bar=false",
    "trainer.deterministic=true",
    "wandb.mode=disabled",
    "checkpoint.every_n_train_steps=3",
    "checkpoint.monitor=val_loss",
    "checkpoint.save_top_k=2",
    "trainer.val_check_interval=5",
]
TOTAL_STEPS = 33  # 3 epochs of ceil(84 / 8) = 11 batches


def job(out: Path, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: int = 120):
    """Run tests/jobs/resume_job.py; returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={out}", "run_name=r", *BASE, *args]
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    proc = subprocess.run(cmd, cwd=TESTS, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), f"weights differ at {key}"
    for pid, st in sa["optimizer"]["state"].items():
        for name, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["optimizer"]["state"][pid][name])), name


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """An uninterrupted run: the reference for every resumed run."""
    out = tmp_path_factory.mktemp("baseline")
    job(out, env={"WEIGHTS_OUT": str(out / "final.pt")})
    return out


def summary(out: Path) -> dict:
    return json.loads((out / "r" / "summary.json").read_text())


def test_uninterrupted_run_records_everything(baseline: Path) -> None:
    s = summary(baseline)
    assert s["global_step"] == TOTAL_STEPS and s["epoch"] == 3 and s["stop_reason"] == "max_epochs"
    ckpt = torch.load(baseline / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loop"]["global_step"] == TOTAL_STEPS
    assert {"model", "optimizers", "lr_schedulers", "scaler", "rng", "callbacks", "config", "engine_version"} <= set(
        ckpt
    )
    assert {"python", "torch"} <= set(ckpt["rng"][0])
    assert ckpt["config"]["trainer"]["max_epochs"] == 3
    top = sorted(p.name for p in (baseline / "r" / "checkpoints").glob("epoch=*.ckpt"))
    assert len(top) == 2  # save_top_k=2: the rest were deleted
    assert s["best_model_path"].endswith(".ckpt") and Path(s["best_model_path"]).exists()
    assert s["best_model_score"] == min(ckpt["callbacks"]["ModelCheckpoint[val_loss]"]["best_k_models"].values())


@pytest.mark.parametrize("kill_at", sorted(random.Random(7).sample(range(2, TOTAL_STEPS), 2)))
def test_sigkill_then_resume_is_bit_identical(baseline: Path, tmp_path: Path, kill_at: int) -> None:
    killed = job(tmp_path, env={"KILL_AT_STEP": str(kill_at)}, check=False)
    assert killed.returncode == -signal.SIGKILL
    job(tmp_path, "resume=last", env={"WEIGHTS_OUT": str(tmp_path / "final.pt")})
    assert_same_state(baseline / "final.pt", tmp_path / "final.pt")
    s = summary(tmp_path)
    assert s["global_step"] == TOTAL_STEPS and s["resumed_from"].endswith("last.ckpt")
    # Top-k bookkeeping survives the resume: the same best files as the uninterrupted run.
    names = lambda out: sorted(p.name for p in (out / "r" / "checkpoints").glob("epoch=*.ckpt"))  # noqa: E731
    assert names(tmp_path) == names(baseline)
    assert s["best_model_score"] == summary(baseline)["best_model_score"]


def test_kill_during_checkpoint_write_keeps_previous_loadable(baseline: Path, tmp_path: Path) -> None:
    killed = job(tmp_path, env={"KILL_IN_SAVE": "5"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    ckpts = tmp_path / "r" / "checkpoints"
    for path in ckpts.glob("*.ckpt"):  # every file under a final name is whole
        torch.load(path, weights_only=True)
    job(tmp_path, "resume=last", env={"WEIGHTS_OUT": str(tmp_path / "final.pt")})
    assert_same_state(baseline / "final.pt", tmp_path / "final.pt")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_and_exits_75(baseline: Path, tmp_path: Path, sig: signal.Signals) -> None:
    step_file = tmp_path / "step"
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={tmp_path}", "run_name=r", *BASE]
    env = {**os.environ, "PYTHONPATH": str(TESTS), "STEP_FILE": str(step_file), "SLOW": "0.05"}
    proc = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (
        step_file.exists() and step_file.read_text() and int(step_file.read_text()) >= 4
    ):
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out
    assert f"received {sig.name}" in out
    s = summary(tmp_path)
    assert s["stop_reason"] == "preempted" and s["status"] == "interrupted"
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["loop"]["global_step"] == s["global_step"] < TOTAL_STEPS
    job(tmp_path, "resume=last", env={"WEIGHTS_OUT": str(tmp_path / "final.pt")})
    assert_same_state(baseline / "final.pt", tmp_path / "final.pt")


def test_async_checkpoints_resume_identically(baseline: Path, tmp_path: Path) -> None:
    job(tmp_path, "trainer.async_checkpoint=true", env={"KILL_AT_STEP": "20"}, check=False)
    job(tmp_path, "trainer.async_checkpoint=true", "resume=last", env={"WEIGHTS_OUT": str(tmp_path / "final.pt")})
    assert_same_state(baseline / "final.pt", tmp_path / "final.pt")


def test_resume_auto_starts_fresh_then_resumes(tmp_path: Path) -> None:
    first = job(tmp_path, "resume=auto", "trainer.max_epochs=1")
    assert "resumed from" not in first.stdout
    second = job(tmp_path, "resume=auto", "trainer.max_epochs=2")
    assert "resumed from" in second.stdout and "epoch 1, step 11" in second.stdout
    assert summary(tmp_path)["global_step"] == 22


def test_nonfinite_loss_stops_and_keeps_good_weights(tmp_path: Path) -> None:
    proc = job(tmp_path, "model.nan_at_step=7", check=False)
    assert proc.returncode == 1
    assert "the training loss is not finite at step 7" in proc.stdout
    s = summary(tmp_path)
    assert s["stop_reason"] == "nonfinite_loss" and s["global_step"] == 7
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_nonfinite_loss_skip_mode_continues(tmp_path: Path) -> None:
    proc = job(tmp_path, "model.nan_at_step=7", "trainer.on_nonfinite_loss=skip")
    assert "skipping this step" in proc.stdout
    s = summary(tmp_path)
    assert s["stop_reason"] == "max_epochs"
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values())


# -- bad checkpoints: clear errors naming the file (in-process, fast) ----------------------------


def _run_inline(tmp_path: Path, *args: str) -> int:
    sys.path.insert(0, str(TESTS))
    from jobs.resume_job import Data, DataConfig, ModelConfig, Net

    import engine

    argv = [f"output_dir={tmp_path}", "run_name=r", *BASE, "trainer.max_epochs=1", *args]
    cfg = engine.load_config(argv, model=ModelConfig, data=DataConfig, path=False, exit_on_error=False)
    engine.seed_everything(cfg.trainer.seed)
    return engine.run(cfg, Net(cfg.model), Data(cfg.data))


def test_truncated_checkpoint_path_is_a_clear_error(tmp_path: Path) -> None:
    import engine

    assert _run_inline(tmp_path) == 0
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(engine.CheckpointError, match=r"bad\.ckpt.*(truncated|corrupt)"):
        _run_inline(tmp_path, f"resume={bad}")
    with pytest.raises(engine.CheckpointError, match="does not exist"):
        _run_inline(tmp_path, f"resume={tmp_path / 'missing.ckpt'}")


def test_resume_last_falls_back_to_newest_loadable(tmp_path: Path) -> None:
    assert _run_inline(tmp_path) == 0
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:500])
    with pytest.warns(RuntimeWarning, match=r"last\.ckpt.*Resuming from .*epoch="):
        assert _run_inline(tmp_path, "resume=last", "trainer.max_epochs=2") == 0
    s = summary(tmp_path)
    assert s["resumed_from"].endswith(".ckpt") and not s["resumed_from"].endswith("last.ckpt")


def test_checkpoint_of_another_model_lists_mismatches(tmp_path: Path) -> None:
    import engine

    assert _run_inline(tmp_path) == 0
    with pytest.raises(engine.CheckpointError) as err:
        _run_inline(tmp_path, "resume=last", "model.hidden=32")
    text = str(err.value)
    assert "last.ckpt" in text and "net.0.weight" in text and "(16, 6)" in text and "(32, 6)" in text


def test_mid_epoch_checkpoint_with_other_batch_size_is_refused(tmp_path: Path) -> None:
    import engine

    job(tmp_path, env={"KILL_AT_STEP": "5"}, check=False)  # last save at step 3: mid-epoch
    with pytest.raises(engine.CheckpointError, match="batch_size=8.*batch_size=4"):
        _run_inline(tmp_path, "resume=last", "data.batch_size=4")


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` with its modification time and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    }


def test_resuming_from_another_run_leaves_that_run_untouched(baseline: Path, tmp_path: Path) -> None:
    """Top-k pruning after resuming from another run's checkpoint must never delete its files."""
    before = _snapshot(baseline / "r")
    other = baseline / "r" / "checkpoints" / "last.ckpt"
    job(tmp_path, "trainer.max_epochs=6", f"resume={other}")
    assert _snapshot(baseline / "r") == before
    s = summary(tmp_path)
    assert s["global_step"] == 2 * TOTAL_STEPS and s["resumed_from"] == str(other)
    own = tmp_path / "r" / "checkpoints"
    assert Path(s["best_model_path"]).parent == own  # reports only its own files
    assert len(list(own.glob("epoch=*.ckpt"))) == 2  # and ranks them among themselves


def test_resuming_a_copied_run_leaves_the_original_untouched(baseline: Path, tmp_path: Path) -> None:
    before = _snapshot(baseline / "r")
    shutil.copytree(baseline / "r", tmp_path / "r")
    job(tmp_path, "trainer.max_epochs=6", "resume=last")
    assert _snapshot(baseline / "r") == before
    s = summary(tmp_path)
    assert s["global_step"] == 2 * TOTAL_STEPS
    assert Path(s["best_model_path"]).parent == tmp_path / "r" / "checkpoints"
