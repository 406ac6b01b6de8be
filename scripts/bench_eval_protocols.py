"""Evaluation time of the `all` + `new` protocols: two beam searches (before session 14) vs one shared search.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/bench_eval_protocols.py \
        --model runs/demo/sft2/final --data runs/demo/data --users 200 --threads 1

The protocols differ only at the last SID level (the `new` one masks history items there), so
`GenerativeRecommender.recommend_beams_variants` decodes once and branches at the last level. Both ways run in
this process on the same test users (seeded sample), one after the other; the table gives seconds, the ratio and
whether every list (items and reasoning) is the same. Writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained model folder (e.g. <run>/sft2/final)")
    ap.add_argument("--data", required=True, help="its dataset folder")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--num_beams", type=int, default=20)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--collapse_repeats", default="true", help="the data option the model was trained with")
    ap.add_argument("--out", default=str(REPO / "bench_results" / "bench_eval_protocols.json"))
    args = ap.parse_args()

    import torch

    from eval.generative import load_generative
    from genrec.data.config import DataConfig
    from genrec.data.loader import load_data

    torch.set_num_threads(args.threads)
    data = load_data(args.data, DataConfig(collapse_repeats=args.collapse_repeats.lower() == "true"), verbose=False)
    test = list(data.test)
    users = sorted(random.Random(args.seed).sample(range(len(test)), min(args.users, len(test))))
    examples = [test[i] for i in users]
    rec = load_generative(args.model, data.catalog, num_beams=args.num_beams).fit(data.train, data.catalog)

    rec.recommend_beams(examples[:8], args.k)  # warm-up (first-call allocations)
    t0 = time.perf_counter()
    new = [i for i, ex in enumerate(examples) if ex.target not in set(ex.history)]  # the `new` protocol's users
    separate = [rec.recommend_beams(examples, args.k, False),
                rec.recommend_beams([examples[i] for i in new], args.k, True)]
    t_separate = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = rec.recommend_beams_variants(examples, args.k, [False, True])
    shared[1] = [shared[1][i] for i in new]
    t_shared = time.perf_counter() - t0

    same = all(x and y and [b.item_id for b in x] == [b.item_id for b in y] and x[0].blocks == y[0].blocks
               for a, b in zip(separate, shared) for x, y in zip(a, b))
    row = {"model": args.model, "layout": rec.layout, "users": len(examples), "new_users": len(new),
           "num_beams": args.num_beams, "threads": args.threads, "separate_s": round(t_separate, 2),
           "shared_s": round(t_shared, 2), "speedup": round(t_separate / t_shared, 3), "same_lists": bool(same)}
    print("| layout | users (all / new) | beams | two searches (s) | one shared search (s) | speed-up | same lists |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {row['layout']} | {row['users']} / {row['new_users']} | {row['num_beams']} | {row['separate_s']} | "
          f"{row['shared_s']} | {row['speedup']}x | {row['same_lists']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
