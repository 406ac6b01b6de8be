"""Paired per-user NDCG@k (10 unless --k) between prediction files of separate `genrec evaluate` runs (same users and
order).

    PYTHONPATH=. .venv/bin/python scripts/pair_predictions.py A.jsonl B.jsonl [C.jsonl ...]

Each file is a `predictions_<method>_<protocol>.jsonl` that `genrec evaluate` writes. Every later file is paired
with the first (B - A, C - A, ...), row by row: the rows must name the same user and target in the same order
(same data, --max_users and --seed), else the script stops. Several files per side, joined with commas
(`A1.jsonl,A2.jsonl`), are averaged per row first (seeds of one method), and the interval resamples users
(the conservative reading: the seeds' noise is not counted as independent users). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.metrics import paired_difference, per_user_ndcg, target_ranks  # noqa: E402


def per_user(spec: str, k: int = 10) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Per-row NDCG@k of one file, or the row-wise mean over comma-separated files, and the (user, target) keys."""
    scores, keys = [], None
    for path in spec.split(","):
        if not Path(path).is_file():
            raise SystemExit(f"{path}: prediction file not found "
                             "(written by `genrec evaluate --save_predictions true`)")
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        these = [(r["user_id"], r["target"]) for r in rows]
        if keys is not None and these != keys:
            raise SystemExit(f"{path}: rows differ from {spec.split(',')[0]} (other users, order or targets)")
        keys = these
        scores.append(per_user_ndcg(target_ranks([r["items"] for r in rows], [r["target"] for r in rows]), k))
    return np.mean(scores, axis=0), keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="prediction files; the first is the reference")
    ap.add_argument("--k", type=int, default=10, help="cut-off of NDCG@k (1 = hit rate at the first item)")
    args = ap.parse_args()
    if args.k < 1:
        raise SystemExit(f"--k must be >= 1, got {args.k}")
    base, keys = per_user(args.files[0], args.k)
    print(f"| method | NDCG@{args.k} | minus the first | 95% interval | users |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.files[0]} | {base.mean():.4f} | | | {base.size} |")
    for spec in args.files[1:]:
        other, other_keys = per_user(spec, args.k)
        if other_keys != keys:
            raise SystemExit(f"{spec}: rows differ from {args.files[0]} (other users, order or targets)")
        d = paired_difference(other, base)
        print(f"| {spec} | {other.mean():.4f} | {d['mean_diff']:+.4f} | [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] "
              f"| {d['users']} |")


if __name__ == "__main__":
    main()
