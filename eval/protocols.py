"""Evaluation protocols: which examples count and which items may be recommended.

- `all`: every example; any catalog item may be recommended, so a target that repeats a history
  item is fair game (job boards see many repeat views).
- `new`: only examples whose target is not in the user's history; history items are removed from
  the candidates (measures discovery of unseen items).
Both are reported because the ranking of methods flips between them on repeat-heavy data.
"""

from __future__ import annotations

from collections.abc import Sequence

from genrec.data.schema import Example

PROTOCOLS: tuple[str, ...] = ("all", "new")


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return protocol


def select_examples(examples: Sequence[Example], protocol: str) -> list[Example]:
    """The examples a protocol evaluates (the `new` protocol drops repeat targets)."""
    check_protocol(protocol)
    if protocol == "all":
        return list(examples)
    return [ex for ex in examples if ex.target not in set(ex.history)]


def excludes_history(protocol: str) -> bool:
    """Whether the protocol removes the user's history items from the candidates."""
    return check_protocol(protocol) == "new"
