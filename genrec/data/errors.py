"""Errors for bad input data: always say which file, which line, which field, and what was expected."""

from __future__ import annotations

from pathlib import Path

MAX_MESSAGE_CHARS = 600  # an error is one readable line, even when the bad value is a 1 MB field


def short(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to about `limit` characters, saying how long the value was: for quoting input in errors."""
    text = repr(value)
    if len(text) <= limit:
        return text
    n = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[: limit - 5]}...' ({n:,} characters)"


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` on one line and at most about `limit` characters (the middle is cut, the expectation kept)."""
    message = " ".join(message.splitlines())
    if len(message) <= limit:
        return message
    keep = limit // 2
    return f"{message[:keep]} [... {len(message) - 2 * keep:,} characters cut ...] {message[-keep:]}"


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
        message = one_line(message)
        self.reason = message
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
