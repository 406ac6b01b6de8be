"""The interface every ranking method implements, so one harness evaluates them all."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence

from genrec.data.schema import Catalog, Example


class Recommender(ABC):
    """Fit on training examples, then return ranked top-k item ids per example (best first).

    `recommend` must return, per example, up to `k` distinct catalog item ids; with
    `exclude_history=True` none of the example's history items may appear.
    """

    name: str = "recommender"

    def fit(
        self, train: Sequence[Example], catalog: Catalog, valid: Sequence[Example] | None = None
    ) -> "Recommender":
        return self

    @abstractmethod
    def recommend(self, examples: Sequence[Example], k: int, exclude_history: bool = False) -> list[list[str]]:
        """Top-k item ids per example."""


def train_popularity(train: Sequence[Example], catalog: Catalog) -> list[str]:
    """Catalog items sorted by their number of training interactions (ties: catalog order).

    A training interaction is every example's target plus, per user, the history of that user's
    earliest (shortest-history) example: the items before the first target. This counts each
    interaction of a leave-one-out prefix split once, like RecBole's Pop model does. Items outside
    the catalog are ignored; items never seen come last, so popular fill never runs dry.
    """
    counts = Counter(ex.target for ex in train)
    first: dict[str, Example] = {}
    for ex in train:
        if ex.user_id not in first or len(ex.history) < len(first[ex.user_id].history):
            first[ex.user_id] = ex
    for ex in first.values():
        counts.update(ex.history)
    order = {item: i for i, item in enumerate(catalog.item_ids)}
    return sorted(catalog.item_ids, key=lambda it: (-counts[it], order[it]))


def fill_ranked(head: Sequence[str], fill: Sequence[str], k: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """`head` (deduplicated, order kept) then items of `fill`, skipping `exclude` and repeats, cut at k."""
    out: list[str] = []
    seen = set(exclude)
    for source in (head, fill):
        for item in source:
            if len(out) >= k:
                return out
            if item not in seen:
                seen.add(item)
                out.append(item)
    return out
