"""Benchmark the data loader: our `load_data` vs a straightforward csv.DictReader baseline, same run.

Generates a seeded synthetic RecBole dataset (default 1M interactions, 50k users, 100k items) into
a temp folder, times loading it (leave-one-out and temporal), times the real sets in ../shared/data
when present, prints a table and writes bench_results/data.json.

    PYTHONPATH=. .venv/bin/python scripts/bench_data.py [--interactions 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from genrec.data.config import DataConfig
from genrec.data.loader import load_data
from genrec.data.recbole import write_atomic
from genrec.data.schema import Example

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def make_dataset(folder: Path, n_inter: int, n_users: int, n_items: int, seed: int) -> None:
    rng = random.Random(seed)
    write_atomic(
        folder / "synth.item",
        ["item_id:token", "title:token_seq", "company:token_seq"],
        ((str(i), f"Job title {i % 997}", f"Company {i % 4999}") for i in range(n_items)),
    )
    t0 = 1_400_000_000
    rows = []
    for k in range(n_inter):
        rows.append((str(rng.randrange(n_users)), str(rng.randrange(n_items)), t0 + 3 * k + rng.randrange(100)))
    rng.shuffle(rows)  # file order is not time order
    write_atomic(folder / "synth.inter", ["user_id:token", "item_id:token", "timestamp:float"], rows)


def baseline_load(folder: Path, max_history: int = 10) -> int:
    """What a direct implementation does: csv.DictReader, dict of lists, sort per user, LOO examples."""
    with open(folder / "synth.item", encoding="utf-8", newline="") as f:
        items = {r["item_id:token"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    seqs: dict[str, list[tuple[float, str]]] = {}
    with open(folder / "synth.inter", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if r["item_id:token"] not in items:
                raise ValueError("unknown item")
            seqs.setdefault(r["user_id:token"], []).append((float(r["timestamp:float"]), r["item_id:token"]))
    n = 0
    out = []
    for u, s in seqs.items():
        s.sort(key=lambda x: x[0])
        seq = [it for i, (_, it) in enumerate(s) if i == 0 or it != s[i - 1][1]]
        if len(seq) < 3:
            continue
        for i in range(1, len(seq)):
            out.append(Example(u, tuple(seq[max(0, i - max_history) : i]), seq[i]))
            n += 1
    return n


def timed(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_dataset(folder, args.interactions, args.users, args.items, args.seed)
        label = f"synth {args.interactions:,} inter / {args.users:,} users / {args.items:,} items"
        for name, fn in [
            ("load_data loo", lambda: load_data(folder, verbose=False)),
            ("load_data temporal", lambda: load_data(folder, DataConfig(split="temporal"), verbose=False)),
            ("baseline csv.DictReader loo", lambda: baseline_load(folder)),
        ]:
            wall, cpu = timed(fn, args.repeats)
            results.append({"data": label, "method": name, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
    for sub in ("jobs-kaggle", "amazon-industrial-mini"):
        if (SHARED / sub).is_dir():
            wall, cpu = timed(lambda: load_data(SHARED / sub, verbose=False), args.repeats)
            results.append({"data": sub, "method": "load_data defaults", "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
    ours = next(r for r in results if r["method"] == "load_data loo")
    base = next(r for r in results if r["method"].startswith("baseline"))
    speedup = float(base["cpu_s"]) / max(float(ours["cpu_s"]), 1e-9)
    print(f"{'data':<52}{'method':<30}{'wall s':>9}{'cpu s':>9}")
    for r in results:
        print(f"{r['data']:<52}{r['method']:<30}{r['wall_s']:>9.3f}{r['cpu_s']:>9.3f}")
    print(f"speed-up of load_data (loo) over the baseline, CPU time: {speedup:.2f}x")
    out = REPO / "bench_results" / "data.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results, "speedup_cpu": speedup}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
