"""Beam-search time of a trained model by KV-cache layout: shared-prefix (the default) vs per-row static cache.

    PYTHONPATH=. .venv/bin/python scripts/bench_beam_cache.py --run runs/demo --model sft2 --users 200

Loads one model of a `genrec run`/`genrec demo` folder once and decodes the same test users with each cache layout
(`SIDBeamSearch(cache=...)`), alternating the layouts `--repeats` times so a drift of the machine's speed hits each
alike, and checks that every layout returns the same lists and reasoning (scores may differ in the last float digits).
Prints a Markdown table and writes JSON (--out).
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
    ap.add_argument("--model", default="sft2", help="stage folder under --run (sft1, sft2, rl)")
    ap.add_argument("--data", default="", help="the run's dataset (default: <run>/data, as `genrec demo` writes it)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--beams", default="10,20")
    ap.add_argument("--batch_rows", default="160", help="beam rows per forward (users per batch x beams), a list")
    ap.add_argument("--caches", default="static,shared")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench_results" / "bench_beam_cache.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    data = load_data(args.data or str(run / "data"), None, verbose=False)
    examples = data.test[: args.users]
    arms = [(c, int(r)) for r in args.batch_rows.split(",") for c in args.caches.split(",")]
    rows = []
    for beams in [int(b) for b in args.beams.split(",")]:
        rec = load_generative(run / args.model / "final", data.catalog, num_beams=beams,
                              level_weights="auto").fit(data.train, data.catalog)
        seconds: dict[tuple, list[float]] = {a: [] for a in arms}
        lists: dict[tuple, list] = {}
        scores: dict[tuple, list] = {}
        for _ in range(args.repeats):
            for arm in arms:
                rec.search.cache_impl, rec.batch_size = arm[0], max(1, arm[1] // beams)
                start = time.perf_counter()
                out = rec.recommend_beams(examples, 20)
                seconds[arm].append(time.perf_counter() - start)
                lists[arm] = [[(b.item_id, b.blocks) for b in u] for u in out]
                scores[arm] = [b.score for u in out for b in u]
        base = arms[0]
        for arm in arms:
            mean = sum(seconds[arm]) / len(seconds[arm])
            rows.append({
                "beams": beams, "cache": arm[0], "users_per_batch": max(1, arm[1] // beams), "seconds": seconds[arm],
                "speedup_vs_first": sum(seconds[base]) / len(seconds[base]) / mean,
                "same_lists_and_reasoning": lists[arm] == lists[base],
                "max_score_diff": max(abs(a - b) for a, b in zip(scores[arm], scores[base])),
            })
    print_table([
        ("beams", lambda r: r["beams"]), ("cache", lambda r: r["cache"]),
        ("users per batch", lambda r: r["users_per_batch"]),
        (f"seconds ({args.users} users, {args.threads} thread(s))", lambda r: runs(r["seconds"])),
        ("speed-up", lambda r: f"{r['speedup_vs_first']:.2f}x"),
        ("same lists and reasoning", lambda r: r["same_lists_and_reasoning"]),
        ("max score diff", lambda r: f"{r['max_score_diff']:.1e}"),
    ], rows)
    write_results(args.out, args, rows)


if __name__ == "__main__":
    main()
