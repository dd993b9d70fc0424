"""Console and log file: every engine message goes through Python's `logging`.

Each engine module logs to its own logger (``logging.getLogger(__name__)``), children of the
engine's package logger, so a user raises or silences them as with any library::

    logging.getLogger("my_research.engine").setLevel(logging.WARNING)   # warnings only

`setup` gives the package logger one console handler: stdout, looked up at each message so a
progress display that redirects stdout keeps every message on its own line above it. Global
rank 0 shows INFO and above; other ranks show warnings and errors only, prefixed with their
rank. `log_file` keeps the same lines in ``runs/<run_name>/train.log`` (appended across
resumes, a header line per start). While a session is open, Python warnings are shown the same
way (``warning: ...``), so they reach the log file too.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .version import __version__

ROOT = __package__ or "engine"  # e.g. "my_research.engine": the logger users configure
log = logging.getLogger(ROOT)
_ENGINE_DIR = str(Path(__file__).resolve().parent)


class _Formatter(logging.Formatter):
    """The message as written; warnings and errors say so; ranks > 0 prefix their rank."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.prefix = f"[rank {rank}] " if rank else ""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR and not text.startswith("error:"):
            text = "error: " + text
        elif record.levelno >= logging.WARNING and not text.startswith(("warning:", "error:")):
            text = "warning: " + text
        return self.prefix + text


class _ConsoleHandler(logging.Handler):
    """One line per message on the current `sys.stdout` (a live display may have redirected it)."""

    live = False  # a progress display shows the progress lines itself

    def emit(self, record: logging.LogRecord) -> None:
        if _ConsoleHandler.live and getattr(record, "progress", False):
            return
        try:
            stream = sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_console: _ConsoleHandler | None = None


def setup(rank: int = 0) -> None:
    """Show the engine's messages on the console (once per process; later calls update the rank).

    A user who configured the package logger with handlers of their own keeps them: then the
    engine adds none.
    """
    global _console
    level = logging.INFO if rank == 0 else logging.WARNING
    if _console is None:
        if any(not isinstance(h, logging.FileHandler) for h in log.handlers):
            return  # the user's own handlers
        _console = _ConsoleHandler()
        log.addHandler(_console)
        log.propagate = False  # no second copy through the root logger (as Lightning does)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    _console.setLevel(level)
    _console.setFormatter(_Formatter(rank))


def set_live(live: bool) -> None:
    """A progress display is (or no longer is) on screen: progress lines go to the log file only."""
    _ConsoleHandler.live = live


def command_line() -> str:
    """How this process was started, as a shell line (``python -m pkg.train a=b``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def header(world_size: int) -> str:
    """The line that starts each run's part of train.log."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"=== {stamp} | {command_line()} | engine {__version__} | world size {world_size} ==="


@contextmanager
def session(log_file: Path | None, rank: int = 0, world_size: int = 1) -> Iterator[None]:
    """Console setup for one run; with `log_file`, its lines are also appended to that file.

    Every rank appends to the same file (rank 0 everything, the others warnings and errors,
    prefixed with their rank); each message is one short write, so lines do not interleave.
    """
    setup(rank)
    handler: logging.Handler | None = None
    if log_file is not None:
        if rank == 0:  # the other ranks open the file at their first warning, if any
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("a") as f:
                f.write(header(world_size) + "\n")
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8", delay=rank != 0)
        handler.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        handler.setFormatter(_Formatter(rank))
        log.addHandler(handler)
    previous = warnings.showwarning
    if not _recording_warnings():
        warnings.showwarning = _show_warning
    try:
        yield
    finally:
        if warnings.showwarning is _show_warning:
            warnings.showwarning = previous
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _recording_warnings() -> bool:
    """Inside ``warnings.catch_warnings(record=True)`` (pytest.warns): leave the warnings to it."""
    impl = getattr(warnings, "_showwarnmsg_impl", None)
    return isinstance(getattr(impl, "__self__", None), list)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Python warnings as one log line: the engine's own bare, others with where they came from."""
    if os.path.abspath(filename).startswith(_ENGINE_DIR):
        log.warning("%s", message)
    else:
        log.warning("%s: %s (%s:%s)", category.__name__, message, filename, lineno)
