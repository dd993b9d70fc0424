"""`python -m <package>.sweep` end to end: the digits example, trials of a few batches on the CPU.

One generated project serves the module; each test runs its own sweep (its own name), so they
share nothing but the project. Trials train 2 batches per epoch with one validation batch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from gen_helpers import new_project, template_repo
from wandb_records import load_runs

__all__ = ["template_repo"]

pytestmark = pytest.mark.slow
TRIAL = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.progress_bar=false",
    "early_stopping.monitor=null",
]


@pytest.fixture(scope="module")
def project(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    package = f"sweep_{uuid.uuid4().hex[:8]}"
    dest = new_project(template_repo, tmp_path_factory.mktemp("sweep") / "proj", f"package_name={package}")
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCAFFOLD_DEBUG") and not k.startswith("SLURM")
    }
    env.update(PYTHONPATH=str(dest / "src"), WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONDONTWRITEBYTECODE="1")
    return dest, package, env


def write_spec(project: Path, name: str, **raw) -> str:
    raw = {"name": name, "metric": {"name": "val_acc", "goal": "maximize"}, **raw}
    path = project / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f"configs/{name}.yaml"


def sweep_cmd(package: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"{package}.sweep", *TRIAL, *args]


def run_sweep(project, *args: str, code: int = 0, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    dest, package, base_env = project
    proc = subprocess.run(
        sweep_cmd(package, *args),
        cwd=dest,
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def state(project, name: str) -> dict:
    return json.loads((project[0] / "sweeps" / name / "state.json").read_text())


def summary(trial: dict) -> dict:
    return json.loads((Path(trial["run_dir"]) / "summary.json").read_text())


def test_random_sweep_then_a_rerun_adds_trials_recorded_offline_in_w_and_b(project) -> None:
    dest = project[0]
    spec = write_spec(
        dest,
        "rand",
        method="random",
        parameters={
            "model": {"parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2}}},
            "model.hidden": {"values": [16, 32]},
            "trainer.max_epochs": {"value": 1},
        },
    )
    offline = {"WANDB_MODE": "offline"}
    first = run_sweep(project, spec, "--count", "2", env=offline)
    assert [t["id"] for t in state(project, "rand")["trials"]] == [0, 1]
    second = run_sweep(project, spec, "--count=2", env=offline)
    trials = state(project, "rand")["trials"]
    assert [(t["id"], t["state"]) for t in trials] == [(i, "finished") for i in range(4)]
    assert len({t["run_name"] for t in trials}) == 4
    for t in trials:
        s = summary(t)
        assert (s["epoch"], s["stop_reason"]) == (1, "max_epochs")
        assert t["metric"] == pytest.approx(s["metrics"]["val_acc"])
        assert 1e-3 <= t["params"]["model.lr"] <= 1e-2 and t["params"]["model.hidden"] in (16, 32)
        assert (
            yaml.safe_load((Path(t["run_dir"]) / "config.yaml").read_text())["model"]["lr"] == t["params"]["model.lr"]
        )
    assert "trial 1 finished" in first.stdout and "trial 2 starts" in second.stdout

    rows = list(csv.DictReader((dest / "sweeps" / "rand" / "results.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3"]
    assert set(rows[0]) >= {"trial", "run_name", "state", "model.lr", "model.hidden", "val_acc"}
    assert float(rows[3]["model.lr"]) == trials[3]["params"]["model.lr"]
    # the leaderboard, best first, and the best trial's config and checkpoint
    best = max(trials, key=lambda t: t["metric"])
    out = second.stdout
    assert "leaderboard (val_acc, maximize, best first):" in out
    assert f"best: trial {best['id']}, run {best['run_name']}" in out
    assert f"config: runs/{best['run_name']}/config.yaml" in out
    assert f"checkpoint: runs/{best['run_name']}/checkpoints/" in out
    assert (dest / "sweeps" / "rand" / "plot.png").read_bytes()[:4] == b"\x89PNG"

    # every trial is a W&B run: group = the sweep, the swept values in its config
    runs = {r.name: r for r in load_runs(dest)}
    for t in trials:
        run = runs[t["run_name"]]
        assert run.group == "rand"
        assert run.config["config"]["model"]["lr"] == pytest.approx(t["params"]["model.lr"])
        assert run.config["config"]["model"]["hidden"] == t["params"]["model.hidden"]
        assert run.run_id == t["wandb_run_id"]
    sync = next(line for line in out.splitlines() if line.strip().startswith("wandb sync "))
    assert sorted(sync.split()[2:]) == sorted(f"wandb/{p.parent.name}" for p in (r.path for r in runs.values()))


def test_grid_of_two_with_count_five_runs_two_and_hyperband_stops_the_poor_one_early(project) -> None:
    spec = write_spec(
        project[0],
        "hb",
        method="grid",
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3},
        parameters={"model.lr": {"values": [0.01, 1e-7]}, "trainer.max_epochs": {"value": 3}},
    )
    proc = run_sweep(project, spec, "--count", "5", "trainer.limit_train_batches=6")
    assert "nothing left to run: the grid's 2 points have all been tried" in proc.stdout
    good, poor = state(project, "hb")["trials"]
    assert (good["params"]["model.lr"], poor["params"]["model.lr"]) == (0.01, 1e-7)  # the spec's order
    assert good["state"] == "finished" and summary(good)["epoch"] == 3
    assert poor["state"] == "pruned" and poor["metric"] < good["history"][0][1]
    s = summary(poor)
    assert (s["epoch"], s["global_step"], s["stop_reason"]) == (1, 6, "sweep_early_terminate")
    log = (Path(poor["run_dir"]) / "train.log").read_text()
    assert "hyperband: val_acc=" in log and "is not in the top 1/3 of the 2 trials at validation 1" in log
    rows = list(csv.DictReader((project[0] / "sweeps" / "hb" / "results.csv").open()))
    assert [(r["state"], r["stop_reason"]) for r in rows] == [
        ("finished", "max_epochs"),
        ("pruned", "sweep_early_terminate"),
    ]
    again = run_sweep(project, spec, "--count", "5")  # a rerun of a finished grid runs nothing
    assert "starts" not in again.stdout and len(state(project, "hb")["trials"]) == 2


def test_two_concurrent_workers_run_distinct_trials(project) -> None:
    dest, package, env = project
    spec = write_spec(
        dest,
        "conc",
        method="bayes",
        run_cap=2,
        parameters={
            "model.lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2},
            "trainer.max_epochs": {"value": 1},
        },
    )
    procs = [
        subprocess.Popen(sweep_cmd(package, spec, "--count", "2"), cwd=dest, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = state(project, "conc")["trials"]
    assert [t["state"] for t in trials] == ["finished", "finished"]
    assert len({t["worker"] for t in trials}) == 2  # one each: neither waited for the other
    for t in trials:
        assert 1e-3 <= t["params"]["model.lr"] <= 1e-2
        log = (Path(t["run_dir"]) / "train.log").read_text().splitlines()
        starts = sum(line.startswith("=== ") for line in log)  # a header line per start
        assert starts == 1, f"{t['run_name']} started {starts} times"
        assert sum(f"trial {t['id']} starts" in out for out in outs) == 1
    assert len(list((dest / "runs").glob(f"conc-{state(project, 'conc')['id']}-*"))) == 2


def _wait_for_checkpoint(path: Path, newer_than: float, attempts: int, proc: subprocess.Popen) -> dict:
    """Trial 0 once its `attempts`-th process has written a checkpoint after `newer_than`."""
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        trials = json.loads(path.read_text())["trials"] if path.exists() else []
        trial = trials[0] if trials else {}
        last = Path(trial.get("run_dir", "/nonexistent")) / "checkpoints" / "last.ckpt"
        if (
            trial.get("attempts") == attempts
            and trial.get("pid")
            and last.exists()
            and last.stat().st_mtime > newer_than
        ):
            return trial
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"attempt {attempts} of the trial never wrote a checkpoint")


def test_a_preempted_or_killed_trial_is_resumed_by_the_next_worker(project) -> None:
    """SIGTERM to a worker: its trial saves and the worker exits 75 (requeue me). SIGKILL to a
    worker and its trial (a lost node): nobody records anything. Either way the next worker
    resumes the trial from its last checkpoint instead of starting a new one."""
    dest, package, env = project
    spec = write_spec(
        dest,
        "kill",
        method="random",
        run_cap=1,
        parameters={"model.hidden": {"values": [16]}, "trainer.max_epochs": {"value": 3}},
    )
    args = ["--count", "1", "checkpoint.every_n_train_steps=1", "trainer.limit_train_batches=12"]
    path = dest / "sweeps" / "kill" / "state.json"

    first = subprocess.Popen(sweep_cmd(package, spec, *args), cwd=dest, env=env, stdout=subprocess.PIPE, text=True)
    _wait_for_checkpoint(path, 0, 1, first)
    first.send_signal(signal.SIGTERM)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 75, out
    assert "trial 0 preempted (exit code 75" in out and "the next worker resumes it" in out
    assert state(project, "kill")["trials"][0]["state"] == "preempted"

    started = time.time()
    second = subprocess.Popen(sweep_cmd(package, spec, *args), cwd=dest, env=env, stdout=subprocess.DEVNULL)
    trial = _wait_for_checkpoint(path, started, 2, second)
    os.kill(second.pid, signal.SIGKILL)  # the node is lost: worker and trial die at once
    os.kill(trial["pid"], signal.SIGKILL)
    second.wait()
    written = Path(trial["run_dir"]) / "summary.json"  # by the preempted attempt; not again since
    assert not (written.exists() and written.stat().st_mtime > started), "it finished before the kill"
    assert state(project, "kill")["trials"][0]["state"] == "running"  # nobody could record it

    proc = run_sweep(project, spec, *args)
    assert "trial 0 resumes (attempt 3)" in proc.stdout
    (record,) = state(project, "kill")["trials"]  # resumed, not replaced by a new trial
    assert (record["state"], record["attempts"]) == ("finished", 3)
    s = summary(record)
    assert (s["epoch"], s["global_step"], s["stop_reason"]) == (3, 36, "max_epochs")
    assert s["resumed_from"].endswith("last.ckpt")


def test_the_generated_spec_is_valid_for_both_routes(project) -> None:
    from engine.sweep_spec import load_spec

    spec = load_spec(project[0] / "configs" / "sweep.yaml")
    assert (spec.method, spec.metric, spec.goal, spec.run_cap) == ("bayes", "val_acc", "maximize", 20)
    assert spec.hyperband is not None and spec.hyperband.bands[:2] == [3, 9]
    assert [p.key for p in spec.swept] == ["model.lr", "model.hidden", "model.dropout", "model.channels"]


def test_a_bad_spec_is_one_error_line_and_exit_code_2(project) -> None:
    dest = project[0]
    bad = write_spec(dest, "bad", method="random", controller={"type": "local"}, parameters={"a": {"value": 1}})
    proc = run_sweep(project, bad, code=2)
    assert proc.stderr.strip() == (
        "error: configs/bad.yaml: controller: unsupported key 'controller' (supported here: name, description, "
        "method, metric, parameters, early_terminate, run_cap, program, command, project, entity)"
    )
    assert not (dest / "sweeps" / "bad").exists()
