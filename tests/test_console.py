"""What a run shows and keeps: Ctrl-C, the progress display, the end-of-run block, train.log, logging levels.

The jobs run as real subprocesses (tests/jobs/resume_job.py) and get real signals, sent to
their process group as a terminal sends a Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_fixtures import Regressor, loader, make_trainer, regression_data

from engine import console

TESTS = Path(__file__).resolve().parent
BASE = ["run_name=r", "trainer.max_epochs=3", "trainer.deterministic=true", "checkpoint.monitor=val_loss"]
TOTAL_STEPS = 33  # 3 epochs of 11 batches


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "PYTHONPATH": str(TESTS), "WANDB_MODE": "disabled", **extra}


def job(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={cwd / 'out'}", *BASE, *args]
    return subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def start(cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    """A job in its own process group (the terminal's foreground group), output merged."""
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={cwd / 'out'}", *BASE, *args]
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(STEP_FILE=str(cwd / "step"), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_step(cwd: Path, step: int, timeout: float = 90) -> None:
    deadline, path = time.time() + timeout, cwd / "step"
    while time.time() < deadline:
        text = path.read_text() if path.exists() else ""
        if text and int(text) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"the job never reached step {step}")


def summary(cwd: Path) -> dict:
    return json.loads((cwd / "out" / "r" / "summary.json").read_text())


def last_ckpt(cwd: Path) -> dict:
    return torch.load(cwd / "out" / "r" / "checkpoints" / "last.ckpt", weights_only=True)


# -- Ctrl-C -------------------------------------------------------------------------------------
def test_ctrl_c_saves_mid_epoch_prints_the_resume_command_and_exits_130(tmp_path: Path) -> None:
    proc = start(tmp_path, SLOW="0.05")
    wait_for_step(tmp_path, 4)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    s = summary(tmp_path)
    assert s["stop_reason"] == "interrupted" and s["status"] == "interrupted"
    step = s["global_step"]
    assert 4 <= step < 11  # the step under way finished; epoch 1 had 11 batches
    ckpt = last_ckpt(tmp_path)
    assert ckpt["loop"]["global_step"] == step and not ckpt["loop"]["epoch_done"]  # saved mid-epoch
    lines = [line for line in out.splitlines() if line.startswith("interrupted at step")]
    assert len(lines) == 1, out
    expected = f"interrupted at step {step}; resume with: python -m jobs.resume_job output_dir="
    assert lines[0].startswith(expected) and lines[0].endswith(" run_name=r resume=last"), lines[0]
    assert "stopping: interrupted (Ctrl-C)" in out

    # The printed command resumes the run to its end; train.log gets a second part.
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:2] == ["python", "-m"]
    resumed = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert summary(tmp_path)["global_step"] == TOTAL_STEPS
    log = (tmp_path / "out" / "r" / "train.log").read_text()
    headers = [line for line in log.splitlines() if line.startswith("=== ")]
    assert len(headers) == 2 and "resume=last" in headers[1] and "world size 1" in headers[1]
    assert re.search(r"engine \d+\.\d+\.\d+", headers[0])
    assert lines[0] in log  # the console output is in the file too
    assert f"resumed from {tmp_path / 'out' / 'r' / 'checkpoints' / 'last.ckpt'} at epoch 0, step {step}" in log


def test_a_second_ctrl_c_exits_at_once_without_saving(tmp_path: Path) -> None:
    proc = start(tmp_path, SLOW="0.05", SLOW_SAVE="60")  # the save after the first Ctrl-C takes a minute
    wait_for_step(tmp_path, 4)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    began = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - began < 10
    assert proc.returncode == 130 and "interrupted again: exiting now, without saving" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "out" / "r" / "checkpoints" / "last.ckpt").exists()


def test_ctrl_c_under_two_processes_agrees_and_prints_once(tmp_path: Path) -> None:
    proc = start(tmp_path, "trainer.devices=2", "trainer.accelerator=cpu", SLOW="0.1")
    wait_for_step(tmp_path, 3)
    os.killpg(proc.pid, signal.SIGINT)  # the launcher's group: it forwards the signal to the workers
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "OMP_NUM_THREADS" not in out and "death signal" not in out, out
    assert out.count("interrupted at step") == 1, out
    s = summary(tmp_path)
    assert s["stop_reason"] == "interrupted" and s["world_size"] == 2
    ckpt = last_ckpt(tmp_path)
    assert ckpt["loop"]["global_step"] == s["global_step"] and ckpt["loop"]["world_size"] == 2
    assert "resume with: python -m jobs.resume_job" in out and "trainer.devices=2" in out


# -- the console -----------------------------------------------------------------------------
def test_end_of_run_block_stop_line_after_validation_and_one_sync_command(tmp_path: Path) -> None:
    env = _env(WANDB_MODE="offline", WANDB_CONSOLE="off", NETRC=str(tmp_path / "no-netrc"))
    proc = job(
        tmp_path,
        "wandb.mode=offline",
        "early_stopping.monitor=val_loss",
        "early_stopping.stopping_threshold=10",
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = proc.stdout.splitlines()
    validation = next(i for i, line in enumerate(lines) if " validation: " in line)
    stopping = next(i for i, line in enumerate(lines) if line.startswith("stopping: "))
    assert validation < stopping  # the stop follows the validation that caused it
    assert lines[validation].startswith("epoch 1/3 step 11 validation: val_loss=")
    s = summary(tmp_path)
    block = lines[-6:]
    assert block[0] == f"stopped early at step 11: {s['stop_message']}" or block[0].startswith(
        f"stopped early at step 11: {s['stop_message']} after "
    )
    assert block[1].startswith("final validation metrics: val_loss=")
    assert block[2] == f"best checkpoint: {s['best_model_path']} (val_loss={s['best_model_score']:.4f})"
    assert block[3] == f"last checkpoint: {tmp_path / 'out' / 'r' / 'checkpoints' / 'last.ckpt'}"
    assert block[4].startswith(f"run folder: {tmp_path / 'out' / 'r'} ")
    assert block[5].startswith(f"W&B: run {s['wandb_run_id']} was saved offline; upload it with: wandb sync wandb/")
    assert out.count("wandb sync") == 1  # W&B's own footer is quieted
    assert (tmp_path / block[5].split("wandb sync ")[1]).is_dir()


def test_fast_dev_run_says_nothing_was_written(tmp_path: Path) -> None:
    proc = job(tmp_path, "trainer.fast_dev_run=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fast_dev_run: nothing was written" in proc.stdout
    assert "checkpoint:" not in proc.stdout and "run folder:" not in proc.stdout
    assert not (tmp_path / "out").exists()


def test_on_a_terminal_messages_never_glue_onto_the_progress_bar(tmp_path: Path) -> None:
    import pty

    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={tmp_path / 'out'}", *BASE]
    args = ["early_stopping.monitor=val_loss", "early_stopping.stopping_threshold=0.9", "trainer.log_every_n_steps=2"]
    proc = subprocess.Popen(
        cmd + args, cwd=tmp_path, env=_env(SLOW="0.02", TERM="xterm", COLUMNS="200"), stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    raw = b"".join(chunks).decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw)  # colours
    text = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "\n", text)  # cursor moves and erasures split lines
    segments = [s.strip() for s in re.split(r"[\r\n]", text) if s.strip()]
    assert any(re.search(r"epoch 2/3 .*step \d+ \| 0:\d\d elapsed, ETA 0:\d\d", s) for s in segments), raw
    for marker, start in (("validation:", "epoch "), ("stopping:", "stopping:"), ("bottleneck report", "bottleneck")):
        hits = [s for s in segments if marker in s]
        assert hits and all(s.startswith(start) for s in hits), (marker, hits)


# -- logging --------------------------------------------------------------------------------
def test_messages_go_through_logging_levels_and_ranks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger("engine")
    trainer = make_trainer(tmp_path, max_epochs=1, progress_bar=False)
    root.setLevel(logging.WARNING)  # a user silences the engine's info lines
    try:
        trainer.fit(Regressor(), loader(regression_data(16)), loader(regression_data(8)))
        trainer.print("warning: still shown")
        trainer.print("hidden")
    finally:
        root.setLevel(logging.INFO)
    out = capsys.readouterr().out
    assert "bottleneck report" not in out and "hidden" not in out and "warning: still shown\n" in out

    log_file = tmp_path / "rank1.log"
    with console.session(log_file, rank=1, world_size=2):
        logging.getLogger("engine.trainer").info("an info line")
        logging.getLogger("engine.trainer").warning("a warning")
    console.setup(0)
    assert capsys.readouterr().out == "[rank 1] warning: a warning\n"
    assert log_file.read_text() == "[rank 1] warning: a warning\n"  # no header: rank 0 writes it


def test_wandb_init_timeout_is_a_config_key_with_a_30_s_default(tmp_path: Path) -> None:
    from engine import Config, ConfigError, load_config
    from engine.run import build_logger

    assert Config().wandb.init_timeout == 30.0
    (tmp_path / "c.yaml").write_text("wandb:\n  mode: offline\n")
    cfg = load_config(["wandb.init_timeout=5"], path=tmp_path / "c.yaml", exit_on_error=False)
    assert build_logger(cfg, "r").init_timeout == 5.0
    with pytest.raises(ConfigError, match="wandb.init_timeout"):
        load_config(["wandb.init_timeout=soon"], path=tmp_path / "c.yaml", exit_on_error=False)


def test_wandb_online_without_network_gives_up_in_time_then_runs_offline(tmp_path: Path) -> None:
    env = _env(
        WANDB_API_KEY="f" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there
        WANDB_CONSOLE="off",
        NETRC=str(tmp_path / "no-netrc"),
    )
    began = time.monotonic()
    del env["WANDB_MODE"]
    proc = job(tmp_path, "wandb.mode=online", "wandb.init_timeout=3", "trainer.max_epochs=1", env=env)
    took = time.monotonic() - began
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert took < 75, took  # wandb's own default waits 90 s, then retries
    warnings = [line for line in out.splitlines() if "W&B could not start" in line]
    assert len(warnings) == 1, out
    assert warnings[0].startswith("warning: W&B could not start an online run within 3 s (")
    assert "Logging offline instead" in warnings[0] and "f" * 40 not in out
    s = summary(tmp_path)
    assert s["wandb_run_id"] and f"W&B: run {s['wandb_run_id']} was saved offline" in proc.stdout


@pytest.mark.parametrize("columns", [80, 200])
def test_the_bar_keeps_the_epoch_and_fits_the_terminal(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from engine.callbacks import ProgressBar

    monkeypatch.setenv("COLUMNS", str(columns))
    bar = ProgressBar()
    bar._start_bar()
    try:
        fields = {"step": 1234, "times": "0:12 elapsed, ETA 0:34", "rate": "9241 samples/s, data wait 3%"}
        bar._progress.update(
            bar._task, description="epoch 12/15", total=12, completed=7, metrics="loss=0.1234", **fields
        )
        shown = io.StringIO()
        Console(file=shown, width=columns).print(bar._progress.get_renderable())
    finally:
        bar._stop_bar()
    (line,) = shown.getvalue().splitlines()
    assert line.startswith("epoch 12/15 ━") and " 7/12 step 1234 | 0:12 elapsed, ETA 0:34 |" in line, line
    assert len(line) <= columns
