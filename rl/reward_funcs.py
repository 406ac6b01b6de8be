"""TRL reward functions over parsed SID responses, one per reward of the registry (rl/rewards.py).

TRL requires `reward_funcs` and logs each one as `rewards/<name>/mean`; the trainer computes its advantages from the
same registry (rl/advantages.py), so these functions make the logged rewards meaningful and let plain `GRPOTrainer`
runs use the same rewards (a per-step reward is logged as its mean over levels). The target travels with each prompt as the dataset column `target_codes` (TRL passes
dataset columns to reward functions as keyword arguments).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from rl.rewards import Reward, get_reward

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
    """A TRL reward function computing one reward of the registry (a name, dotted path or `Reward`)."""

    def __init__(self, reward: str | Reward, parser: RolloutParser, *, valid_bonus: float = 0.0, catalog=None) -> None:
        self.reward = get_reward(reward)
        self.kind = self.reward.name
        self.__name__ = self.reward.name  # TRL logs rewards/<__name__>/mean
        self.parser = parser
        self.context = {"valid_bonus": valid_bonus, "is_valid": catalog.__contains__ if catalog is not None else None}

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        if completion_ids is None:
            raise ValueError("reward function needs completion_ids (TRL passes them)")
        targets = _targets(kwargs, len(completion_ids))
        return [self.reward.scalar(self.parser.codes(ids), t, **self.context) for ids, t in zip(completion_ids, targets)]


LOGGED_REWARDS = ("exact_match", "level_match", "prefix_match")  # always logged, whatever the algorithm


def logged_reward_names(reward: str) -> list[str]:
    """The rewards a run logs: the built-ins, plus the algorithm's reward when it is another one."""
    return list(LOGGED_REWARDS) + ([reward] if reward not in LOGGED_REWARDS else [])


def make_reward_funcs(parser: RolloutParser, names=LOGGED_REWARDS, *, valid_bonus: float = 0.0, catalog=None) -> list[SIDReward]:
    return [SIDReward(name, parser, valid_bonus=valid_bonus, catalog=catalog) for name in names]


def reward_weights_for(names, reward: str) -> list[float]:
    """Weights over `names` so that TRL's logged `reward` is the algorithm's own reward."""
    return [1.0 if name == reward else 0.0 for name in names]
