"""MostPop and recent-items: the two non-learned reference points."""

from __future__ import annotations

from collections.abc import Sequence

from eval.baselines.base import Recommender, fill_ranked, train_popularity
from genrec.data.schema import Catalog, Example


class MostPop(Recommender):
    """Same list for everyone: items by training popularity (history items dropped when excluded)."""

    name = "mostpop"

    def __init__(self) -> None:
        self.ranking: list[str] = []

    def fit(self, train: Sequence[Example], catalog: Catalog, valid: Sequence[Example] | None = None) -> "MostPop":
        self.ranking = train_popularity(train, catalog)
        return self

    def recommend(self, examples: Sequence[Example], k: int, exclude_history: bool = False) -> list[list[str]]:
        if not self.ranking:
            raise ValueError("MostPop.recommend called before fit")
        return [
            fill_ranked((), self.ranking, k, set(ex.history) if exclude_history else frozenset()) for ex in examples
        ]


class RecentItems(Recommender):
    """The user's own history, most recent first (repeats collapsed), then popular fill.

    Strong on job boards, where users re-open the same postings; under the `new` protocol the
    history is excluded and this reduces to MostPop.
    """

    name = "recent"

    def __init__(self) -> None:
        self.ranking: list[str] = []

    def fit(self, train: Sequence[Example], catalog: Catalog, valid: Sequence[Example] | None = None) -> "RecentItems":
        self.ranking = train_popularity(train, catalog)
        self._catalog = set(catalog.item_ids)
        return self

    def recommend(self, examples: Sequence[Example], k: int, exclude_history: bool = False) -> list[list[str]]:
        if not self.ranking:
            raise ValueError("RecentItems.recommend called before fit")
        out = []
        for ex in examples:
            if exclude_history:
                out.append(fill_ranked((), self.ranking, k, set(ex.history)))
            else:
                head = [it for it in reversed(ex.history) if it in self._catalog]
                out.append(fill_ranked(head, self.ranking, k))
        return out
