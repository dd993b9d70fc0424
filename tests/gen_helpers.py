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
    """A git repository of this working tree's template alone, tagged with the current version."""
    build_history(ROOT, dest, VERSION, with_releases=False)
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


# -- template repositories with several versions (for update and check) ---------------------
V1, V2, V3 = "v1.0.0", "v1.1.0", "v1.2.0"
README_TAIL_V2 = "## Added in 1.1.0\n\nThe template's README gained this section.\n"
CHANGELOG = """# Changelog

## 1.2.0

Engine: faster loop.

Migration: none.

## 1.1.0

Engine: new extras module; legacy module removed.

Migration: rename `foo` to `bar` in your train.py.

## 1.0.0

First release.
"""


def set_version(repo: Path, version: str) -> None:
    path = repo / "engine" / "version.py"
    lines = [
        f'__version__ = "{version}"' if line.startswith("__version__") else line
        for line in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def make_versions(dest: Path) -> Path:
    """A template repository with three versions, built from this working tree.

    - v1.0.0: the current template, plus engine/legacy.py and a shared CONTRIBUTING.md.
    - v1.1.0: engine: version.py and trainer.py changed, extras.py added, legacy.py
      removed; shared: README gains a section at its end, CONTRIBUTING.md removed, LICENSE
      added (from a new question `license`); research: model.py changed upstream.
    - v1.2.0: engine: trainer.py changed again; shared: .gitignore gains a line.
    """
    build_history(ROOT, dest, "1.0.0", with_releases=False)
    git(dest, "tag", "-d", V1)
    engine, project = dest / "engine", dest / "template" / "project"
    set_version(dest, "1.0.0")
    (engine / "legacy.py").write_text('"""An engine module that version 1.1.0 removes."""\n')
    (project / "CONTRIBUTING.md").write_text("# Contributing\n\nOpen an issue first.\n")
    (dest / "CHANGELOG.md").write_text(CHANGELOG)
    commit_all(dest, "1.0.0")
    git(dest, "tag", V1)

    set_version(dest, "1.1.0")
    _append(engine / "trainer.py", "\n# 1.1.0: a change to the loop.\n")
    (engine / "extras.py").write_text('"""An engine module added in 1.1.0."""\n\nEXTRA = 1\n')
    (engine / "legacy.py").unlink()
    _append(project / "README.md.jinja", "\n" + README_TAIL_V2)
    (project / "CONTRIBUTING.md").unlink()
    (project / "LICENSE.jinja").write_text("License: {{ license }}\n")
    _append(dest / "template" / "copier.yml", "\nlicense:\n  type: str\n  help: License\n  default: MIT\n")
    model = project / "src" / "{{package_name}}" / "{% if example == 'digits' %}model.py{% endif %}"
    _append(model, "\n# 1.1.0: upstream tweak to the example model.\n")
    commit_all(dest, "1.1.0")
    git(dest, "tag", V2)

    set_version(dest, "1.2.0")
    _append(engine / "trainer.py", "# 1.2.0: another change to the loop.\n")
    _append(project / ".gitignore", "# 1.2.0\n.cache/\n")
    commit_all(dest, "1.2.0")
    git(dest, "tag", V3)
    return dest


@pytest.fixture(scope="session")
def versions_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_versions(tmp_path_factory.mktemp("versions") / "repo")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` except .git: bytes and mode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if ".git" in rel.parts or not path.is_file():
            continue
        out[rel.as_posix()] = (path.read_bytes(), path.stat().st_mode)
    return out


def engine_files(folder: Path) -> dict[str, bytes]:
    """Every file of an engine folder (code and its ARCHITECTURE.md), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def template_engine(repo: Path, ref: str) -> dict[str, bytes]:
    """The engine files of a template repository at a tag."""
    names = git(repo, "ls-tree", "-r", "--name-only", ref, "--", "engine").split()
    out = {}
    for name in names:
        proc = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=repo, capture_output=True, check=True)
        out[name.removeprefix("engine/")] = proc.stdout
    return out
