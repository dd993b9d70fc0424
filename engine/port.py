"""Port Lightning code: rewrite its imports to this engine and list what the engine lacks.

    python -m <package>.engine.port PATH... [--check]

``lightning.pytorch``, ``pytorch_lightning`` and ``lightning`` in import lines become this engine's
package (``import lightning.pytorch as pl`` -> ``import <package>.engine as pl``; Lightning's deeper
paths such as ``lightning.pytorch.callbacks.progress`` exist here too). Folders are searched for
``*.py`` files. It prints a unified diff, then every imported module or name the engine does not
provide (file:line), and writes the files unless ``--check`` (or ``--dry-run``) is given. Exit
status: 0 when everything imported is provided, 1 when something is not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .lightning_paths import engine_module

PACKAGE = __package__ or "engine"
_PREFIXES = ("lightning.pytorch", "pytorch_lightning", "lightning")


@dataclass
class Ported:
    """One file's rewrite: the new text and what the engine does not provide."""

    path: Path
    old: str
    new: str
    missing: list[str] = field(default_factory=list)


def lightning_path(module: str) -> str | None:
    """``module`` relative to ``lightning.pytorch`` ("" for the package), None if not Lightning's."""
    for prefix in _PREFIXES:
        if module == prefix or module.startswith(prefix + "."):
            return module[len(prefix) + 1 :]
    return None


def _provided(rel: str, package: str) -> bool:
    return engine_module(rel) is not None and _module(rel, package) is not None


def _module(rel: str, package: str) -> object | None:
    try:
        return importlib.import_module(f"{package}.{rel}" if rel else package)
    except ImportError:
        return None


def port_source(text: str, path: Path, package: str = PACKAGE) -> Ported:
    """Rewrite the Lightning imports of one file's text; name what the engine lacks."""
    result = Ported(path, text, text)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        result.missing.append(f"{path}:{e.lineno}: not Python ({e.msg}); nothing rewritten")
        return result
    lines = text.splitlines(keepends=True)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            rel = lightning_path(node.module)
            if rel is None:
                continue
            where = f"{path}:{node.lineno}"
            if not _provided(rel, package):
                result.missing.append(f"{where}: module {node.module} (the engine has no counterpart; left as is)")
                continue
            module = _module(rel, package)
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    result.missing.append(f"{where}: {alias.name} from {node.module}")
            new = f"{package}.{rel}" if rel else package
            i = node.lineno - 1
            lines[i] = re.sub(rf"\bfrom\s+{re.escape(node.module)}\b", f"from {new}", lines[i], count=1)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                rel = lightning_path(alias.name)
                if rel is None:
                    continue
                if not _provided(rel, package):
                    result.missing.append(f"{path}:{node.lineno}: module {alias.name} (the engine has no counterpart)")
                    continue
                new = f"{package}.{rel}" if rel else package
                # `import lightning.pytorch` binds `lightning`: keep that name (engine.pytorch is the engine).
                bound = "" if alias.asname else f" as {alias.name.split('.')[0]}"
                i = node.lineno - 1
                pattern = rf"(?<![\w.]){re.escape(alias.name)}(?![\w.])"
                lines[i] = re.sub(pattern, new + bound, lines[i], count=1)
    result.new = "".join(lines)
    return result


def _files(paths: list[str]) -> list[Path]:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise SystemExit(f"port: no such file or folder: {', '.join(missing)} (nothing was changed)")
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*.py") if "engine" not in f.relative_to(p).parts[:-1])
        else:
            found.append(p)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}.port", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Python files or folders to port")
    parser.add_argument(
        "--check", "--dry-run", action="store_true", help="print the diff and the report; write nothing"
    )
    parser.add_argument("--package", default=PACKAGE, help=f"the engine's import name (default: {PACKAGE})")
    args = parser.parse_args(argv)
    try:
        files = _files(args.paths)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    results = [port_source(f.read_text(encoding="utf-8"), f, args.package) for f in files]
    for r in results:
        if r.new != r.old:
            sys.stdout.writelines(
                difflib.unified_diff(
                    r.old.splitlines(keepends=True), r.new.splitlines(keepends=True), f"a/{r.path}", f"b/{r.path}"
                )
            )
    missing = [m for r in results for m in r.missing]
    changed = [r for r in results if r.new != r.old]
    if not args.check:
        for r in changed:
            r.path.write_text(r.new, encoding="utf-8")
    verb = "would rewrite" if args.check else "rewrote"
    print(f"port: {verb} {len(changed)} of {len(results)} file(s)", file=sys.stderr)
    if missing:
        print(f"port: {len(missing)} import(s) the engine does not provide:", file=sys.stderr)
        for m in missing:
            print(f"  {m}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
