"""One harness for every method: validate the split, apply a protocol, rank, time, and score.

A "ranker" is any callable `(examples, k, exclude_history) -> list[list[item_id]]`; baselines pass
their bound `recommend`, the generative model its beam search. Metrics always come from
`eval.metrics.compute_metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from eval.metrics import DEFAULT_KS, compute_metrics, per_user_ndcg, target_ranks
from eval.protocols import PROTOCOLS, excludes_history, select_examples
from genrec.data.schema import Catalog, Example
from sid_tokenizer.sidmap import SIDMap

Ranker = Callable[[Sequence[Example], int, bool], list[list[str]]]


def validate_examples(
    examples: Sequence[Example],
    catalog: Collection[str],
    *,
    split: str = "test",
    source: str = "",
    sid_map: SIDMap | None = None,
) -> None:
    """Fail early, naming the user and item, when a split is empty or refers to unknown items."""
    where = f"{source}: " if source else ""
    if not examples:
        raise ValueError(f"{where}the {split} split is empty: nothing to evaluate")
    for i, ex in enumerate(examples):
        for role, item in [("target", ex.target)] + [("history", it) for it in ex.history]:
            if item not in catalog:
                raise ValueError(
                    f"{where}{split} example {i} (user {ex.user_id!r}): {role} item {item!r} is not in the catalog"
                )
            if sid_map is not None and item not in sid_map:
                raise ValueError(
                    f"{where}{split} example {i} (user {ex.user_id!r}): {role} item {item!r} has no semantic ID "
                    "in the SID map (was the tokenizer fitted on another catalog?)"
                )


def check_k(k: int, catalog_size: int) -> None:
    if k < 1:
        raise ValueError(f"top-k must be >= 1, got {k}")
    if k > catalog_size:
        raise ValueError(f"top-k {k} is larger than the catalog ({catalog_size} items); every K of --topk must be at "
                         f"most {catalog_size}")


def evaluate_ranker(
    ranker: Ranker,
    examples: Sequence[Example],
    catalog: Catalog | Collection[str],
    *,
    protocol: str = "all",
    ks: Sequence[int] = DEFAULT_KS,
    sid_map: SIDMap | None = None,
    per_user: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Metrics of one method under one protocol, plus `seconds` and `users_per_second` of the ranking.

    `per_user`, when given, receives each user's NDCG@10 (key "ndcg@10"), for paired comparisons."""
    ks = sorted(set(ks))
    check_k(ks[-1], len(catalog))
    selected = select_examples(examples, protocol)
    if not selected:
        raise ValueError(f"protocol {protocol!r} leaves no examples to evaluate")
    start = time.perf_counter()
    ranked = ranker(selected, ks[-1], excludes_history(protocol))
    seconds = time.perf_counter() - start
    if len(ranked) != len(selected):
        raise ValueError(f"ranker returned {len(ranked)} lists for {len(selected)} examples")
    if excludes_history(protocol):
        leaked = sum(1 for ex, items in zip(selected, ranked) if set(ex.history) & set(items))
        if leaked:
            raise ValueError(f"protocol 'new': {leaked} lists contain history items (ranker ignored exclude_history)")
    targets = [ex.target for ex in selected]
    values = compute_metrics(ranked, targets, catalog, ks, sid_map).values
    if per_user is not None:
        per_user["ndcg@10"] = per_user_ndcg(target_ranks(ranked, targets), 10)
    values["seconds"] = seconds
    values["users_per_second"] = len(selected) / seconds if seconds > 0 else float("inf")
    return values


def evaluate_methods(
    rankers: Mapping[str, Ranker],
    examples: Sequence[Example],
    catalog: Catalog,
    *,
    protocols: Sequence[str] = PROTOCOLS,
    ks: Sequence[int] = DEFAULT_KS,
    sid_map: SIDMap | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {protocol: metrics}} for several rankers on the same examples."""
    validate_examples(examples, catalog)
    return {
        name: {p: evaluate_ranker(r, examples, catalog, protocol=p, ks=ks, sid_map=sid_map) for p in protocols}
        for name, r in rankers.items()
    }
