"""Helpers for the generator tests: template repositories built in code, CLI runs, git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scaffold.cli import app
from scaffold.history import build_history, read_version
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
VERSION = read_version(ROOT)
BIN = Path(sys.executable).parent

# Commits made by tests must not depend on the machine's git configuration.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-verify", "-m", message)


def invoke(*args: str):  # type: ignore[no-untyped-def]
    """Run the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def make_template_repo(dest: Path) -> Path:
    """A git repository of this working tree's template, tagged with the current version."""
    build_history(ROOT, dest, VERSION)
    return dest


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_repo(tmp_path_factory.mktemp("template") / "repo")


def new_project(template: Path, dest: Path, *data: str) -> Path:
    """`scaffold new DEST --defaults --template ...` that must succeed."""
    args = ["new", str(dest), "--defaults", "--template", str(template)]
    for item in data:
        args += ["--data", item]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return dest


def clone_template(template: Path, dest: Path) -> Path:
    """A working copy of a template repository (tags included) to add versions to."""
    shutil.copytree(template, dest, symlinks=True)
    return dest
