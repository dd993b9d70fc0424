"""The command line: help, version, and every bad input of `scaffold new`."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import scaffold.create
import yaml
from gen_helpers import VERSION, clone_template, commit_all, git, invoke, new_project, template_repo

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
    result = invoke("new", tmp_path / "my-research", "--defaults", "--template", template_repo)
    assert result.exit_code == 0, result.output
    assert f"scaffold {VERSION}" in result.stdout
    assert "python -m my_research.train" in result.stdout
    assert (tmp_path / "my-research" / "src" / "my_research" / "engine" / "__init__.py").is_file()


def test_dest_not_empty(template_repo: Path, tmp_path: Path) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    result = invoke("new", dest, "--defaults", "--template", template_repo)
    assert result.exit_code == 2
    assert "exists and is not empty" in result.stderr
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert (dest / "notes.txt").read_text() == "mine"


def test_next_steps_quote_the_folder_and_a_second_new_names_the_project(
    template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("new", "My CNN Lab", "--defaults", "--template", template_repo)
    assert result.exit_code == 0, result.output
    assert "  cd 'My CNN Lab'\n" in result.stdout  # pastes into a shell as printed
    again = invoke("new", "My CNN Lab", "--defaults", "--template", template_repo)
    assert again.exit_code == 2
    assert "My CNN Lab is already a scaffold project: `cd '" in again.stderr  # not "pass --nested"
    assert "--nested" not in again.stderr and "My CNN Lab'` to work in it" in again.stderr


def test_typed_description_replaces_the_default(template_repo: Path, tmp_path: Path) -> None:
    """At the prompt the default is a placeholder: what you type is the whole description."""
    import pty

    dest = tmp_path / "p"
    code = f"import sys; from scaffold.cli import main; sys.argv = ['scaffold', 'new', {str(dest)!r}, '--template', {str(template_repo)!r}]; main()"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    prompts = [b"Project name", b"import package", b"One-line description", b"Author", b"Weights & Biases project"]
    prompts += [b"Weights & Biases entity", b"Starting point", b"SLURM launch", b"SLURM cluster"]
    prompts += [b"Continuous integration"]
    output, answered, deadline = b"", 0, time.monotonic() + 120
    while True:
        if time.monotonic() > deadline:  # a question this test does not know: fail, do not hang
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("no answer to a prompt:\n" + output.decode(errors="replace")[-2000:])
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        while answered < len(prompts) and prompts[answered] in output:
            os.write(fd, b"Digit experiments\r" if prompts[answered] == b"One-line description" else b"\r")
            answered += 1
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert 'description = "Digit experiments"' in (dest / "pyproject.toml").read_text()
    defaults = new_project(template_repo, tmp_path / "q")
    assert 'description = "A PyTorch research project"' in (defaults / "pyproject.toml").read_text()


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
        ("package_name=csv", "shadows the standard library module 'csv'"),
        ("package_name=engine", "shadows 'engine'"),
        ("project_name=123", "invalid package_name '123'"),  # the derived package name
        ("author=Ada <no email>", "invalid author 'Ada <no email>': write it as Name <email>"),
        ("slurm=maybe", "invalid slurm 'maybe': answer true or false"),
        ("example=mnist", "invalid example 'mnist': choose one of digits, none"),
    ],
)
def test_invalid_names(template_repo: Path, tmp_path: Path, data: str, message: str) -> None:
    dest = tmp_path / "proj"
    result = invoke("new", dest, "--defaults", "--template", template_repo, "--data", data)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not dest.exists()


def test_every_stdlib_module_and_keyword_is_refused(template_repo: Path) -> None:
    # The template's validator is the one rule set: it must know this interpreter's modules.
    import keyword

    from copier._main import Worker

    with Worker(src_path=str(template_repo), dst_path=Path("unused"), vcs_ref="HEAD", quiet=True) as worker:
        validator = worker.template.questions_data["package_name"]["validator"]
        env = worker.jinja_env
    names = [m for m in sys.stdlib_module_names if not m.startswith("_")] + keyword.kwlist
    accepted = [n for n in names if not env.from_string(validator).render(package_name=n).strip()]
    assert accepted == []
    assert env.from_string(validator).render(package_name="vision_lab").strip() == ""


def test_unknown_data_key_names_the_closest(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo, "--data", "project_nam=x")
    assert result.exit_code == 2
    assert "unknown --data key 'project_nam': did you mean 'project_name'?" in result.stderr
    assert not (tmp_path / "p").exists()


def test_malformed_data(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "p", "--defaults", "--template", template_repo, "--data", "example")
    assert result.exit_code == 2
    assert "--data 'example' is not KEY=VALUE" in result.stderr


def test_project_name_defaults_to_the_folder_name(template_repo: Path, tmp_path: Path) -> None:
    result = invoke("new", tmp_path / "Vision Lab!", "--defaults", "--template", template_repo)
    assert result.exit_code == 0, result.output
    answers = yaml.safe_load((tmp_path / "Vision Lab!" / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "vision-lab" and answers["package_name"] == "vision_lab"
    assert answers["wandb_project"] == "vision-lab"


def test_new_in_the_current_folder_has_no_cd_step(
    template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lab").mkdir()
    monkeypatch.chdir(tmp_path / "lab")
    result = invoke("new", ".", "--defaults", "--template", template_repo)
    assert result.exit_code == 0, result.output
    assert "cd ." not in result.stdout and "python -m lab.train" in result.stdout


def test_dest_inside_another_repository(template_repo: Path, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q")
    (outer / ".gitignore").write_text("ignored/\n")
    result = invoke("new", outer / "proj", "--defaults", "--template", template_repo)
    assert result.exit_code == 2
    assert f"is inside the git repository {outer}" in result.stderr and "--nested" in result.stderr
    assert not (outer / "proj").exists()
    nested = invoke("new", outer / "proj", "--defaults", "--nested", "--template", template_repo)
    assert nested.exit_code == 0, nested.output
    assert (outer / "proj" / ".git").is_dir()
    ignored = invoke("new", outer / "ignored", "--defaults", "--template", template_repo)  # the outer repo ignores it
    assert ignored.exit_code == 0, ignored.output


def test_ctrl_c_at_a_question(template_repo: Path, tmp_path: Path) -> None:
    # A real terminal session: copier prompts; Ctrl-C (\x03) at the first question.
    import pty

    dest = tmp_path / "p"
    code = f"import sys; from scaffold.cli import main; sys.argv = ['scaffold', 'new', {str(dest)!r}, '--template', {str(template_repo)!r}]; main()"
    pid, fd = pty.fork()
    if pid == 0:  # the child: scaffold on a terminal
        os.execv(sys.executable, [sys.executable, "-c", code])
    output = b""
    sent = False
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not sent and b"Project name" in output:
            os.write(fd, b"\x03")
            sent = True
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert sent, text
    assert os.waitstatus_to_exitcode(status) == 130, text
    assert "interrupted, nothing was created" in text and "CopierAnswersInterrupt" not in text
    assert not dest.exists()


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
