"""Stage 1's set-up on a large set: building every `sequence` row against only the rows its step cap reaches.

    PYTHONPATH=. .venv/bin/python scripts/bench_row_budget.py --data runs/s36/ml1m_data --sid_map runs/s36/ml1m/tokenizer \
        --model runs/s36/ml1m/model

`genrec sft --stage 1` with an epoch budget cut by `--max_steps_cap` trains on at most cap x rows-per-step rows
(`genrec.sft.row_budget`); it now builds only a seeded sample of that many. This times both builds of the same
rows in one process (`stage1_dataset` with keep=0 and keep=row budget) and their peak memory growth, and checks that
the sample's rows are rows of the full build. Prints a Markdown table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from bench_report import print_table, write_results

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from genrec.data.loader import load_data
    from genrec.modeling import load_tokenizer
    from genrec.prompts import PromptConfig
    from genrec.sft import sequence_window_list, stage1_dataset
    from sid_tokenizer.sidmap import SIDMap

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--sid_map", required=True, help="the run's tokenizer folder")
    ap.add_argument("--model", required=True, help="the run's base model folder (its tokenizer)")
    ap.add_argument("--cap", type=int, default=2000, help="stage 1's step cap (genrec run --sft1_max_steps)")
    ap.add_argument("--rows_per_step", type=int, default=16, help="the stage-1 config's 4 x 4")
    ap.add_argument("--out", default=str(REPO / "bench_results" / "bench_row_budget.json"))
    args = ap.parse_args()

    rec = load_data(args.data)
    sid_map = SIDMap.load(args.sid_map)
    tokenizer = load_tokenizer(args.model)
    cfg = PromptConfig().resolved(rec.catalog)
    windows = len(sequence_window_list(rec.train, sid_map, cfg))
    keep = args.cap * args.rows_per_step
    rows, built = [], {}
    for name, k in (("sample (row budget)", keep), ("every row (before)", 0)):  # the small build first: less heap
        mb0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        ds = stage1_dataset(rec.catalog, sid_map, rec.train, tokenizer, cfg, ["sequence"], keep=k, seed=0)
        seconds = time.perf_counter() - t0
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - mb0
        built[name] = ds
        rows.append({"build": name, "rows": len(ds), "seconds": round(seconds, 1), "peak_growth_mb": round(grown)})
        print(f"{name}: {len(ds)} rows in {seconds:.1f} s", flush=True)
    full = {tuple(ids) for ids in built["every row (before)"]["input_ids"]}
    assert all(tuple(ids) in full for ids in built["sample (row budget)"]["input_ids"]), "sampled row not in full set"
    print(f"\n{len(rec.train):,} train examples, {windows:,} sequence rows, cap {args.cap} steps x "
          f"{args.rows_per_step} rows = {keep:,} rows\n")
    print_table([("build", lambda r: r["build"]), ("rows", lambda r: f"{r['rows']:,}"),
                 ("seconds", lambda r: r["seconds"]), ("peak memory growth (MB)", lambda r: r["peak_growth_mb"])], rows)
    rows[0]["speedup"] = round(rows[1]["seconds"] / max(rows[0]["seconds"], 1e-9), 1)
    print(f"\nspeed-up: {rows[0]['speedup']}x")
    write_results(args.out, args, rows)


if __name__ == "__main__":
    main()
