"""Rewards computed from a rollout's parsed SID codes and the target SID (no model, no tokenizer).

A rollout is represented by `codes`: the tuple of K generated SID codes, or `None` when it did not parse into
exactly K steps (format gate). Every reward of a gated rollout is 0, and it is counted, never dropped.

- `step_matches`: SAPO's per-step match m[k] = 1 if level k's code equals the target's, levels independent.
- `gated_step_matches`: m[k] = 1 only while every level up to k matches (the prefix-gated variant of SAPO's
  reward, `--reward gated_level_match`): a code under a wrong parent names a different group, so it earns nothing.
- `outcome_reward`: 1 if the whole SID equals the target (outcome GRPO).
- `prefix_reward`: 2^-(L-p) for the longest correct prefix p (0 if p = 0), plus an optional bonus when the SID is a
  catalog item (prefix-reward GRPO).
- `random_gated_steps`: a control with the gated reward's shape and no information about the target
  (`--reward random_gated_match`).
- `mean_step_reward`: the mean of m over levels: how the per-step reward is reduced to one scalar for the
  `step_reward_broadcast` ablation (and the scalar logged as SAPO's "reward").

The registry (`REWARDS`, `register_reward`, `get_reward`) names them for the algorithms (rl/advantages.py), the TRL
reward functions that log them (rl/reward_funcs.py) and `SAPOConfig.reward`. A new reward is one function in one
place:

    @register_reward("my_reward", per_step=True)   # per_step: one value per SID level, else one scalar
    def my_reward(codes, target, **context): ...     # context: valid_bonus, is_valid

or, without registering, `--reward my_package.my_module:my_reward` (a dotted path; set `my_reward.per_step = True`
for a per-step reward).
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Codes = Sequence[int] | None


def _check(codes: Codes, target: Sequence[int]) -> None:
    if len(target) == 0:
        raise ValueError("target SID is empty: expected one code per SID level")
    if codes is not None and len(codes) != len(target):
        raise ValueError(f"rollout has {len(codes)} SID codes but the target has {len(target)} levels")


def step_matches(codes: Codes, target: Sequence[int]) -> list[float]:
    """m[k] = 1.0 if codes[k] == target[k], else 0.0; all zeros for a gated (None) rollout."""
    _check(codes, target)
    if codes is None:
        return [0.0] * len(target)
    return [1.0 if int(c) == int(t) else 0.0 for c, t in zip(codes, target)]


def correct_prefix_length(codes: Codes, target: Sequence[int]) -> int:
    """Length p of the longest prefix of `codes` equal to the target's (0 for a gated rollout)."""
    _check(codes, target)
    if codes is None:
        return 0
    p = 0
    for c, t in zip(codes, target):
        if int(c) != int(t):
            break
        p += 1
    return p


def gated_step_matches(codes: Codes, target: Sequence[int]) -> list[float]:
    """m[k] = 1.0 if codes[:k + 1] == target[:k + 1], else 0.0 (levels after the first miss score 0)."""
    p = correct_prefix_length(codes, target)
    return [1.0 if k < p else 0.0 for k in range(len(target))]


# P(level k "matches" | the levels before it did) of the random control: about the demo's gated match rates from its
# stage 2 (learning.md, session 28)
RANDOM_GATED_RATES = (0.55, 0.40, 0.50, 0.50)


def random_gated_steps(codes: Codes, target: Sequence[int], rates: Sequence[float] = RANDOM_GATED_RATES) -> list[float]:
    """A control reward with the shape of `gated_step_matches` and no information about whether `codes` is right.

    Per level a Bernoulli draw at `rates[k]` (the last rate repeats), 0 after the first 0, seeded by (codes, target):
    the same rollout of the same prompt always draws the same, identical rollouts of a group get the same reward (as
    under a real reward), and whether the codes equal the target changes nothing. RL with it measures what an update
    of SAPO's size does to a model without any signal (`--reward random_gated_match`).
    """
    _check(codes, target)
    if codes is None:
        return [0.0] * len(target)
    key = (tuple(int(c) for c in codes), tuple(int(t) for t in target))
    rng = random.Random(hash(key) & 0xFFFFFFFF)  # tuples of ints hash the same in every process and run
    out, on = [], True
    for k in range(len(target)):
        on = on and rng.random() < rates[min(k, len(rates) - 1)]
        out.append(1.0 if on else 0.0)
    return out


def outcome_reward(codes: Codes, target: Sequence[int]) -> float:
    """1.0 if the whole SID equals the target, else 0.0."""
    return 1.0 if correct_prefix_length(codes, target) == len(target) else 0.0


def prefix_reward(
    codes: Codes,
    target: Sequence[int],
    *,
    valid_bonus: float = 0.0,
    is_valid: Callable[[tuple[int, ...]], bool] | None = None,
) -> float:
    """2^-(L-p) with p the longest correct prefix (0 if p = 0), + `valid_bonus` if `is_valid(codes)`.

    `is_valid` says whether the SID is a catalog item; with constrained rollouts it always is, so the bonus is a
    constant shift there (normalised away per group) and only matters for unconstrained sampling.
    """
    p = correct_prefix_length(codes, target)
    reward = 0.0 if p == 0 else 2.0 ** -(len(target) - p)
    if codes is not None and valid_bonus and is_valid is not None and is_valid(tuple(int(c) for c in codes)):
        reward += valid_bonus
    return reward


def mean_step_reward(codes: Codes, target: Sequence[int]) -> float:
    """Fraction of levels matched: the scalar reduction of the per-step reward (mean over the K steps)."""
    m = step_matches(codes, target)
    return sum(m) / len(m)


def match_matrix(all_codes: Sequence[Codes], targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """(N, K) float tensor of per-step matches for N rollouts (row of zeros for gated ones)."""
    if len(all_codes) != len(targets):
        raise ValueError(f"{len(all_codes)} rollouts but {len(targets)} targets")
    if not targets:
        return torch.zeros(0, 0)
    num_levels = len(targets[0])
    for t in targets:
        if len(t) != num_levels:
            raise ValueError(f"targets have different numbers of levels ({len(t)} vs {num_levels})")
    return torch.tensor([step_matches(c, t) for c, t in zip(all_codes, targets)], dtype=torch.float32).view(
        len(targets), num_levels
    )


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reward:
    """A reward of a rollout's codes against the target: K values (`per_step`) or one scalar."""

    name: str
    fn: Callable[..., float | Sequence[float]]  # fn(codes, target, **context)
    per_step: bool = False

    def step_values(self, codes: Codes, target: Sequence[int], **context) -> list[float]:
        """One value per level (a scalar reward is repeated at every level)."""
        out = self.fn(codes, target, **context)
        if not self.per_step:
            return [float(out)] * len(target)
        out = [float(v) for v in out]
        if len(out) != len(target):
            raise ValueError(f"per-step reward {self.name!r} gave {len(out)} values for {len(target)} levels")
        return out

    def scalar(self, codes: Codes, target: Sequence[int], **context) -> float:
        """The scalar form (the mean over levels for a per-step reward)."""
        if not self.per_step:
            return float(self.fn(codes, target, **context))
        values = self.step_values(codes, target, **context)
        return sum(values) / len(values)


REWARDS: dict[str, Reward] = {}


def register_reward(name: str, *, per_step: bool = False):
    """Decorator: register `fn(codes, target, **context)` under `name` (see the module docstring)."""

    def deco(fn):
        if name in REWARDS and REWARDS[name].fn is not fn:
            raise ValueError(f"a reward named {name!r} is already registered")
        REWARDS[name] = Reward(name, fn, per_step)
        return fn

    return deco


def get_reward(name: str | Reward | Callable) -> Reward:
    """A registered reward by name, a `Reward`, a function, or a dotted path 'package.module:function' (or
    'package.module.function'); a function's `per_step` attribute says whether it returns one value per level."""
    if isinstance(name, Reward):
        return name
    if callable(name):
        return Reward(getattr(name, "__name__", "reward"), name, bool(getattr(name, "per_step", False)))
    if name in REWARDS:
        return REWARDS[name]
    module, sep, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    if not sep or not module:
        raise ValueError(f"unknown reward {name!r}: expected one of {', '.join(REWARDS)} or a dotted path 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward {name!r}: cannot import {attr!r} from {module!r} ({e})") from None
    if isinstance(fn, Reward):
        return fn
    return Reward(name, fn, bool(getattr(fn, "per_step", False)))


register_reward("level_match", per_step=True)(lambda codes, target, **_: step_matches(codes, target))
register_reward("gated_level_match", per_step=True)(lambda codes, target, **_: gated_step_matches(codes, target))
register_reward("random_gated_match", per_step=True)(lambda codes, target, **_: random_gated_steps(codes, target))
register_reward("exact_match")(lambda codes, target, **_: outcome_reward(codes, target))
register_reward("prefix_match")(
    lambda codes, target, valid_bonus=0.0, is_valid=None, **_: prefix_reward(
        codes, target, valid_bonus=valid_bonus, is_valid=is_valid
    )
)
