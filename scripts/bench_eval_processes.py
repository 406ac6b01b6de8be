"""Beam-search time of a trained model in one process vs shared out to forked worker processes.

    PYTHONPATH=. .venv/bin/python scripts/bench_eval_processes.py --run runs/demo --model rl --users 256

Loads one model of a `genrec run`/`genrec demo` folder once and decodes the same test users with each worker count
(`GenerativeRecommender(processes=N)`, the `--processes` of `genrec evaluate`), the machine's `--threads` shared out
among the workers, alternating the arms `--repeats` times so a drift of the machine's speed hits each alike; checks
that every arm returns the same lists, scores and reasoning. Prints a Markdown table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_report import print_table, runs, write_results

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from eval.generative import load_generative
    from genrec.data.loader import load_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo", help="folder of `genrec demo` / `genrec run`")
    ap.add_argument("--model", default="rl", help="stage folder under --run (sft1, sft2, rl)")
    ap.add_argument("--data", default="", help="the run's dataset (default: <run>/data, as `genrec demo` writes it)")
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--batch_size", type=int, default=32, help="users per batch (genrec run's eval_batch_size)")
    ap.add_argument("--processes", default="1,2", help="worker counts to compare, the first is the baseline")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the machine, shared out to the workers")
    ap.add_argument("--out", default=str(REPO / "bench_results" / "bench_eval_processes.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    data = load_data(args.data or str(run / "data"), None, verbose=False)
    examples = data.test[: args.users]
    arms = [int(n) for n in args.processes.split(",")]
    rec = load_generative(run / args.model / "final", data.catalog, num_beams=args.beams, batch_size=args.batch_size,
                          level_weights="auto").fit(data.train, data.catalog)
    seconds: dict[int, list[float]] = {n: [] for n in arms}
    lists: dict[int, list] = {}
    for _ in range(args.repeats):
        for n in arms:
            rec.processes = n
            start = time.perf_counter()
            out = rec.recommend_beams_variants(examples, 20, [False, True])  # both protocols, as genrec run
            seconds[n].append(time.perf_counter() - start)
            lists[n] = [[(b.item_id, b.score, b.blocks) for b in u] for v in out for u in v]
    base = arms[0]
    rows = [{"processes": n, "threads_each": max(1, args.threads // n), "seconds": seconds[n],
             "speedup_vs_first": sum(seconds[base]) / sum(seconds[n]), "same_lists": lists[n] == lists[base]}
            for n in arms]
    print_table([
        ("processes", lambda r: r["processes"]), ("threads each", lambda r: r["threads_each"]),
        (f"seconds ({args.users} users, {args.beams} beams, both protocols)", lambda r: runs(r["seconds"])),
        ("speed-up", lambda r: f"{r['speedup_vs_first']:.2f}x"),
        ("same lists, scores and reasoning", lambda r: r["same_lists"]),
    ], rows)
    write_results(args.out, args, rows)


if __name__ == "__main__":
    main()
