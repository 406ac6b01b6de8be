"""A repeat/explore mixture over a generative model's ranked items (RepeatNet-style, counted on held-out data).

Why: on job boards users re-open postings they viewed (41% of jobs-kaggle's test targets are in the user's
history), and re-surfacing recent items is a strong baseline there, while a small SID model learns copying
slowly (it must reproduce 4 codes of an item it saw ~20 tokens earlier). RepeatNet (Ren et al., AAAI 2019)
splits the next-item distribution into a repeat mode over the history and an explore mode over the catalog;
here the explore mode is the model and the repeat mode a fixed prior, both counted on the validation split
(`prior_split`: the held-out split before the test users; train when the evaluation itself runs on valid). Valid,
not train: train targets sit earlier in each sequence, and on amazon's temporal split 41% of train targets repeat
a history item against 24% of valid and 22% of test targets. Nothing is tuned on the test split:

    p(item) = (1 - w) * p_model(item)  +  w * p_rank(rank of item among the user's distinct history items)

- `w` is the fraction of the split's targets that occur in their own history (0 where the data has no repeats,
  and then the ranking is the model's unchanged);
- `p_rank[r]` is, among those repeat targets, the share that was the r-th most recent distinct history item;
- `p_model(item)` is exp(the beam's cumulative SID log-probability), given in the list's own order (level-weighted
  lists, `apply_repeat_prior`); items outside the beam list count 0.

Under the `new` protocol (history items excluded) the prior contributes nothing and the model's list is kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from genrec.data.schema import Example


REPEAT_SUFFIX = "+repeat"  # evaluation row of a model re-ranked with the prior: "genrec-direct:sft1+repeat"


def recent_distinct(history: Sequence[str]) -> list[str]:
    """History items, most recent first, each once (its latest occurrence)."""
    seen: set[str] = set()
    out = []
    for item in reversed(history):
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


@dataclass(frozen=True)
class RepeatPrior:
    """The repeat mode's weight and its distribution over recency ranks (see the module docstring)."""

    weight: float
    rank_probs: tuple[float, ...] = field(default_factory=tuple)
    examples: int = 0
    split: str = ""

    @classmethod
    def fit(cls, examples: Sequence[Example], split: str = "") -> "RepeatPrior":
        """Estimate the prior from held-out examples (each target's recency rank in its own history)."""
        counts: list[int] = []
        repeats = 0
        for ex in examples:
            order = recent_distinct(ex.history)
            if ex.target in order:
                r = order.index(ex.target)
                counts.extend([0] * (r + 1 - len(counts)))
                counts[r] += 1
                repeats += 1
        if not examples or not repeats:
            return cls(0.0, (), len(examples), split)
        return cls(repeats / len(examples), tuple(c / repeats for c in counts), len(examples), split)

    def item_probs(self, history: Sequence[str]) -> dict[str, float]:
        """Repeat-mode probability of each distinct history item (before the weight)."""
        return {item: self.rank_probs[r] for r, item in enumerate(recent_distinct(history)) if r < len(self.rank_probs)}

    def mix(self, scored: Sequence[tuple[str, float]], history: Sequence[str], k: int) -> list[tuple[str, float]]:
        """Re-rank (item, model log-prob) pairs with the history's repeat mode; returns the top-k (item, log p).

        History items missing from `scored` join the candidates with model probability 0. Ties keep the
        model's order (then recency). A prior of weight 0 returns `scored[:k]` unchanged.
        """
        if self.weight <= 0.0:
            return list(scored[:k])
        rep = self.item_probs(history)
        mixed: dict[str, float] = {}
        for item, logp in scored:
            if item not in mixed:
                p_model = math.exp(logp) if logp != float("-inf") else 0.0
                mixed[item] = (1.0 - self.weight) * p_model + self.weight * rep.get(item, 0.0)
        for item, p in rep.items():
            if item not in mixed:
                mixed[item] = self.weight * p
        order = {item: i for i, item in enumerate(mixed)}
        ranked = sorted(mixed, key=lambda it: (-mixed[it], order[it]))[:k]
        return [(it, math.log(mixed[it]) if mixed[it] > 0 else float("-inf")) for it in ranked]

    def to_dict(self) -> dict:
        return {"weight": self.weight, "rank_probs": list(self.rank_probs), "split": self.split,
                "examples": self.examples}


def prior_split(data, eval_split: str = "test") -> str:
    """The split the prior is counted on: valid, unless it is empty or is the split being evaluated."""
    return "valid" if data.valid and eval_split != "valid" else "train"


def fit_prior(data, eval_split: str = "test") -> RepeatPrior:
    """The repeat prior of a loaded data set (`prior_split`)."""
    split = prior_split(data, eval_split)
    return RepeatPrior.fit(getattr(data, split), split)


def list_log_probs(beams) -> list[tuple[str, float]]:
    """(item, log p) in the list's own order, with the list's plain log-probabilities sorted largest first.

    With level weights (eval/beam.py) the list's order is not the order of the plain log-probabilities its beams
    carry; giving them out in list order keeps the model's ranking and the list's probability mass."""
    by_rank = sorted((b.score for b in beams), reverse=True)
    return [(b.item_id, lp) for b, lp in zip(beams, by_rank)]


def apply_repeat_prior(prior: RepeatPrior, beams_per_user, examples: Sequence[Example], k: int, beam_factory):
    """The prior applied to each user's beam list; `beam_factory(item_id, log_p)` builds a beam for a
    history item the model did not return. Beams the prior keeps carry their reasoning, with the mixed score.

    The model mode is `list_log_probs(beams)`: the mixture keeps the model's order among its items and the list's
    probability mass. Without level weights the list is already in that order and this is the plain mixture."""
    out = []
    for beams, ex in zip(beams_per_user, examples):
        by_item = {b.item_id: b for b in beams}
        mixed = prior.mix(list_log_probs(beams), ex.history, k)
        out.append([replace(by_item[it], score=lp) if it in by_item else beam_factory(it, lp) for it, lp in mixed])
    return out


__all__ = ["REPEAT_SUFFIX", "RepeatPrior", "apply_repeat_prior", "fit_prior", "list_log_probs", "prior_split",
           "recent_distinct"]
