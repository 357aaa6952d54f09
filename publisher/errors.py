"""Errors and diagnostics a person can act on: `file:line: what is wrong`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a file: an error or a warning, with where it is, and a machine `code`
    (`summary-before-item`, `empty-link`, `lead-count` …) that tools and `publisher check`
    group and sort by; the message is for people and may be reworded."""

    level: str  # "error" | "warning"
    message: str
    file: str | None = None
    line: int | None = None
    code: str | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.level}: {self.message}"


class PublisherError(Exception):
    """Base of every error a user can cause; the CLI prints it without a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line

    def __str__(self) -> str:
        return str(Diagnostic("error", self.message, self.file, self.line))


class SourceError(PublisherError):
    """An issue source (canonical or legacy) cannot be read; carries every error found."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        diagnostics: tuple[Diagnostic, ...] = (),
        code: str | None = None,
    ):
        super().__init__(message, file=file, line=line)
        self.code = code
        first = Diagnostic("error", message, self.file, line, code)
        self.diagnostics = diagnostics or (first,)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics if d.level == "error")


class ConfigError(PublisherError):
    """The configuration is missing a key, has an unknown one, or a value of the wrong kind."""


class TransportError(PublisherError):
    """A push could not complete; the ledger records it as failed."""
