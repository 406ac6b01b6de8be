"""The item -> semantic ID map: the contract between the tokenizer and every later stage.

A SID is a tuple of `num_levels` integer codes, coarse to fine; the last level is the dedup level that
makes every SID unique. Level k's code c is written as the token `<{letter_k}_{c}>` (a, b, c, d, ...).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
SID_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """Token string of `code` at `level` (0-based), e.g. sid_token(0, 12) == "<a_12>"."""
    return f"<{LEVEL_LETTERS[level]}_{code}>"


def parse_sid_token(token: str) -> tuple[int, int] | None:
    """(level, code) of a SID token string, or None if it is not one."""
    m = SID_TOKEN_RE.fullmatch(token)
    if m is None:
        return None
    return LEVEL_LETTERS.index(m.group(1)), int(m.group(2))


def sid_string(codes: tuple[int, ...] | list[int]) -> str:
    return "".join(sid_token(level, c) for level, c in enumerate(codes))


def parse_sid_string(text: str) -> tuple[int, ...]:
    """Codes of a SID string like "<a_1><b_2><c_3>"; raises ValueError when it is not a well-formed SID."""
    tokens = SID_TOKEN_RE.findall(text)
    if not tokens or "".join(f"<{l}_{c}>" for l, c in tokens) != text.strip():
        raise ValueError(f"not a SID string: {text!r}")
    codes = []
    for level, (letter, code) in enumerate(tokens):
        if LEVEL_LETTERS.index(letter) != level:
            raise ValueError(f"SID {text!r}: token {level} has level '{letter}', expected '{LEVEL_LETTERS[level]}'")
        codes.append(int(code))
    return tuple(codes)


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it atomically replaces `path`, on failure it is removed.

    Readers never see a half-written file, and an interrupted run leaves the previous version intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (temp file in the same folder, then rename)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def catalog_fingerprint(item_ids: list[str], fields: dict[str, list[str]], source: str = "") -> dict:
    """What a SID map records about the catalog it was fitted on (`SIDMap.catalog`): its item count, text fields
    and a SHA-256 over (item id, field values) sorted by id, so a SID map fitted on another catalog with the same
    ids (e.g. another synthetic market) is told apart from the right one."""
    names = sorted(fields)
    return {"source": source, "items": len(item_ids), "fields": names,
            "sha256": _catalog_sha256(item_ids, {n: fields[n] for n in names})}


def _catalog_sha256(item_ids: list[str], fields: dict[str, list[str]]) -> str:
    h = hashlib.sha256()
    cols = [fields[n] for n in sorted(fields)]
    for i in sorted(range(len(item_ids)), key=item_ids.__getitem__):
        h.update("\x1f".join([item_ids[i], *(c[i] for c in cols)]).encode("utf-8") + b"\x1e")
    return h.hexdigest()


def catalog_matches(fingerprint: dict, item_ids: list[str], fields: dict[str, list[str]]) -> bool | None:
    """Whether a catalog is the one of `fingerprint` (None: cannot tell, it lacks some of the recorded fields)."""
    names = fingerprint.get("fields") or []
    if any(n not in fields for n in names):
        return None
    if len(item_ids) != fingerprint.get("items"):
        return False
    return _catalog_sha256(item_ids, {n: fields[n] for n in names}) == fingerprint.get("sha256")


@dataclass
class SIDMap:
    """item_id -> SID codes (all of the same length, all distinct), plus per-level codebook sizes and labels.

    `labels` maps a SID prefix string (e.g. "<a_3>" or "<a_3><b_17>") to a short human-readable label.
    """

    item_to_codes: dict[str, tuple[int, ...]]
    codebook_sizes: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    # the catalog it was fitted on (`catalog_fingerprint`); None for maps built otherwise or before it was recorded
    catalog: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.item_to_codes = {k: tuple(int(c) for c in v) for k, v in self.item_to_codes.items()}
        self._codes_to_item: dict[tuple[int, ...], str] = {}
        for item, codes in self.item_to_codes.items():
            if len(codes) != len(self.codebook_sizes):
                raise ValueError(f"item {item!r}: SID has {len(codes)} levels, expected {len(self.codebook_sizes)}")
            for level, (c, size) in enumerate(zip(codes, self.codebook_sizes)):
                if not 0 <= c < size:
                    raise ValueError(f"item {item!r}: code {c} at level {level} outside codebook of size {size}")
            if codes in self._codes_to_item:
                raise ValueError(f"items {self._codes_to_item[codes]!r} and {item!r} share SID {sid_string(codes)}")
            self._codes_to_item[codes] = item

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    def __len__(self) -> int:
        return len(self.item_to_codes)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.item_to_codes

    def codes(self, item_id: str) -> tuple[int, ...]:
        return self.item_to_codes[item_id]

    def tokens(self, item_id: str) -> list[str]:
        return [sid_token(level, c) for level, c in enumerate(self.item_to_codes[item_id])]

    def sid_string(self, item_id: str) -> str:
        return sid_string(self.item_to_codes[item_id])

    def item_for_codes(self, codes: tuple[int, ...] | list[int]) -> str | None:
        return self._codes_to_item.get(tuple(codes))

    def all_tokens(self) -> list[str]:
        """Every possible SID token, level by level (the tokens to add to an LM vocabulary)."""
        return [sid_token(level, c) for level, size in enumerate(self.codebook_sizes) for c in range(size)]

    def label(self, codes_prefix: tuple[int, ...] | list[int]) -> str:
        return self.labels.get(sid_string(codes_prefix), "")

    def save(self, path: str | Path) -> None:
        """Human-readable JSON: {"codebook_sizes": [...], "items": {item_id: "<a_1><b_2>..."}, "labels": {...}}."""
        payload = {
            "num_levels": self.num_levels,
            "codebook_sizes": self.codebook_sizes,
            "items": {item: sid_string(codes) for item, codes in self.item_to_codes.items()},
            "labels": self.labels,
        }
        if self.catalog is not None:
            payload["catalog"] = self.catalog
        atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "SIDMap":
        from genrec.stage_output import check_complete_for

        path = Path(path)
        check_complete_for(path)  # a fit-tokenizer folder an interrupted run left half-written is refused
        if path.is_dir():
            path = path / "sid_map.json"
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: SID map not found (run `genrec fit-tokenizer` first)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        for key in ("codebook_sizes", "items"):
            if key not in payload:
                raise ValueError(f"{path}: missing key '{key}' in SID map")
        items = {}
        for item, text in payload["items"].items():
            try:
                items[item] = parse_sid_string(text)
            except ValueError as e:
                raise ValueError(f"{path}: item {item!r}: {e}") from None
        return cls(items, list(payload["codebook_sizes"]), dict(payload.get("labels", {})), payload.get("catalog"))
