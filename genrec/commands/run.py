"""`genrec run`: the recommended recipe end to end on any dataset genrec reads.

fit-tokenizer -> build-model -> traces -> SFT stage 1 -> SFT stage 2 -> SAPO -> evaluate (the stage-1, stage-2 and
SAPO models against MostPop, recent-items and SASRec in one evaluation run, with eval/report.md).

Each stage is the same command a user runs (`genrec.cli.run_command`), writes into its own folder under `--out`,
and is skipped when its finished marker exists and its folder carries no note of an interrupted command
(genrec/stage_output.py), so an interrupted run resumes where it stopped: a stage killed mid-way runs again, the SFT
and RL stages from their newest complete checkpoint (`--force`, or a stage before them that ran again, starts them
afresh). Data-loading flags (DataConfig) and prompt flags (PromptConfig) are given once and forwarded to every
stage whose command accepts them (`stage_flags`). `genrec demo` is this code after `genrec synth`.
"""

from __future__ import annotations

import glob
import importlib
import json
import shlex
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from genrec.data.config import DataConfig
from genrec.memory import TreeMemory, largest_process_rss_mb
from genrec.model_folder import FINAL_DIR
from genrec.parallel import run_in_processes, sigterm_raises_exit, training_processes, wanted_processes
from genrec.prompts import PromptConfig
from genrec.stage_output import is_complete
from sid_tokenizer.sidmap import atomic_write_text

HELP = ("The recommended recipe on any dataset: tokenizer, model, traces, SFT 1+2, SAPO, evaluation against "
        "MostPop/recent/SASRec (resumable).")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SUMMARY_FILE = "run_summary.json"
STAGES_FILE = "run_stages.json"  # argv and seconds of each finished stage (warns when a skipped stage's flags differ)
BASELINES = ("mostpop", "recent", "sasrec")
SOURCE_ROOTS = [REPO / pkg for pkg in ("genrec", "rl", "eval", "sid_tokenizer")]  # the code the stages import


@dataclass
class RunConfig:
    """What to run on which data, and the budgets of every stage (configs/run.yaml has the recipe's values)."""

    data: str = field(default="", metadata={"help": "Dataset folder or file prefix (any format genrec reads)."})
    out: str = field(default="runs/run", metadata={"help": "Folder for every stage's output (one sub-folder each)."})
    seed: int = field(default=0, metadata={"help": "Seed for every stage (same seed, same results)."})
    codebook_size: int = field(default=0, metadata={
        "help": "Codes per SID level; 0 = auto from the catalog size (auto_codebook_size: the smallest power of two "
                "c with c**3 >= items/2, within 8..256)."})
    sft1_epochs: float = field(default=10.0, metadata={
        "help": "Stage-1 SFT epochs (used when sft1_steps is 0). On the synthetic market NDCG@10 rose from 0.050 at 5 "
                "epochs to 0.075 at 10 (docs/bench/learning.md)."})
    sft1_steps: int = field(default=0, metadata={"help": "Stage-1 SFT optimizer steps (0 = train sft1_epochs)."})
    sft1_max_steps: int = field(default=2000, metadata={
        "help": "CPU budget: at most this many stage-1 steps when sft1_epochs would take more (0 = no cap; the "
                "schedule spans the capped budget). amazon-industrial-mini: 10 epochs are 3,870 steps and score "
                "NDCG@10 0.209, the checkpoint at 2,000 steps 0.212. Raise it with a GPU."})
    sft1_learning_rate: float = field(default=0.0, metadata={
        "help": "Stage-1 learning rate; 0 = configs/sft_stage1.yaml's (7.5e-4: best where stage 1 completes its "
                "epochs; a run cut short by sft1_max_steps may want more: amazon scored +0.014 at 1.5e-3 and +0.005 "
                "at 7.5e-4 over 3e-3, docs/bench/learning.md, session 26)."})
    sft1_tasks: str = field(default="sequence", metadata={
        "help": "Stage-1 tasks, comma-separated (see `genrec sft --stage1_tasks`); 'sequence' trains every target "
                "of a user's history in one pass."})
    sft2_steps: int = field(default=0, metadata={"help": "Stage-2 SFT optimizer steps (0 = train sft2_epochs)."})
    sft2_epochs: float = field(default=2.0, metadata={
        "help": "Stage-2 SFT epochs (used when sft2_steps is 0). About 2 epochs was best on all three sets: demo "
                "market 1.2 epochs 0.101, 1.8 0.131, 2.5 0.129; amazon 0.9 epochs 0.207, 1.9 0.225; jobs-kaggle "
                "2.1 epochs 0.225, 4.1 0.218 (docs/bench/learning.md, session 14)."})
    sft2_max_steps: int = field(default=3200, metadata={
        "help": "CPU budget: at most this many stage-2 steps when sft2_epochs would take more (0 = no cap). On a "
                "100k-interaction market (0.46 epochs of its rows at 3,200 steps) 3,200 steps scored 0.251 where "
                "1,600 scored 0.227, level with stage 1 (docs/bench/learning.md, session 22)."})
    sft2_tasks: str = field(default="traces", metadata={
        "help": "Stage-2 rows (`genrec sft --stage2_tasks`): 'traces' (one row per trace, stage-1 rows replayed) or "
                "'sequence' (every line of a user's history with its reasoning in one pass; needs --history_reasoning "
                "evidence or pointer, and no stage-1 rows are replayed)."})
    sft_processes: int = field(default=0, metadata={
        "help": "Processes each SFT stage trains in, data parallel (torchrun, gloo; the run's threads shared out; "
                "each process takes gradient_accumulation_steps / N of a step's micro-batches, so the step is the "
                "same). 0 = auto: 2 on a machine without a GPU when the run has at least 2 torch threads, else 1. "
                "Two 1-thread processes ran demo stage-2 steps 1.2x faster than one 2-thread process, same losses "
                "(docs/bench/learning.md, session 34). With a GPU, launch the stages yourself (docs/rl.md)."})
    rl_steps: int = field(default=60, metadata={"help": "RL optimizer steps."})
    rl_prompts: int = field(default=512, metadata={
        "help": "RL prompts sampled from the rl_config's rl_split (0 = every example)."})
    tokenizer_config: str = field(default="", metadata={
        "help": "Tokenizer config (`genrec fit-tokenizer --config`, e.g. configs/tokenizer_minilm.yaml for MiniLM "
                "embeddings); relative paths are tried in the working folder, then in the genrec checkout. Empty = "
                "the tokenizer's defaults. This run's codebook_size still applies."})
    rl_config: str = field(default="configs/rl_sapo_gated.yaml", metadata={
        "help": "RL algorithm config (`genrec rl --config`); relative paths are tried in the working folder, then "
                "in the genrec checkout. The default is SAPO with the prefix-gated reward on valid-split prompts "
                "(above GRPO and SFT on amazon, level on the demo and jobs-kaggle: docs/bench/learning.md); "
                "configs/rl_sapo.yaml is the paper's settings."})
    eval_users: int = field(default=2000, metadata={
        "help": "Test users evaluated: a seeded sample when the test split has more (0 = all). The cap bounds the "
                "evaluation's time on large sets (a reasoning model decodes about 7.5 users/s at 20 beams on one CPU "
                "thread, and the recipe evaluates two: ~10 minutes for 2,000 users) while paired 95-percent intervals "
                "stay about +-0.01 NDCG@10 wide; the shared sets (959 and 1,471 test users) are evaluated whole."})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained beam search."})
    eval_batch_size: int = field(default=0, metadata={
        "help": "Users per beam-search batch in the evaluation (0 = `genrec evaluate`'s auto: 160 // num_beams). "
                "Short prompts gain from more: the demo uses 32 at 10 beams (13 min 24 s against 14 min 17 s with 16, "
                "the same lists); amazon's longer prompts were 0.89x slower at twice the auto size (BENCHMARKS.md)."})
    level_weights: str = field(default="auto", metadata={
        "help": "Weight per SID level in the beam score (`genrec evaluate --level_weights`): auto, none or numbers."})
    protocols: str = field(default="all,new", metadata={
        "help": "Evaluation protocols (`genrec evaluate --protocols`): all items, and/or new items only."})
    baselines: str = field(default="mostpop,recent,sasrec", metadata={
        "help": "Baselines evaluated beside the models, comma-separated ('' for none)."})
    sasrec_epochs: int = field(default=200, metadata={"help": "SASRec epoch cap (early stopping on valid NDCG@10)."})
    repeat_prior: bool = field(default=True, metadata={
        "help": "Also report each model re-ranked with the repeat prior counted on the valid split ('+repeat' rows, "
                "`genrec evaluate --repeat_prior`)."})
    sasrec_prior: bool = field(default=True, metadata={
        "help": "Also report each model fused with SASRec at decoding ('+sasrec' rows, a hybrid of the two models; "
                "`genrec evaluate --sasrec_prior`), its weight fitted on valid users; needs sasrec in --baselines."})
    sasrec_prior_users: int = field(default=500, metadata={
        "help": "Valid users the '+sasrec' weight is fitted on (one more beam search per model on them; 0 = all)."})
    skip_reasoning: bool = field(default=False, metadata={
        "help": "Stop after stage 1: no traces, stage 2 or RL; evaluate the no-reasoning model only."})
    skip_rl: bool = field(default=False, metadata={"help": "No RL stage; evaluate the stage-1 and stage-2 models."})
    force: bool = field(default=False, metadata={"help": "Re-run every stage even when its output exists."})

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"--{name} must be {what}, got {getattr(self, name)!r}")

        need(self.codebook_size == 0 or self.codebook_size >= 2, "codebook_size", "0 (auto) or an integer >= 2")
        need(self.sft1_epochs > 0, "sft1_epochs", "> 0")
        need(self.sft1_steps >= 0, "sft1_steps", ">= 0 (0 = train sft1_epochs)")
        need(self.sft1_max_steps >= 0, "sft1_max_steps", ">= 0 (0 = no cap)")
        need(self.sft1_learning_rate >= 0, "sft1_learning_rate", ">= 0 (0 = the stage-1 config's)")
        need(bool(self.sft1_tasks.strip()), "sft1_tasks", "one or more stage-1 tasks")
        need(self.sft2_steps >= 0, "sft2_steps", ">= 0 (0 = train sft2_epochs)")
        need(self.sft2_epochs > 0, "sft2_epochs", "> 0")
        need(self.sft2_max_steps >= 0, "sft2_max_steps", ">= 0 (0 = no cap)")
        need(bool(self.sft2_tasks.strip()) and all(t.strip() in ("traces", "sequence") for t in
                                                   self.sft2_tasks.split(",")), "sft2_tasks", "traces and/or sequence")
        for name in ("rl_steps", "num_beams", "sasrec_epochs"):
            need(getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("rl_prompts", "eval_users", "eval_batch_size"):
            need(getattr(self, name) >= 0, name, "an integer >= 0 (0 = all)")
        need(self.sft_processes >= 0, "sft_processes", "an integer >= 0 (0 = auto)")
        bad = [b for b in self.baseline_list() if b not in BASELINES]
        need(not bad, "baselines", f"some of {', '.join(BASELINES)} (comma-separated) or ''")
        from eval.beam import parse_level_weights

        parse_level_weights(self.level_weights)  # a bad flag fails before the first stage, not at evaluation

    def baseline_list(self) -> list[str]:
        return [b.strip() for b in self.baselines.split(",") if b.strip()]


CONFIG_CLASSES = (RunConfig, DataConfig, PromptConfig)


def auto_codebook_size(num_items: int) -> int:
    """Codes per SID level for a catalog of `num_items`: the smallest power of two c with c**3 >= num_items / 2,
    clamped to 8..256.

    Why: the three semantic levels then have about twice as many cells as items, and each level's codebook stays
    small enough for a small model to learn on a CPU budget. Measured on jobs-kaggle (7,047 jobs, same recipe):
    64 codes per level gave NDCG@10 0.044, 16 codes 0.192 (docs/bench/learning.md). It gives 8 up to 1,024 items, 16 up to
    8,192, 32 up to 65,536, 64 up to 524,288 (the 100k-job scale), 128 up to 4.2 million, 256 beyond.
    """
    c = 8
    while c < 256 and c ** 3 < num_items / 2:
        c *= 2
    return c


@dataclass
class Stage:
    key: str  # name in the summary: fit-tokenizer, build-model, traces, sft1, sft2, rl, evaluate
    title: str
    command: str
    argv: list[str]
    marker: Path  # exists once the stage has finished
    fresh_flags: tuple[str, ...] = ()  # added when the stage must start afresh (--force, or an earlier stage re-ran)

    def command_line(self) -> str:
        return shlex.join(["genrec", self.command, *self.argv])

    def finished(self) -> bool:
        """Its marker file exists and its folder does not carry the note of an interrupted command (a stage killed
        mid-way is run again, never skipped as finished; genrec/stage_output.py)."""
        return self.marker.exists() and is_complete(self.folder)

    @property
    def folder(self) -> Path:
        """The stage's output folder under --out (tokenizer, model, traces, sft1, ...): its marker's folder, or the
        folder above for `<output_dir>/final/config.json`."""
        return self.marker.parent.parent if self.marker.parent.name == FINAL_DIR else self.marker.parent


def _flag_values(value) -> list[str] | None:
    """A dataclass value as flag arguments (as TrlParser reads them); None for a value no flag can give."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] or None
    return [str(value)]


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _yaml_keys(argv: list[str]) -> set[str]:
    """Keys set by the stage's own `--config YAML` (a forwarded value must win over them even when it is a default)."""
    if "--config" not in argv:
        return set()
    import yaml

    path = Path(argv[argv.index("--config") + 1])
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return set(loaded) if isinstance(loaded, dict) else set()


def stage_flags(command: str, argv: list[str], *shared) -> list[str]:
    """`argv` plus the flags of each shared config (DataConfig, PromptConfig, ...) that `command` accepts.

    A field is forwarded when it differs from its default or when the stage's --config YAML sets it, so every
    stage sees the same values; fields are read with dataclasses.fields, so new fields flow through unchanged.
    """
    from genrec.cli import COMMANDS

    accepted = importlib.import_module(COMMANDS[command]).CONFIG_CLASSES
    in_yaml = _yaml_keys(argv)
    extra: list[str] = []
    for cfg in shared:
        if type(cfg) not in accepted:
            continue
        for f in fields(cfg):
            value = getattr(cfg, f.name)
            if value == _default(f) and f.name not in in_yaml:
                continue
            values = _flag_values(value)
            if values is not None:
                extra += [f"--{f.name}", *values]
    return [*argv, *extra]


def _config_file(path: str, flag: str) -> Path:
    p = Path(path)
    for candidate in (p, REPO / p):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path}: config file not found (--{flag}; tried the working folder and {REPO})")


def stage2_trace_rows(cfg: RunConfig) -> int:
    """Traces stage 2 can train on: its step budget (sft2_steps, else the sft2_max_steps cap) times the rows of one
    optimizer step in configs/sft_stage2.yaml; 0 = every example (no step bound, or reasoned `sequence` rows, which
    need every user's traces). A larger train split gets a seeded sample of this many traces: the trainer would draw
    no more than these (each once) from all of them, and the traces stage and stage 2's tokenization stop growing
    with the split (a 1M-interaction set has ~1M examples)."""
    import yaml

    steps = cfg.sft2_steps or cfg.sft2_max_steps
    if not steps or "sequence" in cfg.sft2_tasks:
        return 0
    stage2 = yaml.safe_load((CONFIGS / "sft_stage2.yaml").read_text(encoding="utf-8"))
    return steps * int(stage2["per_device_train_batch_size"]) * int(stage2.get("gradient_accumulation_steps", 1))


def build_stages(cfg: RunConfig, data_cfg: DataConfig, prompt_cfg: PromptConfig, codebook_size: int) -> list[Stage]:
    """The recipe: every stage after the data, with its command line and finished marker."""
    out, data, seed = Path(cfg.out), cfg.data, str(cfg.seed)
    tok, model, traces = out / "tokenizer", out / "model", out / "traces"
    sft1, sft2, rl, ev = out / "sft1", out / "sft2", out / "rl", out / "eval"
    reasoning, do_rl = not cfg.skip_reasoning, not (cfg.skip_reasoning or cfg.skip_rl)
    stages = [
        Stage("fit-tokenizer", "semantic IDs", "fit-tokenizer",
              [*(["--config", str(_config_file(cfg.tokenizer_config, "tokenizer_config"))] if cfg.tokenizer_config
                 else []),
               "--data", data, "--out", str(tok), "--seed", seed, "--codebook_size", str(codebook_size),
               "--overwrite", "true"],
              tok / "tokenizer_report.json"),
        Stage("build-model", "tiny LM with SID vocabulary", "build-model",
              ["--sid_map", str(tok), "--data", data, "--output_dir", str(model), "--seed", seed],
              model / "config.json"),
    ]
    if reasoning:
        stages.append(Stage("traces", "reasoning traces", "traces",
                            ["--data", data, "--sid_map", str(tok), "--model", str(model), "--output_dir", str(traces),
                             "--trace_seed", seed, "--max_examples", str(stage2_trace_rows(cfg)),
                             # reasoned history lines are written interleaved (genrec.prompts.history_answers)
                             *(["--layout", "interleaved"] if prompt_cfg.history_reasoning else [])],
                            traces / "traces_config.json"))
    stages.append(Stage("sft1", "SFT stage 1 (history -> SID, no reasoning)", "sft",
                        ["--config", str(CONFIGS / "sft_stage1.yaml"), "--stage", "1", "--model", str(model),
                         "--sid_map", str(tok), "--data", data, "--output_dir", str(sft1),
                         "--num_train_epochs", str(cfg.sft1_epochs), "--max_steps", str(cfg.sft1_steps or -1),
                         "--max_steps_cap", str(cfg.sft1_max_steps),
                         "--stage1_tasks", cfg.sft1_tasks, "--seed", seed, "--resume", "true",
                         *(["--learning_rate", str(cfg.sft1_learning_rate)] if cfg.sft1_learning_rate > 0 else [])],
                        sft1 / "final" / "config.json", fresh_flags=("--resume", "false")))
    models, layouts = [sft1 / "final"], ["direct"]
    if reasoning:
        stages.append(Stage("sft2", "SFT stage 2 (reasoning)", "sft",
                            ["--config", str(CONFIGS / "sft_stage2.yaml"), "--stage", "2", "--model", str(sft1 / "final"),
                             "--sid_map", str(tok), "--traces", str(traces), "--data", data, "--output_dir", str(sft2),
                             "--max_steps", str(cfg.sft2_steps or -1), "--num_train_epochs", str(cfg.sft2_epochs),
                             "--max_steps_cap", str(cfg.sft2_max_steps),
                             "--stage2_tasks", cfg.sft2_tasks,
                             *(["--replay_tasks", ""] if "sequence" in cfg.sft2_tasks else []),
                             "--seed", seed, "--resume", "true"],
                            sft2 / "final" / "config.json", fresh_flags=("--resume", "false")))
        models.append(sft2 / "final")
        layouts.append("auto")
    if do_rl:
        stages.append(Stage("rl", "RL (SAPO)", "rl",
                            ["--config", str(_config_file(cfg.rl_config, "rl_config")), "--model", str(sft2 / "final"),
                             "--data", data, "--sid_map", str(tok), "--traces", str(traces), "--output_dir", str(rl),
                             "--max_steps", str(cfg.rl_steps), "--max_examples", str(cfg.rl_prompts), "--seed", seed],
                            rl / "final" / "config.json", fresh_flags=("--resume", "never")))
        models.append(rl / "final")
        layouts.append("auto")
    stages.append(Stage("evaluate", "evaluation against the baselines", "evaluate",
                        ["--data", data, "--sid_map", str(tok), "--output_dir", str(ev),
                         "--model", ",".join(map(str, models)), "--layout", ",".join(layouts),
                         *(["--traces", str(traces)] if reasoning else []),
                         "--baselines", ",".join(cfg.baseline_list()), "--sasrec_max_epochs", str(cfg.sasrec_epochs),
                         "--max_users", str(cfg.eval_users), "--num_beams", str(cfg.num_beams),
                         *(["--batch_size", str(cfg.eval_batch_size)] if cfg.eval_batch_size else []),
                         "--level_weights", cfg.level_weights,
                         "--protocols", cfg.protocols, "--repeat_prior", str(cfg.repeat_prior).lower(),
                         "--sasrec_prior", "auto" if cfg.sasrec_prior else "false",
                         "--sasrec_prior_users", str(cfg.sasrec_prior_users), "--seed", seed],
                        ev / "eval_report.json"))
    return [Stage(s.key, s.title, s.command, stage_flags(s.command, s.argv, data_cfg, prompt_cfg), s.marker,
                  s.fresh_flags) for s in stages]


def memory_line(summary: dict) -> str:
    """The run's peak memory in words: the process tree's sum where it was measured, else the largest process."""
    if summary.get("peak_memory_mb") is not None:
        return f"peak memory {summary['peak_memory_mb']:.0f} MB (summed over its processes, PSS)"
    return f"peak memory {summary['peak_rss_mb']:.0f} MB (largest process; the sum over processes needs /proc)"


class StageError(ValueError):
    """A stage failed on bad input; the message names the stage."""


def source_stamp(roots=None) -> dict[str, int]:
    """Modification time (ns) of every .py file under `roots` (default SOURCE_ROOTS): the code a run started with."""
    stamp: dict[str, int] = {}
    for root in SOURCE_ROOTS if roots is None else roots:
        for path in Path(root).rglob("*.py"):
            stamp[str(path)] = path.stat().st_mtime_ns
    return stamp


def changed_sources(stamp: dict[str, int], roots=None) -> list[str]:
    """Files added, removed or modified since `stamp` was taken.

    Why: the stages run in this process and import their modules when they start, so a source file edited during a
    long run gives a later stage a mix of old and new modules (a failure deep inside, or a silently different
    stage); `genrec run` stops before such a stage instead, and a rerun resumes with the new code."""
    now = source_stamp(roots)
    return sorted(k for k in stamp.keys() | now.keys() if stamp.get(k) != now.get(k))


def _check_data(cfg: RunConfig, data_cfg: DataConfig):
    """Load the dataset once before any stage: a clear error now instead of one after hours of training."""
    from genrec.data.loader import load_data

    _check_data_path(cfg)
    return load_data(cfg.data, data_cfg, verbose=False)


COLLAPSED_SHARE_NOTED = 0.05  # a share of collapsed repeats worth telling the user about


def collapsed_repeats_note(summary: dict) -> str:
    """A note when `--collapse_repeats` (the default) merged many interactions: where users re-open the same item,
    re-surfacing it may be what the data asks for (jobs-kaggle: 23% of its views collapsed; its recent-items
    baseline then scores 0.461 NDCG@10 with repeats kept), and only `--collapse_repeats false` evaluates that."""
    collapsed, read = int(summary.get("repeats_collapsed", 0) or 0), int(summary.get("interactions_read", 0) or 0)
    if not read or collapsed / read < COLLAPSED_SHARE_NOTED:
        return ""
    return (f"{collapsed:,} of the {read:,} interactions ({collapsed / read:.0%}) repeated the user's previous item "
            "and were merged into one (--collapse_repeats true, the default). If re-opening the same item is part of "
            "what to predict, pass --collapse_repeats false (the repeats-kept protocol of BENCHMARKS.md's jobs-kaggle "
            "rows).")


def _check_data_path(cfg: RunConfig) -> None:
    if not cfg.data:
        raise ValueError("--data is required: a dataset folder or file prefix genrec reads (docs/data.md)")
    path = Path(cfg.data)
    if not path.exists() and not list(path.parent.glob(glob.escape(path.name) + ".*")):
        raise FileNotFoundError(f"{cfg.data}: no such dataset folder or file prefix (--data)")


def _preflight(stages: list[Stage]) -> None:
    """Parse every stage's command line before running any (catches bad flags and values early). The evaluation
    is left out: its flags read the traces, which do not exist yet."""
    from genrec.cli import parse_command

    for s in stages:
        if s.command != "evaluate":
            try:
                parse_command(s.command, s.argv)
            except (ValueError, FileNotFoundError) as e:
                raise StageError(f"{s.title} (genrec {s.command}): {e}") from e


def _read_done(path: Path) -> dict[str, dict]:
    """run_stages.json: {stage: {"argv": [...], "seconds": s}}; an unreadable file only loses the notes it feeds."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(v, dict)} if isinstance(loaded, dict) else {}


def execute(cfg: RunConfig, data_cfg: DataConfig, prompt_cfg: PromptConfig, *, label: str = "run",
            before: list[Stage] = ()) -> dict:
    """Run the stages in `before` (e.g. the demo's `genrec synth`) and then the recipe; returns the summary.
    A SIGTERM ends it as Ctrl-C does: the summary records the stopped stage, worker processes are stopped."""
    with sigterm_raises_exit(), TreeMemory() as memory:
        return _execute(cfg, data_cfg, prompt_cfg, label=label, before=before, memory=memory)


def _execute(cfg: RunConfig, data_cfg: DataConfig, prompt_cfg: PromptConfig, *, label: str,
             before: list[Stage], memory: TreeMemory) -> dict:
    from genrec.cli import run_command

    if not CONFIGS.is_dir():
        raise FileNotFoundError(f"{CONFIGS}: the configs/ folder of the source checkout is missing; "
                                f"run `genrec {label}` from a clone installed with `pip install -e .`")
    if "sequence" in cfg.sft2_tasks and not cfg.skip_reasoning and not prompt_cfg.history_reasoning:
        raise ValueError("--sft2_tasks sequence trains on history lines that carry their reasoning: set "
                         "--history_reasoning evidence (or pointer)")
    if not before:
        _check_data_path(cfg)  # before creating --out
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages_path = out / STAGES_FILE
    done: dict[str, dict] = _read_done(stages_path)
    total = len(before) + len(build_stages(cfg, data_cfg, prompt_cfg, codebook_size=2))
    records: list[dict] = []
    summary = {"command": label, "config": {"run": asdict(cfg), "data": asdict(data_cfg), "prompt": asdict(prompt_cfg)},
               "stages": records, "stage_seconds": {}}
    t_all = time.perf_counter()

    def finish(status: str) -> dict:
        summary["status"] = status
        summary["total_seconds"] = round(time.perf_counter() - t_all, 1)
        summary["peak_memory_mb"] = memory.peak_mb  # the process tree's summed PSS: what the machine held
        summary["peak_rss_mb"] = largest_process_rss_mb()
        report = out / "eval" / "eval_report.json"
        if report.exists():
            summary["eval_report"] = str(report)
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
        return summary

    upstream_ran = False  # once a stage runs, every later stage runs too (its inputs changed)
    source = source_stamp()  # the code this run started with (changed_sources)

    def run_stage(i: int, s: Stage) -> None:
        nonlocal upstream_ran
        head = f"[{label} {i}/{total}] {s.title}"
        fresh = cfg.force or upstream_ran
        if s.finished() and not fresh:
            note, earlier = "", done.get(s.key, {})
            if earlier and earlier.get("argv") != s.argv:
                note = " -- NOTE: it ran with other flags than this call's; pass --force true to re-run"
            print(f"{head}: done already ({s.marker}), skipping{note}", file=sys.stderr)
            records.append({"stage": s.key, "status": "skipped", "command": s.command_line(),
                            "seconds_when_run": earlier.get("seconds")})
            return
        argv = [*s.argv, *(s.fresh_flags if fresh else ())]
        changed = changed_sources(source)
        if changed:
            error = (f"the genrec source changed since this {label} started ({', '.join(changed[:3])}"
                     f"{', ...' if len(changed) > 3 else ''}): stopped before stage {i}/{total} {s.title} so that it "
                     f"does not run on a mix of old and new modules; rerun the same command to resume with the new code")
            records.append({"stage": s.key, "status": "failed", "command": s.command_line(), "error": error})
            finish("failed")
            raise StageError(error)
        upstream_ran = True
        print(f"\n{head}: {shlex.join(['genrec', s.command, *argv])}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        memory.stage_peak_mb()  # a new window: this stage's peak
        processes = 1
        try:
            processes, threads_each, split_argv = _sft_processes(cfg, s, argv)
            if processes > 1:
                try:
                    run_in_processes(s.command, split_argv, processes, threads_each)
                except (ValueError, OSError) as e:
                    # a machine where the processes cannot start or meet (or a stage error, which this process then
                    # reports in one line); SFT resumes from the processes' newest complete checkpoint
                    print(f"[{s.key}] {e}; running the stage in this process instead", file=sys.stderr, flush=True)
                    processes = 1
            if processes == 1:
                run_command(s.command, argv)
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            records.append({"stage": s.key, "status": "failed", "command": s.command_line(), "error": str(e),
                            "peak_memory_mb": memory.stage_peak_mb()})
            finish("failed")
            raise StageError(f"stage {i}/{total} {s.title} (genrec {s.command}): {e}") from e
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or a SIGTERM passed on to a stage's processes
            records.append({"stage": s.key, "status": "stopped", "command": s.command_line(),
                            "seconds": round(time.perf_counter() - t0, 1), "peak_memory_mb": memory.stage_peak_mb()})
            finish("stopped")
            raise
        seconds = round(time.perf_counter() - t0, 1)
        summary["stage_seconds"][s.key] = seconds
        records.append({"stage": s.key, "status": "ran", "seconds": seconds, "command": s.command_line(),
                        "peak_memory_mb": memory.stage_peak_mb(),
                        **({"processes": processes} if processes > 1 else {})})
        done[s.key] = {"argv": s.argv, "seconds": seconds}
        atomic_write_text(stages_path, json.dumps(done, indent=1))

    for i, s in enumerate(before, 1):
        run_stage(i, s)
    rec = _check_data(cfg, data_cfg)
    codebook_size = cfg.codebook_size or auto_codebook_size(len(rec.catalog))
    summary.update(data=cfg.data, num_items=len(rec.catalog), codebook_size=codebook_size)
    stages = build_stages(cfg, data_cfg, prompt_cfg, codebook_size)
    print(f"[{label}] {cfg.data}: {len(rec.catalog)} items, {len(rec.train)}/{len(rec.valid)}/{len(rec.test)} "
          f"train/valid/test examples; SIDs {codebook_size} codes per level"
          + ("" if cfg.codebook_size else " (auto)"), file=sys.stderr)
    if note := collapsed_repeats_note(rec.summary):
        print(f"[{label}] note: {note}", file=sys.stderr)
    del rec  # every stage loads its own copy; this one held ~1.2 GB through the run on a 1M-interaction set
    first = next((j for j, s in enumerate(stages) if cfg.force or upstream_ran or not s.finished()), len(stages))
    _preflight(stages[first:])  # the stages that will run
    for i, s in enumerate(stages, len(before) + 1):
        run_stage(i, s)
    finish("finished")

    rows = []
    for r in records:
        if r["status"] == "ran":
            mb = r.get("peak_memory_mb")
            rows.append(f"  {r['stage']:<14}{r['seconds']:>9.1f} s" + (f"  {mb:>7.0f} MB" if mb is not None else ""))
        else:
            earlier = r.get("seconds_when_run")
            rows.append(f"  {r['stage']:<14}  skipped" + (f" (ran in {earlier:.1f} s before)" if earlier is not None else ""))
    print(f"\n[{label}] finished in {summary['total_seconds']:.0f} s, {memory_line(summary)}; "
          f"summary in {out / SUMMARY_FILE}", file=sys.stderr)
    print("\n".join(rows), file=sys.stderr)
    md = out / "eval" / "report.md"
    if md.exists():
        print(md.read_text(encoding="utf-8"))
    print(f"outputs under {out}; TensorBoard: tensorboard --logdir {out}")
    print(f"explore it in a browser: genrec explore --run {shlex.quote(str(out))}")
    return summary


def _sft_processes(cfg: RunConfig, stage: Stage, argv: list[str]) -> tuple[int, int, list[str]]:
    """(processes, torch threads each, argv) for `stage`: SFT stages may train data parallel (genrec/parallel.py),
    each process then accumulating its share of the step's micro-batches; every other stage runs in this process."""
    import torch

    threads = torch.get_num_threads()
    if stage.command != "sft" or wanted_processes(cfg.sft_processes, threads) == 1:
        return 1, 0, argv
    from genrec.cli import parse_command

    accum = parse_command("sft", argv)[-1].gradient_accumulation_steps
    processes, why = training_processes(cfg.sft_processes, threads, accum)
    if why:
        print(f"[{stage.key}] {why}", file=sys.stderr)
    if processes == 1:
        return 1, 0, argv
    threads_each = max(1, threads // processes)
    print(f"[{stage.key}] {processes} processes of {threads_each} thread(s), {accum // processes} micro-batches each "
          "per step (--sft_processes)", file=sys.stderr)
    return processes, threads_each, [*argv, "--gradient_accumulation_steps", str(accum // processes)]


def run(cfg: RunConfig, data_cfg: DataConfig, prompt_cfg: PromptConfig) -> None:
    execute(cfg, data_cfg, prompt_cfg)
