"""Errors for bad input data: always say which file, which line, which field, and what was expected."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """Raised when an input file does not match the expected format.

    The message always names the file and, where known, the 1-based line number and the field.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
