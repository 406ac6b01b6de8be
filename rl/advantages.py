"""Group-relative advantages (per rollout or per step) and their mapping onto completion tokens.

Rollouts arrive in groups of G consecutive rows (the G samples of one prompt), as TRL orders them after gathering
across processes. Every function here is pure tensor math, so it is tested against hand-computed cases.

Algorithms (see docs/rl.md) are a reward of the registry (rl/rewards.py) plus how its advantage reaches the tokens:
- `sapo`: per-step reward m[i,k] (level match); A[i,k] = (m[i,k] - mean_j m[j,k]) / max(std_j m[j,k], eps) per group
  and step; block-k and SID-k tokens get A[i,k], glue tokens 0, per-step length normalisation
  (`step_tokens="sid"`: SID-k tokens only, block tokens 0).
- `grpo`: outcome reward (exact SID match), A[i] = (r - mean) / (std + eps), broadcast to every token.
- `grpo_prefix`: prefix reward 2^-(L-p), same normalisation and broadcast as `grpo`.
- `step_reward_broadcast` (ablation): the per-step reward reduced to one scalar (mean over the K steps), then
  normalised and broadcast like `grpo`: dense reward, no step alignment.
- `outcome_step_adv` (ablation): the outcome reward used as every step's reward, so A[i,k] = A[i] for all k, but
  mapped onto tokens exactly like SAPO (glue 0, per-step length normalisation): step-aligned loss, no dense reward.

`SAPOConfig.reward` swaps the reward of any algorithm (a registered name or a dotted path).

Normalisation: a group whose rewards are all equal (compared as values, so 1/3 in float32 counts as equal) gets
exactly 0. The per-step rule (a per-step reward on step-aligned tokens, SAPO) divides by max(std, 1e-6); the
outcome rule divides by std + 1e-4, TRL's constant, so `grpo` matches TRL's GRPO advantages. With G = 1 there is no
baseline and every advantage is 0, as in TRL (r - mean = 0; TRL itself requires G >= 2 for training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rl.rewards import Codes, Reward, get_reward


@dataclass(frozen=True)
class Algorithm:
    reward: str  # name in rl.rewards.REWARDS
    step_aligned: bool  # (N, K) advantages mapped onto each step's tokens, else one advantage per rollout


ALGORITHMS: dict[str, Algorithm] = {
    "sapo": Algorithm("level_match", step_aligned=True),
    "grpo": Algorithm("exact_match", step_aligned=False),
    "grpo_prefix": Algorithm("prefix_match", step_aligned=False),
    "step_reward_broadcast": Algorithm("level_match", step_aligned=False),
    "outcome_step_adv": Algorithm("exact_match", step_aligned=True),
}
STEP_ALGORITHMS = tuple(name for name, a in ALGORITHMS.items() if a.step_aligned)
# Which tokens of step k carry A[i,k] (`SAPOConfig.step_tokens`): block k and SID token k (the paper), or SID token k
# only (block tokens are then glue, advantage 0; with per-step length normalisation each step is its one SID token).
# ('sid+outcome': SID token k carries A[i,k] and every other loss token, block text included, the rollout's outcome-GRPO
# advantage, weighted like GRPO's: a session-31 hybrid, measured below both SAPO and GRPO, docs/bench/learning.md.)
STEP_TOKENS = ("step", "sid", "sid+outcome")
# Which rollouts step k's reward is compared with (`SAPOConfig.step_baseline`): the prompt's whole group of G (the
# paper), or only the rollouts of that group whose SID tokens before level k are the same ("prefix"): a rollout that
# took a wrong earlier code is then not pushed up or down at level k by levels it could no longer match.
STEP_BASELINES = ("group", "prefix")
# What a prompt group whose outcome (exact SID match) varies across its G rollouts gets (`SAPOConfig.outcome_groups`):
# its step advantages like every other group (the paper), or outcome GRPO's one advantage on every loss token
# ("outcome"), so the per-step advantages act only where the outcome is constant, the groups SAPO was designed for.
OUTCOME_GROUPS = ("step", "outcome")
# Which advantage step k's tokens carry (`SAPOConfig.step_credit`): its own level's A[i,k] (the paper), or the sum of
# the advantages of step k and every later step ("to_go", the reward-to-go of DeepSeekMath's process-supervised GRPO,
# Shao et al. 2024, sec. 4.1.3): the code chosen at level k decides which later levels can still match, so its credit
# includes theirs. With the gated level reward the last step's advantage is the exact-match outcome's, so "to_go"
# gives the last step what outcome GRPO gives every token and earlier steps that plus their levels' signal.
STEP_CREDITS = ("level", "to_go")
EPS = 1e-6  # the per-step rule's std floor (SAPO)
OUTCOME_EPS = 1e-4  # the outcome rule's std offset (TRL's GRPO)


def check_algorithm(algorithm: str) -> Algorithm:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[algorithm]


def _grouped(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    if rewards.shape[0] % num_generations != 0:
        raise ValueError(
            f"{rewards.shape[0]} rollouts cannot be split into groups of num_generations={num_generations}"
        )
    return rewards.reshape(rewards.shape[0] // num_generations, num_generations, *rewards.shape[1:])


def group_normalize(
    rewards: torch.Tensor, num_generations: int, eps: float | None = None, denominator: str = "max"
) -> torch.Tensor:
    """(r - group mean) / group std, per group of `num_generations` rows and (for 2-D input) per column.

    std is the unbiased (n - 1) estimate. `denominator="max"` divides by max(std, eps) (SAPO's per-step rule, eps
    default 1e-6), `"add"` by std + eps (outcome GRPO, eps default 1e-4 as in TRL). A group whose rewards are all
    equal gets exactly 0. With G = 1 there is no baseline (and the unbiased std is undefined), so every advantage is 0.
    """
    if denominator not in ("max", "add"):
        raise ValueError(f"denominator must be 'max' or 'add', got {denominator!r}")
    if eps is None:
        eps = EPS if denominator == "max" else OUTCOME_EPS
    grouped = _grouped(rewards.float(), num_generations)
    if num_generations == 1:
        return torch.zeros_like(rewards, dtype=torch.float32)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True, correction=1)
    centered = grouped - mean
    denom = std.clamp(min=eps) if denominator == "max" else std + eps
    adv = centered / denom
    # Exactly 0 for constant groups, decided on the values: the mean of three 1/3 is not 1/3 in float32, so the
    # centred values and the std are tiny but not 0 and would give a spurious common advantage.
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    adv = torch.where(constant, torch.zeros_like(adv), adv)
    return adv.reshape(rewards.shape)


def prefix_group_normalize(
    rewards: torch.Tensor, codes: Sequence[Codes], num_generations: int, eps: float | None = None
) -> torch.Tensor:
    """SAPO's per-step rule with step k's group narrowed to the rollouts that share the SID prefix before level k.

    For each prompt group and level k, the G rollouts are split by their codes at levels 0..k-1 (level 0: one split,
    the whole group, so step 0 equals `group_normalize`); inside each split A = (m - mean) / max(std, eps), and a
    split of one rollout, or one whose rewards are all equal, gets 0. This is the advantage of the choice at level k
    in the state it was made in (the same SID prefix), with the siblings as the baseline; malformed rollouts
    (codes None) form their own split at every level above 0.
    """
    if rewards.dim() != 2:
        raise ValueError(f"prefix_group_normalize expects (N, K) step rewards, got shape {tuple(rewards.shape)}")
    if len(codes) != rewards.shape[0]:
        raise ValueError(f"{rewards.shape[0]} reward rows but {len(codes)} code rows")
    _grouped(rewards, num_generations)  # shape check
    out = torch.zeros_like(rewards, dtype=torch.float32)
    values = rewards.float()
    for start in range(0, rewards.shape[0], num_generations):
        rows = range(start, start + num_generations)
        for level in range(rewards.shape[1]):
            splits: dict[tuple, list[int]] = {}
            for i in rows:
                key = () if level == 0 else (tuple(codes[i][:level]) if codes[i] is not None else ("malformed",))
                splits.setdefault(key, []).append(i)
            for members in splits.values():  # SAPO's rule inside each split (one rollout or all equal: 0)
                idx = torch.tensor(members)
                out[idx, level] = group_normalize(values[idx, level], len(members), eps=eps, denominator="max")
    return out


def advantage_to_go(step_adv: torch.Tensor) -> torch.Tensor:
    """(N, K) per-step advantages -> (N, K) whose column k is the sum of columns k..K-1 (`step_credit='to_go'`)."""
    if step_adv.dim() != 2:
        raise ValueError(f"advantage_to_go expects (N, K) step advantages, got shape {tuple(step_adv.shape)}")
    return step_adv.flip(1).cumsum(1).flip(1)


def check_positive_weight(weight: float) -> None:
    """Raise unless `weight` (the factor on positive advantages) is >= 0."""
    if weight < 0:
        raise ValueError(f"positive_weight must be >= 0 (0 = negative advantages only), got {weight}")


def weight_positive(advantages: torch.Tensor, weight: float) -> torch.Tensor:
    """Scale the positive advantages by `weight`, keep the negative ones (W-REINFORCE, Zhu et al. 2025).

    Pushing a sampled wrong answer down spreads its probability over the other answers in proportion to what the model
    already gives them, so the ranking below the top is kept; pushing a sampled right answer up takes probability from
    all the others and sharpens the distribution. A top-k list (beam search) needs the first without the second:
    `weight` < 1 leans the update towards the negatives (0: negatives only). 1 is the unweighted advantage.
    """
    check_positive_weight(weight)
    if weight == 1.0:
        return advantages
    return torch.where(advantages > 0, advantages * weight, advantages)


def zero_std_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bool per group (and per column for 2-D input): True where all rewards of the group are equal (no signal)."""
    grouped = _grouped(rewards.float(), num_generations)
    return (grouped == grouped[:, :1]).all(dim=1)


def algorithm_reward(algorithm: str, reward: str | Reward | Callable | None = None) -> Reward:
    """The reward an algorithm normalises: `reward` when given (registry name, dotted path, function), else its own."""
    return get_reward(reward if reward is not None else check_algorithm(algorithm).reward)


def uses_per_step_rule(algorithm: str, reward: str | Reward | Callable | None = None) -> bool:
    """True for a per-step reward on step-aligned tokens (SAPO): normalised by max(std, eps) per step."""
    return check_algorithm(algorithm).step_aligned and algorithm_reward(algorithm, reward).per_step


def check_step_baseline(step_baseline: str, algorithm: str, reward: str | Reward | Callable | None = None) -> None:
    """Raise unless `step_baseline` is known and, for 'prefix', the algorithm's reward is per step (SAPO)."""
    if step_baseline not in STEP_BASELINES:
        raise ValueError(f"step_baseline must be one of {', '.join(STEP_BASELINES)}, got {step_baseline!r}")
    if step_baseline == "prefix" and not uses_per_step_rule(algorithm, reward):
        raise ValueError(
            f"step_baseline='prefix' needs a step algorithm with a per-step reward (sapo), got algorithm={algorithm!r} "
            f"with reward={reward!r}"
        )


def check_step_credit(step_credit: str, algorithm: str) -> None:
    """Raise unless `step_credit` is known and, for 'to_go', the algorithm has per-step advantages to sum."""
    if step_credit not in STEP_CREDITS:
        raise ValueError(f"step_credit must be one of {', '.join(STEP_CREDITS)}, got {step_credit!r}")
    if step_credit == "to_go" and not check_algorithm(algorithm).step_aligned:
        raise ValueError(f"step_credit='to_go' needs a step algorithm ({', '.join(STEP_ALGORITHMS)}), got "
                         f"{algorithm!r}")


def algorithm_rewards(
    algorithm: str,
    all_codes: Sequence[Codes],
    targets: Sequence[Sequence[int]],
    *,
    reward: str | Reward | Callable | None = None,
    **context,
) -> torch.Tensor:
    """The reward each algorithm normalises: (N, K) for step-aligned algorithms, (N,) for scalar ones.

    `context` (valid_bonus, is_valid) is passed to the reward function.
    """
    spec = check_algorithm(algorithm)
    r = algorithm_reward(algorithm, reward)
    if len(all_codes) != len(targets):
        raise ValueError(f"{len(all_codes)} rollouts but {len(targets)} targets")
    if spec.step_aligned:
        num_levels = len(targets[0]) if targets else 0
        rows = [r.step_values(c, t, **context) for c, t in zip(all_codes, targets)]
        return torch.tensor(rows, dtype=torch.float32).view(len(rows), num_levels)
    return torch.tensor([r.scalar(c, t, **context) for c, t in zip(all_codes, targets)], dtype=torch.float32)


def algorithm_advantages(
    algorithm: str,
    rewards: torch.Tensor,
    num_generations: int,
    eps: float | None = None,
    reward: str | Reward | Callable | None = None,
    step_baseline: str = "group",
    codes: Sequence[Codes] | None = None,
    positive_weight: float = 1.0,
    step_credit: str = "level",
) -> torch.Tensor:
    """Group-normalised advantages of `algorithm_rewards` output (same shape).

    The per-step rule (max(std, eps)) applies to a per-step reward on step-aligned tokens (SAPO); outcome-style
    rewards, also when mapped per step (`outcome_step_adv`, whose advantage then equals outcome GRPO's exactly),
    divide by std + eps. `step_baseline="prefix"` (per-step rule only, needs the rollouts' `codes`) compares step k
    within the rollouts that share the SID prefix before it (`prefix_group_normalize`). `step_credit="to_go"` (step
    algorithms) then replaces each step's advantage by its sum with every later step's (`advantage_to_go`), and
    `positive_weight` scales the positive advantages (`weight_positive`).
    """
    check_step_credit(step_credit, algorithm)
    per_step_rule = uses_per_step_rule(algorithm, reward)
    check_step_baseline(step_baseline, algorithm, reward)
    if step_baseline == "prefix":
        if codes is None:
            raise ValueError("step_baseline='prefix' needs the rollouts' SID codes")
        adv = prefix_group_normalize(rewards, codes, num_generations, eps=eps)
    else:
        adv = group_normalize(rewards, num_generations, eps=eps, denominator="max" if per_step_rule else "add")
    if step_credit == "to_go":
        adv = advantage_to_go(adv)
    return weight_positive(adv, positive_weight)


def scatter_step_advantages(step_adv: torch.Tensor, step_index: torch.Tensor) -> torch.Tensor:
    """(N, K) step advantages -> (N, T) token advantages; tokens with step index -1 (glue, padding) get 0."""
    if step_adv.dim() != 2 or step_index.dim() != 2 or step_adv.shape[0] != step_index.shape[0]:
        raise ValueError(f"expected (N, K) and (N, T), got {tuple(step_adv.shape)} and {tuple(step_index.shape)}")
    if step_index.numel() and int(step_index.max()) >= step_adv.shape[1]:
        raise ValueError(f"step index {int(step_index.max())} out of range for K={step_adv.shape[1]}")
    idx = step_index.long().clamp(min=0)
    values = torch.gather(step_adv.to(torch.float32), 1, idx)
    return torch.where(step_index >= 0, values, torch.zeros_like(values))


def step_length_scale(step_index: torch.Tensor, mask: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Per-token factor L_i / (K * |step k|) that turns TRL's `loss_type="grpo"` mean into SAPO's per-step mean.

    TRL (grpo) averages token losses over each rollout's L_i loss tokens. Multiplying token t of step k by
    L_i / (K |y_k|) makes that average equal to (1/K) sum_k (1/|y_k|) sum_{t in step k} loss_t, i.e. SAPO's
    per-step length normalisation. Since the factor is positive it commutes with the PPO min/clip. The KL term is
    added after the advantage, so it is not rescaled. Glue and padding tokens get 1.
    """
    mask = mask.to(torch.float32)
    lengths = mask.sum(dim=1, keepdim=True)  # L_i
    valid = (step_index >= 0) & (mask > 0)
    idx = step_index.long().clamp(min=0)
    counts = torch.zeros(step_index.shape[0], num_steps, dtype=torch.float32, device=step_index.device)
    counts.scatter_add_(1, idx, valid.to(torch.float32))  # |y_k|
    step_len = torch.gather(counts, 1, idx).clamp(min=1.0)
    scale = lengths / (num_steps * step_len)
    return torch.where(valid, scale, torch.ones_like(scale))


def token_advantages(
    adv: torch.Tensor,
    step_index: torch.Tensor,
    mask: torch.Tensor,
    ok: torch.Tensor,
    *,
    step_length_norm: bool = True,
) -> torch.Tensor:
    """(N, T) token advantages of a step algorithm.

    Well-formed rollouts (`ok`): block-k and SID-k tokens get A[i,k] (scaled by `step_length_scale` when
    `step_length_norm`), glue tokens 0. A malformed rollout has no reliable step spans, so every loss token gets the
    mean of its step advantages (its reward is 0 at every step, so this is its penalty, spread like outcome GRPO).
    """
    if adv.dim() != 2:
        raise ValueError(f"token_advantages expects (N, K) step advantages, got shape {tuple(adv.shape)}")
    num_steps = adv.shape[1]
    safe_index = torch.where(ok.view(-1, 1).bool(), step_index, torch.full_like(step_index, -1))
    tokens = scatter_step_advantages(adv, safe_index)
    if step_length_norm:
        tokens = tokens * step_length_scale(safe_index, mask, num_steps)
    broadcast = adv.float().mean(dim=1, keepdim=True).expand_as(tokens) * mask.to(torch.float32)
    return torch.where(ok.view(-1, 1).bool(), tokens, broadcast)


def outcome_on_other_tokens(
    tokens: torch.Tensor, step_index: torch.Tensor, mask: torch.Tensor, ok: torch.Tensor, outcome: torch.Tensor
) -> torch.Tensor:
    """`tokens` (N, T) with every loss token outside the steps' SID tokens (step index -1: block text, tags, EOS) of a
    well-formed rollout set to that rollout's outcome advantage `outcome` (N,) (`step_tokens='sid+outcome'`).

    Those tokens keep TRL's 1/L weight, so the blocks move exactly as outcome GRPO moves them while the SID tokens
    carry the per-step advantage; a malformed rollout keeps the tokens `token_advantages` gave it."""
    other = (step_index < 0) & (mask > 0) & ok.view(-1, 1).bool()
    return torch.where(other, outcome.view(-1, 1).to(tokens.dtype).expand_as(tokens), tokens)


def outcome_where_varied(
    tokens: torch.Tensor,
    exact: torch.Tensor,
    num_generations: int,
    mask: torch.Tensor,
    eps: float | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """`tokens` (n, T) step-algorithm token advantages, with every row of a group whose exact-match reward varies
    replaced by outcome GRPO's advantage on each of its loss tokens (`outcome_groups='outcome'`).

    `exact` (N,) holds the rewards of every rollout, in groups of `num_generations`; `rows` picks this process's n
    rows of them (default: all). A replaced row gets exactly what `grpo` would give it (TRL then weights each token
    1/L); the rows of groups with a constant outcome keep their per-step advantages, where outcome GRPO's is 0."""
    rows = rows if rows is not None else slice(0, exact.shape[0])
    if tokens.dim() != 2 or exact.dim() != 1:
        raise ValueError(f"expected (n, T) token advantages and (N,) rewards, got {tuple(tokens.shape)} and "
                         f"{tuple(exact.shape)}")
    outcome = group_normalize(exact, num_generations, eps=eps, denominator="add")[rows]
    varied = (~zero_std_groups(exact, num_generations)).repeat_interleave(num_generations)[rows]
    if outcome.shape[0] != tokens.shape[0]:
        raise ValueError(f"{tokens.shape[0]} token rows but {outcome.shape[0]} rewards in rows {rows}")
    broadcast = outcome.to(tokens.device, tokens.dtype).view(-1, 1) * mask.to(tokens.dtype)
    return torch.where(varied.to(tokens.device).view(-1, 1), broadcast, tokens)
