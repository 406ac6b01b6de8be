"""Group-relative advantages (per rollout or per step) and their mapping onto completion tokens.

Rollouts arrive in groups of G consecutive rows (the G samples of one prompt), as TRL orders them after gathering
across processes. Every function here is pure tensor math, so it is tested against hand-computed cases.

Algorithms (see docs/rl.md):
- `sapo`: reward m[i,k] per step; A[i,k] = (m[i,k] - mean_j m[j,k]) / max(std_j m[j,k], eps) per group and step;
  block-k and SID-k tokens get A[i,k], glue tokens 0, per-step length normalisation.
- `grpo`: outcome reward (exact SID match), A[i] = (r - mean) / (std + eps), broadcast to every token.
- `grpo_prefix`: prefix reward 2^-(L-p), same normalisation and broadcast as `grpo`.
- `step_reward_broadcast` (ablation): the per-step reward reduced to one scalar (mean over the K steps), then
  normalised and broadcast like `grpo`: dense reward, no step alignment.
- `outcome_step_adv` (ablation): the outcome reward used as every step's reward, so A[i,k] = A[i] for all k, but
  mapped onto tokens exactly like SAPO (glue 0, per-step length normalisation): step-aligned loss, no dense reward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rl.rewards import Codes, match_matrix, mean_step_reward, outcome_reward, prefix_reward

ALGORITHMS = ("sapo", "grpo", "grpo_prefix", "step_reward_broadcast", "outcome_step_adv")
STEP_ALGORITHMS = ("sapo", "outcome_step_adv")  # algorithms with a (N, K) advantage and step-aligned tokens
EPS = 1e-6


def check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")


def _grouped(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    if rewards.shape[0] % num_generations != 0:
        raise ValueError(
            f"{rewards.shape[0]} rollouts cannot be split into groups of num_generations={num_generations}"
        )
    return rewards.reshape(rewards.shape[0] // num_generations, num_generations, *rewards.shape[1:])


def group_normalize(
    rewards: torch.Tensor, num_generations: int, eps: float = EPS, denominator: str = "max"
) -> torch.Tensor:
    """(r - group mean) / group std, per group of `num_generations` rows and (for 2-D input) per column.

    std is the unbiased (n - 1) estimate. `denominator="max"` divides by max(std, eps) (SAPO's per-step rule),
    `"add"` by std + eps (outcome GRPO). A group whose rewards are all equal gets 0. With G = 1 there is no
    baseline (and the unbiased std is undefined), so every advantage is 0.
    """
    if denominator not in ("max", "add"):
        raise ValueError(f"denominator must be 'max' or 'add', got {denominator!r}")
    grouped = _grouped(rewards.float(), num_generations)
    if num_generations == 1:
        return torch.zeros_like(rewards, dtype=torch.float32)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True, correction=1)
    centered = grouped - mean
    denom = std.clamp(min=eps) if denominator == "max" else std + eps
    adv = centered / denom
    # Exactly 0 for constant groups (centered is 0 up to rounding; make it exact for the zero-signal metrics).
    adv = torch.where(std > 0, adv, torch.zeros_like(adv))
    return adv.reshape(rewards.shape)


def zero_std_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Bool per group (and per column for 2-D input): True where all rewards of the group are equal (no signal)."""
    grouped = _grouped(rewards.float(), num_generations)
    return (grouped == grouped[:, :1]).all(dim=1)


def algorithm_rewards(
    algorithm: str,
    all_codes: Sequence[Codes],
    targets: Sequence[Sequence[int]],
    *,
    valid_bonus: float = 0.0,
    is_valid: Callable[[tuple[int, ...]], bool] | None = None,
) -> torch.Tensor:
    """The reward each algorithm normalises: (N, K) for step algorithms, (N,) for scalar ones."""
    check_algorithm(algorithm)
    if algorithm == "sapo":
        return match_matrix(all_codes, targets)
    if algorithm == "outcome_step_adv":
        outcome = torch.tensor([outcome_reward(c, t) for c, t in zip(all_codes, targets)], dtype=torch.float32)
        num_levels = len(targets[0]) if targets else 0
        return outcome.unsqueeze(1).expand(-1, num_levels).contiguous()
    if algorithm == "grpo":
        return torch.tensor([outcome_reward(c, t) for c, t in zip(all_codes, targets)], dtype=torch.float32)
    if algorithm == "grpo_prefix":
        return torch.tensor(
            [prefix_reward(c, t, valid_bonus=valid_bonus, is_valid=is_valid) for c, t in zip(all_codes, targets)],
            dtype=torch.float32,
        )
    return torch.tensor([mean_step_reward(c, t) for c, t in zip(all_codes, targets)], dtype=torch.float32)


def algorithm_advantages(algorithm: str, rewards: torch.Tensor, num_generations: int, eps: float = EPS) -> torch.Tensor:
    """Group-normalised advantages of `algorithm_rewards` output (same shape)."""
    check_algorithm(algorithm)
    # SAPO.md: per-step advantages divide by max(std, eps); outcome-style (and the ablation that reuses the
    # outcome reward per step, so that its advantage equals outcome GRPO's exactly) divide by std + eps.
    denominator = "max" if algorithm == "sapo" else "add"
    return group_normalize(rewards, num_generations, eps=eps, denominator=denominator)


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
