"""Baseline table (MostPop, recent-items, SASRec; protocols all and new) on the real sets and the synthetic market.

    PYTHONPATH=. .venv/bin/python scripts/run_baselines.py                      # both real sets + synth
    PYTHONPATH=. .venv/bin/python scripts/run_baselines.py --sets amazon-industrial-mini --no-sasrec

Data variants (why: the peers' reference numbers count raw views, while our loader collapses repeats by default):
- jobs-kaggle/peer:    leave-one-out, history <= 10, users with >= 3 views, consecutive repeats kept (the peers' setup)
- jobs-kaggle/default: the loader's defaults (consecutive repeats collapsed, then >= 3 interactions)
- amazon-industrial-mini/given: the given pre-split files
- jobs-synth/default:  `genrec synth` defaults (configs/synth.yaml values), leave-one-out
Prints a Markdown table and writes bench_results/baselines.json plus one report folder per variant.
SASRec runs through `genrec evaluate`'s path, i.e. with SASRecConfig defaults (train_mode='sequence' since
session 4); scripts/bench_sasrec.py compares it with the per-example objective the table in docs/bench/eval.md used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_datasets import dataset_path  # noqa: E402
from eval.config import EvalConfig  # noqa: E402
from eval.run import run_evaluation  # noqa: E402
from genrec.data.config import DataConfig  # noqa: E402

REFERENCE = {  # test NDCG@10 / Recall@10, all-items protocol, from the project lead's peers
    ("jobs-kaggle", "peer"): {"sasrec": (0.417, 0.448), "recent": (0.461, 0.503), "mostpop": (0.015, 0.029)},
    ("amazon-industrial-mini", "given"): {"sasrec": (0.281, 0.368), "recent": (0.239, 0.283), "mostpop": (0.041, 0.106)},
}
VARIANTS = {
    "jobs-kaggle": {"peer": {"collapse_repeats": False, "min_interactions": 3},
                    "default": {}},
    "amazon-industrial-mini": {"given": {}},
    "jobs-synth": {"default": {}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--sets", default="jobs-kaggle,amazon-industrial-mini,jobs-synth")
    ap.add_argument("--synth_dir", default=str(REPO / "bench_results" / "synth"),
                    help="where the synthetic market is generated (if absent)")
    ap.add_argument("--no-sasrec", action="store_true")
    ap.add_argument("--sasrec_max_epochs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(REPO / "bench_results" / "baselines.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        path = dataset_path(name, args.data_root, args.synth_dir)
        if path is None:
            continue
        for variant, overrides in VARIANTS[name].items():
            out_dir = Path(args.out).parent / "baselines" / f"{name}-{variant}"
            cfg = EvalConfig(data=str(path), output_dir=str(out_dir), baselines="mostpop,recent" + ("" if args.no_sasrec else ",sasrec"),
                             sasrec_max_epochs=args.sasrec_max_epochs, seed=args.seed, progress=False)
            t0 = time.perf_counter()
            results, _ = run_evaluation(cfg, DataConfig(**overrides))
            report = json.loads((out_dir / "eval_report.json").read_text())
            summary = report["meta"]["data_summary"]
            for method, per in results.items():
                for protocol, m in per.items():
                    ref = REFERENCE.get((name, variant), {}).get(method) if protocol == "all" else None
                    rows.append({
                        "set": name, "variant": variant, "method": method, "protocol": protocol,
                        "users": int(m["num_users"]), "ndcg@10": m["ndcg@10"], "recall@10": m["recall@10"],
                        "ndcg@20": m["ndcg@20"], "recall@20": m["recall@20"], "mrr": m["mrr"],
                        "coverage": m["coverage"], "invalid": int(m["invalid"]),
                        "ref_ndcg@10": ref[0] if ref else None, "ref_recall@10": ref[1] if ref else None,
                        "sasrec_epochs": report["meta"]["methods"].get("sasrec", {}).get("epochs") if method == "sasrec" else None,
                    })
            print(f"[baselines] {name}/{variant}: {summary.get('test_examples')} test users, "
                  f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)

    head = "| set | variant | method | protocol | users | NDCG@10 | R@10 | NDCG@20 | R@20 | MRR | coverage | invalid | peers NDCG@10 / R@10 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        ref = f"{r['ref_ndcg@10']:.3f} / {r['ref_recall@10']:.3f}" if r["ref_ndcg@10"] is not None else ""
        print(f"| {r['set']} | {r['variant']} | {r['method']} | {r['protocol']} | {r['users']} | {r['ndcg@10']:.3f} | "
              f"{r['recall@10']:.3f} | {r['ndcg@20']:.3f} | {r['recall@20']:.3f} | {r['mrr']:.3f} | {r['coverage']:.3f} | "
              f"{r['invalid']} | {ref} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "threads": args.threads, "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
