"""Names scaffold derives. The rules names must follow live in one place: the template's
validators (template/copier.yml), which copier applies at the prompt and to --data answers."""

from __future__ import annotations

import re


def derive_package_name(project_name: str) -> str:
    """my-research -> my_research (the template's default for package_name)."""
    return re.sub(r"[^a-z0-9_]+", "_", project_name.lower()).strip("_")


def slugify(folder_name: str) -> str:
    """A project name from a folder name: ``My Research!`` -> ``my-research`` ('' if nothing is left)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", folder_name.lower())
    return re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", slug)
