"""SASRec training objectives side by side: per-sequence (default) vs per-example, same data, same harness.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/bench_sasrec.py            # 3 sets x 2 modes
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/bench_sasrec.py --sets amazon-industrial-mini \\
        --modes sequence --seeds 42,1,2 --set dropout=0.3 --set batch_size=128

Sets (the same variants as scripts/run_baselines.py):
- jobs-kaggle:            leave-one-out, consecutive repeats kept, users with >= 3 views (the peers' setup)
- amazon-industrial-mini: the given pre-split files
- jobs-synth:             `genrec synth` defaults (seed 0), leave-one-out
Each (set, mode, seed) fits `eval.baselines.SASRec` on the train split with early stopping on valid
NDCG@10 and is scored on the whole test split by `eval.harness.evaluate_ranker` (full ranking,
protocols all and new), exactly as `genrec evaluate --baselines sasrec` does. Prints a Markdown table
and writes JSON (default bench_results/bench_sasrec.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from eval.baselines import SASRec, SASRecConfig  # noqa: E402
from eval.harness import evaluate_ranker  # noqa: E402
from bench_datasets import dataset_path  # noqa: E402
from genrec.data.config import DataConfig  # noqa: E402
from genrec.data.loader import load_data  # noqa: E402

DATA_CONFIGS = {
    "jobs-kaggle": {"collapse_repeats": False, "min_interactions": 3},
    "amazon-industrial-mini": {},
    "jobs-synth": {},
}


def _value(field: dataclasses.Field, text: str):
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind == "bool":
        return text.lower() in ("1", "true", "yes")
    return {"int": int, "float": float}.get(kind, str)(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--sets", default="amazon-industrial-mini,jobs-kaggle,jobs-synth")
    ap.add_argument("--synth_dir", default=str(REPO / "bench_results" / "synth"),
                    help="where the synthetic market is generated (if absent)")
    ap.add_argument("--modes", default="sequence,example")
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--max_epochs", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="SASRecConfig override, repeatable (e.g. dropout=0.3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench_results" / "bench_sasrec.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fields = {f.name: f for f in dataclasses.fields(SASRecConfig)}
    overrides = {}
    for kv in args.set:
        key, _, val = kv.partition("=")
        if key not in fields:
            ap.error(f"--set {kv}: SASRecConfig has no field {key!r}")
        overrides[key] = _value(fields[key], val)

    rows = []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        path = dataset_path(name, args.data_root, args.synth_dir)
        if path is None:
            continue
        data = load_data(path, DataConfig(**DATA_CONFIGS[name]), verbose=False)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
                cfg = SASRecConfig(**{"max_epochs": args.max_epochs, "seed": seed, **overrides, "train_mode": mode})
                t0 = time.perf_counter()
                model = SASRec(cfg).fit(data.train, data.catalog, data.valid)
                fit_s = time.perf_counter() - t0
                res = {p: evaluate_ranker(model.recommend, data.test, data.catalog, protocol=p, ks=(10, 20))
                       for p in ("all", "new")}
                best_epoch = max(model.history, key=lambda r: r["valid_ndcg@10"])["epoch"]
                row = {
                    "set": name, "mode": mode, "seed": seed, "overrides": overrides,
                    "train_examples": len(data.train), "train_rows": model.train_rows,
                    "users": int(res["all"]["num_users"]),
                    "ndcg@10": res["all"]["ndcg@10"], "recall@10": res["all"]["recall@10"],
                    "ndcg@20": res["all"]["ndcg@20"], "recall@20": res["all"]["recall@20"],
                    "new_ndcg@10": res["new"]["ndcg@10"], "new_recall@10": res["new"]["recall@10"],
                    "fit_s": fit_s, "epochs": len(model.history), "best_epoch": best_epoch,
                    "s_per_epoch": fit_s / len(model.history), "best_valid_ndcg@10": model.best_valid_ndcg10,
                }
                rows.append(row)
                print(f"[bench_sasrec] {name} {mode} seed {seed}: ndcg@10 {row['ndcg@10']:.4f} "
                      f"recall@10 {row['recall@10']:.4f}, {fit_s:.0f}s, {row['epochs']} epochs "
                      f"(best {best_epoch}), {model.train_rows} rows", file=sys.stderr, flush=True)

    head = ("| set | mode | seed | train rows | test users | NDCG@10 | R@10 | NDCG@10 new | R@10 new | "
            "best valid NDCG@10 | epochs (best) | s/epoch | fit s |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(f"| {r['set']} | {r['mode']} | {r['seed']} | {r['train_rows']} | {r['users']} | {r['ndcg@10']:.3f} | "
              f"{r['recall@10']:.3f} | {r['new_ndcg@10']:.3f} | {r['new_recall@10']:.3f} | "
              f"{r['best_valid_ndcg@10']:.3f} | {r['epochs']} ({r['best_epoch']}) | {r['s_per_epoch']:.2f} | "
              f"{r['fit_s']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "threads": args.threads, "torch": torch.__version__,
                                         "argv": sys.argv[1:]}, indent=1))


if __name__ == "__main__":
    main()
