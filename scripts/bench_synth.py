"""Benchmark `genrec synth`: generation and write time per size, and how much signal each level carries.

Usage (from the repo root):
    PYTHONPATH=. .venv/bin/python scripts/bench_synth.py            # default + 100k x 50k
    PYTHONPATH=. .venv/bin/python scripts/bench_synth.py --quick    # default size only

Target: 100,000 jobs x 50,000 applicants generate and write in under 60 s on a 2-core machine.
The signal table fits a first-order Markov predictor ("the next value most often following the
previous one", counted on 80% of applicants) per level of the job hierarchy and scores top-1 accuracy
on the last application of the other 20%, next to the "most popular value" baseline. Results go to
bench_results/synth.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from genrec.data.synth import SynthConfig, generate_market, write_market


def time_size(num_jobs: int, num_users: int, seed: int = 0):
    cfg = SynthConfig(num_jobs=num_jobs, num_users=num_users, seed=seed, progress=False)
    c0 = time.process_time()
    t0 = time.perf_counter()
    market = generate_market(cfg)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        paths = write_market(market, d)
        t2 = time.perf_counter()
        c2 = time.process_time()
        size_mb = sum(p.stat().st_size for p in paths.values()) / 1e6
    return market, {
        "num_jobs": num_jobs, "num_users": num_users, "interactions": int(len(market.inter_job)),
        "generate_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2), "cpu_s": round(c2 - c0, 2),
        "files_mb": round(size_mb, 1),
    }


def markov_signal(m, seed: int = 0) -> list[dict]:
    """Top-1 accuracy of a Markov-1 predictor vs the popularity baseline, per hierarchy level."""
    num_jobs, num_users = len(m.job_ids), len(m.user_ids)
    users = m.inter_user
    rng = np.random.default_rng(seed)
    test_users = set(rng.permutation(num_users)[: num_users // 5].tolist())
    seqs = defaultdict(list)
    for u, j in zip(users.tolist(), m.inter_job.tolist()):
        seqs[u].append(j)
    levels = {
        "industry": m.job_industry,
        "family": m.job_family,
        "role": m.job_role,
        "role+seniority": m.job_role * 10 + m.job_seniority,
        "city": m.job_city,
        "exact job": np.arange(num_jobs),
    }
    home = m.user_city
    rows = []
    for name, lab in levels.items():
        trans: dict[int, Counter] = defaultdict(Counter)
        pop: Counter = Counter()
        for u, s in seqs.items():
            if u in test_users:
                continue
            v = lab[s].tolist()
            pop.update(v)
            for a, b in zip(v[:-1], v[1:]):
                trans[a][b] += 1
        top = pop.most_common(1)[0][0]
        hit_m = hit_p = n = 0
        for u in test_users:
            v = lab[seqs[u]].tolist()
            prev, target = v[-2], v[-1]
            guess = trans[prev].most_common(1)[0][0] if trans[prev] else top
            hit_m += guess == target
            hit_p += top == target
            n += 1
        extra = {}
        if name == "city":  # the profile's home city as the guess
            extra["home_city_acc"] = round(float(np.mean([lab[seqs[u][-1]] == home[u] for u in test_users])), 3)
        rows.append({**extra, "level": name, "markov1_acc": round(hit_m / n, 3), "popularity_acc": round(hit_p / n, 3),
                     "distinct_values": int(len(np.unique(lab)))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the default size")
    ap.add_argument("--out", default="bench_results/synth.json")
    args = ap.parse_args()

    sizes = [(3000, 1500)] + ([] if args.quick else [(100_000, 50_000)])
    runs = [time_size(j, u) for j, u in sizes]
    timing = [r for _, r in runs]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall times grow with load; CPU s does not)")
    print("| jobs | applicants | applications | generate s | write s | total s (wall) | CPU s | files MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in timing:
        print(f"| {r['num_jobs']:,} | {r['num_users']:,} | {r['interactions']:,} | {r['generate_s']} | "
              f"{r['write_s']} | {r['total_s']} | {r['cpu_s']} | {r['files_mb']} |")

    signal = {}
    for market, r in runs:
        key = f"{r['num_jobs']}x{r['num_users']}"
        signal[key] = markov_signal(market)
        print(f"\nNext-application predictability, {r['num_jobs']:,} jobs x {r['num_users']:,} applicants "
              f"(last application of 20% held-out applicants)")
        print("| level | distinct values | Markov-1 top-1 | most-popular top-1 |")
        print("|---|---:|---:|---:|")
        for row in signal[key]:
            note = f" (home city: {row['home_city_acc']})" if "home_city_acc" in row else ""
            print(f"| {row['level']} | {row['distinct_values']} | {row['markov1_acc']}{note} | {row['popularity_acc']} |")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "load_avg": os.getloadavg()[0], "timing": timing, "signal": signal}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
