"""`scaffold port`: the project's engine rewrites Lightning imports in its files."""

from __future__ import annotations

from pathlib import Path

import pytest
from gen_helpers import invoke, new_project, template_repo

__all__ = ["template_repo"]

LIGHTNING = "import lightning.pytorch as pl\nfrom pytorch_lightning.callbacks import ModelCheckpoint, DDPStrategy\n"


def test_scaffold_port_rewrites_to_the_project_engine_and_lists_what_it_lacks(
    template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = new_project(template_repo, tmp_path / "my-research")
    code = project / "src" / "my_research" / "lit.py"
    code.write_text(LIGHTNING)
    monkeypatch.chdir(project / "src")

    checked = invoke("port", "my_research/lit.py", "--check")
    assert checked.exit_code == 1
    assert "+import my_research.engine as pl" in checked.stdout
    assert "DDPStrategy from pytorch_lightning.callbacks" in checked.stderr
    assert code.read_text() == LIGHTNING  # --check wrote nothing

    done = invoke("port", str(code), "--project", str(project))
    assert done.exit_code == 1
    assert code.read_text().splitlines() == [
        "import my_research.engine as pl",
        "from my_research.engine.callbacks import ModelCheckpoint, DDPStrategy",
    ]


def test_scaffold_port_outside_a_project_or_on_a_missing_file_says_so(template_repo: Path, tmp_path: Path) -> None:
    outside = invoke("port", str(tmp_path / "x.py"), "--project", str(tmp_path))
    assert outside.exit_code == 2 and "no scaffold project at or above" in outside.stderr
    project = new_project(template_repo, tmp_path / "p")
    missing = invoke("port", str(tmp_path / "nope.py"), "--project", str(project))
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr
