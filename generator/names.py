"""Rules for project and package names (the template's validators say the same)."""

from __future__ import annotations

import keyword
import re
import sys

from .errors import BadInput

# A distribution name (PEP 508): what goes into the generated pyproject.toml.
_PROJECT_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Modules a generated project imports or holds: a package of that name would shadow them.
RESERVED = frozenset(
    {
        "engine",
        "scaffold",
        "torch",
        "torchmetrics",
        "wandb",
        "yaml",
        "sklearn",
        "numpy",
        "tests",
        "test",
        "src",
        "configs",
        "scripts",
        "lightning",
        "pytorch_lightning",
    }
)


def derive_package_name(project_name: str) -> str:
    """my-research -> my_research (the template's default for package_name)."""
    return re.sub(r"[^a-z0-9_]+", "_", project_name.lower()).strip("_")


def check_project_name(name: str) -> None:
    if not _PROJECT_RE.match(name):
        raise BadInput(
            f"invalid project_name {name!r}: use letters, digits, '-', '_' or '.', "
            "and start and end with a letter or digit (e.g. my-research)"
        )


def check_package_name(name: str) -> None:
    if not _IDENTIFIER_RE.match(name):
        raise BadInput(
            f"invalid package_name {name!r}: it must be a Python identifier "
            "(letters, digits and '_', not starting with a digit); pass --data package_name=NAME"
        )
    if keyword.iskeyword(name):
        raise BadInput(f"invalid package_name {name!r}: it is a Python keyword; pass --data package_name=NAME")
    if name in sys.stdlib_module_names:
        raise BadInput(
            f"invalid package_name {name!r}: it shadows the standard library module '{name}'; "
            "pass --data package_name=NAME"
        )
    if name in RESERVED:
        raise BadInput(
            f"invalid package_name {name!r}: it shadows '{name}', which generated projects import or contain; "
            "pass --data package_name=NAME"
        )
