"""`scaffold new`: render the template, vendor the engine with its manifest, make the first commit."""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput, Interrupted, ScaffoldError
from .history import git, read_version
from .manifest import MANIFEST_NAME, engine_relpath, make_manifest, write_manifest
from .names import derive_package_name, slugify
from .source import TemplateSource, template_source

ANSWERS_FILE = ".copier-answers.yml"


@dataclass
class NewProject:
    dest: Path
    answers: dict[str, Any]
    version: str  # the engine version vendored into the project
    template_commit: str  # copier's _commit: the template version rendered

    @property
    def package_name(self) -> str:
        return str(self.answers["package_name"])


def parse_data(pairs: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` from repeated --data options."""
    data: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise BadInput(f"--data {pair!r} is not KEY=VALUE (e.g. --data project_name=my-research)")
        data[key.strip()] = value
    return data


def check_data_keys(data: dict[str, Any], questions: list[str]) -> None:
    for key in data:
        if key not in questions:
            close = difflib.get_close_matches(key, questions, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(questions)}"
            raise BadInput(f"unknown --data key '{key}': {hint}")


_BOOLS = {"true", "false", "yes", "no", "y", "n", "on", "off", "1", "0"}
_VALIDATION = re.compile(r"^Validation error for question '([^']+)': (.*)$", re.DOTALL)


def _choice_values(question: dict[str, Any]) -> list[str]:
    choices = question.get("choices") or []
    return [str(v) for v in (choices.values() if isinstance(choices, dict) else choices)]


def check_data_values(data: dict[str, Any], questions: dict[str, Any]) -> None:
    """Typed answers copier would otherwise coerce: a yes/no question takes a boolean, a choice
    question one of its choices (copier would take ``slurm=maybe`` as true)."""
    for key, value in data.items():
        question = questions.get(key) or {}
        if not isinstance(value, str):
            continue
        if question.get("type") == "bool" and value.strip().lower() not in _BOOLS:
            raise BadInput(f"invalid {key} {value!r}: answer true or false (--data {key}=false)")
        choices = _choice_values(question)
        if choices and value not in choices:
            raise BadInput(f"invalid {key} {value!r}: choose one of {', '.join(choices)} (--data {key}={choices[0]})")


def enclosing_repository(dest: Path) -> Path | None:
    """The git repository that would contain DEST and track it (not ignored), or None.

    Looked up from DEST's parent: a DEST that is a repository itself (a project made earlier)
    is not nested in one, and `new` then says what it is.
    """
    parent = dest.parent
    while not parent.exists():
        parent = parent.parent
    if parent.is_file():
        return None
    try:
        top = Path(git("rev-parse", "--show-toplevel", cwd=parent).strip())
    except RuntimeError:
        return None
    rel = os.path.relpath(dest, top)
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{rel}/"], cwd=top, capture_output=True).returncode == 0
    return None if ignored else top


def read_answers(project: Path) -> dict[str, Any]:
    import yaml

    path = project / ANSWERS_FILE
    if not path.is_file():
        raise ScaffoldError(f"{path} is missing: is {project} a project made by scaffold?")
    answers = yaml.safe_load(path.read_text()) or {}
    if not isinstance(answers, dict):
        raise ScaffoldError(f"{path} is not a mapping of answers")
    return answers


def _check_dest(dest: Path) -> bool:
    """Refuse a DEST that holds anything; True when it exists (and is empty)."""
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"{dest} exists and is not a directory")
    if dest.is_dir():
        if (dest / ANSWERS_FILE).is_file() and (dest / MANIFEST_NAME).is_file():
            raise BadInput(
                f"{dest} is already a scaffold project: `cd {shlex.quote(str(dest))}` to work in it, "
                "or choose a new folder"
            )
        if any(dest.iterdir()):
            raise BadInput(f"{dest} exists and is not empty; choose a new folder (scaffold never overwrites files)")
        return True
    return False


def _remove_created(dest: Path, existed: bool) -> None:
    """Undo a failed `new`: delete what it made, but keep a folder the user had made."""
    if not dest.exists():
        return
    if not existed:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def git_identity(repo: Path) -> list[str]:
    """``-c user.name=... -c user.email=...`` when git has no identity configured (CI, containers)."""
    args: list[str] = []
    for key, fallback in (("user.name", "scaffold"), ("user.email", "scaffold@localhost")):
        try:
            if git("config", key, cwd=repo).strip():
                continue
        except RuntimeError:
            pass
        args += ["-c", f"{key}={fallback}"]
    return args


def commit_all(repo: Path, message: str) -> None:
    git("add", "-A", cwd=repo)
    git(*git_identity(repo), "commit", "-q", "--no-verify", "-m", message, cwd=repo)


@dataclass
class Rendered:
    """What a render produced besides the files: answers and facts about the template."""

    answers: dict[str, Any]
    research: list[str]  # the template's _skip_if_exists patterns, rendered: research code
    changelog: str  # the template repository's CHANGELOG.md at the rendered version
    questions: list[str]


def render(
    source: TemplateSource,
    dest: Path,
    data: dict[str, Any],
    *,
    vcs_ref: str | None,
    defaults: bool = True,
    answers: dict[str, Any] | None = None,
    user_defaults: dict[str, Any] | None = None,
) -> Rendered:
    """Render `source` at `vcs_ref` into `dest` with copier.

    `data` is what the user asked for (each key must be a question); `answers` are recorded
    answers of another version, used where this version still asks the question; `user_defaults`
    replace the template's defaults. Every answer passes the template's validators (the rules
    the prompt applies too).
    """
    # copier's public functions hide the Worker; we need its template (questions) before
    # rendering, to report unknown --data keys and bad names without creating anything.
    try:
        from copier._main import Worker
    except ImportError:  # copier < 9.11
        from copier.main import Worker
    from copier.errors import CopierAnswersInterrupt, CopierError, CopierWarning
    from jinja2 import TemplateError
    from plumbum import ProcessExecutionError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CopierWarning)
        try:
            with Worker(
                src_path=source.url,
                dst_path=dest,
                data={**(answers or {}), **data},
                user_defaults=user_defaults or {},
                vcs_ref=vcs_ref,
                defaults=defaults,
                quiet=True,
                overwrite=True,
                cleanup_on_error=False,
            ) as worker:
                try:
                    questions_data = worker.template.questions_data
                except ValueError as exc:  # copier: "Unknown revision: ..."
                    raise BadInput(f"{source.label} has no version {vcs_ref!r} ({exc})") from exc
                questions = [q for q in questions_data if not q.startswith("_")]
                check_data_keys(data, questions)
                check_data_values(data, questions_data)
                worker.run_copy()
                changelog_path = worker.template.local_abspath / "CHANGELOG.md"
                changelog = changelog_path.read_text() if changelog_path.is_file() else ""
                skip = list(worker.template.skip_if_exists)
        except CopierAnswersInterrupt:
            raise Interrupted("interrupted, nothing was created") from None
        except ProcessExecutionError as exc:
            detail = (exc.stderr or str(exc)).strip().splitlines()
            raise ScaffoldError(f"git failed on {source.label}: {detail[-1] if detail else exc}") from exc
        except ValueError as exc:
            match = _VALIDATION.match(str(exc))
            if match is None:
                raise ScaffoldError(f"rendering the template failed: {type(exc).__name__}: {exc}") from exc
            key, reason = match.groups()
            merged = {**(user_defaults or {}), **(answers or {}), **data}
            value = merged.get(key)
            if value is None and key == "package_name":
                value = derive_package_name(str(merged.get("project_name", "")))
            shown = f" {value!r}" if value is not None else ""
            raise BadInput(f"invalid {key}{shown}: {reason.strip()}; pass --data {key}=VALUE") from None
        except (CopierError, TemplateError) as exc:
            raise ScaffoldError(f"rendering the template failed: {type(exc).__name__}: {exc}") from exc
    recorded = read_answers(dest)
    research = [_render_pattern(p, recorded) for p in skip]
    return Rendered(recorded, research, changelog, questions)


def _render_pattern(pattern: str, answers: dict[str, Any]) -> str:
    from jinja2 import Environment

    return Environment().from_string(pattern).render(**answers)


def new_project(
    dest: Path,
    data: dict[str, Any],
    *,
    defaults: bool = True,
    template: str | None = None,
    vcs_ref: str | None = None,
) -> NewProject:
    """Create a project at `dest` (which must not exist or be empty), committed to a new git repo.

    The project name defaults to DEST's folder name (slugified), the package name to that.
    """
    dest = Path(os.path.abspath(dest.expanduser()))
    existed = _check_dest(dest)
    source = template_source(template)
    slug = slugify(dest.name)
    user_defaults = {"project_name": slug} if slug else {}
    try:
        vcs_ref = vcs_ref or source.default_ref
        answers = render(source, dest, data, vcs_ref=vcs_ref, defaults=defaults, user_defaults=user_defaults).answers
        package = str(answers.get("package_name", ""))
        engine = dest / engine_relpath(package)
        if not (engine / "__init__.py").is_file():
            raise ScaffoldError(f"the template did not produce {engine_relpath(package)}/: is {source.label} scaffold?")
        version = read_version(dest / "src" / package)
        commit = str(answers.get("_commit") or version)
        write_manifest(dest, make_manifest(dest, package, version, commit))
        git("-c", "init.defaultBranch=main", "init", "-q", cwd=dest)
        commit_all(dest, f"New project from scaffold {version}")
    except BaseException:
        _remove_created(dest, existed)
        raise
    return NewProject(dest, answers, version, commit)


__all__ = [
    "ANSWERS_FILE",
    "MANIFEST_NAME",
    "NewProject",
    "enclosing_repository",
    "new_project",
    "parse_data",
    "read_answers",
    "render",
]
