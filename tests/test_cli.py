"""The command line: help, version, and every bad input of `scaffold new`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import scaffold.create
from gen_helpers import VERSION, clone_template, commit_all, git, invoke, template_repo

__all__ = ["template_repo"]


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("new", "update", "check"):
        assert command in result.stdout


def test_new_help_has_panels_and_options() -> None:
    result = invoke("new", "--help")
    assert result.exit_code == 0
    for text in ("--defaults", "--data", "--template", "--vcs-ref", "Template source", "Behaviour"):
        assert text in result.stdout


def test_no_arguments_shows_help() -> None:
    result = invoke()
    assert "Usage" in result.output


def test_version_is_the_engine_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"scaffold {VERSION}"


def test_help_does_not_import_copier_or_torch() -> None:
    # `scaffold --help` must be instant: the heavy imports happen inside the commands.
    code = "import sys, scaffold.cli; print(sorted({'copier', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_new_succeeds_and_prints_next_steps(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "proj", "--defaults", "--template", template_repo)
    assert result.exit_code == 0, result.output
    assert f"scaffold {VERSION}" in result.stdout
    assert "python -m my_research.train" in result.stdout
    assert (tmp_path / "proj" / "src" / "my_research" / "engine" / "__init__.py").is_file()


def test_dest_not_empty(template_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    result = invoke("new", dest, "--defaults", "--template", template_repo)
    assert result.exit_code == 2
    assert "exists and is not empty" in result.stderr
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert (dest / "notes.txt").read_text() == "mine"


def test_dest_is_a_file(template_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "file"
    dest.write_text("x")
    result = invoke("new", dest, "--defaults", "--template", template_repo)
    assert result.exit_code == 2
    assert "is not a directory" in result.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("project_name=-bad", "invalid project_name '-bad': use letters, digits"),
        ("project_name=has space", "invalid project_name 'has space'"),
        ("package_name=1abc", "must be a Python identifier"),
        ("package_name=my-pkg", "must be a Python identifier"),
        ("package_name=class", "it is a Python keyword"),
        ("package_name=json", "shadows the standard library module 'json'"),
        ("package_name=engine", "shadows 'engine'"),
        ("project_name=123", "invalid package_name '123'"),  # the derived package name
    ],
)
def test_invalid_names(template_repo: Path, tmp_path: Path, data: str, message: str) -> None:
    dest = tmp_path / "proj"
    result = invoke("new", dest, "--defaults", "--template", template_repo, "--data", data)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not dest.exists()


def test_unknown_data_key_names_the_closest(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo, "--data", "project_nam=x")
    assert result.exit_code == 2
    assert "unknown --data key 'project_nam': did you mean 'project_name'?" in result.stderr
    assert not (tmp_path / "p").exists()


def test_malformed_data(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo, "--data", "example")
    assert result.exit_code == 2
    assert "--data 'example' is not KEY=VALUE" in result.stderr


def test_bad_choice_is_reported(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo, "--data", "example=mnist")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: rendering the template failed")
    assert "mnist" in result.stderr
    assert not (tmp_path / "p").exists()


def test_template_source_missing(tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert not (tmp_path / "p").exists()


def test_template_source_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "copier.yml").write_text("project_name: x\n")
    result = invoke("new", tmp_path / "p", "--defaults", "--template", tmp_path / "plain")
    assert result.exit_code == 2
    assert "is not a git repository" in result.stderr


def test_template_source_without_copier_yml(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("new", tmp_path / "p", "--defaults", "--template", tmp_path / "empty")
    assert result.exit_code == 2
    assert "no copier.yml" in result.stderr


def test_unknown_vcs_ref(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo, "--vcs-ref", "v9.9.9")
    assert result.exit_code == 2
    assert "has no version 'v9.9.9'" in result.stderr
    assert not (tmp_path / "p").exists()


@pytest.fixture(scope="module")
def broken_template(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template whose render fails halfway: one file uses a filter that does not exist."""
    repo = clone_template(template_repo, tmp_path_factory.mktemp("broken") / "repo")
    (repo / "template" / "project" / "zz_broken.txt.jinja").write_text("{{ project_name | no_such_filter }}\n")
    commit_all(repo, "broken")
    git(repo, "tag", "v99.0.0")
    return repo


def test_failed_render_removes_what_it_created(broken_template: Path, tmp_path: Path) -> None:
    dest = tmp_path / "p"
    result = invoke("new", dest, "--defaults", "--template", broken_template)
    assert result.exit_code == 1
    assert "rendering the template failed" in result.stderr
    assert not dest.exists()


def test_failed_render_keeps_an_empty_dest(broken_template: Path, tmp_path: Path) -> None:
    dest = tmp_path / "p"
    dest.mkdir()
    result = invoke("new", dest, "--defaults", "--template", broken_template)
    assert result.exit_code == 1
    assert dest.is_dir()
    assert list(dest.iterdir()) == []


def test_failure_after_render_cleans_up(template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(scaffold.create, "write_manifest", boom)
    dest = tmp_path / "p"
    result = invoke("new", dest, "--defaults", "--template", template_repo)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: OSError: disk full (set SCAFFOLD_DEBUG=1 for a traceback)"
    assert not dest.exists()


def test_relative_template_path_is_recorded_absolute(
    template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(template_repo.parent)
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo.name)
    assert result.exit_code == 0, result.output
    answers = (tmp_path / "p" / ".copier-answers.yml").read_text()
    assert f"_src_path: {template_repo}\n" in answers
