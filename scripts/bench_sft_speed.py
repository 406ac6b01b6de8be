"""SFT step time, one run per table: stage 1 (TRL's fused LM head vs the full-logits loss, random vs length-grouped
batches), stage 2 (the LM head over every position vs only from the batch's first completion position on), or, with
--precision, fp32 against bf16 autocast over fp32 weights (`--cpu_bf16`, an option on a CPU with native bf16), each run
twice in the order fp32, bf16, fp32, bf16 so that a drift of the machine's speed hits both, or, with --sampling, one
padded batch of 16 rows per step against the same 16 rows in length-balanced micro-batches (`batch_rebalance`), in
the same alternating order.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python scripts/bench_sft_speed.py              # demo market, 80 steps
    PYTHONPATH=. .venv/bin/python scripts/bench_sft_speed.py --steps 200 --threads 1
    PYTHONPATH=. .venv/bin/python scripts/bench_sft_speed.py --stage 2 --steps 60 --threads 1
    PYTHONPATH=. .venv/bin/python scripts/bench_sft_speed.py --stage 2 --precision --steps 100
    PYTHONPATH=. .venv/bin/python scripts/bench_sft_speed.py --stage 2 --sampling --steps 100

Builds (once, under --work) the demo's synthetic market, SID map and tiny model with the genrec CLI, then trains the
same `genrec sft --stage 1` (configs/sft_stage1.yaml, the `sequence` task) for --steps steps under each variant, one
after another in this process's machine, and reads TRL's `train_runtime` and the last logged loss. Ratios are
against the first variant (TRL's defaults). Prints a Markdown table and writes JSON (--out). `--stage 2` adds the
demo's traces and trains configs/sft_stage2.yaml (distillation on) from the untrained model (the step time does not
depend on the weights); its baseline is the same code with the completion-only head switched off.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

def batching(rows: int, micro_batches: int = 1) -> list[str]:
    """`genrec sft` flags for `rows` rows per optimizer step in `micro_batches` micro-batches."""
    return ["--per_device_train_batch_size", str(rows // micro_batches), "--gradient_accumulation_steps",
            str(micro_batches)]


ONE_BATCH = batching(16)  # before session 20
VARIANTS = {  # name -> extra `genrec sft` flags (one batch of 16 per step, as when these were measured)
    "fused LM head, random batches (TRL defaults)": ["--loss_impl", "fused", "--train_sampling_strategy", "random",
                                                     *ONE_BATCH],
    "full logits, random batches (genrec default on CPU)": ["--loss_impl", "full", "--train_sampling_strategy",
                                                           "random", *ONE_BATCH],
    "full logits, length-grouped batches (an option: lower NDCG@10 on amazon)": ["--loss_impl", "full",
                                                                    "--train_sampling_strategy", "group_by_length",
                                                                    *ONE_BATCH],
}


# --sampling: 16 rows per optimizer step, drawn at random, in one padded batch or in length-balanced micro-batches
# (transformers' `batch_rebalance` sampler with gradient accumulation; the same gradient, tests/test_sft.py).
SAMPLING_VARIANTS = {
    "one batch of 16 (random)": ["--train_sampling_strategy", "random", *ONE_BATCH],
    **{f"{n} length-balanced micro-batches (batch_rebalance, {16 // n} x {n})":
       ["--train_sampling_strategy", "batch_rebalance", *batching(16, n)] for n in (2, 4)},
}

STAGE2_VARIANTS = {  # name -> whether the LM head runs only from the first completion position
    "LM head over every position (before session 13)": False,
    "LM head from the first completion position (genrec default)": True,
}
# The baseline: genrec's own trainer and distiller, told that the model cannot keep only the last logits.
FULL_WIDTH = ("import sys, genrec.sft as s, genrec.distill as d, genrec.cli as c; "
              "s.accepts_logits_to_keep = d.accepts_logits_to_keep = lambda model: False; "
              "sys.argv = ['genrec'] + sys.argv[1:]; c.main()")


def genrec(threads: int, *args: str, full_width: bool = False) -> str:
    head = ["-c", FULL_WIDTH] if full_width else ["-m", "genrec.cli"]
    cmd = [sys.executable, *head, "--threads", str(threads), *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "bench_results" / "sft_speed"))
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stage", type=int, choices=(1, 2), default=1)
    ap.add_argument("--precision", action="store_true", help="fp32 vs bf16 autocast (the stage's default flags)")
    ap.add_argument("--sampling", action="store_true", help="one padded batch of 16 vs length-balanced micro-batches "
                                                            "(each variant twice, alternating)")
    ap.add_argument("--out", default="", help="JSON path (default bench_results/bench_sft_speed[_stage2][_precision]"
                                              ".json)")
    args = ap.parse_args()
    suffix = ("_stage2" if args.stage == 2 else "") + ("_precision" if args.precision else "") + (
        "_sampling" if args.sampling else "")
    args.out = args.out or str(REPO / "bench_results" / f"bench_sft_speed{suffix}.json")
    work = Path(args.work)
    data, tok, model = work / "data", work / "tokenizer", work / "model"
    if not (data / "synth_config.json").exists():
        genrec(args.threads, "synth", "--out", str(data), "--seed", "0", "--num_jobs", "3000", "--num_users", "1500")
    if not (tok / "sid_map.json").exists():
        genrec(args.threads, "fit-tokenizer", "--data", str(data), "--out", str(tok), "--seed", "0",
               "--codebook_size", "32", "--overwrite", "true")
    if not (model / "config.json").exists():
        genrec(args.threads, "build-model", "--sid_map", str(tok), "--data", str(data), "--output_dir", str(model),
               "--seed", "0")
    common = ["--sid_map", str(tok), "--data", str(data), "--max_steps", str(args.steps), "--save_steps", "100000",
              "--report_to", "none", "--max_eval_examples", "16", "--logging_steps", "20", "--seed", "0"]
    traces = work / "traces"
    if args.stage == 2 and not (traces / "traces_config.json").exists():
        genrec(args.threads, "traces", "--data", str(data), "--sid_map", str(tok), "--model", str(model),
               "--output_dir", str(traces), "--trace_seed", "0")
    if args.stage == 1:
        argv = ["sft", "--config", "configs/sft_stage1.yaml", "--stage", "1", "--model", str(model), "--output_dir",
                str(work / "sft"), *common]
    else:
        argv = ["sft", "--config", "configs/sft_stage2.yaml", "--stage", "2", "--model", str(model), "--traces",
                str(traces), "--output_dir", str(work / "sft2"), "--distill_weight", "0.5", *common]
    runs = []  # (variant, flags shown, genrec argv, full_width)
    if args.precision:
        for i in (1, 2):
            for name, flag in (("fp32", "false"), ("bf16 autocast, fp32 weights", "true")):
                runs.append((f"{name} (run {i})", ["--bf16", flag], [*argv, "--bf16", flag], False))
    elif args.sampling:
        for i in (1, 2):
            for name, flags in SAMPLING_VARIANTS.items():
                runs.append((f"{name} (run {i})", flags, [*argv, *flags, "--bf16", "false"], False))
    elif args.stage == 1:
        for name, flags in VARIANTS.items():
            runs.append((name, flags, [*argv, *flags, "--bf16", "false"], False))
    else:
        for name, completion_only in STAGE2_VARIANTS.items():
            runs.append((name, [] if completion_only else ["(accepts_logits_to_keep patched to False)"],
                         [*argv, "--bf16", "false"], not completion_only))
    rows = []
    for name, flags, argv, full_width in runs:
        out = genrec(args.threads, *argv, full_width=full_width)
        runtime = float(re.findall(r"'train_runtime': '?([0-9.]+)", out)[-1])
        losses = re.findall(r"'loss': '?([0-9.]+)", out)
        rows.append({"variant": name, "flags": " ".join(flags), "steps": args.steps, "train_seconds": runtime,
                     "seconds_per_step": runtime / args.steps, "last_logged_loss": float(losses[-1]) if losses else None})
    base = rows[0]["train_seconds"]
    print(f"| variant | {args.steps} steps (s) | s/step | speed-up | last logged loss |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        r["speedup"] = base / r["train_seconds"]
        print(f"| {r['variant']} | {r['train_seconds']:.1f} | {r['seconds_per_step']:.3f} | {r['speedup']:.2f}x | "
              f"{r['last_logged_loss']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"stage": args.stage, "threads": args.threads, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
