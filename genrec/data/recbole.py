"""Read and write RecBole atomic files (`.inter`, `.item`, `.user`).

Format: UTF-8 text, one record per line, fields separated by a TAB, first line a header of
`name:type` entries. Types: `token` (an id), `token_seq` (space-separated tokens or free text),
`float`, `float_seq`. There is no quoting: a field may contain `"` or `,` freely but never a TAB or a
newline. Plain `str.split` is used (not pandas, not the csv module) because it is fast and because
quote characters in real text must stay literal.
"""

from __future__ import annotations

import gc
import math
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from genrec.data.errors import DataFormatError, short
from genrec.data.schema import Catalog
from sid_tokenizer.sidmap import atomic_write_text

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
MAX_ID_CHARS = 1000  # a longer user/item id is a broken file (a lost TAB or newline), never a real id
MAX_FIELD_CHARS = 100_000  # default DataConfig.max_field_chars: longer text values are clipped and counted


@dataclass
class AtomicTable:
    """A parsed atomic file, stored column-wise (one list of raw strings per column).

    `lines[i]` is the 1-based line number in the file of row i (blank lines are skipped, so the
    row index alone cannot give it); use it to point errors at the right line.
    """

    path: str
    names: list[str]
    types: list[str]
    columns: dict[str, list[str]]
    lines: list[int] = field(repr=False)

    def __len__(self) -> int:
        return len(self.lines)

    def type_of(self, name: str) -> str:
        return self.types[self.names.index(name)]

    def col(self, name: str) -> list[str]:
        """The raw string values of column `name` (raises DataFormatError when it is absent)."""
        if name not in self.columns:
            self.require(name)
        return self.columns[name]

    def require(self, *names: str) -> None:
        """Raise a DataFormatError naming the header line if any of `names` is not a column."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise DataFormatError(
                self.path,
                f"missing required column(s) {', '.join(repr(m) for m in missing)}; "
                f"header has {', '.join(repr(n) for n in self.names)}",
                line=1,
                field=missing[0],
            )

    def floats(self, name: str, *, allow_empty: bool = False) -> list[float]:
        """Column `name` parsed as floats; a non-numeric value is a DataFormatError with its line."""
        values = self.col(name)
        try:
            if not allow_empty:
                out = list(map(float, values))
                if all(map(math.isfinite, out)):
                    return out
        except ValueError:
            pass
        out = []
        for i, v in enumerate(values):
            if allow_empty and not v.strip():
                out.append(float("nan"))
                continue
            try:
                x = float(v)
            except ValueError:
                x = float("nan")
            if not math.isfinite(x):
                raise DataFormatError(
                    self.path, f"expected a finite number, got {short(v)}", line=self.lines[i], field=name
                )
            out.append(x)
        return out

    def check_nonempty(self, name: str) -> None:
        """Raise if any value of column `name` (an id column) is empty or longer than MAX_ID_CHARS."""
        values = self.col(name)
        if "" in values:
            i = values.index("")
            raise DataFormatError(self.path, "empty value (an id is required)", line=self.lines[i], field=name)
        if values and max(map(len, values)) > MAX_ID_CHARS:
            i = next(i for i, v in enumerate(values) if len(v) > MAX_ID_CHARS)
            raise DataFormatError(
                self.path, f"expected an id of at most {MAX_ID_CHARS:,} characters, got {len(values[i]):,} "
                f"({short(values[i], 30)}); is a TAB or a newline missing?", line=self.lines[i], field=name,
            )


def parse_header(path: str | Path, header: str) -> tuple[list[str], list[str]]:
    """Split a `name:type<TAB>name:type` header into names and types, validating each entry."""
    names: list[str] = []
    types: list[str] = []
    for j, entry in enumerate(header.split("\t"), start=1):
        name, sep, typ = entry.strip().rpartition(":")
        if not sep or not name:
            raise DataFormatError(
                path,
                f"header entry {j} {entry!r} is not 'name:type' (type one of {', '.join(ATOMIC_TYPES)})",
                line=1,
                field=entry.strip() or f"#{j}",
            )
        if typ not in ATOMIC_TYPES:
            raise DataFormatError(
                path, f"unknown type {typ!r}; expected one of {', '.join(ATOMIC_TYPES)}", line=1, field=name
            )
        if name in names:
            raise DataFormatError(path, "duplicate column name in header", line=1, field=name)
        names.append(name)
        types.append(typ)
    return names, types


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError(
            path, f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); re-encode the file as UTF-8",
            line=line,
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


@contextmanager
def gc_paused():
    """Pause the cyclic GC while building millions of small lists/tuples: it would otherwise rescan
    them over and over (measured 5-10x slower loads). Nothing built here is cyclic.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_atomic(path: str | Path) -> AtomicTable:
    """Parse one atomic file. Errors name the file, the line and the field.

    Lines are split on "\\n" only ("\\r\\n" endings are accepted), never on other Unicode line
    breaks, which real text fields contain. Blank lines are skipped; every other line must have
    exactly as many TAB-separated fields as the header.
    """
    with gc_paused():
        return _read_atomic(Path(path))


def _read_atomic(path: Path) -> AtomicTable:
    if not path.is_file():
        raise DataFormatError(path, "file not found" if not path.exists() else "not a regular file")
    text = _decode(path, path.read_bytes())
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if not text.strip():
        raise DataFormatError(path, "empty file (expected a 'name:type' header line and data lines)")
    header, _, body = text.partition("\n")
    if not header.strip():
        raise DataFormatError(path, "first line is empty; expected a 'name:type' header", line=1)
    names, types = parse_header(path, header)
    ncol = len(names)
    if body.endswith("\n"):
        body = body[:-1]  # the final newline
    if not body.strip():
        raise DataFormatError(path, "no data lines after the header")
    lines_text = body.split("\n")
    lines = list(range(2, len(lines_text) + 2))
    if set(map(str.count, lines_text, repeat("\t"))) != {ncol - 1}:
        # Slow path: find the first malformed line; skip blank lines (they hold no data).
        keep = []
        for i, line in enumerate(lines_text):
            n = line.count("\t") + 1
            if n == ncol:
                keep.append(i)
            elif line.strip():
                raise DataFormatError(
                    path,
                    f"expected {ncol} TAB-separated fields ({', '.join(names)}), found {n}",
                    line=i + 2,
                )
        body = "\n".join(lines_text[i] for i in keep)
        lines = [i + 2 for i in keep]
    # One flat split is ~2x faster than splitting each line; every line has ncol fields (checked).
    flat = body.replace("\n", "\t").split("\t")
    columns = {name: flat[j::ncol] for j, name in enumerate(names)}
    return AtomicTable(str(path), names, types, columns, lines)


def _format_value(value: object, typ: str, name: str) -> str:
    if isinstance(value, str):
        s = value
    elif isinstance(value, (list, tuple)):
        s = " ".join(_format_value(v, typ.removesuffix("_seq"), name) for v in value)
    elif isinstance(value, float) and value.is_integer() and typ.startswith("float"):
        s = str(int(value))
    else:
        s = str(value)
    if "\t" in s or "\n" in s or "\r" in s:
        raise ValueError(f"column '{name}': value {s[:60]!r} contains a TAB or newline, which atomic files cannot hold")
    return s


def write_atomic(
    path: str | Path,
    columns: Sequence[str | tuple[str, str]],
    rows: Iterable[Sequence[object]],
) -> None:
    """Write an atomic file atomically (temp file in the same folder, then rename).

    `columns`: `"name:type"` strings or `(name, type)` pairs. Row values may be str, int, float or,
    for `*_seq` columns, a list/tuple (joined with spaces). A value with a TAB or newline is a
    ValueError: it would silently corrupt the file.
    """
    header: list[str] = []
    types: list[str] = []
    names: list[str] = []
    for c in columns:
        name, typ = (c.rsplit(":", 1) if ":" in c else (c, "")) if isinstance(c, str) else c
        if typ not in ATOMIC_TYPES:
            raise ValueError(f"column {c!r}: type must be one of {', '.join(ATOMIC_TYPES)}")
        header.append(f"{name}:{typ}")
        types.append(typ)
        names.append(name)
    ncol = len(header)
    out = ["\t".join(header)]
    for k, row in enumerate(rows):
        if len(row) != ncol:
            raise ValueError(f"row {k}: {len(row)} values for {ncol} columns ({', '.join(names)})")
        out.append("\t".join(_format_value(v, t, n) for v, t, n in zip(row, types, names)))
    out.append("")
    atomic_write_text(path, "\n".join(out))


def clip_long_values(path: str, values: dict[str, list[str]], max_chars: int, lines: Sequence[int] | None = None,
                     what: str = "text") -> int:
    """Clip every value longer than `max_chars` (0 = no limit) in place; return how many were clipped.

    Clipping is never silent: a one-line note on stderr gives the count and the first clipped line and field,
    and `load_data` adds the count to its summary (`text_values_clipped`).
    """
    if max_chars <= 0:
        return 0
    n, first = 0, None
    for name, col in values.items():
        if not col or max(map(len, col)) <= max_chars:
            continue
        for i, v in enumerate(col):
            if len(v) > max_chars:
                if first is None:
                    first = (name, i, len(v))
                col[i] = v[:max_chars]
                n += 1
    if n:
        name, i, size = first
        where = f"line {lines[i]}" if lines is not None else f"record #{i}"
        print(f"[genrec.data] {path}: {n:,} {what} value(s) longer than max_field_chars={max_chars:,} clipped to it "
              f"(first: {where}, field {name!r}, {size:,} characters)", file=sys.stderr)
    return n


def _select_fields(table: AtomicTable, id_col: str, wanted: Sequence[str] | None) -> list[str]:
    if wanted is None:
        return [n for n in table.names if n != id_col]
    for name in wanted:
        if name not in table.columns or name == id_col:
            raise DataFormatError(
                table.path,
                f"requested field {name!r} is not a text column; available: "
                f"{', '.join(n for n in table.names if n != id_col)}",
                line=1,
                field=name,
            )
    return list(wanted)


def read_items(path: str | Path, fields: Sequence[str] | None = None, max_chars: int = MAX_FIELD_CHARS,
               stats: dict | None = None) -> Catalog:
    """The `.item` file as a Catalog (file order). Values are whitespace-stripped.

    Errors: missing `item_id`, empty, over-long or duplicate ids (both lines named). An item whose selected text
    fields are all empty is named by its id (`Catalog.name_textless_by_id`), counted in `stats["items_without_text"]`.
    Text values longer than `max_chars` are clipped, counted in `stats["text_values_clipped"]` and reported on
    stderr.
    """
    table = read_atomic(path)
    table.require("item_id")
    table.check_nonempty("item_id")
    ids = table.col("item_id")
    names = _select_fields(table, "item_id", fields)
    if not names:
        raise DataFormatError(table.path, "no text columns besides 'item_id'", line=1)
    values = {n: [v.strip() for v in table.col(n)] for n in names}
    clipped = clip_long_values(table.path, values, max_chars, table.lines)
    if stats is not None:
        stats["text_values_clipped"] = stats.get("text_values_clipped", 0) + clipped
    seen: dict[str, int] = {}
    if len(set(ids)) != len(ids):
        for i, item in enumerate(ids):
            if item in seen:
                raise DataFormatError(
                    table.path,
                    f"duplicate item id {short(item)} (first on line {table.lines[seen[item]]})",
                    line=table.lines[i],
                    field="item_id",
                )
            seen[item] = i
    catalog = Catalog(item_ids=list(ids), fields=values)
    catalog.name_textless_by_id(stats)
    return catalog


def read_users(path: str | Path, fields: Sequence[str] | None = None, max_chars: int = MAX_FIELD_CHARS,
               stats: dict | None = None) -> dict[str, str]:
    """The `.user` file as user_id -> profile text: one "field: value" line per non-empty field.

    Values longer than `max_chars` are clipped, counted in `stats["text_values_clipped"]` and reported."""
    table = read_atomic(path)
    table.require("user_id")
    table.check_nonempty("user_id")
    ids = table.col("user_id")
    names = _select_fields(table, "user_id", fields)
    values = {n: table.col(n) for n in names}  # clipped in place: the table is ours
    clipped = clip_long_values(table.path, values, max_chars, table.lines)
    if stats is not None:
        stats["text_values_clipped"] = stats.get("text_values_clipped", 0) + clipped
    cols = list(values.items())
    profiles: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, user in enumerate(ids):
        if user in first:
            raise DataFormatError(
                table.path,
                f"duplicate user id {short(user)} (first on line {table.lines[first[user]]})",
                line=table.lines[i],
                field="user_id",
            )
        first[user] = i
        parts = []
        for n, col in cols:
            v = col[i].strip()
            if v:
                parts.append(f"{n}: {v}")
        profiles[user] = "\n".join(parts)
    return profiles
