"""TRL reward functions (exact match, mean level match, prefix reward) over parsed SID responses.

TRL requires `reward_funcs` and logs each one as `rewards/<name>/mean`; the trainer computes its advantages from the
same rewards (rl/advantages.py), so these functions make the logged rewards meaningful and let plain `GRPOTrainer`
runs use the same rewards. The target travels with each prompt as the dataset column `target_codes` (TRL passes
dataset columns to reward functions as keyword arguments).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from rl.rewards import mean_step_reward, outcome_reward, prefix_reward

TARGET_COLUMN = "target_codes"


class RolloutParser:
    """parse_response with a small cache, so rewards and advantages parse each completion once."""

    def __init__(self, spec, max_size: int = 8192) -> None:
        self.spec = spec
        self.max_size = max_size
        self._cache: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def __call__(self, ids: Sequence[int]):
        from genrec.response import parse_response

        key = tuple(int(i) for i in ids)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        parsed = parse_response(list(key), self.spec)
        self._cache[key] = parsed
        if len(self._cache) > self.max_size:
            self._cache.popitem(last=False)
        return parsed

    def codes(self, ids: Sequence[int]) -> tuple[int, ...] | None:
        """The K generated codes, or None when the completion does not parse into exactly K steps."""
        parsed = self(ids)
        return tuple(int(c) for c in parsed.codes) if parsed.ok else None


def _targets(kwargs: dict, n: int) -> list[list[int]]:
    targets = kwargs.get(TARGET_COLUMN)
    if targets is None:
        raise ValueError(
            f"reward function needs the dataset column '{TARGET_COLUMN}' (the target SID codes of each prompt); "
            "build the dataset with rl.data.build_rl_dataset"
        )
    if len(targets) != n:
        raise ValueError(f"{n} completions but {len(targets)} '{TARGET_COLUMN}' values")
    return [list(t) for t in targets]


class SIDReward:
    """A TRL reward function: `kind` in {'exact_match', 'level_match', 'prefix_match'}."""

    KINDS = ("exact_match", "level_match", "prefix_match")

    def __init__(self, kind: str, parser: RolloutParser, *, valid_bonus: float = 0.0, catalog=None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown reward kind {kind!r}: expected one of {self.KINDS}")
        self.kind = kind
        self.__name__ = kind  # TRL logs rewards/<__name__>/mean
        self.parser = parser
        self.valid_bonus = valid_bonus
        self.catalog = catalog

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is None:
            raise ValueError("reward function needs completion_ids (TRL passes them)")
        targets = _targets(kwargs, len(completion_ids))
        out = []
        for ids, target in zip(completion_ids, targets):
            codes = self.parser.codes(ids)
            if self.kind == "exact_match":
                out.append(outcome_reward(codes, target))
            elif self.kind == "level_match":
                out.append(mean_step_reward(codes, target))
            else:
                is_valid = self.catalog.__contains__ if self.catalog is not None else None
                out.append(prefix_reward(codes, target, valid_bonus=self.valid_bonus, is_valid=is_valid))
        return out


# Which logged reward is "the" reward of each algorithm (TRL's `reward` metric is the weighted sum).
ALGORITHM_REWARD = {
    "sapo": "level_match",
    "grpo": "exact_match",
    "grpo_prefix": "prefix_match",
    "step_reward_broadcast": "level_match",
    "outcome_step_adv": "exact_match",
}


def make_reward_funcs(parser: RolloutParser, *, valid_bonus: float = 0.0, catalog=None) -> list[SIDReward]:
    return [SIDReward(kind, parser, valid_bonus=valid_bonus, catalog=catalog) for kind in SIDReward.KINDS]


def reward_weights_for(algorithm: str) -> list[float]:
    """Weights over make_reward_funcs' order so that TRL's logged `reward` is the algorithm's own reward."""
    return [1.0 if kind == ALGORITHM_REWARD[algorithm] else 0.0 for kind in SIDReward.KINDS]
