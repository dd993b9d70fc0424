"""The `scaffold` command line: thin Typer commands over the typed functions in this package.

copier, git work and torch stay out of module scope, so `scaffold --help` starts instantly.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from . import version
from .errors import ScaffoldError

# A flag takes no value: show no `<bool>` type beside it in help (Typer shows one for every option).
_display_type = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: typer.core.TyperOption, ctx):  # type: ignore[no-untyped-def]
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]

app = typer.Typer(
    name="scaffold",
    help="Create and maintain PyTorch research projects: your research code plus a vendored "
    "training engine that `scaffold update` keeps current.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

SOURCE = "Template source"
BEHAVIOUR = "Behaviour"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"scaffold {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    """Create and maintain PyTorch research projects."""


def _fail(exc: ScaffoldError) -> typer.Exit:
    """The one place errors become output: a line on stderr, detail lines, a non-zero exit."""
    typer.echo(f"{exc.prefix}{exc.message}", err=True)
    for line in exc.details:
        typer.echo(f"  {line}", err=True)
    return typer.Exit(exc.exit_code)


def _run(func, *args, interrupted: str = "interrupted", **kwargs):  # type: ignore[no-untyped-def]
    try:
        return func(*args, **kwargs)
    except ScaffoldError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        typer.echo(interrupted, err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # unexpected: still one line, unless debugging
        if os.environ.get("SCAFFOLD_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: {type(exc).__name__}: {first} (set SCAFFOLD_DEBUG=1 for a traceback)", err=True)
        raise typer.Exit(1) from None


TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--template",
        metavar="SRC",
        help="A git repository of scaffold (path or URL; its PEP 440 tags are the versions). "
        "Default: the project's recorded source for check and update, the template inside "
        "this installed scaffold for new.",
        rich_help_panel=SOURCE,
    ),
]


@app.command()
def new(
    dest: Annotated[Path, typer.Argument(help="Folder to create (must not exist, or be empty).", show_default=False)],
    defaults: Annotated[
        bool,
        typer.Option(
            "--defaults", help="Use defaults for every question not given with --data.", rich_help_panel=BEHAVIOUR
        ),
    ] = False,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            metavar="KEY=VALUE",
            help="Answer a question, e.g. --data project_name=vision-lab --data example=none (repeatable).",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = None,
    template: TemplateOpt = None,
    vcs_ref: Annotated[
        str | None,
        typer.Option(
            "--vcs-ref",
            metavar="REF",
            help="Template version (tag, branch or commit) to render. Default: this scaffold's own version "
            "(with --template: the latest tag).",
            rich_help_panel=SOURCE,
        ),
    ] = None,
    nested: Annotated[
        bool,
        typer.Option(
            "--nested",
            help="Create DEST even inside another git repository that would track it (a nested repository).",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = False,
) -> None:
    """Create a project in DEST: research code, a vendored engine, a first git commit.

    Questions: project_name (default: DEST's folder name), package_name, description, author ("Name <email>" works), wandb_project, wandb_entity, example (digits|none), slurm (true|false), ci (github|none). Without a terminal, unanswered questions take their defaults.
    """
    from .create import enclosing_repository, new_project, parse_data

    answers = _run(parse_data, data or [])
    use_defaults = defaults or not sys.stdin.isatty()
    outer = _run(enclosing_repository, Path(os.path.abspath(dest.expanduser())))
    if outer is not None and not nested:
        where = f"{dest} is inside the git repository {outer}, which would track the project's files"
        if use_defaults:
            typer.echo(f"error: {where}; choose a folder outside it, or pass --nested to nest a repository", err=True)
            raise typer.Exit(2)
        typer.echo(f"warning: {where}; the project gets a git repository of its own, nested in it.", err=True)
        if not typer.confirm("Create a nested repository anyway?", default=False, err=True):
            typer.echo("nothing was created", err=True)
            raise typer.Exit(1)
    project = _run(
        new_project,
        dest,
        answers,
        defaults=use_defaults,
        template=template,
        vcs_ref=vcs_ref,
        interrupted="interrupted, nothing was created",
    )
    cwd = Path.cwd().resolve()
    here = project.dest.resolve() == cwd
    shown = os.path.relpath(project.dest, cwd) if project.dest.resolve().is_relative_to(cwd) else str(project.dest)
    example = project.answers.get("example", "digits")
    typer.echo(f"Created {shown}/ with scaffold {project.version} (example: {example}); first commit made.")
    steps = [
        *([] if here else [(f"cd {shlex.quote(shown)}", "")]),
        ("python -m pip install -e '.[dev]'", "install (bring your own torch build first)"),
        (f"python -m {project.package_name}.train", "train; add KEY=VALUE overrides"),
        ("python -m pytest", "the project's smoke test"),
        ("scaffold check", "later: is the engine current? then scaffold update"),
    ]
    width = max(len(cmd) for cmd, _ in steps) + 2
    typer.echo("Next steps:")
    for cmd, note in steps:
        typer.echo(f"  {cmd:<{width}}{'# ' + note if note else ''}".rstrip())


@app.command()
def update(
    path: Annotated[Path, typer.Argument(help="The project (default: the current folder).")] = Path("."),
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="REF",
            help="Version to update to. Default: the newest the source offers (the installed scaffold's own version).",
            rich_help_panel=SOURCE,
        ),
    ] = None,
    template: TemplateOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and change nothing.", rich_help_panel=BEHAVIOUR)
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an engine with local edits; the edits are saved as a patch beside the backup.",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = False,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            metavar="KEY=VALUE",
            help="Answer a question the new version adds.",
            rich_help_panel=BEHAVIOUR,
        ),
    ] = None,
) -> None:
    """Update the vendored engine and the template's shared files; never touches research code.

    Refuses a dirty git tree. Tags a backup first, replaces the engine folder with the target version's, merges other template files three-way and reports every conflict (exit 1). Shows the CHANGELOG's migration notes. Uses the template source the project records unless --template says otherwise.
    """
    from .create import parse_data
    from .update import print_plan, print_result, run_update

    answers = _run(parse_data, data or [])
    result = _run(run_update, path, to=to, template=template, dry_run=dry_run, force=force, data=answers)
    if dry_run:
        print_plan(result.plan)
        return
    code = print_result(result)
    if code:
        raise typer.Exit(code)


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="The project (default: the current folder).")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    template: TemplateOpt = None,
) -> None:
    """Report the project's version, the newest available, local engine edits and unfinished updates.

    Exit 0 when the engine is current and unmodified; 1 when an update is available, the vendored engine was edited, conflict markers or an uncommitted update remain, or the project is newer than its source.
    """
    from .check import check_project, format_status

    status = _run(check_project, path, template=template)
    typer.echo(status.to_json() if as_json else format_status(status))
    if status.exit_code:
        raise typer.Exit(status.exit_code)


@app.command()
def port(
    paths: Annotated[
        list[Path], typer.Argument(help="Python files or folders with Lightning code.", show_default=False)
    ],
    check: Annotated[
        bool, typer.Option("--check", "--dry-run", help="Print the diff and the report; write nothing.")
    ] = False,
    project: Annotated[
        Path | None, typer.Option("--project", help="The project (default: the one holding the current folder).")
    ] = None,
) -> None:
    """Rewrite lightning.pytorch / pytorch_lightning / lightning imports to the project's engine.

    Runs the project's `python -m <package>.engine.port`: prints the diff, then every imported name the engine does not provide (exit 1). Writes nothing with --check.
    """
    from .port import run_port

    code, out, err = _run(run_port, paths, check=check, project=project)
    typer.echo(out, nl=False)
    typer.echo(err, nl=False, err=True)
    if code:
        raise typer.Exit(code)


def main() -> None:
    app()
