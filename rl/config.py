"""`SAPOConfig`: TRL's `GRPOConfig` plus the step-aligned RL options (algorithm, layout, masking, rewards).

The algorithm is chosen by `algorithm`, never by TRL's `loss_type`: TRL's `loss_type="sapo"` is an unrelated method
(Soft Adaptive Policy Optimization). Step-aligned algorithms keep `loss_type="grpo"`, because the per-step length
normalisation is expressed as an exact rescaling of the advantages under that loss (see rl/advantages.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import GRPOConfig

from genrec.grammar import LAYOUTS  # `direct` (SID tokens only, stage-1 models): each step is one SID token
from genrec.parallel import launched_by_torchrun_on_cpu
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS, traces_block_budget  # the auto block budget (0)
from rl.advantages import (
    ALGORITHMS, OUTCOME_GROUPS, STEP_ALGORITHMS, STEP_BASELINES, STEP_CREDITS, STEP_TOKENS, algorithm_reward,
    check_positive_weight, check_step_baseline, check_step_credit,
)


ROLLOUTS = ("sample", "beam")  # how a prompt's G rollouts are drawn (SAPOConfig.rollouts)
KL_TOKENS = ("all", "blocks")  # which completion tokens the KL term covers (SAPOConfig.kl_tokens)
BLOCK_DECODING = ("sample", "greedy")  # how sampled rollouts write their thinking blocks (SAPOConfig.block_decoding)


def _bf16_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class SAPOConfig(GRPOConfig):
    """GRPOConfig with genrec's RL options. Defaults suit a small model on CPU; see docs/rl.md for GPU settings."""

    algorithm: str = field(
        default="sapo",
        metadata={
            "help": "RL algorithm: 'sapo' (per-step match reward, per-step group advantage), 'grpo' (exact-match "
            "outcome reward), 'grpo_prefix' (prefix reward 2^-(L-p)), 'step_reward_broadcast' (ablation: mean "
            "per-step reward, one advantage per rollout) or 'outcome_step_adv' (ablation: outcome reward, "
            "step-aligned token mapping).",
            "choices": list(ALGORITHMS),
        },
    )
    reward: str | None = field(
        default=None,
        metadata={"help": "Reward the algorithm normalises, instead of its own: a name registered in rl/rewards.py "
                  "(level_match, gated_level_match, exact_match, prefix_match, or one added with register_reward) "
                  "or a dotted path 'package.module:function' (function(codes, target, **context); per-step when it "
                  "has per_step = True). Default: the algorithm's reward."},
    )
    layout: str = field(
        default="interleaved",
        metadata={"help": "Response layout the model was trained on: 'auto' (the model folder's, from genrec_model.json; "
                  "`genrec rl` only), 'interleaved', 'coarse', 'blocks_first' or 'direct' (no reasoning: a stage-1 "
                  "model; each step is one SID token).",
                  "choices": ["auto", *LAYOUTS]},
    )
    max_block_tokens: int = field(
        default=0,
        metadata={"help": "Token budget of one thinking block during constrained rollouts (then </think> is forced). "
                  f"0 = auto: `genrec rl --traces DIR` takes the largest per-level 95th percentile of the traces' "
                  f"block lengths; without traces {DEFAULT_MAX_BLOCK_TOKENS}."},
    )
    constrained_rollouts: bool = field(
        default=True,
        metadata={"help": "Force the response structure and restrict each SID token to catalog prefixes while "
                  "sampling. Off: free sampling, malformed rollouts get reward 0 (format gate)."},
    )
    rollouts: str = field(
        default="sample",
        metadata={"help": "How a prompt's G rollouts are drawn: 'sample' (TRL's sampling at `temperature`, through the "
                  "constrained sampler) or 'beam' (the G best items of the constrained SID beam search the "
                  "evaluation uses, blocks written greedily: the group compares the model's own top-G list, as in "
                  "MiniOneRec's beam rollouts). 'beam' needs constrained_rollouts and the transformers backend.",
                  "choices": list(ROLLOUTS)},
    )
    block_decoding: str = field(
        default="sample",
        metadata={"help": "How sampled rollouts write their thinking blocks: 'sample' (at `temperature`, like the SID "
                  "tokens) or 'greedy' (each block's most likely text given the prompt and the SID tokens before "
                  "it, as the evaluation writes blocks; only the SID tokens are sampled, so the group's rollouts "
                  "differ in their SID choices and RL trains them in the contexts the evaluation decodes; on the demo "
                  "market level with 'sample', docs/bench/learning.md session 21). 'greedy' needs constrained_rollouts "
                  "and rollouts='sample'.",
                  "choices": list(BLOCK_DECODING)},
    )
    masked_logprobs: bool = field(
        default=True,
        metadata={"help": "Train on log-probs renormalised over the tokens the sampler allowed at SID positions "
                  "(the distribution rollouts were drawn from). Off: TRL's unmasked log-probs."},
    )
    step_length_norm: bool = field(
        default=True,
        metadata={"help": "Step algorithms: divide each step's token losses by the step's length and average over "
                  "steps (SAPO), instead of TRL's average over all tokens. Needs loss_type='grpo'."},
    )
    step_tokens: str = field(
        default="step",
        metadata={"help": "Step algorithms: which tokens of step k carry its advantage A[i,k]. 'step': thinking block "
                  "k and SID token k (the paper's mapping); 'sid': SID token k only (block tokens get 0, so the "
                  "update moves the decisions, not the wording of the evidence; docs/bench/learning.md); "
                  "'sid+outcome': SID token k carries A[i,k] and the block text the rollout's outcome-GRPO "
                  "advantage (a hybrid; level with SFT and below both SAPO and GRPO on jobs-kaggle, "
                  "docs/bench/learning.md, session 31)."},
    )
    step_baseline: str = field(
        default="group",
        metadata={"help": "Step algorithms with a per-step reward: which rollouts step k's reward is compared with. "
                  "'group': all G rollouts of the prompt (the paper); 'prefix': only those with the same SID codes "
                  "before level k, so a rollout that already took a wrong code gets no level-k advantage "
                  "(docs/rl.md).",
                  "choices": list(STEP_BASELINES)},
    )
    outcome_groups: str = field(
        default="step",
        metadata={"help": "Step algorithms: what a prompt group whose exact-match outcome varies across its rollouts "
                  "gets. 'step': its per-step advantages, like every group (the paper); 'outcome': outcome GRPO's "
                  "advantage on every token, so the per-step advantages act only in the groups where the outcome "
                  "is constant and outcome GRPO learns nothing. Measured below both SFT and outcome GRPO on "
                  "jobs-kaggle and amazon (docs/bench/learning.md, session 32).",
                  "choices": list(OUTCOME_GROUPS)},
    )
    step_credit: str = field(
        default="level",
        metadata={"help": "Step algorithms: the advantage step k's tokens carry. 'level': its own level's A[i,k] (the "
                  "paper); 'to_go': the sum of A[i,j] over j >= k (the reward-to-go of DeepSeekMath's process-"
                  "supervised GRPO), since the code chosen at level k decides which later levels can match. "
                  "Measured level with 'level' and below outcome GRPO on jobs-kaggle and amazon "
                  "(docs/bench/learning.md, session 33).",
                  "choices": list(STEP_CREDITS)},
    )
    positive_weight: float = field(
        default=1.0,
        metadata={"help": "Factor on the positive advantages (negatives unchanged; W-REINFORCE): < 1 leans the update "
                  "towards pushing sampled wrong answers down, which keeps the ranking below the top that a top-k list "
                  "needs, over pulling right ones up, which sharpens it. 0 = negatives only; 1 = the plain advantage "
                  "(docs/rl.md)."},
    )
    valid_bonus: float = field(
        default=0.0,
        metadata={"help": "grpo_prefix: reward bonus for a SID that is a catalog item (constant under constrained "
                  "rollouts)."},
    )
    log_rollout_groups: int = field(
        default=2,
        metadata={"help": "Prompt groups (of G rollouts each) appended to <output_dir>/rollouts.jsonl at every logging "
                  "step, for `genrec explore` (text, SIDs, per-step rewards and advantages). 0 = off."},
    )
    adv_eps: float | None = field(
        default=None,
        metadata={"help": "Floor / offset of the group std in the advantage normalisation. Default: 1e-6 as the "
                  "floor of SAPO's per-step rule, 1e-4 (TRL's value) as the offset of the outcome rule."},
    )

    # GRPOConfig defaults changed for small models on CPU.
    activation_checkpointing: bool | None = field(
        default=False,
        metadata={"help": "Trade compute for memory (TRL's default is on; slow for small models)."},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision; default: on when a bf16-capable GPU is present, else off."},
    )
    loss_type: str = field(
        default="grpo",
        metadata={"help": "TRL loss aggregation; keep 'grpo' for step algorithms (TRL's 'sapo' is another method)."},
    )
    num_generations: int | None = field(default=8, metadata={"help": "Rollouts per prompt (G)."})
    max_completion_length: int | None = field(
        default=256, metadata={"help": "Token budget of a whole response (K blocks + K SID tokens + EOS)."}
    )
    beta: float = field(
        default=0.0,
        metadata={"help": "KL coefficient to the frozen reference (k3 estimator). 0 loads no reference model; the "
                  "paper used 0.001. With beta > 0 the reference is reloaded from the model's folder."},
    )
    kl_tokens: str = field(
        default="all",
        metadata={"help": "Completion tokens the KL term (beta > 0) covers: 'all' (TRL's) or 'blocks' (the "
                  "thinking blocks' text only): the wording of the evidence stays near the reference while the SID "
                  "decisions move freely (docs/rl.md).",
                  "choices": list(KL_TOKENS)},
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})
    report_to: None | str | list[str] = field(
        default="tensorboard", metadata={"help": "Logging integrations (TensorBoard by default)."}
    )
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoint strategy (for resume)."})
    save_steps: float = field(default=50, metadata={"help": "Save a checkpoint every N steps."})

    def __post_init__(self) -> None:
        if self.bf16 is None and not self.fp16:
            self.bf16 = _bf16_available()
        if launched_by_torchrun_on_cpu():
            self.use_cpu = True  # else each torchrun process trains alone (genrec/parallel.py)
        super().__post_init__()
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.layout not in ("auto", *LAYOUTS):
            raise ValueError(f"layout must be auto or one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.max_block_tokens < 0:
            raise ValueError(f"max_block_tokens must be >= 1, or 0 for auto, got {self.max_block_tokens}")
        # 0 = auto: a usable fixed default now; `genrec rl --traces` replaces it (see resolve_block_budget)
        self.max_block_tokens_auto = self.max_block_tokens == 0
        if self.max_block_tokens_auto:
            self.max_block_tokens = DEFAULT_MAX_BLOCK_TOKENS
        algorithm_reward(self.algorithm, self.reward)  # a bad name or path fails here, not at the first step
        if self.log_rollout_groups < 0:
            raise ValueError(f"log_rollout_groups must be >= 0 (0 = off), got {self.log_rollout_groups}")
        if self.step_tokens not in STEP_TOKENS:
            raise ValueError(f"step_tokens must be one of {', '.join(STEP_TOKENS)}, got {self.step_tokens!r}")
        check_step_baseline(self.step_baseline, self.algorithm, self.reward)
        if self.outcome_groups not in OUTCOME_GROUPS:
            raise ValueError(f"outcome_groups must be one of {', '.join(OUTCOME_GROUPS)}, got {self.outcome_groups!r}")
        if self.outcome_groups == "outcome" and self.algorithm not in STEP_ALGORITHMS:
            raise ValueError(f"outcome_groups='outcome' needs a step algorithm ({', '.join(STEP_ALGORITHMS)}); "
                             f"{self.algorithm!r} already gives every group its outcome-style advantage")
        check_step_credit(self.step_credit, self.algorithm)
        if self.kl_tokens not in KL_TOKENS:
            raise ValueError(f"kl_tokens must be one of {', '.join(KL_TOKENS)}, got {self.kl_tokens!r}")
        no_blocks = self.beta == 0.0 or not self.constrained_rollouts or self.layout == "direct"
        if self.kl_tokens == "blocks" and no_blocks:
            raise ValueError(
                "kl_tokens='blocks' anchors the thinking blocks of constrained rollouts: it needs beta > 0, "
                f"constrained_rollouts=true and a reasoning layout (got beta={self.beta}, constrained_rollouts="
                f"{self.constrained_rollouts}, layout={self.layout!r})"
            )
        check_positive_weight(self.positive_weight)
        if self.adv_eps is not None and self.adv_eps <= 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")
        if self.algorithm in STEP_ALGORITHMS and self.step_length_norm and self.loss_type != "grpo":
            raise ValueError(
                f"algorithm={self.algorithm!r} with step_length_norm needs loss_type='grpo' (got {self.loss_type!r}): "
                "the per-step length normalisation is an exact advantage rescaling only under that loss. "
                "Note that TRL's loss_type='sapo' is a different method, not this project's SAPO."
            )
        if self.rollouts not in ROLLOUTS:
            raise ValueError(f"rollouts must be one of {', '.join(ROLLOUTS)}, got {self.rollouts!r}")
        if self.rollouts == "beam" and (not self.constrained_rollouts or self.use_vllm):
            raise ValueError(
                "rollouts='beam' runs genrec's constrained SID beam search on the transformers model: it needs "
                f"constrained_rollouts=true and use_vllm=false (got constrained_rollouts={self.constrained_rollouts}, "
                f"use_vllm={self.use_vllm})"
            )
        if self.block_decoding not in BLOCK_DECODING:
            raise ValueError(f"block_decoding must be one of {', '.join(BLOCK_DECODING)}, got {self.block_decoding!r}")
        if self.block_decoding == "greedy" and (not self.constrained_rollouts or self.rollouts != "sample"):
            raise ValueError(
                "block_decoding='greedy' is applied by the constrained sampler: it needs constrained_rollouts=true and "
                f"rollouts='sample' (got constrained_rollouts={self.constrained_rollouts}, rollouts={self.rollouts!r}; "
                "beam rollouts write their blocks greedily already)"
            )
        if self.constrained_rollouts and (
            self.top_k or self.top_p < 1.0 or self.min_p or (self.repetition_penalty or 1.0) != 1.0
        ):
            raise ValueError(
                "constrained rollouts need top_k=0, top_p=1.0, min_p unset and repetition_penalty=1.0: truncation is "
                "applied before the SID mask and can remove every allowed token, and truncation or a repetition "
                "penalty makes the sampled distribution differ from the masked log-probs used in training"
            )

    def resolve_block_budget(self, traces: str | Path | None, num_levels: int) -> str:
        """Set `max_block_tokens` from the traces' statistics when it was left at 0 (auto); returns what was chosen.

        With an auto budget, `max_completion_length` is raised when needed to hold the longest constrained response
        (K blocks at the budget, their tags, K SID tokens, EOS), so no rollout is cut before its EOS. An explicit
        budget is kept as given (the traces, if any, are still checked against the SID map).
        """
        if self.layout == "direct":
            return "direct layout: no thinking blocks"
        stats = traces_block_budget(traces, num_levels) if traces else None
        if not self.max_block_tokens_auto:
            return f"max_block_tokens {self.max_block_tokens} (explicit)"
        if stats is not None:
            self.max_block_tokens = stats[0]
            why = f"auto: largest per-level p95 of the traces' block lengths {stats[1]}"
        else:
            self.max_block_tokens = DEFAULT_MAX_BLOCK_TOKENS
            why = "auto without --traces: fixed default"
        msg = f"max_block_tokens {self.max_block_tokens} ({why})"
        longest = num_levels * (self.max_block_tokens + 3) + 1
        if self.max_completion_length is not None and self.max_completion_length < longest:
            msg += f"; max_completion_length raised from {self.max_completion_length} to {longest}"
            self.max_completion_length = longest
        return msg

    @property
    def is_step_algorithm(self) -> bool:
        return self.algorithm in STEP_ALGORITHMS
