"""`make_traces`: data + SID map + model tokenizer + teacher -> trace dataset folder (what `genrec traces` runs)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genrec.data.schema import RecData
from genrec.data.splits import seeded_subset
from genrec.prompts import PromptConfig
from genrec.response import INTERLEAVED, LAYOUTS, check_layout
from genrec.traces.dataset import build_trace_rows, save_traces
from genrec.traces.grounded import GroundedConfig, grounded_blocks
from genrec.traces.llm import LLMTeacher, LLMTeacherConfig
from sid_tokenizer.sidmap import SIDMap

log = logging.getLogger(__name__)
TEACHERS = ("grounded", "llm")


@dataclass
class TraceConfig:
    """Flags of `genrec traces`."""

    data: str = field(default="", metadata={"help": "Data folder (any format genrec.data.load_data reads)."})
    sid_map: str = field(default="", metadata={
        "help": "Tokenizer folder holding sid_map.json (or the sid_map.json file)."})
    model: str = field(default="", metadata={
        "help": "Model folder whose tokenizer measures the prompt token budget (the model SFT will train)."})
    output_dir: str = field(default="runs/traces", metadata={"help": "Folder the trace dataset is written to."})
    teacher: str = field(default="grounded", metadata={
        "help": "'grounded' (built-in, offline, deterministic) or 'llm' (teacher_model writes the rationale)."})
    teacher_model: str = field(default="", metadata={
        "help": "LLM teacher: a model folder, a .gguf file or 'smollm2-135m-gguf'."})
    teacher_max_new_tokens: int = field(default=160, metadata={"help": "LLM teacher: longest rationale in tokens."})
    teacher_temperature: float = field(default=0.0, metadata={"help": "LLM teacher: 0 = greedy."})
    teacher_batch_size: int = field(default=8, metadata={"help": "LLM teacher: prompts per generation batch."})
    teacher_backend: str = field(default="auto", metadata={
        "help": "LLM teacher: auto (vLLM when installed and a GPU is present), hf or vllm."})
    layout: str = field(default="coarse", metadata={
        "help": "Response layout: 'coarse' (blocks before all but the last two SID tokens, which follow each other as "
                "in stage 1; genrec.grammar.coarse_levels), 'interleaved' (a block before every SID token) or "
                "'blocks_first'. coarse scored NDCG@10 0.083 against interleaved 0.056 on the demo market (paired, "
                "docs/bench/learning.md, session 10)."})
    splits: str = field(default="train,valid", metadata={"help": "Comma-separated splits to build traces for."})
    max_examples: int = field(default=0, metadata={
        "help": "Per split: a random sample of at most this many examples (seeded by trace_seed, kept in their split "
                "order); 0 = all. `genrec run` sets it to the rows its stage-2 step budget can train on."})
    grounded_style: str = field(default="evidence", metadata={
        "help": "Grounded teacher: 'evidence' (blocks state what the prompt says given the codes already written; no "
                "decision) or 'pointer' (blocks name the history line the target follows at each level)."})
    max_titles: int = field(default=2, metadata={
        "help": "Ignored since session 4 (the grounded teacher no longer quotes several titles); kept so older "
                "configs still parse."})
    max_profile_words: int = field(default=12, metadata={
        "help": "Ignored since session 4 (the grounded teacher no longer quotes the profile); kept so older configs "
                "still parse."})
    trace_seed: int = field(default=0, metadata={"help": "Seed of the LLM teacher's sampling and of max_examples."})

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {self.teacher!r}")
        check_layout(self.layout)
        if self.layout == "direct":
            raise ValueError(f"traces need a reasoning layout ({', '.join(l for l in LAYOUTS if l != 'direct')})")


def block_token_stats(all_blocks: list[list[str]], tokenizer) -> list[dict[str, float]]:
    """Per level: max / mean / p95 token count of the block text (to size max_block_tokens for RL and eval)."""
    if not all_blocks:
        return []
    out = []
    for k in range(len(all_blocks[0])):
        n = sorted(len(tokenizer.encode(" " + b[k], add_special_tokens=False)) if b[k] else 0 for b in all_blocks)
        out.append({"max": n[-1], "mean": round(sum(n) / len(n), 2), "p95": n[min(len(n) - 1, int(0.95 * len(n)))]})
    return out


def make_traces(rec: RecData, sid_map: SIDMap, tokenizer, cfg: TraceConfig, prompt_cfg: PromptConfig) -> Path:
    """Build and save the trace dataset for the requested splits; returns the output folder."""
    if prompt_cfg.history_reasoning and cfg.layout != INTERLEAVED:
        raise ValueError(f"--history_reasoning writes the history lines' answers in the interleaved layout, so the "
                         f"traces must use it too: pass --layout interleaved (got {cfg.layout!r})")
    prompt_cfg = prompt_cfg.resolved(rec.catalog)  # saved with the traces: stage 2 and inference use the same noun
    grounded_cfg = GroundedConfig(history_lines=prompt_cfg.prompt_max_history,
                                  cite_titles=prompt_cfg.history_format != "sid", style=cfg.grounded_style,
                                  noun=prompt_cfg.item_noun)
    if cfg.teacher == "grounded":
        def teacher(batch):
            return [grounded_blocks(ex, rec.catalog, sid_map, grounded_cfg) for ex in batch]
        llm = None
    else:
        llm = LLMTeacher(
            LLMTeacherConfig(model=cfg.teacher_model, max_new_tokens=cfg.teacher_max_new_tokens,
                             temperature=cfg.teacher_temperature, batch_size=cfg.teacher_batch_size,
                             backend=cfg.teacher_backend, seed=cfg.trace_seed),
            rec.catalog, sid_map, Path(cfg.output_dir) / "teacher_cache.jsonl", grounded_cfg,
        )
        teacher = llm
    splits = {}
    counts, split_examples = {}, {}
    for name in [s.strip() for s in cfg.splits.split(",") if s.strip()]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r} in splits={cfg.splits!r} (expected train, valid, test)")
        examples = [ex for ex in getattr(rec, name) if ex.target in sid_map]
        dropped = len(getattr(rec, name)) - len(examples)
        if dropped:
            log.warning("%s: %d examples dropped: target has no SID (items missing from the SID map)", name, dropped)
        split_examples[name] = len(examples)
        examples = seeded_subset(examples, cfg.max_examples, cfg.trace_seed)
        splits[name] = build_trace_rows(examples, rec.catalog, sid_map, tokenizer, prompt_cfg, teacher,
                                        layout=cfg.layout)
        counts[name] = len(examples)
    info = {"config": asdict(cfg), "counts": counts, "split_examples": split_examples,
            "codebook_sizes": list(sid_map.codebook_sizes), "num_items": len(sid_map),
            "teacher_stats": llm.stats() if llm else {},
            "block_tokens": block_token_stats([b for cols in splits.values() for b in cols["blocks"]], tokenizer)}
    return save_traces(cfg.output_dir, splits, info, prompt_cfg)

