"""`SAPOTrainer`: TRL's `GRPOTrainer` with step-aligned advantages, constrained rollouts and masked SID log-probs.

Four overrides, everything else is TRL's:
- `_generate_single_turn`: wraps the model's `generate` with the structure + prefix-trie logits processor (TRL has no
  hook for a transformers LogitsProcessor: GenerationConfig rejects it in `generation_kwargs`). With vLLM the
  constraint is a vLLM logits processor instead (rl/vllm_processor.py).
- `_generate_and_score_completions`: after TRL has generated and scored, parse each rollout into K steps, gather the
  parsed codes and targets across processes exactly as TRL gathers scalar rewards (a group of G rollouts can span
  processes), normalise per group (and per step), slice back this process's rows and replace `advantages` with a
  (B,) tensor (scalar algorithms) or a (B, T) per-token tensor (step algorithms).
- `_get_per_token_logps_and_entropies`: at SID positions, the log-prob under the distribution the sampler drew from
  (softmax restricted to the allowed trie children) instead of the full softmax, and 0 at tokens the grammar forced
  (`<think>`, EOS, `</think>` at the budget); used for the policy, old and reference log-probs alike.
- `_compute_loss`: TRL's; with `kl_tokens='blocks'` its KL term covers the thinking blocks' text only.

(B, T) advantages flow through TRL's loss unchanged: `_compute_loss` only unsqueezes 1-D advantages, and
`get_off_policy_mask` broadcasts `advantages >= 0` per token. The completions table keeps one scalar advantage per
rollout (the mean over steps) plus a `step_advantages` column. With `log_rollout_groups` > 0, every logging step
also appends that many prompt groups of the latest generation batch to `<output_dir>/rollouts.jsonl` (rl/rollout_log.py,
read by `genrec explore`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from trl import GRPOTrainer

from rl.advantages import (
    algorithm_advantages,
    algorithm_reward,
    algorithm_rewards,
    group_normalize,
    outcome_on_other_tokens,
    outcome_where_varied,
    token_advantages,
    zero_std_groups,
)
from rl.config import SAPOConfig
from rl.reward_funcs import (
    TARGET_COLUMN,
    RolloutParser,
    logged_reward_names,
    make_reward_funcs,
    reward_weights_for,
)
from rl.rewards import match_matrix, outcome_reward
from rl.rollout_log import ROLLOUT_FILE, ROLLOUT_FORMAT, append_records, clean_number, clean_numbers
from rl.sid_mask import exclude_text_from_correction, masked_logps
from sid_tokenizer.sidmap import SIDMap, sid_string

logger = logging.getLogger(__name__)


def _tokenizer_of(processing_class):
    return getattr(processing_class, "tokenizer", processing_class)


class SAPOTrainer(GRPOTrainer):
    """GRPOTrainer for SID responses; `args.algorithm` selects SAPO, the GRPO baselines or an ablation."""

    def __init__(
        self,
        model,
        args: SAPOConfig,
        sid_map: SIDMap,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_funcs=None,
        **kwargs: Any,
    ) -> None:
        from genrec.grammar import ResponseGrammar
        from genrec.response import ResponseSpec
        from genrec.trie import SIDTrie

        if not isinstance(args, SAPOConfig):
            raise TypeError(f"SAPOTrainer needs a SAPOConfig, got {type(args).__name__}")
        if processing_class is None:
            from transformers import AutoTokenizer

            name = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        tokenizer = _tokenizer_of(processing_class)
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            cols = getattr(ds, "column_names", None)
            if cols is not None and TARGET_COLUMN not in cols:
                raise ValueError(
                    f"{name} has columns {cols} but no '{TARGET_COLUMN}' (target SID codes per prompt); "
                    "build it with rl.data.build_rl_dataset"
                )
        self.sid_map = sid_map
        self.num_levels = sid_map.num_levels
        self.spec = ResponseSpec.from_tokenizer(tokenizer, sid_map, args.layout)
        if args.kl_tokens == "blocks" and not self.spec.has_blocks:
            raise ValueError(f"kl_tokens='blocks' needs thinking blocks; the {self.spec.layout!r} layout has none")
        self.parser = RolloutParser(self.spec)
        longest = self.spec.max_response_tokens(args.max_block_tokens)
        if args.constrained_rollouts and args.max_completion_length is not None and args.max_completion_length < longest:
            logger.warning(
                "max_completion_length=%d is below the longest constrained response (%d tokens with max_block_tokens=%d "
                "and K=%d): responses cut before their EOS fail the format gate (reward 0). Raise it to %d.",
                args.max_completion_length, longest, args.max_block_tokens, sid_map.num_levels, longest,
            )
        self._catalog = frozenset(sid_map.item_to_codes.values())
        self.reward = algorithm_reward(args.algorithm, args.reward)
        # TRL's reward arguments: with a scalar algorithm, user `reward_funcs` (and `reward_weights`,
        # `scale_rewards`) make the advantages exactly as in GRPOTrainer; a step algorithm needs the per-step reward
        # of the registry (SAPOConfig.reward), so there they are only logged.
        self._trl_advantages = reward_funcs is not None and not args.is_step_algorithm
        if self._trl_advantages and args.positive_weight != 1.0:
            raise ValueError(
                f"positive_weight={args.positive_weight} applies to genrec's own advantages; with user reward_funcs "
                f"and algorithm={args.algorithm!r} TRL computes them: leave positive_weight at 1"
            )
        if reward_funcs is None:
            names = logged_reward_names(self.reward.name)
            reward_funcs = make_reward_funcs(self.parser, names, valid_bonus=args.valid_bonus, catalog=self._catalog)
            if args.reward_weights is None:
                args.reward_weights = reward_weights_for(names, self.reward.name)
        elif args.is_step_algorithm:
            logger.warning(
                "reward_funcs are logged only: the step algorithm %r computes its advantages from the per-step "
                "reward %r (set SAPOConfig.reward to change it)", args.algorithm, self.reward.name,
            )
        self.grammar = ResponseGrammar(self.spec, SIDTrie.from_spec(sid_map, self.spec), args.max_block_tokens)
        with self._vllm_constraint(args, tokenizer):
            super().__init__(
                model=model,
                reward_funcs=reward_funcs,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                **kwargs,
            )
        self._rollout_sample: list[dict] | None = None  # groups of the latest train batch, written at the next log
        self._block_kl_inputs: dict | None = None  # kl_tokens='blocks': the loss batch whose reference is anchored
        policy = self.accelerator.unwrap_model(self.model)
        self._masked = bool(args.masked_logprobs and args.constrained_rollouts)
        if self._masked:
            text_config = policy.config.get_text_config()
            for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier"):
                if getattr(text_config, attr, None) not in (None, 1, 1.0):
                    raise ValueError(
                        f"masked_logprobs does not support models with {attr}={getattr(text_config, attr)!r}; "
                        "set masked_logprobs=false"
                    )

    # ------------------------------------------------------------------ rollouts

    @contextlib.contextmanager
    def _vllm_constraint(self, args: SAPOConfig, tokenizer):
        """While TRL builds its vLLM backend, make it the subclass that installs the SID logits processor."""
        if not (args.use_vllm and args.constrained_rollouts):
            yield
            return
        import trl.trainer.grpo_trainer as grpo_module

        from rl.vllm_processor import constrained_vllm_generation_class, write_constraint_file

        path = write_constraint_file(args.output_dir, self.sid_map, tokenizer, args.layout, args.max_block_tokens,
                                     greedy_text=args.block_decoding == "greedy")
        original = grpo_module.VLLMGeneration
        grpo_module.VLLMGeneration = constrained_vllm_generation_class(original, path)
        try:
            yield
        finally:
            grpo_module.VLLMGeneration = original

    def make_logits_processor(self):
        """A fresh structure + trie processor for one `generate` call (it tracks where the prompt ends)."""
        from genrec.constrained import SIDLogitsProcessor

        return SIDLogitsProcessor(self.spec, self.grammar.trie, self.grammar.max_block,
                                  greedy_text=self.args.block_decoding == "greedy")

    def _generate(self, prompts):
        out = super()._generate(prompts)
        if self.use_vllm and self._masked and self.vllm_importance_sampling_correction and out[4] is not None:
            out = list(out)
            out[4] = exclude_text_from_correction(self.grammar, out[1], out[4])  # see rl/sid_mask.py
            out = tuple(out)
        return out

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self.args.rollouts == "beam":
            return self._beam_rollouts(prompt_ids, num_generations), None
        if self.use_vllm or self.use_transformers_continuous_batching or not self.args.constrained_rollouts:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images=has_tool_images
            )
        from transformers import LogitsProcessorList

        unwrapped = self.accelerator.unwrap_model(self.model_wrapped)
        original = unwrapped.generate
        had_instance_attr = "generate" in vars(unwrapped)

        def constrained_generate(*a, **kw):
            processors = LogitsProcessorList(kw.pop("logits_processor", None) or [])
            processors.append(self.make_logits_processor())
            return original(*a, logits_processor=processors, **kw)

        unwrapped.generate = constrained_generate
        try:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images=has_tool_images
            )
        finally:
            if had_instance_attr:
                unwrapped.generate = original
            else:
                del unwrapped.generate

    def _beam_rollouts(self, prompt_ids: list[list[int]], num_generations: int) -> list[list[int]]:
        """The G best items of the evaluation's constrained beam search for each prompt, as completion token ids.

        TRL lays out each prompt's G copies next to each other in the global batch, which it splits across processes in
        order (a group can span processes): the row at global position p is rollout p % G of group p // G. The search
        runs once per group on this process with G beams, and each row takes its rank's item. Blocks are written
        greedily, as in the evaluation, so the group differs in the SID choices that the evaluation ranks.
        """
        from eval.beam import SIDBeamSearch
        from genrec.response import response_token_ids

        g = num_generations
        start = self.accelerator.process_index * len(prompt_ids)
        groups: dict[int, list[int]] = {}  # group -> its prompt, from the first row of it on this process
        for r, ids in enumerate(prompt_ids):
            first = groups.setdefault((start + r) // g, list(ids))
            if list(ids) != first:
                raise RuntimeError("beam rollouts need each prompt's num_generations copies side by side (TRL's "
                                   "RepeatSampler order); got a batch where they differ")
        order = list(groups)
        model = self.accelerator.unwrap_model(self.model_wrapped)
        if getattr(self, "_beam_search", None) is None or self._beam_search.model is not model:
            self._beam_search = SIDBeamSearch(model, _tokenizer_of(self.processing_class), self.sid_map,
                                              self.spec.layout, num_beams=g, max_block_tokens=self.grammar.max_block)
        was_training = model.training
        try:
            lists = dict(zip(order, self._beam_search.search([groups[q] for q in order], k=g)))
        finally:
            model.train(was_training)
        out = []
        for r in range(len(prompt_ids)):
            beams = lists[(start + r) // g]
            if not beams:
                raise RuntimeError("beam rollouts: the SID beam search returned no item for a prompt")
            beam = beams[min((start + r) % g, len(beams) - 1)]  # a catalog smaller than G repeats its last item
            out.append(response_token_ids(self.spec, beam.codes, beam.block_token_ids))
        return out

    # ------------------------------------------------------------------ advantages

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.apply_step_advantages(output, inputs)
        return output

    def apply_step_advantages(self, output: dict, inputs: list[dict]) -> None:
        """Replace `output["advantages"]` (TRL's, from the logged reward funcs) with this algorithm's advantages."""
        from genrec.response import step_index_tensor

        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        loss_mask = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]
        n_local, length = completion_ids.shape
        k = self.num_levels

        # Parse this process's rollouts (the completion is everything up to and including EOS).
        rows = [ids[m.bool()].tolist() for ids, m in zip(completion_ids.cpu(), completion_mask.cpu())]
        parsed = [self.parser(r) for r in rows]
        ok_local = torch.tensor([p.ok for p in parsed], dtype=torch.bool)
        codes_local = torch.full((n_local, k), -1, dtype=torch.long)
        block_len_local = torch.zeros(n_local, k, dtype=torch.float32)
        for i, p in enumerate(parsed):
            if p.ok:
                codes_local[i] = torch.tensor([int(c) for c in p.codes])
                for step in p.steps:
                    block_len_local[i, step.level] = float(step.block_end - step.block_start)
        try:
            targets_local = torch.tensor([list(x[TARGET_COLUMN]) for x in inputs], dtype=torch.long)
        except KeyError:
            raise ValueError(f"training rows need a '{TARGET_COLUMN}' column (target SID codes)") from None
        if targets_local.shape != (n_local, k):
            raise ValueError(
                f"'{TARGET_COLUMN}' must hold {k} codes per row (the SID map has {k} levels); got shape "
                f"{tuple(targets_local.shape)}"
            )

        # Gather exactly like TRL's scalar rewards: rows in process order, groups of G consecutive rows.
        all_codes_t = gather(codes_local.to(device)).cpu()
        all_targets_t = gather(targets_local.to(device)).cpu()
        all_ok = gather(ok_local.to(device)).cpu()
        all_block_len = gather(block_len_local.to(device)).cpu()
        all_codes = [tuple(row) if ok else None for row, ok in zip(all_codes_t.tolist(), all_ok.tolist())]
        all_targets = [tuple(t) for t in all_targets_t.tolist()]

        rewards = algorithm_rewards(
            self.args.algorithm, all_codes, all_targets, reward=self.reward, valid_bonus=self.args.valid_bonus,
            is_valid=self._catalog.__contains__,
        )
        advantages = algorithm_advantages(
            self.args.algorithm, rewards, num_generations, eps=self.args.adv_eps, reward=self.reward,
            step_baseline=self.args.step_baseline, codes=all_codes, positive_weight=self.args.positive_weight,
            step_credit=self.args.step_credit,
        )
        if self._trl_advantages:  # TRL's advantages from the user's reward_funcs stay
            self._log_step_metrics(mode, all_codes, all_targets, all_ok, all_block_len, rewards, None, num_generations)
            if mode == "train" and self.args.log_rollout_groups > 0:
                used = gather(output["advantages"].detach()).cpu()  # TRL's, all processes
                self._keep_rollout_sample(inputs, rows, parsed, all_codes, all_targets, rewards, used, num_generations)
            return
        process_slice = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        local_adv = advantages[process_slice].to(device)

        if self.args.is_step_algorithm:
            step_index = step_index_tensor(parsed, length, device=device, blocks=self.args.step_tokens == "step")
            output["advantages"] = token_advantages(
                local_adv, step_index, loss_mask, ok_local.to(device), step_length_norm=self.args.step_length_norm
            )
            if self.args.step_tokens == "sid+outcome" or self.args.outcome_groups == "outcome":
                exact = algorithm_rewards("grpo", all_codes, all_targets)  # the outcome both options add
            if self.args.step_tokens == "sid+outcome":
                outcome = algorithm_advantages("grpo", exact, num_generations, eps=self.args.adv_eps)[process_slice]
                output["advantages"] = outcome_on_other_tokens(
                    output["advantages"], step_index, loss_mask, ok_local.to(device), outcome.to(device))
            if self.args.outcome_groups == "outcome":
                output["advantages"] = outcome_where_varied(
                    output["advantages"], exact, num_generations, loss_mask, eps=self.args.adv_eps, rows=process_slice)
        else:
            output["advantages"] = local_adv

        self._log_step_metrics(mode, all_codes, all_targets, all_ok, all_block_len, rewards, advantages, num_generations)
        if mode == "train" and self.args.log_rollout_groups > 0:
            self._keep_rollout_sample(inputs, rows, parsed, all_codes, all_targets, rewards, advantages, num_generations)

    # ------------------------------------------------------------------ rollout log (genrec explore)

    def _keep_rollout_sample(self, inputs, rows, parsed, all_codes, all_targets, rewards, advantages, g) -> None:
        """Keep the first `log_rollout_groups` groups of this batch for the next log (collective: every process calls
        it; each sends the text of its rows in those groups, the main process assembles the records)."""
        n_groups = min(self.args.log_rollout_groups, len(all_codes) // g)
        n_local = len(rows)
        start = self.accelerator.process_index * n_local
        tokenizer = _tokenizer_of(self.processing_class)
        local = []
        for i in range(max(0, min(n_local, n_groups * g - start))):
            ids = rows[i]
            blocks = [tokenizer.decode(ids[s.block_start + 1 : s.block_end - 1]) for s in parsed[i].steps
                      if s.block_end - s.block_start >= 2]
            x = inputs[i]
            prompt = x.get("prompt")
            local.append({"completion": tokenizer.decode(ids), "blocks": blocks,
                          "prompt": prompt if isinstance(prompt, str) else str(prompt),
                          "user_id": x.get("user_id"), "target": x.get("target")})
        texts = gather_object(local)
        if not self.accelerator.is_main_process or n_groups == 0:
            return
        k = self.num_levels
        n = n_groups * g
        outcome = torch.tensor([outcome_reward(c, t) for c, t in zip(all_codes[:n], all_targets[:n])])
        outcome_adv = group_normalize(outcome, g, eps=self.args.adv_eps, denominator="add")
        matches = match_matrix(all_codes[:n], all_targets[:n])
        adv = advantages[:n].float()
        step_adv = adv if adv.dim() == 2 else adv.view(-1, 1).expand(n, k)
        groups = []
        for j in range(n_groups):
            head = texts[j * g]
            group = {"format": ROLLOUT_FORMAT, "group": j, "user_id": head["user_id"], "prompt": head["prompt"],
                     "target": head["target"], "target_sid": sid_string(all_targets[j * g]),
                     "algorithm": self.args.algorithm, "num_generations": g, "rollouts": []}
            for i in range(j * g, (j + 1) * g):
                codes = all_codes[i]
                reward = rewards[i]
                group["rollouts"].append({
                    "completion": texts[i]["completion"],
                    "sid": sid_string(codes) if codes is not None else None,
                    "item_id": self.sid_map.item_for_codes(codes) if codes is not None else None,
                    "blocks": texts[i]["blocks"],
                    "step_rewards": clean_numbers(matches[i].tolist()),
                    "step_advantages": clean_numbers(step_adv[i].tolist()),
                    "reward": clean_numbers(reward.tolist()) if reward.dim() else clean_number(reward),
                    "outcome_reward": clean_number(outcome[i]),
                    "outcome_advantage": clean_number(outcome_adv[i]),
                })
            groups.append(group)
        self._rollout_sample = groups

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        super().log(logs, start_time)
        sample, self._rollout_sample = self._rollout_sample, None
        if sample and self.accelerator.is_main_process:
            step = self.state.global_step
            append_records(Path(self.args.output_dir) / ROLLOUT_FILE, ({"format": r["format"], "step": step, **r}
                                                                       for r in sample))

    def _log_step_metrics(self, mode, all_codes, all_targets, all_ok, all_block_len, rewards, advantages, g) -> None:
        metrics = self._metrics[mode]
        matches = match_matrix(all_codes, all_targets)
        outcome = torch.tensor([outcome_reward(c, t) for c, t in zip(all_codes, all_targets)])
        for level in range(self.num_levels):
            metrics[f"sid/match_rate/level_{level}"].append(matches[:, level].mean().item())
        metrics["sid/exact_match_rate"].append(outcome.mean().item())
        metrics["sid/malformed_rate"].append(1.0 - all_ok.float().mean().item())
        metrics["sid/malformed_count"].append(float((~all_ok).sum().item()))
        zero_steps = zero_std_groups(matches, g)  # (groups, K)
        for level in range(self.num_levels):
            metrics[f"sid/frac_zero_adv_groups/step_{level}"].append(zero_steps[:, level].float().mean().item())
        metrics["sid/frac_zero_adv_groups/all_steps"].append(zero_steps.all(dim=1).float().mean().item())
        metrics["sid/frac_zero_adv_groups/outcome"].append(zero_std_groups(outcome, g).float().mean().item())
        zero_alg = zero_std_groups(rewards, g)
        zero_alg = zero_alg.all(dim=1) if zero_alg.dim() == 2 else zero_alg
        metrics["sid/frac_zero_adv_groups/algorithm"].append(zero_alg.float().mean().item())
        if all_ok.any():
            for level in range(self.num_levels):
                metrics[f"sid/block_length/level_{level}"].append(all_block_len[all_ok, level].mean().item())
        if advantages is None:  # TRL's own advantages (user reward_funcs): its table and metrics stay
            return
        metrics["sid/advantage/mean_abs"].append(advantages.abs().mean().item())
        metrics["sid/advantage/std"].append(advantages.std().item() if advantages.numel() > 1 else 0.0)
        metrics["sid/advantage/min"].append(advantages.min().item())
        metrics["sid/advantage/max"].append(advantages.max().item())

        # Completions table: one scalar per rollout (mean over steps for step algorithms) + per-step values.
        n = advantages.shape[0]
        per_rollout = advantages.mean(dim=1) if advantages.dim() == 2 else advantages
        logged = self._logs["advantages"]
        for _ in range(min(n, len(logged))):
            logged.pop()
        logged.extend(per_rollout.tolist())
        if advantages.dim() == 2:
            self._logs["extra"]["step_advantages"].extend([[round(v, 4) for v in row] for row in advantages.tolist()])
        self._logs["extra"]["sid"].extend([sid_string(c) if c is not None else "" for c in all_codes])
        self._logs["extra"]["target_sid"].extend([sid_string(t) for t in all_targets])

    # ------------------------------------------------------------------ KL on the thinking blocks only

    def _compute_loss(self, model, inputs):
        """TRL's loss; with kl_tokens='blocks' its KL term counts the thinking blocks' text tokens only.

        TRL adds beta * k3(ref - logp) on every completion token. Here the reference is set equal to this forward's
        (detached) policy log-prob at every other token once that log-prob is known, so k3 = e^0 - 0 - 1 = 0 there
        and so is its gradient: TRL's own term then anchors the blocks and leaves the SID tokens free."""
        if self.beta == 0.0 or self.args.kl_tokens == "all":
            return super()._compute_loss(model, inputs)
        inputs = dict(inputs)  # the reference is replaced in this copy only
        self._block_kl_inputs = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._block_kl_inputs = None

    def _anchor_blocks_only(self, logps: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor):
        """During `_compute_loss` (kl_tokens='blocks'): reference := policy outside the blocks' text (used once)."""
        inputs, self._block_kl_inputs = self._block_kl_inputs, None
        text = self.grammar.positions(completion_ids, completion_mask).text.to(logps.device)
        inputs["ref_per_token_logps"] = torch.where(text, inputs["ref_per_token_logps"], logps.detach())

    # ------------------------------------------------------------------ masked log-probs

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = self._policy_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        if self._block_kl_inputs is not None:
            self._anchor_blocks_only(out[0], input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:])
        return out

    def _policy_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if not self._masked:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        completion_ids = input_ids[:, -logits_to_keep:]
        completion_mask = attention_mask[:, -logits_to_keep:]
        positions = self.grammar.positions(completion_ids, completion_mask)
        forced = positions.forced
        row_t, col_t, nodes = positions.sid()
        if row_t.numel() == 0:
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
            return logps.masked_fill(forced, 0.0), entropies, aux
        target = self.accelerator.unwrap_model(model)
        if hasattr(target, "get_base_model"):  # PEFT
            target = target.get_base_model()
        captured: list[torch.Tensor] = []

        def keep_hidden(_module, _args, out):
            captured.append(out[0] if isinstance(out, tuple) else out.last_hidden_state)

        handle = target.base_model.register_forward_hook(keep_hidden)
        try:
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        finally:
            handle.remove()
        hidden = torch.cat(captured, dim=0)  # (B, S, H), chunks in order
        if hidden.shape[0] != input_ids.shape[0]:
            raise RuntimeError(f"captured {hidden.shape[0]} hidden-state rows for a batch of {input_ids.shape[0]}")
        row_t, col_t = row_t.to(hidden.device), col_t.to(hidden.device)
        # Completion token c sits at input position S - logits_to_keep + c and is predicted from the position before.
        positions = input_ids.shape[1] - logits_to_keep + col_t - 1
        head = target.get_output_embeddings()
        logits = head(hidden[row_t, positions].to(head.weight.dtype)) / self.temperature
        masked = masked_logps(self.grammar.trie, logits, completion_ids[row_t, col_t], nodes)
        logps = logps.index_put((row_t, col_t), masked.to(logps.dtype))
        # Forced structural tokens: probability 1 under the sampling distribution, so log-prob 0 and no gradient.
        return logps.masked_fill(forced, 0.0), entropies, aux
