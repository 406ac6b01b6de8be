"""A collaborative prior at decoding: the generative model's list fused with SASRec's next-item distribution.

Why: the SID model's first guess is better than SASRec's, but its top 10 stays close to that guess (4 shared codes
per item), while SASRec holds item-level knowledge (docs/bench/learning.md, sessions 17 and 24). Neither moving that
knowledge into the model through its inputs nor through its training targets worked at this size; multiplying the
two distributions at decoding does (a product of experts):

    score(item) = log p_model(item) + w * log p_SASRec(item)

over the candidates = the model's beam list and SASRec's top `candidates` items. An item outside the model's list
gets the list's lowest log-probability minus 1 (the beam search keeps the most probable items, so it is below all
of them). The model's log-probabilities are given in the list's own order (level-weighted lists, as the repeat
prior does: `list_log_probs`), so w = 0 returns the model's ranking. `w` is fitted on held-out users of the valid
split (targets SFT never trained on; an RL model's valid prompts are left out; SASRec early-stops on the valid
split, see docs/evaluation.md), from `WEIGHT_GRID`, by NDCG@10 there: SASRec is taken only when it clearly helps
(the best weight's gain over weight 0 is more than one standard error, paired per user), and then at the best
weight. Nothing is tuned on the test split. (Until session 26 the weight was the smallest within one standard error
of the best: the same gate, but below the valid curve's peak, and below the best weight on test outside noise on
the demo, amazon and jobs-kaggle; docs/bench/learning.md.)

Such a row is a hybrid of two models ('<model>+sasrec' in reports), not the generative model alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from eval.metrics import per_user_ndcg, target_ranks
from eval.repeat import apply_repeat_prior, list_log_probs
from genrec.data.schema import Example

SASREC_SUFFIX = "+sasrec"  # evaluation row of a model fused with SASRec: "genrec-direct:sft1+sasrec"
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
DEFAULT_CANDIDATES = 20


def fuse(scored: Sequence[tuple[str, float]], sasrec_logp: Mapping[str, float], weight: float,
         k: int) -> list[tuple[str, float]]:
    """The top-k (item, fused log-probability) of `scored` (the model's list) and SASRec's candidates.

    `sasrec_logp` holds SASRec's log-probability of every candidate (its top items and the model's items). With a
    positive weight an item it lacks (e.g. a history item under the `new` protocol) leaves the list. The fused
    probabilities are the product renormalised over the candidates and scaled to the mass the model puts on its
    list, so a repeat prior can mix them as it mixes the model's own (eval/repeat.py). Weight 0 returns the model's
    list unchanged (scores included), so a fused row at weight 0 is the model's row, with or without the prior."""
    if weight == 0:
        return list(scored[:k])
    model = {}
    for item, lp in scored:
        if item not in model and lp != float("-inf"):
            model[item] = lp
    floor = (min(model.values()) - 1.0) if model else 0.0
    order: dict[str, int] = {}
    for item, _ in scored:
        order.setdefault(item, len(order))
    for item in sorted(sasrec_logp, key=lambda it: -sasrec_logp[it]):
        order.setdefault(item, len(order))
    fused = {}
    for item in order:
        s = sasrec_logp.get(item, float("-inf"))
        if s == float("-inf"):
            continue  # excluded by SASRec (e.g. a history item under `new`)
        fused[item] = model.get(item, floor) + weight * s
    if not fused:
        return list(scored[:k])
    top = max(fused.values())
    log_norm = top + math.log(sum(math.exp(v - top) for v in fused.values()))
    mass = sum(math.exp(v) for v in model.values()) or 1.0
    ranked = sorted(fused, key=lambda it: (-fused[it], order[it]))[:k]
    return [(it, fused[it] - log_norm + math.log(mass)) for it in ranked]


@dataclass(frozen=True)
class CollabPrior:
    """The fitted fusion weight, with the valid NDCG@10 of every weight tried."""

    weight: float
    candidates: int = DEFAULT_CANDIDATES
    valid_ndcg10: dict[float, float] = field(default_factory=dict)
    examples: int = 0
    split: str = ""

    @classmethod
    def fit(cls, model_lists: Sequence[Sequence[tuple[str, float]]], sasrec_logps: Sequence[Mapping[str, float]],
            examples: Sequence[Example], k: int, split: str = "", candidates: int = DEFAULT_CANDIDATES,
            grid: Sequence[float] = WEIGHT_GRID, rerank=None) -> "CollabPrior":
        """The grid weight with the best mean NDCG@10 on held-out examples (the smaller one on a tie), if its gain over
        the smallest grid weight (0: the model's own ranking) is more than one standard error of the paired per-user
        difference; else the smallest weight. So a weight SASRec does not clearly earn is not taken (a flat curve
        keeps the model's ranking), and one it earns is taken at the valid curve's peak.

        `rerank(fused_list, example)`, if given, is applied after the fusion (the repeat prior), so the weight is
        fitted for the row it serves."""
        if not examples:
            raise ValueError("CollabPrior.fit: no held-out examples to fit the SASRec weight on")
        targets = [ex.target for ex in examples]
        per_user: dict[float, np.ndarray] = {}
        for w in sorted(grid):
            lists = []
            for lst, sas, ex in zip(model_lists, sasrec_logps, examples, strict=True):
                fused = fuse(lst, sas, w, k)
                lists.append([it for it, _ in (rerank(fused, ex) if rerank is not None else fused)])
            per_user[w] = per_user_ndcg(target_ranks(lists, targets, 10), 10)
        scores = {w: float(row.mean()) for w, row in per_user.items()}
        weight = best = max(scores, key=lambda w: (scores[w], -w))
        least = min(per_user)
        diff = per_user[best] - per_user[least]
        se = math.sqrt(float(((diff - diff.mean()) ** 2).sum()) / max(len(diff) - 1, 1) / len(diff))
        if diff.mean() <= se:
            weight = least
        return cls(weight, candidates, scores, len(examples), split)

    def to_dict(self) -> dict:
        return {"weight": self.weight, "candidates": self.candidates, "split": self.split, "examples": self.examples,
                "valid_ndcg@10": {str(w): s for w, s in self.valid_ndcg10.items()}}


def sasrec_log_probs(sasrec, examples: Sequence[Example], beams_per_user, candidates: int,
                     exclude_history: bool = False) -> list[dict[str, float]]:
    """SASRec's log-probabilities of each user's candidates: its top `candidates` items and the model's list."""
    return sasrec.candidate_log_probs(examples, [[b.item_id for b in bs] for bs in beams_per_user], candidates,
                                      exclude_history)


def apply_collab_prior(weight: float, beams_per_user, sasrec_logps: Sequence[Mapping[str, float]], k: int,
                       beam_factory):
    """Each user's beam list fused with SASRec (`fuse`); `beam_factory(item_id, log_p)` builds a beam for an item
    the model did not return. Beams kept from the model carry their reasoning, with the fused score (a popularity
    fill SASRec ranks in is no longer a fill)."""
    if weight == 0:
        return [list(beams[:k]) for beams in beams_per_user]
    out = []
    for beams, sas in zip(beams_per_user, sasrec_logps, strict=True):
        by_item = {b.item_id: b for b in beams}
        fused = fuse(list_log_probs(beams), sas, weight, k)
        out.append([replace(by_item[it], score=lp, filled=by_item[it].filled and lp == float("-inf"))
                    if it in by_item else beam_factory(it, lp) for it, lp in fused])
    return out


def hybrid_beams(weight: float, beams_per_user, sasrec_logps: Sequence[Mapping[str, float]],
                 examples: Sequence[Example], list_length: int, k: int, beam_factory, prior=None,
                 exclude_history: bool = False):
    """What a '+sasrec' row ranks, in one place for `genrec evaluate` and `genrec recommend`: the model's list fused
    with SASRec at `list_length` items, then the repeat prior (if given; not when history items are excluded, where
    it adds nothing), then the top k."""
    fused = apply_collab_prior(weight, beams_per_user, sasrec_logps, list_length, beam_factory)
    if prior is not None and not exclude_history:
        fused = apply_repeat_prior(prior, fused, examples, list_length, beam_factory)
    return [beams[:k] for beams in fused]


__all__ = ["DEFAULT_CANDIDATES", "SASREC_SUFFIX", "WEIGHT_GRID", "CollabPrior", "apply_collab_prior", "fuse",
           "hybrid_beams", "sasrec_log_probs"]
