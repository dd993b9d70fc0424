"""Where templates come from: the history inside the installed package, or `--template SRC`."""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from packaging.version import InvalidVersion, Version

from .errors import BadInput, ScaffoldError
from .history import HistoryInfo, git, parse_version

_URL_PREFIXES = ("git@", "git://", "git+", "gh:", "gl:", "ssh://", "http://", "https://", "file://")


@dataclass(frozen=True)
class TemplateSource:
    """A git repository (or bundle) of scaffold that copier renders from."""

    url: str  # an absolute path to a repository or bundle, or a URL; never relative
    default_ref: str | None  # what `new`/`update` render without --vcs-ref/--to (None: latest tag)
    label: str  # for messages
    installed: bool = False
    commit: str | None = None  # the installed package's own template commit (copier's _commit form)
    option: str = ""  # the command-line option that selects this source again ("" for the installed one)


def _installed_data() -> tuple[Path, HistoryInfo] | None:
    data = resources.files("scaffold") / "_data"
    bundle, info = data / "template.bundle", data / "template.json"
    if bundle.is_file() and info.is_file():
        return Path(str(bundle)), HistoryInfo.from_json(info.read_text())
    return None


@lru_cache(maxsize=1)
def installed_source() -> TemplateSource:
    """The template history shipped in this package (``scaffold/_data/template.bundle``), at the
    package's own version."""
    found = _installed_data()
    if found is None:
        raise ScaffoldError(
            "this scaffold installation has no template data; reinstall it (pip install .) or pass --template SRC"
        )
    bundle, info = found
    label = f"scaffold {info.version} (installed)"
    return TemplateSource(str(bundle.resolve()), info.ref, label, True, info.describe)


def is_url(spec: str) -> bool:
    return spec.startswith(_URL_PREFIXES)


def template_source(spec: str | None) -> TemplateSource:
    """`--template SRC` as a source copier can clone (paths made absolute), or the installed one."""
    if spec is None:
        return installed_source()
    if is_url(spec):
        return TemplateSource(spec, None, spec, option=f"--template {shlex.quote(spec)}")
    path = Path(spec).expanduser().absolute()
    if not path.exists():
        raise BadInput(f"template source {spec} does not exist (pass a scaffold git repository, a bundle or a URL)")
    if path.is_dir():
        if not (path / "copier.yml").is_file():
            raise BadInput(f"template source {spec} is not a scaffold repository: no copier.yml at its root")
        try:
            top = git("rev-parse", "--show-toplevel", cwd=path).strip()
        except RuntimeError:
            top = ""
        if not top or Path(top).resolve() != path.resolve():
            raise BadInput(f"template source {spec} is not a git repository (copier renders from git: run git init)")
    else:
        try:
            git("bundle", "list-heads", str(path), cwd=path.parent)
        except RuntimeError:
            raise BadInput(f"template source {spec} is neither a directory nor a git bundle") from None
    return TemplateSource(str(path), None, str(path), option=f"--template {shlex.quote(str(path))}")


BUNDLE_SUFFIX = "scaffold/_data/template.bundle"


def is_bundled(src_path: str) -> bool:
    """A `_src_path` that names the history inside an installed scaffold (any venv, any version)."""
    return Path(src_path).as_posix().endswith(BUNDLE_SUFFIX)


def project_source(recorded: str | None, template: str | None) -> TemplateSource:
    """Where `check` and `update` look for versions: `--template`, else the source the project
    records (``_src_path``) unless that is an installed scaffold's bundled history."""
    if template is not None:
        source = template_source(template)
        return replace(source, label=f"{source.label} (--template)") if not source.installed else source
    if not recorded or is_bundled(recorded):
        return installed_source()
    if not is_url(recorded) and not Path(recorded).exists():
        raise ScaffoldError(
            f"the project's template source {recorded} (recorded in .copier-answers.yml) is gone; "
            "pass the repository it moved to: --template SRC"
        )
    try:
        source = template_source(recorded)
    except BadInput as exc:
        raise ScaffoldError(
            f"{exc.message} (recorded in .copier-answers.yml); pass another with --template SRC"
        ) from None
    # The recorded source is the default: a suggested command needs no --template for it.
    return replace(source, label=f"{source.label} (recorded in .copier-answers.yml)", option="")


def list_versions(source: TemplateSource) -> list[tuple[Version, str]]:
    """The source's versions (PEP 440 tags), oldest first."""
    url = source.url
    try:
        out = git("ls-remote", "--tags", "--refs", url, cwd=Path(tempfile.gettempdir()))
    except RuntimeError as exc:
        raise ScaffoldError(f"cannot list the versions of {source.label}: {exc}") from exc
    found = []
    for line in out.splitlines():
        tag = line.split("\t", 1)[-1].removeprefix("refs/tags/")
        v = parse_version(tag)
        if v is not None:
            found.append((v, tag))
    return sorted(found)


def commit_version(commit: str | None) -> Version | None:
    """The version of a copier ``_commit``: ``v0.2.0`` -> 0.2.0, ``v0.2.0-3-gabc`` -> 0.2.0.post3+gabc."""
    if not commit:
        return None
    match = re.match(r"^(.+)-(\d+)-g([0-9a-f]+)$", commit)
    try:
        if match:
            base, count, sha = match.groups()
            return Version(f"{base}.post{count}+g{sha}")
        return Version(commit)
    except InvalidVersion:
        return None


def release_of(commit: str | None) -> Version | None:
    """The release a ``_commit`` is at or after: ``v0.2.0-3-gabc`` -> 0.2.0."""
    v = commit_version(commit)
    return Version(v.base_version) if v is not None else None


def resolve_ref(source: TemplateSource, ref: str | None) -> str | None:
    """A user's --to/--vcs-ref: ``0.2.0`` also finds the tag ``v0.2.0`` (and the reverse)."""
    if ref is None:
        return source.default_ref
    wanted = parse_version(ref)
    if wanted is None:
        return ref
    tags = list_versions(source)
    if any(tag == ref for _, tag in tags):
        return ref
    return next((tag for v, tag in tags if v == wanted), ref)


def latest(source: TemplateSource) -> tuple[str | None, Version | None]:
    """The newest version a source offers: the installed package's own, or the highest tag."""
    if source.installed and source.commit:
        return source.commit, commit_version(source.commit)
    tags = list_versions(source)
    if not tags:
        return None, None
    v, tag = tags[-1]
    return tag, v
