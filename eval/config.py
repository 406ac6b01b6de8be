"""`EvalConfig`: options of `genrec evaluate` (parsed by TrlParser; YAML under configs/eval*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.collab_prior import DEFAULT_CANDIDATES
from eval.protocols import PROTOCOLS
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS, traces_block_budget

BASELINE_NAMES = ("mostpop", "recent", "sasrec")
AUTO_BATCH_ROWS = 160  # beam rows per forward of the auto batch size (EvalConfig.batch_size = 0)


def _csv(value: str | list | tuple) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


@dataclass
class EvalConfig:
    """What to evaluate, on which split, how to decode, and where to write the report."""

    data: str = field(default="", metadata={"help": "Dataset folder or file prefix (as for every genrec stage)."})
    model: str = field(
        default="",
        metadata={"help": "Model folder(s) to evaluate, comma-separated (empty: baselines only)."},
    )
    sid_map: str = field(
        default="", metadata={"help": "sid_map.json or the fit-tokenizer folder; default: <model>/sid_map.json."}
    )
    output_dir: str = field(default="runs/eval", metadata={"help": "Where eval_report.json, report.md and plots go."})
    eval_split: str = field(default="test", metadata={"help": "Split to evaluate.", "choices": ["test", "valid"]})
    layout: str = field(
        default="auto",
        metadata={"help": "Response layout: auto (from the model folder), interleaved, coarse, blocks_first or direct "
                          "(no reasoning, stage-1 models). One value, or one per model (comma-separated)."},
    )
    num_beams: int = field(default=20, metadata={"help": "Beam width over SID prefixes."})
    level_weights: str = field(default="auto", metadata={
        "help": "Weight per SID level in the beam score, sum_l w_l log p(level l): 'auto' = 0.5 on the last two levels "
                "(the finest code and the dedup code), 1 on the others; 'none' = all 1 (the model's log-probability); "
                "or one number per level, comma-separated. 'auto': +0.004 to +0.010 NDCG@10 on the demo market, amazon "
                "and jobs-kaggle, never below 'none' outside noise (docs/bench/learning.md, sessions 17-18)."})
    max_block_tokens: int = field(
        default=0,
        metadata={"help": "Free-text budget per thinking block. 0 = auto: with --traces, the largest per-level 95th "
                          "percentile of the traces' block lengths; else each model folder's budget (its RL rollouts' "
                          f"or its traces', genrec_model.json); else {DEFAULT_MAX_BLOCK_TOKENS}."},
    )
    traces: str = field(
        default="", metadata={"help": "Trace folder of `genrec traces` (sets the auto block budget; see max_block_tokens)."}
    )
    min_block_tokens: int = field(default=0, metadata={"help": "Thinking blocks may not close before this."})
    beam_cache: str = field(default="auto", metadata={
        "help": "KV cache of the beam search: 'shared' keeps each user's prompt once for all its beams (1.35-1.5x "
                "faster on CPU, the same lists); 'static' one copy per beam row; 'auto' = shared when the model's "
                "attention goes through transformers' AttentionInterface, else static. Not measured on a GPU."})
    batch_size: int = field(default=0, metadata={
        "help": f"Users per beam-search batch (rows = users x beams). 0 = auto: about {AUTO_BATCH_ROWS} rows, i.e. "
                f"{AUTO_BATCH_ROWS} // num_beams users (the tiny model's forward is mostly per-call overhead on a CPU: "
                "at 10 beams 16 users ran 1.13-1.16x faster than 8; with the shared-prefix cache twice the rows were "
                "1.08-1.09x faster on the demo but 0.89x on amazon's longer prompts; the same lists; BENCHMARKS.md)."})
    processes: int = field(default=0, metadata={
        "help": "Beam-search worker processes on a CPU, one torch thread each, each with its share of the batches "
                "(forked copies of this process: the model is not loaded again; the same batches, so the same lists). "
                "0 = auto: 2 when the run has exactly 2 torch threads, else 1. Two 1-thread workers searched the "
                "demo's RL model 1.31x faster than one 2-thread process, and the demo's whole evaluation 1.50x "
                "(BENCHMARKS.md, session 35); more workers are not measured."})
    topk: str = field(default="1,5,10,20", metadata={"help": "Cut-offs K, comma-separated; the largest is the list length."})
    protocols: str = field(
        default="all,new",
        metadata={"help": "'all' (any item, repeats allowed) and/or 'new' (history items excluded, repeat targets dropped)."},
    )
    baselines: str = field(
        default="mostpop,recent",
        metadata={"help": f"Baselines to run in the same harness, comma-separated from {', '.join(BASELINE_NAMES)} "
                          "('' for none); sasrec trains first (minutes on CPU)."},
    )
    sasrec_max_epochs: int = field(default=200, metadata={"help": "SASRec epoch cap (early stopping on valid NDCG@10)."})
    max_users: int = field(default=0, metadata={"help": "Evaluate a seeded random subset of this many users (0 = all)."})
    seed: int = field(default=42, metadata={"help": "Seed for the user subset and SASRec."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1, ..."})
    repeat_prior: bool = field(
        default=True,
        metadata={"help": "Also report each model re-ranked with a repeat prior counted on the valid split (rows "
                  "'<model>+repeat', eval/repeat.py): p = (1-w) p_model + w p(recency rank), w = share of valid "
                  "targets found in their own history. Reuses the model's beams (no extra search)."},
    )
    sasrec_prior: str = field(default="auto", metadata={
        "help": "Also report each model fused with SASRec at decoding (rows '<model>+sasrec', a hybrid of the two, "
                "eval/collab_prior.py): log p_model + w log p_SASRec over the model's list and SASRec's top items, "
                "w fitted on held-out valid users. 'auto' = when sasrec is among --baselines (it is trained anyway); "
                "'true' trains SASRec for it; 'false' = off. Writes the SASRec to <output_dir>/sasrec for "
                "`genrec recommend --sasrec`.",
        "choices": ["auto", "true", "false"]})
    sasrec_prior_users: int = field(default=500, metadata={
        "help": "Valid users the SASRec weight is fitted on (a seeded sample; 0 = all): one more beam search per "
                "model on them."})
    sasrec_prior_candidates: int = field(default=DEFAULT_CANDIDATES, metadata={
        "help": "SASRec's top items that join each model list in the fusion."})
    sasrec_prior_weight: float = field(default=-1.0, metadata={
        "help": "A fixed fusion weight w for every model and protocol instead of fitting it on valid users "
                "(-1 = fit; skips the extra beam search)."})
    save_predictions: bool = field(
        default=True, metadata={"help": "Write predictions_<method>_<protocol>.jsonl (top-k items, scores, reasoning) for models."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        from eval.beam import CACHE_IMPLS

        if self.beam_cache not in CACHE_IMPLS:
            raise ValueError(f"--beam_cache must be one of {', '.join(CACHE_IMPLS)}, got {self.beam_cache!r}")
        self.topk_list()
        bad = [p for p in self.protocol_list() if p not in PROTOCOLS]
        if bad or not self.protocol_list():
            raise ValueError(f"--protocols: expected some of {', '.join(PROTOCOLS)}, got {self.protocols!r}")
        bad = [b for b in self.baseline_list() if b not in BASELINE_NAMES]
        if bad:
            raise ValueError(f"--baselines: unknown {', '.join(bad)}; expected some of {', '.join(BASELINE_NAMES)}")
        self.level_weight_list()
        if self.num_beams < 1:
            raise ValueError(f"--num_beams must be >= 1, got {self.num_beams}")
        if self.batch_size < 0:
            raise ValueError(f"--batch_size must be >= 1, or 0 for auto, got {self.batch_size}")
        if self.batch_size == 0:
            self.batch_size = max(1, AUTO_BATCH_ROWS // self.num_beams)
        if self.max_block_tokens < 0:
            raise ValueError(f"--max_block_tokens must be >= 1, or 0 for auto, got {self.max_block_tokens}")
        # auto without traces: each model folder's budget (`model_block_budget`); the default meanwhile
        self.max_block_tokens_auto = self.max_block_tokens == 0 and not self.traces
        if self.max_block_tokens == 0:  # auto
            self.max_block_tokens = DEFAULT_MAX_BLOCK_TOKENS
            if self.traces:
                self.max_block_tokens = traces_block_budget(self.traces)[0]
        if self.max_block_tokens < self.min_block_tokens or self.min_block_tokens < 0:
            raise ValueError(f"--min_block_tokens {self.min_block_tokens} must be in [0, max_block_tokens={self.max_block_tokens}]")
        if self.sasrec_prior not in ("auto", "true", "false"):
            raise ValueError(f"--sasrec_prior must be auto, true or false, got {self.sasrec_prior!r}")
        if not (self.sasrec_prior_weight >= 0 or self.sasrec_prior_weight == -1):  # NaN fails both
            raise ValueError(f"--sasrec_prior_weight must be >= 0, or -1 to fit it, got {self.sasrec_prior_weight}")
        if self.sasrec_prior_users < 0 or self.sasrec_prior_candidates < 1:
            raise ValueError("--sasrec_prior_users must be >= 0 and --sasrec_prior_candidates >= 1, got "
                             f"{self.sasrec_prior_users} and {self.sasrec_prior_candidates}")
        if self.processes < 0:
            raise ValueError(f"--processes must be >= 0 (0 = auto), got {self.processes}")
        if self.max_users < 0:
            raise ValueError(f"--max_users must be >= 0, got {self.max_users}")
        layouts, models = self.layout_list(), self.model_list()
        if len(layouts) not in (1, len(models) or 1):
            raise ValueError(f"--layout: give one layout or one per model ({len(models)}), got {self.layout!r}")

    def level_weight_list(self) -> list[float] | str | None:
        """--level_weights as floats, "auto" or None ("none"); the beam search resolves "auto" and checks the count."""
        from eval.beam import parse_level_weights

        return parse_level_weights(self.level_weights)

    def sasrec_prior_on(self) -> bool:
        """Whether the '+sasrec' rows are asked for (models given, and 'true', or 'auto' with sasrec a baseline)."""
        if not self.model_list() or self.sasrec_prior == "false":
            return False
        return self.sasrec_prior == "true" or "sasrec" in self.baseline_list()

    def model_block_budget(self) -> int:
        """The `max_block_tokens` to load a model with: 0 (the folder's budget) when auto without traces."""
        return 0 if getattr(self, "max_block_tokens_auto", False) else self.max_block_tokens

    def topk_list(self) -> list[int]:
        try:
            ks = sorted({int(k) for k in _csv(self.topk)})
        except ValueError:
            raise ValueError(f"--topk must be comma-separated integers like '1,5,10,20', got {self.topk!r}") from None
        if not ks or ks[0] < 1:
            raise ValueError(f"--topk must be positive integers, got {self.topk!r}")
        return ks

    def protocol_list(self) -> list[str]:
        return _csv(self.protocols)

    def baseline_list(self) -> list[str]:
        return _csv(self.baselines)

    def model_list(self) -> list[str]:
        return _csv(self.model)

    def layout_list(self) -> list[str]:
        return _csv(self.layout) or ["auto"]
