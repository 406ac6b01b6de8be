"""Evaluation time of a trained reasoning model by beam-search batch size (`genrec evaluate --batch_size`).

    PYTHONPATH=. .venv/bin/python scripts/bench_eval_batch.py --run runs/demo --model sft2 --users 200

Runs `genrec evaluate` on one model of a `genrec run`/`genrec demo` folder for each (beams, users per batch) pair,
alternating the batch sizes twice so that a drift of the machine's speed hits each alike, and checks that every
batch size returns the same lists (scores may differ in the last float digits). Prints a Markdown table and
writes JSON (--out). The tiny model's forward is mostly per-call overhead on a CPU, so fewer, larger batches are
faster until the rows per forward outgrow the cache (`EvalConfig.batch_size` 0 = auto: 160 // num_beams users).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_report import print_table, runs, write_results

REPO = Path(__file__).resolve().parents[1]


def evaluate(run: Path, model: str, out: Path, users: int, beams: int, batch: int, threads: int) -> tuple[float, list]:
    argv = [sys.executable, "-m", "genrec.cli", "--threads", str(threads), "evaluate", "--data", str(run / "data"),
            "--sid_map", str(run / "tokenizer"), "--model", str(run / model / "final"), "--layout", "auto",
            "--traces", str(run / "traces"), "--baselines", "", "--max_users", str(users), "--num_beams", str(beams),
            "--protocols", "all", "--repeat_prior", "false", "--seed", "0", "--batch_size", str(batch),
            "--output_dir", str(out), "--progress", "false"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    preds = next(out.glob("predictions_*_all.jsonl"))
    return seconds, [json.loads(line)["items"] for line in preds.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="folder of `genrec demo` / `genrec run`")
    ap.add_argument("--model", default="sft2", help="stage folder under --run (sft1, sft2, rl)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--beams", default="10,20")
    ap.add_argument("--batches", default="8,16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=str(REPO / "bench_results" / "eval_batch"))
    ap.add_argument("--out", default=str(REPO / "bench_results" / "bench_eval_batch.json"))
    args = ap.parse_args()
    run, work = Path(args.run), Path(args.work)
    rows = []
    for beams in [int(b) for b in args.beams.split(",")]:
        batches = [int(b) for b in args.batches.split(",")]
        seconds: dict[int, list[float]] = {b: [] for b in batches}
        lists: dict[int, list] = {}
        for _ in range(2):
            for b in batches:
                s, items = evaluate(run, args.model, work / f"b{beams}_u{b}", args.users, beams, b, args.threads)
                seconds[b].append(s)
                lists[b] = items
        same = all(lists[b] == lists[batches[0]] for b in batches)
        base = sum(seconds[batches[0]]) / 2
        for b in batches:
            mean = sum(seconds[b]) / 2
            rows.append({"beams": beams, "users_per_batch": b, "rows_per_forward": b * beams, "seconds": seconds[b],
                         "speedup_vs_first": base / mean, "same_lists": same})
    print_table([
        ("beams", lambda r: r["beams"]), ("users per batch", lambda r: r["users_per_batch"]),
        ("rows", lambda r: r["rows_per_forward"]),
        (f"seconds ({args.users} users, 2 runs)", lambda r: runs(r["seconds"])),
        ("speed-up vs first", lambda r: f"{r['speedup_vs_first']:.2f}x"), ("same lists", lambda r: r["same_lists"]),
    ], rows)
    write_results(args.out, args, rows)


if __name__ == "__main__":
    main()
