"""Errors the CLI turns into a one-line message on stderr and a non-zero exit."""

from __future__ import annotations


class ScaffoldError(Exception):
    """A failure to report to the user: a one-line message, optional detail lines, an exit code."""

    exit_code = 1
    prefix = "error: "

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])


class BadInput(ScaffoldError):
    """The command line asks for something impossible (exit status 2, as for usage errors)."""

    exit_code = 2


class Interrupted(ScaffoldError):
    """Ctrl-C at a question: said plainly, with the shell's exit status for SIGINT."""

    exit_code = 130
    prefix = ""
