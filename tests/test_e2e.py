"""End to end: the `scaffold` console script makes a project that installs, trains, and passes
its own tests and lint. The project is installed into a private folder (PYTHONPATH), so the
shared environment and its torch stay untouched.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from gen_helpers import BIN, invoke, new_project, template_repo

__all__ = ["template_repo"]

pytestmark = pytest.mark.slow


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300, code: int = 0
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCAFFOLD_DEBUG")}
    full_env.update({"WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == code, (
        f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def _install(project: Path, site: Path) -> dict[str, str]:
    """pip-install the project (no deps: torch and friends are already here) into `site`."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(project),
        ],
        cwd=project,
    )
    return {"PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    """A project made by the installed console script from the installed template."""
    package = f"e2e_{uuid.uuid4().hex[:8]}"
    base = tmp_path_factory.mktemp("e2e")
    project = base / "proj"
    scaffold = BIN / "scaffold"
    _run([str(scaffold), "new", str(project), "--defaults", "--data", f"package_name={package}"], cwd=base)
    env = _install(project, base / "site")
    return project, package, env


def test_trains_one_epoch(digits_project: tuple[Path, str, dict[str, str]], tmp_path: Path) -> None:
    project, package, env = digits_project
    out = tmp_path / "runs"
    _run(
        [
            sys.executable,
            "-m",
            f"{package}.train",
            "trainer.max_epochs=1",
            "wandb.mode=disabled",
            f"output_dir={out}",
            "run_name=e2e",
            "trainer.progress_bar=false",
        ],
        cwd=project,
        env=env,
    )
    run_dir = out / "e2e"
    summary = json.loads((run_dir / "summary.json").read_text())
    # 1797 digits, 20% held out -> 1438 training images -> 12 batches of 128.
    assert summary["global_step"] == 12
    assert summary["epoch"] == 1
    assert summary["stop_reason"] == "max_epochs"
    assert summary["world_size"] == 1
    assert summary["wandb_run_id"] is None
    assert math.isfinite(summary["metrics"]["train_loss"])
    assert summary["metrics"]["val_acc"] > 0.5  # chance is 0.1
    assert summary["best_model_score"] == pytest.approx(summary["metrics"]["val_acc"])
    assert Path(summary["best_model_path"]).name.endswith(".ckpt")
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert isinstance(state, dict) and state
    config = (run_dir / "config.yaml").read_text()
    assert "max_epochs: 1" in config


def test_project_tests_and_lint_pass(digits_project: tuple[Path, str, dict[str, str]]) -> None:
    project, _, env = digits_project
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert "1 passed" in proc.stdout
    _run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=project)
    _run([str(BIN / "ruff"), "format", "--check", "--no-cache", "."], cwd=project)


def test_resume_can_train_longer_than_planned(template_repo: Path, tmp_path: Path) -> None:
    """resume=last with a larger trainer.max_epochs: the example's schedule follows the new length."""
    package = f"e2e_longer_{uuid.uuid4().hex[:8]}"
    project = new_project(template_repo, tmp_path / "proj", f"package_name={package}")
    env = {"PYTHONPATH": str(project / "src")}
    out = tmp_path / "runs"
    common = [
        sys.executable,
        "-m",
        f"{package}.train",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "wandb.mode=disabled",
        f"output_dir={out}",
        "run_name=longer",
        "trainer.progress_bar=false",
    ]
    _run([*common, "trainer.max_epochs=2"], cwd=project, env=env)
    _run([*common, "trainer.max_epochs=4", "resume=last"], cwd=project, env=env)
    summary = json.loads((out / "longer" / "summary.json").read_text())
    assert (summary["global_step"], summary["epoch"], summary["stop_reason"]) == (12, 4, "max_epochs")
    assert summary["resumed_from"].endswith("last.ckpt")
    last = torch.load(out / "longer" / "checkpoints" / "last.ckpt", weights_only=True)
    # At the end of the 12-step schedule the lr has decayed to OneCycleLR's floor, peak / 25 / 1e4.
    assert last["optimizers"][0]["param_groups"][0]["lr"] == pytest.approx(3e-3 / 25 / 1e4)


@pytest.fixture(scope="module")
def none_project(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    """The `example=none` project, run from its source folder (as an editable install is)."""
    package = f"e2e_none_{uuid.uuid4().hex[:8]}"
    project = tmp_path_factory.mktemp("e2e_none") / "proj"
    result = invoke(
        "new",
        project,
        "--defaults",
        "--template",
        template_repo,
        "--data",
        f"package_name={package}",
        "--data",
        "example=none",
    )
    assert result.exit_code == 0, result.output
    return project, package, {"PYTHONPATH": str(project / "src")}


def test_minimal_example_trains_from_any_working_directory(
    none_project: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    project, package, env = none_project
    # Run from another folder: the project's configs/default.yaml is still read (batch_size 64;
    # the dataclass default is 32) and the run folder lands in the project's runs/.
    _run(
        [
            sys.executable,
            "-m",
            f"{package}.train",
            "trainer.max_epochs=3",
            "wandb.mode=disabled",
            "run_name=none",
            "trainer.progress_bar=false",
        ],
        cwd=tmp_path,
        env=env,
    )
    summary = json.loads((project / "runs" / "none" / "summary.json").read_text())
    assert not (tmp_path / "runs").exists()
    assert summary["epoch"] == 3
    assert summary["global_step"] == 3 * math.ceil(2048 * 0.8 / 64)
    assert summary["metrics"]["val_acc"] > 0.5  # 4 classes: chance is 0.25
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert "1 passed" in proc.stdout
    _run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=project)
    _run([str(BIN / "ruff"), "format", "--check", "--no-cache", "."], cwd=project)


def test_minimal_example_takes_its_shapes_from_the_data(
    none_project: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    project, package, env = none_project
    args = ["data.in_features=8", "data.num_classes=3", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    common = ["wandb.mode=disabled", f"output_dir={tmp_path}", "run_name=shapes", "trainer.progress_bar=false"]
    _run([sys.executable, "-m", f"{package}.train", *args, *common], cwd=project, env=env)
    last = torch.load(tmp_path / "shapes" / "checkpoints" / "last.ckpt", weights_only=True)
    assert tuple(last["model"]["net.0.weight"].shape) == (64, 8)
    assert tuple(last["model"]["net.2.weight"].shape) == (3, 64)
    assert (last["hparams"]["in_features"], last["hparams"]["num_classes"]) == (8, 3)


def test_expected_failures_are_one_error_line_and_help_exits_0(
    none_project: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    project, package, env = none_project
    train = [sys.executable, "-m", f"{package}.train", "wandb.mode=disabled", "trainer.progress_bar=false"]
    runs = project / "runs"
    before = sorted(runs.iterdir()) if runs.exists() else []

    def error_line(proc: subprocess.CompletedProcess[str]) -> str:
        assert "Traceback" not in proc.stderr, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: "), proc.stderr
        return last

    typo = _run([*train, "early_stopping.monitor=val_los", "run_name=typo"], cwd=tmp_path, env=env, code=2)
    assert "did you mean early_stopping.monitor=val_loss?" in error_line(typo)
    no_name = _run([*train, "resume=last"], cwd=tmp_path, env=env, code=2)
    assert "resume=last continues a named run" in error_line(no_name)
    missing = _run([*train, f"resume={tmp_path / 'gone.ckpt'}", "run_name=gone"], cwd=tmp_path, env=env, code=1)
    assert "gone.ckpt does not exist" in error_line(missing)
    after = sorted(runs.iterdir()) if runs.exists() else []
    assert after == before  # no failed start leaves a run folder

    bad = project / "configs" / "bad.yaml"
    bad.write_text("trainer:\n  max_epoch: 3\n")
    wrong = _run([*train, "--config", "configs/bad.yaml"], cwd=tmp_path, env=env, code=2)
    assert error_line(wrong).startswith("error: configs/bad.yaml: line 2: unknown key 'trainer.max_epoch'")
    bad.unlink()

    usage = _run([sys.executable, "-m", f"{package}.train", "--help"], cwd=tmp_path, env=env)
    assert usage.stdout.startswith(f"usage: python -m {package}.train")
    lines = [" ".join(line.split()) for line in usage.stdout.splitlines()]
    # Each value says where it came from: the project's file, or the dataclass default.
    assert any(re.fullmatch(r"hidden: 64 \[configs/default\.yaml:\d+\] # hidden layer width", line) for line in lines)
    assert any(
        re.fullmatch(r"batch_size: 64 \[configs/default\.yaml:\d+\] # per process \(the global batch is .*\)", line)
        for line in lines
    )
    assert any(
        re.fullmatch(r"profiler: null \[configs/default\.yaml:\d+\] # null \| simple .*", line) for line in lines
    )
