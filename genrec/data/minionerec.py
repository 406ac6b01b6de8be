"""Import the MiniOneRec data layout: split CSVs with a list-like history column plus an item JSON.

CSV columns (others are ignored): `user_id`, `history_item_id` (a Python-list-like string such as
"[12, 5, 7]" or "['12', '5']"), `item_id` (the target). Files: `train.csv`/`valid.csv`/`test.csv`,
or `<anything>_train.csv` / `<anything>.train.csv` (`val` is accepted for `valid`), or one CSV in
each of the sub-folders `train/`, `valid/`, `test/` (MiniOneRec's own layout).
Items: `item.json` or `<anything>.item.json` (in the folder or one level below): either an object
mapping item id -> {field: value} (or -> a title string), or a list of records with `item_id`/`id`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from genrec.data.errors import DataFormatError
from genrec.data.recbole import MAX_FIELD_CHARS, _decode, clip_long_values
from genrec.data.schema import Catalog

SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val"), "test": ("test",)}
REQUIRED = ("user_id", "history_item_id", "item_id")


@dataclass
class SplitRows:
    """Rows of one split CSV: parallel lists, with the 1-based line where each record starts."""

    path: str
    users: list[str]
    histories: list[list[str]]
    targets: list[str]
    lines: list[int]


def _split_file(folder: Path, split: str) -> Path | None:
    found: list[Path] = []
    for alias in SPLIT_NAMES[split]:
        found += [folder / f"{alias}.csv"] if (folder / f"{alias}.csv").is_file() else []
        found += sorted(p for p in folder.glob(f"*_{alias}.csv") if p.is_file())
        found += sorted(p for p in folder.glob(f"*.{alias}.csv") if p.is_file())
        sub = folder / alias
        if sub.is_dir():
            found += sorted(p for p in sub.glob("*.csv") if p.is_file())
    if len(found) > 1:
        raise DataFormatError(
            folder, f"several candidate {split} CSV files: {', '.join(str(p) for p in found)}; keep one"
        )
    return found[0] if found else None


def find_files(folder: str | Path) -> tuple[dict[str, Path], Path] | None:
    """(split -> csv, item json) if `folder` looks like MiniOneRec data, else None. Partial sets are errors."""
    folder = Path(folder)
    splits = {s: _split_file(folder, s) for s in SPLIT_NAMES}
    if not any(splits.values()):
        return None
    missing = [s for s, p in splits.items() if p is None]
    if missing:
        raise DataFormatError(folder, f"MiniOneRec layout: missing {', '.join(missing)} CSV (e.g. {missing[0]}.csv)")
    items = [p for p in [folder / "item.json"] if p.is_file()]
    items += sorted(folder.glob("*.item.json")) + sorted(folder.glob("*/*.item.json")) + sorted(folder.glob("*/item.json"))
    if not items:
        raise DataFormatError(folder, "MiniOneRec layout: missing item.json (or <name>.item.json) next to the CSVs")
    if len(items) > 1:
        raise DataFormatError(folder, f"several item JSON files: {', '.join(map(str, items))}; keep one")
    return {s: p for s, p in splits.items() if p is not None}, items[0]


def parse_history(text: str) -> list[str] | None:
    """"[12, 5, 7]" -> ["12", "5", "7"]; quotes around ids are removed. None if not list-like."""
    s = text.strip()
    if len(s) < 2 or s[0] != "[" or s[-1] != "]":
        return None
    inner = s[1:-1].strip()
    if not inner:
        return []
    out = []
    for part in inner.split(","):
        p = part.strip()
        if len(p) >= 2 and p[0] == p[-1] and p[0] in "'\"":
            p = p[1:-1].strip()
        if not p:
            return None
        out.append(p)
    return out


def read_split_csv(path: str | Path) -> SplitRows:
    """Parse one split CSV (RFC 4180 quoting, UTF-8). Errors name the file, line and field."""
    path = Path(path)
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataFormatError(path, "empty file (expected a header with user_id, history_item_id, item_id)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise DataFormatError(path, f"cannot parse CSV header: {e}", line=1) from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataFormatError(
            path, f"missing required column(s) {', '.join(missing)}; header has {', '.join(header)}", line=1,
            field=missing[0],
        )
    iu, ih, it = (header.index(c) for c in REQUIRED)
    rows = SplitRows(str(path), [], [], [], [])
    start = reader.line_num + 1
    try:
        for rec in reader:
            line = start
            start = reader.line_num + 1
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) != len(header):
                raise DataFormatError(path, f"expected {len(header)} fields, found {len(rec)}", line=line)
            hist = parse_history(rec[ih])
            if hist is None:
                raise DataFormatError(
                    path, f"expected a list like \"[12, 5, 7]\", got {rec[ih][:80]!r}", line=line,
                    field="history_item_id",
                )
            for col, idx in (("user_id", iu), ("item_id", it)):
                if not rec[idx].strip():
                    raise DataFormatError(path, "empty value (an id is required)", line=line, field=col)
            rows.users.append(rec[iu].strip())
            rows.histories.append(hist)
            rows.targets.append(rec[it].strip())
            rows.lines.append(line)
    except csv.Error as e:
        raise DataFormatError(path, f"malformed CSV: {e}", line=reader.line_num) from None
    if not rows.users:
        raise DataFormatError(path, "no data rows after the header (empty split)")
    return rows


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_text(v) for v in value) if t)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def read_item_json(path: str | Path, fields: list[str] | None = None, max_chars: int = MAX_FIELD_CHARS,
                   stats: dict | None = None) -> Catalog:
    """item.json -> Catalog. Lists become ", "-joined text. Duplicate ids and text-less items are errors; text
    values longer than `max_chars` are clipped, counted in `stats["text_values_clipped"]` and reported."""
    path = Path(path)
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataFormatError(path, "empty file (expected a JSON object of item id -> fields)")
    dupes: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in items:
            if k in out:
                dupes.append(k)
            out[k] = v
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    records: list[tuple[str, dict[str, object]]] = []
    if isinstance(data, dict):
        if dupes and any(d in data for d in dupes):
            raise DataFormatError(path, f"duplicate item id {next(d for d in dupes if d in data)!r}", field="item_id")
        for k, v in data.items():
            records.append((str(k), v if isinstance(v, dict) else {"title": v}))
    elif isinstance(data, list):
        for n, rec in enumerate(data):
            if not isinstance(rec, dict) or not ({"item_id", "id"} & rec.keys()):
                raise DataFormatError(path, f"record #{n} is not an object with 'item_id' (or 'id')", field="item_id")
            key = "item_id" if "item_id" in rec else "id"
            records.append((str(rec[key]), {k: v for k, v in rec.items() if k != key}))
        ids = [r[0] for r in records]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise DataFormatError(path, f"duplicate item id {dup!r}", field="item_id")
    else:
        raise DataFormatError(path, "expected a JSON object (item id -> fields) or a list of item records")
    if not records:
        raise DataFormatError(path, "no items")
    names: list[str] = []
    for _, rec in records:
        for k in rec:
            if k not in names:
                names.append(k)
    if fields is not None:
        for f in fields:
            if f not in names:
                raise DataFormatError(path, f"requested field {f!r} not found; available: {', '.join(names)}", field=f)
        names = list(fields)
    values = {n: [_text(rec.get(n)) for _, rec in records] for n in names}
    clipped = clip_long_values(str(path), values, max_chars)
    if stats is not None:
        stats["text_values_clipped"] = stats.get("text_values_clipped", 0) + clipped
    if not names:
        raise DataFormatError(path, "no text fields besides the item id", field="item_id")
    catalog = Catalog(item_ids=[r[0] for r in records], fields=values)
    catalog.name_textless_by_id(stats)
    return catalog
