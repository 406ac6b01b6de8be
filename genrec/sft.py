"""Stage-1 (alignment) and stage-2 (reasoning) supervised fine-tuning through TRL's SFTTrainer.

Stage 1 teaches the SID vocabulary: item text -> SID, SID -> item text, history SIDs -> next SID
(no reasoning, `direct` layout). Stage 2 teaches the response format: history -> K reasoning blocks
interleaved with SID tokens, from the trace dataset. Both use prompt/completion data, so TRL computes
the loss on completion tokens only and appends EOS.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets
from transformers.trainer_pt_utils import BatchRebalanceSampler
from trl import SFTConfig, SFTTrainer

from genrec import stage_output
from genrec.data.schema import Catalog, Example
from genrec.data.sequences import reconstruct_sequences, sequence_windows
from genrec.distill import load_distiller
from genrec.parallel import launched_by_torchrun_on_cpu
from genrec.modeling import (accepts_logits_to_keep, check_model_tokens, cpu_native_bf16, first_loss_position,
                             load_model_and_tokenizer, load_tokenizer, weights_dtype)
from genrec.prompts import (
    PROMPT_CONFIG_FILE,
    PromptConfig,
    build_prompt,
    history_answers,
    item_text,
    item_to_sid_prompt,
    next_item_cue,
    prompt_head,
    reasons_in_history,
    sid_to_item_prompt,
    wrap_prompt,
)
from genrec.response import DIRECT, render_response
from genrec.wording import AUTO, DEFAULT_NOUN
from sid_tokenizer.sidmap import SIDMap

log = logging.getLogger(__name__)
STAGE1_TASKS = ("item2sid", "sid2item", "history2sid", "sequence")
# Tasks whose rows are pre-tokenized (input_ids + completion_mask) because the loss is not one contiguous completion.
TOKENIZED_TASKS = ("sequence",)
STAGE2_TASKS = ("traces", "sequence")


@dataclass
class GenrecSFTConfig(SFTConfig):
    """TRL's SFTConfig with defaults for this project: bf16 only where the GPU supports it, no gradient
    checkpointing (slow for small models), TensorBoard logging, a couple of checkpoints kept. Each step's rows are
    drawn at random; configs/sft_stage{1,2}.yaml split them into length-balanced micro-batches (`batch_rebalance`
    with gradient accumulation: the same gradient, less padding). Length-grouped steps (`group_by_length`) train stage
    1 1.5x faster per step but scored 0.171 against 0.202 on amazon (BENCHMARKS.md, session 9)."""

    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 mixed precision (on a GPU: bf16 weights; on CPU: autocast over fp32 weights). Default: on with a "
                "bf16-capable GPU; on CPU only with --cpu_bf16 true and a CPU with native bf16."})
    cpu_bf16: bool = field(default=False, metadata={
        "help": "When --bf16 is not given and no GPU is used: bf16 autocast (fp32 weights) if the CPU has native bf16 "
                "(AVX512-BF16 or AMX), fp32 otherwise. Demo stage 2: 1.1-1.2x faster per step, NDCG@10 -0.001 [-0.007, "
                "+0.005] (2 seeds), but peak memory 1.2 -> 3.5 GB; stage 1: -0.010 [-0.024, +0.003] "
                "(docs/bench/learning.md, session 19)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Off by default (small models)."})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "Logging integrations."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept in output_dir."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})

    def __post_init__(self) -> None:
        if self.bf16 is None:
            if torch.cuda.is_available():
                self.bf16 = bool(torch.cuda.is_bf16_supported()) and not self.fp16
            else:
                self.bf16 = self.cpu_bf16 and cpu_native_bf16() and not self.fp16
        if self.bf16 and not torch.cuda.is_available():
            self.use_cpu = True  # CPU autocast: transformers accepts bf16 without a GPU only with use_cpu
        if launched_by_torchrun_on_cpu():
            self.use_cpu = True  # else each torchrun process trains alone (genrec/parallel.py)
        super().__post_init__()


@dataclass
class SFTStageConfig:
    """genrec flags of `genrec sft` (TRL's training flags live in GenrecSFTConfig)."""

    stage: int = field(default=2, metadata={"help": "1: alignment (text<->SID, history->SID); 2: reasoning traces.",
                                            "choices": [1, 2]})
    model: str = field(default="", metadata={"help": "Model folder (build-model output, or stage-1 output/final)."})
    sid_map: str = field(default="", metadata={"help": "Tokenizer folder with sid_map.json (or the file)."})
    data: str = field(default="", metadata={"help": "Data folder (stage 1; stage 2: for replay_tasks)."})
    traces: str = field(default="", metadata={"help": "Trace folder from `genrec traces` (stage 2)."})
    stage1_tasks: str = field(default="sequence",
                              metadata={"help": f"Comma-separated stage-1 tasks from {STAGE1_TASKS}. 'sequence': each "
                                                "user's history written out line by line with the loss on every "
                                                "target item's SID tokens (one row trains many targets); "
                                                "'history2sid': one row per (history, target)."})
    replay_tasks: str = field(default="sequence", metadata={
        "help": "Stage 2: stage-1 tasks whose rows (built from --data) are mixed into the trace rows, so the model keeps "
                "its no-reasoning skill while it learns to reason ('' = traces only; ignored without --data)."})
    stage2_tasks: str = field(default="traces", metadata={
        "help": "Stage 2 rows: 'traces' (one row per trace: prompt -> reasoning + SID), 'sequence' (every line of a "
                "user's history with its reasoning, one pass per window; needs traces built with --history_reasoning "
                "and --data), or both, comma-separated."})
    sid_loss_weight: float = field(default=1.0, metadata={
        "help": "Loss weight of SID-token targets relative to the other completion tokens (1 = plain token-mean "
                "cross-entropy). A reasoning row has ~10x more block tokens than SID tokens, so the SID decision gets "
                "a small share of the gradient; > 1 shifts it towards the SIDs (sid_weighted_loss)."})
    loss_impl: str = field(default="auto", metadata={
        "help": "How the loss reaches the logits: 'fused' = TRL's chunked LM head (never builds the full logits: "
                "saves memory with large vocabularies), 'full' = the model's logits and one cross-entropy (a fifth faster "
                "per step for the tiny model on CPU, same loss), 'auto' = fused on a GPU, full on CPU.",
        "choices": ["auto", "fused", "full"]})
    distill_weight: float = field(default=0.0, metadata={
        "help": "Stage 2: share of the stage-1 model's distribution in each SID token's target, (1 - w) * one-hot + "
                "w * p_teacher, where the teacher reads the same row without its thinking blocks (genrec/distill.py). "
                "Keeps stage 1's ranking of codes while stage 2 learns to reason (0 = off)."})
    distill_model: str = field(default="", metadata={
        "help": "Teacher of --distill_weight (default: --model, the stage-1 model stage 2 starts from)."})
    distill_cache_mb: int = field(default=512, metadata={
        "help": "Memory for the --distill_weight teacher's targets, kept after a row's first teacher pass (float16, "
                "2 bytes x vocabulary per SID target): later epochs and a trace row's replayed stage-1 row need no "
                "teacher pass (demo stage 2: the teacher was 19%% of a step). Rows beyond it are recomputed (0 = off)."})
    sasrec_distill_weight: float = field(default=0.0, metadata={
        "help": "Stage 1: share of a SASRec teacher's distribution in each SID token's target, (1 - w) * one-hot + "
                "w * q, where q is SASRec's next-item distribution after the row's earlier lines, summed over the "
                "items under the line's true coarser codes and grouped by this level's code "
                "(genrec/collab_distill.py). SASRec is trained on the train split first, as the evaluation trains it "
                "(0 = off)."})
    sasrec_distill_folds: int = field(default=1, metadata={
        "help": "Cross-fitted SASRec teachers: with k > 1, k teachers, each trained on the users outside one fold and "
                "teaching that fold's rows, so a row's soft target is SASRec's prediction for an unseen user "
                "(1 = one teacher trained on every training user)."})
    sasrec_distill_temperature: float = field(default=1.0, metadata={
        "help": "Softmax temperature of the SASRec teacher's scores (> 1 flattens its distribution)."})
    dropout: float = field(default=0.0, metadata={
        "help": "Training-time dropout on the token embeddings and on each attention and MLP output before it joins "
                "the residual stream (GPT-2's embd/resid dropout; Llama has none). Only during this training: the "
                "saved model is unchanged (0 = off)."})
    max_train_examples: int = field(default=0, metadata={"help": "Cap on training rows (0 = all)."})
    max_steps_cap: int = field(default=0, metadata={
        "help": "Upper bound on optimizer steps when training by epochs (--max_steps <= 0): a larger epoch budget is "
                "cut to this many steps and the learning-rate schedule spans the cut budget (0 = no cap). A CPU time "
                "budget that does not grow with the number of users. When it reaches fewer `sequence` rows than the "
                "data has, only a seeded sample of that many is built (row_budget)."})
    eval_valid: bool = field(default=True, metadata={"help": "Compute eval loss on the valid split when present."})
    max_eval_examples: int = field(default=256, metadata={"help": "Cap on eval rows (0 = all)."})
    resume: bool = field(default=False, metadata={"help": "Resume from the latest checkpoint in output_dir."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) plus the embedding matrix; "
                                                            "merged into <output_dir>/final."})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = field(default="all-linear", metadata={"help": "peft target_modules."})

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"--stage must be 1 or 2, got {self.stage}")
        bad = [t for t in self.tasks() if t not in STAGE1_TASKS]
        if bad:
            raise ValueError(f"unknown stage1_tasks {bad}; expected some of {STAGE1_TASKS}")

        bad = [t for t in self.replay() if t not in STAGE1_TASKS]
        if bad:
            raise ValueError(f"unknown replay_tasks {bad}; expected some of {STAGE1_TASKS}")
        if self.max_steps_cap < 0:
            raise ValueError(f"--max_steps_cap must be >= 0 (0 = no cap), got {self.max_steps_cap}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"--distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.distill_weight > 0 and self.stage != 2:
            raise ValueError("--distill_weight applies to stage 2 (the teacher is the stage-1 model it starts from)")
        if self.distill_cache_mb < 0:
            raise ValueError(f"--distill_cache_mb must be >= 0, got {self.distill_cache_mb}")
        if not 0.0 <= self.sasrec_distill_weight <= 1.0:
            raise ValueError(f"--sasrec_distill_weight must be in [0, 1], got {self.sasrec_distill_weight}")
        if self.sasrec_distill_weight > 0 and self.stage != 1:
            raise ValueError("--sasrec_distill_weight applies to stage 1 (stage 2 distils from the stage-1 model: "
                             "--distill_weight)")
        if self.sasrec_distill_folds < 1:
            raise ValueError(f"--sasrec_distill_folds must be >= 1, got {self.sasrec_distill_folds}")
        if self.sasrec_distill_folds > 1 and self.sasrec_distill_weight == 0:
            raise ValueError("--sasrec_distill_folds applies with --sasrec_distill_weight > 0")
        if not self.sasrec_distill_temperature > 0:
            raise ValueError(f"--sasrec_distill_temperature must be > 0, got {self.sasrec_distill_temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.sid_loss_weight > 0:
            raise ValueError(f"--sid_loss_weight must be > 0, got {self.sid_loss_weight}")
        if self.loss_impl not in ("auto", "fused", "full"):
            raise ValueError(f"--loss_impl must be auto, fused or full, got {self.loss_impl!r}")
        if not self.stage2() or any(t not in STAGE2_TASKS for t in self.stage2()):
            raise ValueError(f"stage2_tasks must be some of {STAGE2_TASKS}, got {self.stage2_tasks!r}")

    def tasks(self) -> list[str]:
        return [t.strip() for t in self.stage1_tasks.split(",") if t.strip()]

    def replay(self) -> list[str]:
        return [t.strip() for t in self.replay_tasks.split(",") if t.strip()]

    def stage2(self) -> list[str]:
        return [t.strip() for t in self.stage2_tasks.split(",") if t.strip()]


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------


def direct_completion(sid_map: SIDMap, item_id: str) -> str:
    return render_response(None, sid_map.tokens(item_id), DIRECT)


def stage1_rows(
    catalog: Catalog,
    sid_map: SIDMap,
    examples: list[Example],
    tokenizer,
    prompt_cfg: PromptConfig,
    tasks: list[str] | tuple[str, ...] = STAGE1_TASKS,
) -> dict[str, list]:
    """Alignment rows. Text completions start with a space (TRL joins prompt and completion with none)."""
    rows: dict[str, list] = {"prompt": [], "completion": [], "task": []}
    items = [i for i in catalog.item_ids if i in sid_map]

    def add(prompt: str, completion: str, task: str) -> None:
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
        rows["task"].append(task)

    chat = prompt_cfg.use_chat_template
    # With a chat template the alignment question is the user turn and the answer follows the assistant
    # opener (no leading space needed); plain prompts end with a cue word, so text answers start with a space.
    noun = prompt_cfg.noun(catalog)
    wrap = (lambda body: wrap_prompt(body, tokenizer, prompt_cfg, noun)) if chat else (lambda body: body)
    space = "" if chat else " "
    if "item2sid" in tasks:
        for item in items:
            add(wrap(item_to_sid_prompt(item, catalog, prompt_cfg)), direct_completion(sid_map, item), "item2sid")
    if "sid2item" in tasks:
        for item in items:
            add(wrap(sid_to_item_prompt(item, sid_map, noun)), space + item_text(item, catalog, prompt_cfg), "sid2item")
    if "history2sid" in tasks:
        direct_cfg = replace(prompt_cfg, reasoning=False)
        for ex in examples:
            if ex.target in sid_map:
                add(build_prompt(ex, catalog, sid_map, tokenizer, direct_cfg), direct_completion(sid_map, ex.target),
                    "history2sid")
    return rows


def sequence_rows(
    catalog: Catalog,
    sid_map: SIDMap,
    examples: list[Example],
    tokenizer,
    prompt_cfg: PromptConfig,
    reasoning: bool = False,
    keep: int = 0,
    seed: int = 0,
) -> dict[str, list]:
    """`sequence` rows: a user's items written as the lines of a plain prompt, with the loss on the answer of every
    target item (its SID tokens; with `reasoning`, its thinking blocks and SID tokens, see
    PromptConfig.history_reasoning).

    The text up to item j's answer is exactly `build_prompt` of the example (history = the window's earlier items),
    so one forward pass trains every position as the model is asked at inference. Tokenized here (input_ids and
    completion_mask) because the loss spans are not one completion; TRL turns the mask into labels. `user`: whose
    sequence each row is (not a training column). `keep` > 0: only a seeded random sample of that many windows is
    built (`seed`), in their order, for a step budget that reaches no more rows (`row_budget`).
    """
    if prompt_cfg.use_chat_template:
        raise ValueError("stage-1 task 'sequence' needs plain prompts (use_chat_template=false); "
                         "use 'history2sid' with a chat template")
    cfg = replace(prompt_cfg, reasoning=reasoning)
    if cfg.history_format == "text" and not reasons_in_history(cfg):
        raise ValueError("the 'sequence' task trains on the SID tokens of each history line, but history_format "
                         "'text' writes no SID tokens there (no token would carry loss): use history_format 'sid' "
                         "or 'both', or the 'history2sid' task")
    if reasoning and not reasons_in_history(cfg):
        raise ValueError("stage-2 'sequence' rows need prompts whose history lines carry the reasoning: build the "
                         "traces with --history_reasoning evidence (or pointer)")
    rows: dict[str, list] = {"input_ids": [], "completion_mask": [], "task": [], "user": []}
    windows = sequence_window_list(examples, sid_map, cfg)
    if 0 < keep < len(windows):  # a seeded sample, in the windows' order: only the rows a step budget reaches
        log.info("building a seeded sample of %d of the %d sequence rows", keep, len(windows))
        windows = [windows[i] for i in sorted(random.Random(seed).sample(range(len(windows)), keep))]
    for user, profile, items, window in windows:
        append_window_row(items, window, user, profile, catalog, sid_map, tokenizer, cfg, rows)
    return rows


def sequence_window_list(examples: list[Example], sid_map: SIDMap, cfg: PromptConfig) -> list[tuple]:
    """Every `sequence` row as (user, profile, items, window) before any text is built: cheap, so a caller can count
    the rows or sample them before tokenizing (`sequence_rows` keep)."""
    by_user: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.target in sid_map:
            by_user.setdefault(ex.user_id, []).append(ex)
    out = []
    for user, user_examples in by_user.items():
        profile = user_examples[0].profile.strip() if cfg.include_profile else ""
        for items, first_target in reconstruct_sequences(user_examples):
            for item in items:
                if item not in sid_map:
                    raise ValueError(f"user {user!r}: history item {item!r} has no SID in the SID map")
            # Windows of at most prompt_max_history + 1 lines; the loss is on targets lo..hi (each trained once).
            windows = sequence_windows(len(items), first_target, cfg.prompt_max_history)
            out += [(user, profile, items, w) for w in windows]
    return out


def append_window_row(items, window: tuple[int, int, int], user: str, profile: str, catalog: Catalog,
                      sid_map: SIDMap, tokenizer, cfg: PromptConfig, rows: dict[str, list]) -> None:
    """Append the tokenized row of one window (offset, lo, hi) of a sequence (see `sequence_rows`) to `rows`."""
    offset, lo, hi = window
    start = max(offset, 0)
    text, spans = prompt_head(profile, cfg, cfg.noun(catalog)), []
    for pos, (j, (answer, item_text_)) in enumerate(
            zip(range(start, hi + 1), history_answers(items[start:hi + 1], catalog, sid_map, cfg)), 1):
        cue = next_item_cue(pos)
        if j >= lo:
            spans.append((len(text) + len(cue), len(text) + len(cue) + len(answer)))
        text += cue + " ".join(p for p in (answer, item_text_) if p) + "\n"
    enc = tokenizer(text, return_offsets_mapping=True)
    mask = [int(e > s and any(a <= s and e <= b for a, b in spans)) for s, e in enc["offset_mapping"]]
    rows["input_ids"].append(enc["input_ids"])
    rows["completion_mask"].append(mask)
    rows["user"].append(user)
    rows["task"].append("sequence")


def tokenize_prompt_completion(rows: dict[str, list], tokenizer) -> dict[str, list]:
    """Prompt/completion rows as TRL tokenizes them (prompt + completion, EOS appended, loss on the completion), so
    they can share one dataset with pre-tokenized rows."""
    out: dict[str, list] = {"input_ids": [], "completion_mask": [], "task": []}
    for prompt, completion, task in zip(rows["prompt"], rows["completion"], rows["task"]):
        n_prompt = len(tokenizer(prompt)["input_ids"])
        ids = tokenizer(prompt + completion)["input_ids"] + [tokenizer.eos_token_id]
        out["input_ids"].append(ids)
        out["completion_mask"].append([0] * n_prompt + [1] * (len(ids) - n_prompt))
        out["task"].append(task)
    return out


TOKENIZED_COLUMNS = ("input_ids", "completion_mask", "task")


def tokenized_dataset(rows: dict[str, list], tokenizer, chunk: int = 20_000) -> Dataset:
    """`tokenize_prompt_completion` as a Dataset, built `chunk` rows at a time (same rows, same order).

    Why: Python lists of token ids take about nine times the memory of the Arrow columns they become; stage 2
    tokenized all 92,764 traces of a 100k-interaction set into lists at once and peaked at 3.0 GB (stage 1: 0.8)."""
    n = len(rows["prompt"])
    parts = [Dataset.from_dict(tokenize_prompt_completion({k: v[i:i + chunk] for k, v in rows.items()}, tokenizer))
             for i in range(0, n, chunk)] or [Dataset.from_dict(tokenize_prompt_completion(rows, tokenizer))]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def stage1_tokenized_rows(
    catalog: Catalog,
    sid_map: SIDMap,
    examples: list[Example],
    tokenizer,
    prompt_cfg: PromptConfig,
    tasks: list[str] | tuple[str, ...],
    keep: int = 0,
    seed: int = 0,
) -> dict[str, list]:
    """Every row of `tasks` tokenized (input_ids, completion_mask, task), so tokenized tasks and prompt/completion
    tasks share one dataset (stage 1 with `sequence`, and the rows stage 2 replays). `keep` samples the `sequence`
    rows when that is the only task (see `sequence_rows`)."""
    rows = stage1_rows(catalog, sid_map, examples, tokenizer, prompt_cfg, [t for t in tasks if t not in TOKENIZED_TASKS])
    tokenized = tokenize_prompt_completion(rows, tokenizer)
    if "sequence" in tasks:
        seq = sequence_rows(catalog, sid_map, examples, tokenizer, prompt_cfg, keep=keep if list(tasks) == ["sequence"]
                            else 0, seed=seed)
        for key in tokenized:
            tokenized[key] += seq[key]
    return tokenized


def stage1_dataset(
    catalog: Catalog,
    sid_map: SIDMap,
    examples: list[Example],
    tokenizer,
    prompt_cfg: PromptConfig,
    tasks: list[str] | tuple[str, ...],
    keep: int = 0,
    seed: int = 0,
) -> Dataset:
    """The stage-1 training set: prompt/completion rows (TRL tokenizes them), or every row tokenized here when a
    tokenized task is among `tasks` (`keep`, `seed`: see `stage1_tokenized_rows`)."""
    if any(t in TOKENIZED_TASKS for t in tasks):
        return Dataset.from_dict(stage1_tokenized_rows(catalog, sid_map, examples, tokenizer, prompt_cfg, tasks,
                                                       keep=keep, seed=seed))
    return Dataset.from_dict(stage1_rows(catalog, sid_map, examples, tokenizer, prompt_cfg, tasks))


def _shuffle_cap(ds: Dataset, cap: int, seed: int) -> Dataset:
    ds = ds.shuffle(seed=seed)
    return ds.select(range(min(cap, len(ds)))) if cap else ds


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def apply_lora(model, stage: SFTStageConfig):
    """Wrap `model` with LoRA adapters and keep the (tied) embedding matrix trainable.

    The SID/think rows are new, so the embeddings must train. peft's `trainable_token_indices` would wrap
    the LM head, which TRL's fused LM head (it reads `lm_head.weight` directly) does not support, so the
    whole embedding matrix (and an untied output matrix) is trained instead.
    """
    from peft import LoraConfig, get_peft_model

    targets = stage.lora_target_modules
    cfg = LoraConfig(
        r=stage.lora_r, lora_alpha=stage.lora_alpha, lora_dropout=stage.lora_dropout, task_type="CAUSAL_LM",
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
    )
    model = get_peft_model(model, cfg)
    for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
        if emb is not None:
            emb.weight.requires_grad_(True)
    return model


def add_training_dropout(model, p: float) -> list:
    """Dropout, active only in train mode, on the embedding output and on every attention/MLP output projection
    (the sublayer output before the residual add, as GPT-2's embd_pdrop/resid_pdrop). Forward hooks, so the model's
    class and saved weights stay a plain transformers model. Returns the hook handles."""
    def hook(module, inputs, output):
        return torch.nn.functional.dropout(output, p, training=True) if module.training else output

    suffixes = ("self_attn.o_proj", "mlp.down_proj")
    projections = [(name, m) for name, m in model.named_modules() if name.endswith(suffixes)]
    missing = [s for s in suffixes if not any(name.endswith(s) for name, _ in projections)]
    if missing:
        raise ValueError(f"--dropout: found no {' or '.join(missing)} modules in {type(model).__name__}; dropout by "
                         "hooks supports Llama-style models")
    targets = [model.get_input_embeddings()] + [m for _, m in projections]
    return [m.register_forward_hook(hook) for m in targets]


def sid_weighted_loss(sid_token_ids: list[int], weight: float, distill_weight: float = 0.0):
    """The loss of `GenrecSFTTrainer` (outputs, labels, num_items_in_batch, teacher) -> loss: next-token cross-entropy
    where SID-token targets count `weight` times, other completion tokens once, prompt tokens (label -100) not at all.

    `teacher` = (rows, cols, probs) from `SIDDistiller.targets`: at those logit positions the target becomes
    (1 - distill_weight) * one-hot + distill_weight * probs (knowledge distillation from the stage-1 model).
    The loss is the weighted sum over this micro-batch divided by `num_items_in_batch`, which the trainer sets to the
    whole optimizer step's total weight (`target_weights` summed over its micro-batches and processes): a step split
    into micro-batches (gradient accumulation, `batch_rebalance` batches) has the gradient of the step's rows in one
    batch. Without it, the micro-batch's own weighted mean. With weight 1 the total weight is the token count TRL uses.
    `offset`: the logits start at that position (the model ran with `logits_to_keep = width - offset`).
    The returned function carries `target_weights(labels)`: each next-token target's weight (labels shifted by one).
    """
    ids = torch.tensor(sorted(set(sid_token_ids)), dtype=torch.long)

    def target_weights(labels: torch.Tensor) -> torch.Tensor:
        target = labels[:, 1:]
        return torch.where(torch.isin(target, ids.to(target.device)), float(weight), 1.0) * (target != -100)

    def loss_func(outputs, labels, num_items_in_batch=None, teacher=None, offset: int = 0):
        logits = outputs.logits[:, :-1, :].float()
        target = labels[:, offset + 1:].to(logits.device)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                               ignore_index=-100, reduction="none").view_as(target)
        if teacher is not None and distill_weight > 0 and len(teacher[0]):
            rows, cols, probs = teacher
            cols = cols - offset
            soft = -(probs * torch.log_softmax(logits[rows, cols], dim=-1)).sum(-1)
            mixed = (1.0 - distill_weight) * ce[rows, cols] + distill_weight * soft
            ce = ce.index_put((rows, cols), mixed)
        w = target_weights(labels.to(logits.device))[:, offset:]
        total = w.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, device=logits.device)
        return (ce * w).sum() / total.clamp(min=1e-8)

    loss_func.target_weights = target_weights
    return loss_func


def full_logits_loss(loss_impl: str) -> bool:
    """Whether SFT computes its loss from the model's full logits instead of TRL's fused, chunked LM head.

    The fused head saves the (tokens x vocab) logits, which matters for a large vocabulary on a GPU; for the tiny
    model on CPU its tiled backward costs more than the logits it saves (80 stage-1 steps: 29.5 s fused, 23.7 s
    full, identical losses; BENCHMARKS.md)."""
    if loss_impl == "auto":
        return not torch.cuda.is_available()
    return loss_impl == "full"


class GenrecSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer; `sid_loss` (sid_weighted_loss) replaces its token-mean loss from the full logits and logs the
    completion tokens' top-1 accuracy as TRL does (`mean_token_accuracy`); None keeps TRL's fused loss and metrics.
    The LM head runs only from the batch's first completion position on (`logits_to_keep`), where the model accepts
    it: the prompt's logits carry no loss (stage 2 on the demo market: 1.12x faster per step, same loss)."""

    def __init__(self, *args, sid_loss=None, distiller=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sid_loss = sid_loss
        self.distiller = distiller
        self.keep_completion_logits = accepts_logits_to_keep(self.model)

    def _get_train_sampler(self, train_dataset=None):
        """transformers' sampler; `batch_rebalance` draws with the run's seed (transformers leaves it at 42, so every
        --seed would train on the same order)."""
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, BatchRebalanceSampler):
            sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return sampler

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """With `sid_loss`: the step's total loss weight (SID targets count `sid_loss_weight` times) instead of its
        token count, so that each micro-batch's weighted sum over it adds up to the step's weighted mean."""
        count = super()._get_num_items_in_batch(batch_samples, device)
        if self.sid_loss is None or count is None:
            return count
        weight = sum(self.sid_loss.target_weights(b["labels"]).sum() for b in batch_samples)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            return self.accelerator.gather(weight.to(device)).sum()  # as transformers sums the count over ranks
        tokens = sum(b["labels"][..., 1:].ne(-100).sum() for b in batch_samples)
        return count * (weight.to(device) / tokens.to(device).clamp(min=1))  # one process: the step's weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.sid_loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        teacher = None
        if self.distiller is not None and model.training:
            teacher = self.distiller.targets(inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"])
        labels = inputs["labels"]
        offset = first_loss_position(labels) if self.keep_completion_logits and not return_outputs else 0
        keep = {"logits_to_keep": labels.shape[1] - offset} if offset else {}
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False, **keep)
        loss = self.sid_loss(outputs, labels, num_items_in_batch, teacher, offset)
        with torch.no_grad():
            target = labels[:, offset + 1:]
            valid = target != -100
            correct = (outputs.logits[:, :-1].argmax(-1) == target) & valid
            mode = "train" if self.model.training else "eval"
            n = int(valid.sum())
            self._metrics[mode]["mean_token_accuracy"].append(float(correct.sum()) / n if n else 0.0)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients across ranks
        return (loss, outputs) if return_outputs else loss


def _rows_noun(prompt_cfg: PromptConfig | None) -> str:
    """The item noun the training rows were worded with: the config's, resolved by the stage that built them; an
    unresolved 'auto' (rows built in code from a `Catalog` made in code) is that catalog's default, "job"."""
    noun = prompt_cfg.item_noun if prompt_cfg is not None else AUTO
    return DEFAULT_NOUN if noun == AUTO else noun


def train_sft(
    model_path: str | Path,
    sid_map: SIDMap,
    train_ds: Dataset,
    args: SFTConfig,
    *,
    eval_ds: Dataset | None = None,
    stage: SFTStageConfig | None = None,
    prompt_cfg: PromptConfig | None = None,
    sasrec=None,
) -> Path:
    """Fine-tune `model_path` on prompt/completion rows with TRL; save `<output_dir>/final`; return it.
    `sasrec`: (teachers, row -> teacher) of `stage.sasrec_distill_weight`, from `sasrec_teachers`."""
    stage = stage or SFTStageConfig()
    model, tokenizer = load_model_and_tokenizer(model_path, dtype=weights_dtype(args))
    check_model_tokens(tokenizer, sid_map, model, where=str(model_path))
    if args.gradient_checkpointing and sum(p.numel() for p in model.parameters()) < 50_000_000:
        log.warning("gradient_checkpointing on a model under 50M parameters only slows training down")
    out_dir = Path(args.output_dir)
    resume = None
    if stage.resume:
        # the newest *complete* checkpoint: one a kill cut short during its save is removed, never loaded
        last = stage_output.latest_checkpoint(out_dir, log=log.warning)
        resume = str(last) if last else None
        if not last:
            log.warning("resume requested but %s has no complete checkpoint; starting from the model", out_dir)
    elif args.resume_from_checkpoint:
        resume = args.resume_from_checkpoint
    else:
        stage_output.clear_checkpoints(out_dir, log=log.warning)
    if stage.dropout > 0:
        add_training_dropout(model, stage.dropout)
    if stage.use_lora:
        model = apply_lora(model, stage)
    cap_epoch_budget(args, len(train_ds), stage.max_steps_cap)
    if "input_ids" in train_ds.column_names:
        args.completion_only_loss = True  # pre-tokenized rows carry their loss mask in completion_mask
    loss_func = distiller = None
    sid_ids = tokenizer.convert_tokens_to_ids(sid_map.all_tokens())
    soft_weight = stage.distill_weight or stage.sasrec_distill_weight
    if stage.sid_loss_weight != 1.0 or soft_weight > 0 or full_logits_loss(stage.loss_impl):
        loss_func = sid_weighted_loss(sid_ids, stage.sid_loss_weight, soft_weight)
    if stage.distill_weight > 0:
        distiller = load_distiller(stage.distill_model or model_path, tokenizer, sid_map, sid_ids, args,
                                   noun=_rows_noun(prompt_cfg), cache_bytes=stage.distill_cache_mb * 2**20)
    elif stage.sasrec_distill_weight > 0:
        if sasrec is None:
            raise ValueError("--sasrec_distill_weight needs the fitted SASRec teacher (genrec.sft.run_stage fits it)")
        if getattr(args, "padding_free", False) or getattr(args, "packing", False):
            raise ValueError("--sasrec_distill_weight reads each row's lines: set --padding_free false and --packing "
                             "false")
        from genrec.collab_distill import SASRecDistiller

        teachers, row_teacher = sasrec
        distiller = SASRecDistiller(teachers, tokenizer, sid_map, stage.sasrec_distill_temperature, row_teacher,
                                    vocab_size=model.get_input_embeddings().weight.shape[0])
    trainer = GenrecSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        sid_loss=loss_func,
        distiller=distiller,
    )
    from genrec import model_folder

    final = out_dir / model_folder.FINAL_DIR
    with stage_output.writing(out_dir):  # `genrec run` redoes the stage if a kill leaves the note (stage_output.py)
        stage_output.train(trainer, resume)  # a checkpoint saved at the end of training is loaded, not trained on
        if distiller is not None and hasattr(distiller, "cache_summary"):
            log.info("%s", distiller.cache_summary())
        eval_loss = trainer.evaluate().get("eval_loss") if eval_ds is not None else None
        trained = trainer.model
        if stage.use_lora:
            trained = trained.merge_and_unload()
        if trainer.is_world_process_zero():
            info = model_folder.sft_info(model_path, stage.stage, stage.traces or None, extra={
                "train_rows": len(train_ds), "final_train_loss": _last_loss(trainer), "eval_loss": eval_loss})
            model_folder.save_model_folder(final, info, model=trained, tokenizer=tokenizer, sid_map=sid_map,
                                           prompt_cfg=prompt_cfg)
        trainer.accelerator.wait_for_everyone()
    return final


def epoch_steps(args: SFTConfig, rows: int) -> int:
    """Optimizer steps that `args.num_train_epochs` epochs of `rows` rows take (as transformers' Trainer counts them:
    batches per epoch over all processes, divided by gradient accumulation)."""
    batches = math.ceil(rows / (args.per_device_train_batch_size * max(1, args.world_size)))
    per_epoch = max(1, batches // args.gradient_accumulation_steps)
    return math.ceil(args.num_train_epochs * per_epoch)


FEW_EPOCHS = 2.0  # under this many epochs after the step cap, `cap_epoch_budget` says the cap binds


def cap_epoch_budget(args: SFTConfig, rows: int, cap: int) -> None:
    """Set `args.max_steps = cap` when an epoch budget (max_steps <= 0) would take more than `cap` steps."""
    if cap <= 0 or args.max_steps > 0:
        return
    steps = epoch_steps(args, rows)
    if steps > cap:
        epochs = args.num_train_epochs * cap / steps
        log.info("%.1f epochs of %d rows are %d steps: capped at --max_steps_cap %d (%.1f epochs)",
                 args.num_train_epochs, rows, steps, cap, epochs)
        if epochs < FEW_EPOCHS:
            log.warning("the cap leaves %.1f epochs: the model sees each row fewer than twice. Where time allows, a higher cap "
                        "(genrec run: --sft1_max_steps / --sft2_max_steps) is the first thing to raise; on "
                        "MovieLens-100k (1.7 epochs) three times the stage-1 steps raised NDCG@10 by about 0.01 "
                        "(docs/bench/learning.md, session 37)", epochs)
        args.max_steps = cap


def _last_loss(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return float(losses[-1]) if losses else None


def check_prompt_consistency(model_dir: str | Path, traces_dir: str | Path, traces_cfg: PromptConfig) -> None:
    """Stage 2 must read prompts as its stage-1 model learnt them: same history format, profile, history length.

    Only the settings of reasoning prompts may differ (`reasoning`: the instruction line; `history_reasoning`: the
    blocks in the history lines, which a stage-1 model's direct prompts never show) and the token budget
    `max_prompt_tokens` (reasoned history lines are longer). A model folder without prompt settings (build-model
    output) is not checked.
    """
    if not (Path(model_dir) / PROMPT_CONFIG_FILE).is_file():
        return
    model_cfg = PromptConfig.load(model_dir)
    free = ("reasoning", "history_reasoning", "max_prompt_tokens")
    diff = [f.name for f in fields(PromptConfig) if f.name not in free
            and getattr(model_cfg, f.name) != getattr(traces_cfg, f.name)]
    if diff:
        shown = ", ".join(f"{n}: model {getattr(model_cfg, n)!r} vs traces {getattr(traces_cfg, n)!r}" for n in diff)
        raise ValueError(f"{traces_dir}: the traces' prompt settings differ from those the model in {model_dir} was "
                         f"trained with ({shown}); rebuild the traces with the model's prompt flags")


def sasrec_teachers(stage: SFTStageConfig, rec, sid_map: SIDMap, tokenizer, prompt_cfg: PromptConfig, seed: int):
    """The SASRec teacher(s) of `--sasrec_distill_weight` as (teachers, row -> teacher): one SASRec and None, or when
    cross-fitted one per fold and hash(a `sequence` row's token ids) -> the teacher that did not train on its user."""
    from genrec.collab_distill import fit_cross_teachers, fit_sasrec_teacher, user_fold

    folds = stage.sasrec_distill_folds
    if folds == 1:
        return fit_sasrec_teacher(rec.train, rec.catalog, rec.valid, seed), None
    if stage.tasks() != ["sequence"]:
        raise ValueError("--sasrec_distill_folds > 1 needs --stage1_tasks sequence alone (its rows are matched to "
                         f"users; got {stage.stage1_tasks!r})")
    rows = sequence_rows(rec.catalog, sid_map, rec.train, tokenizer, prompt_cfg)
    row_teacher = {hash(tuple(ids)): user_fold(user, folds) for ids, user in zip(rows["input_ids"], rows["user"])}
    return fit_cross_teachers(rec.train, rec.catalog, rec.valid, seed, folds), row_teacher


def row_budget(args: SFTConfig, cap: int) -> int:
    """How many rows an epoch budget cut at `cap` steps can reach (0: no cap, or a step budget). A set with more
    `sequence` rows than this builds only a seeded sample of this many: the trainer would draw no more (its random
    order takes the first cap x rows-per-step), and building and tokenizing the rest took minutes and gigabytes on a
    1M-interaction set (186,165 rows built for 32,000 trained)."""
    if cap <= 0 or args.max_steps > 0 or args.num_train_epochs <= 0:
        return 0
    per_step = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
    return math.ceil(cap * per_step / min(1.0, args.num_train_epochs))


def run_stage(stage: SFTStageConfig, prompt_cfg: PromptConfig, data_cfg, args: SFTConfig) -> Path:
    """What `genrec sft` runs: build the stage's dataset, check inputs, train, save out/final."""
    for name in ("model", "sid_map"):
        if not getattr(stage, name):
            raise ValueError(f"--{name} is required")
    if not Path(stage.model).exists() and stage.model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{stage.model}: model folder not found")
    sid_map = SIDMap.load(stage.sid_map)
    seed = args.seed
    sasrec = None
    if stage.stage == 1:
        if not stage.data:
            raise ValueError("--data is required for stage 1")
        from genrec.checks import check_sid_map_catalog
        from genrec.data.loader import load_data

        rec = load_data(stage.data, data_cfg, verbose=False)
        prompt_cfg = prompt_cfg.resolved(rec.catalog)  # the item noun it trains with is saved with the model
        tokenizer = load_tokenizer(stage.model)
        check_model_tokens(tokenizer, sid_map, where=stage.model)
        check_sid_map_catalog(sid_map, rec.catalog, stage.sid_map, stage.data, command="sft")
        keep = row_budget(args, stage.max_steps_cap) if not stage.max_train_examples else 0
        train = stage1_dataset(rec.catalog, sid_map, rec.train, tokenizer, prompt_cfg, stage.tasks(), keep=keep,
                               seed=seed)
        eval_ds = None
        if stage.eval_valid and rec.valid and "history2sid" in stage.tasks():
            eval_ds = Dataset.from_dict(stage1_rows(rec.catalog, sid_map, rec.valid, tokenizer, prompt_cfg,
                                                    ["history2sid"]))
        used_prompt_cfg = prompt_cfg
        if stage.sasrec_distill_weight > 0:
            sasrec = sasrec_teachers(stage, rec, sid_map, tokenizer, prompt_cfg, seed)
    else:
        if not stage.traces:
            raise ValueError("--traces is required for stage 2")
        from genrec.traces.budget import trace_sample_rate
        from genrec.traces.dataset import load_traces

        train = load_traces(stage.traces, sid_map, "train").select_columns(["prompt", "completion"])
        eval_ds = None
        if stage.eval_valid and (Path(stage.traces) / "valid").is_dir():
            eval_ds = load_traces(stage.traces, sid_map, "valid").select_columns(["prompt", "completion"])
        used_prompt_cfg = PromptConfig.load_or_default(stage.traces)
        if used_prompt_cfg != prompt_cfg:
            log.info("stage 2 uses the prompt settings stored with the traces (%s)", stage.traces)
        check_prompt_consistency(stage.model, stage.traces, used_prompt_cfg)
        needs_data = bool(stage.replay()) or "sequence" in stage.stage2()
        if "sequence" in stage.stage2() and not stage.data:
            raise ValueError("--stage2_tasks sequence needs --data (the users' histories)")
        if needs_data and stage.data:
            from genrec.data.loader import load_data

            rec = load_data(stage.data, data_cfg, verbose=False)
            tokenizer = load_tokenizer(stage.model)
            parts: dict[str, Dataset] = {}  # each part in Arrow as soon as it is tokenized (see tokenized_dataset)
            if "traces" in stage.stage2():
                parts["trace"] = tokenized_dataset({**train.to_dict(), "task": ["traces"] * len(train)}, tokenizer)
            if "sequence" in stage.stage2():
                parts["reasoned sequence"] = Dataset.from_dict(sequence_rows(
                    rec.catalog, sid_map, rec.train, tokenizer, used_prompt_cfg, reasoning=True))
            if stage.replay():
                rate = trace_sample_rate(stage.traces)
                keep = 0
                if rate < 1.0 and stage.replay() == ["sequence"]:  # sample the windows before building them
                    keep = max(1, round(rate * len(sequence_window_list(rec.train, sid_map, used_prompt_cfg))))
                replay = Dataset.from_dict(stage1_tokenized_rows(
                    rec.catalog, sid_map, rec.train, tokenizer, used_prompt_cfg, stage.replay(), keep=keep, seed=seed))
                if rate < 1.0:  # the traces are a sample of the split: replay the same share of its stage-1 rows
                    if not keep:
                        replay = _shuffle_cap(replay, max(1, round(rate * len(replay))), seed)
                    log.info("the traces hold %.1f%% of the train split; stage 2 replays as many of its stage-1 rows",
                             100 * rate)
                parts["replayed stage-1"] = replay
            train = concatenate_datasets([p.select_columns(list(TOKENIZED_COLUMNS)) for p in parts.values()])
            log.info("stage 2 rows: %s", ", ".join(f"{len(p)} {name}" for name, p in parts.items()))
        elif stage.replay():
            log.info("stage 2: no --data, so no stage-1 rows are replayed (replay_tasks=%s)", stage.replay_tasks)
    train = _shuffle_cap(train, stage.max_train_examples, seed)
    if eval_ds is not None:
        eval_ds = _shuffle_cap(eval_ds, stage.max_eval_examples, seed)
    return train_sft(stage.model, sid_map, train, args, eval_ds=eval_ds, stage=stage, prompt_cfg=used_prompt_cfg,
                     sasrec=sasrec)
