"""`genrec demo`: the whole pipeline on the built-in synthetic job market, end to end, offline, on CPU.

synth -> fit-tokenizer -> build-model -> traces -> SFT stage 1 -> SFT stage 2 -> SAPO -> evaluate.
Each stage is the same command a user runs (`genrec.cli.run_command`), writes into its own folder under
`--out`, and is skipped when its output is already there, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sid_tokenizer.sidmap import atomic_write_text

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
    sft1_steps: int = field(default=400, metadata={"help": "Optimizer steps of stage-1 SFT."})
    sft1_tasks: str = field(default="history2sid", metadata={
        "help": "Stage-1 tasks (see `genrec sft --stage1_tasks`). The demo spends its small budget on the "
                "recommendation task: at 100 steps of all three tasks the tiny model stayed at chance, at 400 steps "
                "of history2sid it reached level-0 accuracy 0.28 (docs/bench/learning.md)."})
    sft2_steps: int = field(default=100, metadata={"help": "Optimizer steps of stage-2 SFT (reasoning traces)."})
    rl_steps: int = field(default=6, metadata={"help": "SAPO optimizer steps."})
    rl_prompts: int = field(default=128, metadata={"help": "Training prompts sampled for SAPO."})
    eval_users: int = field(default=100, metadata={"help": "Test users evaluated (seeded sample; 0 = all). Each reasoning "
                                                          "model costs ~1 s per user on 2 cores, per protocol."})
    num_beams: int = field(default=10, metadata={"help": "Beams of the constrained beam search (top-20 lists are "
                                                                "completed from the last level's best children)."})
    sasrec_epochs: int = field(default=8, metadata={"help": "SASRec epoch cap in the demo (its fit dominated the "
                                                             "evaluation stage at the library default of 200)."})
    force: bool = field(default=False, metadata={"help": "Re-run every stage even when its output exists."})


CONFIG_CLASSES = (DemoConfig,)


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _stages(cfg: DemoConfig) -> list[tuple[str, str, list[str], Path]]:
    """(title, command, argv, marker file) per stage; the marker says the stage has finished."""
    out = Path(cfg.out)
    data, tok, model = out / "data", out / "tokenizer", out / "model"
    traces, sft1, sft2, rl, ev = out / "traces", out / "sft1", out / "sft2", out / "rl", out / "eval"
    seed = str(cfg.seed)
    return [
        ("synthetic job market", "synth",
         ["--out", str(data), "--seed", seed, "--num_jobs", str(cfg.num_jobs), "--num_users", str(cfg.num_users)],
         data / "jobs-synth.inter"),
        ("semantic IDs", "fit-tokenizer",
         ["--data", str(data), "--out", str(tok), "--seed", seed, "--codebook_size", str(cfg.codebook_size)],
         tok / "tokenizer_report.json"),
        ("tiny LM with SID vocabulary", "build-model",
         ["--sid_map", str(tok), "--data", str(data), "--output_dir", str(model), "--seed", seed],
         model / "config.json"),
        ("reasoning traces", "traces",
         ["--data", str(data), "--sid_map", str(tok), "--model", str(model), "--output_dir", str(traces)],
         traces / "traces_config.json"),
        ("SFT stage 1 (history -> SID, no reasoning)", "sft",
         ["--config", str(CONFIGS / "sft_stage1.yaml"), "--stage", "1", "--model", str(model), "--sid_map", str(tok),
          "--data", str(data), "--output_dir", str(sft1), "--max_steps", str(cfg.sft1_steps),
          "--stage1_tasks", cfg.sft1_tasks, "--seed", seed],
         sft1 / "final" / "config.json"),
        ("SFT stage 2 (reasoning)", "sft",
         ["--config", str(CONFIGS / "sft_stage2.yaml"), "--stage", "2", "--model", str(sft1 / "final"),
          "--sid_map", str(tok), "--traces", str(traces), "--output_dir", str(sft2),
          "--max_steps", str(cfg.sft2_steps), "--seed", seed],
         sft2 / "final" / "config.json"),
        ("SAPO", "rl",
         ["--config", str(CONFIGS / "rl_sapo.yaml"), "--model", str(sft2 / "final"), "--data", str(data),
          "--sid_map", str(tok), "--traces", str(traces), "--output_dir", str(rl), "--max_steps", str(cfg.rl_steps),
          "--max_examples", str(cfg.rl_prompts), "--seed", seed],
         rl / "final" / "config.json"),
        ("evaluation against the baselines", "evaluate",
         ["--data", str(data), "--sid_map", str(tok), "--output_dir", str(ev),
          "--model", f"{sft1 / 'final'},{sft2 / 'final'},{rl / 'final'}", "--layout", "direct,auto,auto",
          "--traces", str(traces), "--baselines", "mostpop,recent,sasrec", "--sasrec_max_epochs", str(cfg.sasrec_epochs), "--max_users", str(cfg.eval_users),
          "--num_beams", str(cfg.num_beams), "--seed", seed],
         ev / "eval_report.json"),
    ]


def run(cfg: DemoConfig) -> None:
    from genrec.cli import run_command

    if not CONFIGS.is_dir():
        raise FileNotFoundError(f"{CONFIGS}: the configs/ folder of the source checkout is missing; "
                                "run the demo from a clone installed with `pip install -e .`")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = _stages(cfg)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for i, (title, command, argv, marker) in enumerate(stages, 1):
        if marker.exists() and not cfg.force:
            print(f"[demo {i}/{len(stages)}] {title}: done already ({marker}), skipping", file=sys.stderr)
            continue
        print(f"\n[demo {i}/{len(stages)}] {title}: genrec {command} {' '.join(argv)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        run_command(command, argv)
        timings[command if command != "sft" else f"sft{argv[argv.index('--stage') + 1]}"] = round(
            time.perf_counter() - t0, 1)
    total = round(time.perf_counter() - t_all, 1)
    summary = {"config": asdict(cfg), "stage_seconds": timings, "total_seconds": total}
    report_path = out / "eval" / "eval_report.json"
    if report_path.exists():
        summary["eval_report"] = str(report_path)
    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=1))
    print(f"\n[demo] finished in {total:.0f}s; stage times {timings}", file=sys.stderr)
    md = out / "eval" / "report.md"
    if md.exists():
        print(md.read_text(encoding="utf-8"))
    print(f"outputs under {out}; TensorBoard: tensorboard --logdir {out}")
