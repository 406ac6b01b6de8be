"""`genrec demo`: the whole pipeline on the built-in synthetic job market, end to end, offline, on CPU.

synth -> fit-tokenizer -> build-model -> traces -> SFT stage 1 -> SFT stage 2 -> SAPO -> evaluate.
After `genrec synth` it is `genrec run` (genrec/commands/run.py) with the demo's sizes and budgets: each stage is
the same command a user runs, writes into its own folder under `--out`, and is skipped when its output is already
there, so an interrupted demo resumes where it stopped. The summary goes to <out>/run_summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HELP = "Run the whole pipeline on the built-in synthetic job market (offline, CPU, ~15 minutes)."


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo; the defaults fit a 2-core CPU in about 15 minutes."""

    out: str = field(default="runs/demo", metadata={"help": "Folder for every stage's output."})
    seed: int = field(default=0, metadata={"help": "Seed for every stage (same seed, same results)."})
    num_jobs: int = field(default=3000, metadata={"help": "Jobs in the synthetic market."})
    num_users: int = field(default=1500, metadata={"help": "Applicants in the synthetic market."})
    codebook_size: int = field(default=32, metadata={"help": "Codes per SID level (small codebooks suit the tiny "
                                                                   "model's CPU budget; the library default is 256)."})
    sft1_epochs: float = field(default=8.0, metadata={
        "help": "Epochs of stage-1 SFT (the `sequence` task: every target of a user's history in one pass). At 5 "
                "epochs NDCG@10 was 0.050, at 10 epochs 0.075 (docs/bench/learning.md)."})
    sft2_steps: int = field(default=1200, metadata={
        "help": "Optimizer steps of stage-2 SFT (reasoning traces, with stage-1 rows replayed; ~1.8 epochs). From one "
                "stage 1, 500 users: 1,200 steps NDCG@10 0.131, 1,600 steps 0.129; session 12: 1,600 steps +0.022 over "
                "800 (docs/bench/learning.md)."})
    rl_steps: int = field(default=30, metadata={"help": "SAPO optimizer steps (4 prompts x 8 rollouts each)."})
    rl_prompts: int = field(default=128, metadata={"help": "Valid-split prompts sampled for SAPO."})
    eval_users: int = field(default=1000, metadata={
        "help": "Test users evaluated (seeded sample; 0 = all): enough for the report's paired intervals against "
                "SASRec to be narrower than +-0.02 NDCG@10 (about +-0.025 at 500 users)."})
    num_beams: int = field(default=10, metadata={"help": "Beams of the constrained beam search (top-20 lists are "
                                                                "completed from the last level's best children)."})
    eval_batch_size: int = field(default=32, metadata={
        "help": "Users per beam-search batch in the evaluation (320 rows at 10 beams: the demo's short prompts ran "
                "13 min 24 s in all against 14 min 17 s at the library's auto 16, the same lists; 0 = auto)."})
    sasrec_epochs: int = field(default=200, metadata={"help": "SASRec epoch cap (early stopping on valid NDCG@10; per-"
                                                               "sequence training fits the demo market in ~25 s)."})
    sft_processes: int = field(default=0, metadata={
        "help": "Processes each SFT stage trains in, data parallel (`genrec run --sft_processes`; 0 = auto: 2 on a "
                "machine without a GPU when the run has at least 2 torch threads)."})
    force: bool = field(default=False, metadata={"help": "Re-run every stage even when its output exists."})


CONFIG_CLASSES = (DemoConfig,)


def run(cfg: DemoConfig) -> None:
    """`genrec synth` into <out>/data, then `genrec run` on it with the demo's budgets (same stages, same code)."""
    from genrec.commands.run import RunConfig, Stage, execute
    from genrec.data.config import DataConfig
    from genrec.prompts import PromptConfig

    data = Path(cfg.out) / "data"
    synth = Stage("synth", "synthetic job market", "synth",
                  ["--out", str(data), "--seed", str(cfg.seed), "--num_jobs", str(cfg.num_jobs),
                   "--num_users", str(cfg.num_users)],
                  data / "synth_config.json")  # written last by write_market
    run_cfg = RunConfig(
        data=str(data), out=cfg.out, seed=cfg.seed, codebook_size=cfg.codebook_size, sft1_epochs=cfg.sft1_epochs,
        sft2_steps=cfg.sft2_steps, rl_steps=cfg.rl_steps, rl_prompts=cfg.rl_prompts,
        eval_users=cfg.eval_users, num_beams=cfg.num_beams, eval_batch_size=cfg.eval_batch_size,
        sasrec_epochs=cfg.sasrec_epochs, sft_processes=cfg.sft_processes, force=cfg.force,
        protocols="all",
    )
    execute(run_cfg, DataConfig(), PromptConfig(), label="demo", before=[synth])
