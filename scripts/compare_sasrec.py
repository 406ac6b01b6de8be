"""Where a generative model wins or loses against SASRec, per user, on the users of one `genrec evaluate` run.

    PYTHONPATH=. .venv/bin/python scripts/compare_sasrec.py --data runs/demo/data --sid_map runs/demo/tokenizer \
        --predictions runs/demo/eval/predictions_genrec-direct_sft1_all.jsonl [--collapse_repeats false]

SASRec is trained exactly as `genrec evaluate --baselines sasrec --seed S` trains it (same data options, same
seed, so the same model and lists). Both ranked lists are then compared per user: NDCG@10 by kind of target (a
re-viewed item or a new one; in the last history item's first-level area or another; how many catalog items share
its first three SID codes) and, per SID level n, how often the target's first n codes match the top-1 item's,
appear among the top 10's, and how many distinct n-code prefixes the top 10 holds (how spread the list is).
Prints Markdown tables and, with --json, writes them.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.baselines.sasrec import SASRec, SASRecConfig  # noqa: E402
from eval.metrics import per_user_ndcg, target_ranks  # noqa: E402
from genrec.data.config import DataConfig  # noqa: E402
from sid_tokenizer.sidmap import SIDMap  # noqa: E402


@dataclass
class CompareConfig:
    data: str = field(default="", metadata={"help": "Dataset folder, as given to `genrec evaluate`."})
    sid_map: str = field(default="", metadata={"help": "Tokenizer folder (or sid_map.json) of the model."})
    predictions: str = field(default="", metadata={"help": "predictions_<method>_all.jsonl of `genrec evaluate`."})
    seed: int = field(default=0, metadata={"help": "The evaluation's --seed (SASRec's seed)."})
    sasrec_epochs: int = field(default=200, metadata={"help": "The evaluation's --sasrec_max_epochs."})
    json: str = field(default="", metadata={"help": "Also write the tables here."})


def prefix_table(lists: dict[str, list[list[str]]], targets: list[str], sid_map: SIDMap) -> dict[str, dict]:
    """Per SID depth n: share of users whose target's first n codes equal the top-1's (`top1`), appear among the
    top 10's (`in_top10`), and the mean number of distinct n-code prefixes in the top 10 (`distinct`)."""
    out: dict[str, dict] = {}
    codes = [sid_map.codes(t) for t in targets]
    for name, ranked in lists.items():
        rows = {}
        top10 = [[sid_map.codes(x) for x in items[:10]] for items in ranked]
        for n in range(1, sid_map.num_levels + 1):
            heads = [[c[:n] for c in top] for top in top10]
            rows[n] = {
                "top1": float(np.mean([bool(h) and h[0] == c[:n] for h, c in zip(heads, codes)])),
                "in_top10": float(np.mean([c[:n] in h for h, c in zip(heads, codes)])),
                "distinct": float(np.mean([len(set(h)) for h in heads])),
            }
        out[name] = rows
    return out


def kind_table(lists: dict[str, list[list[str]]], examples, sid_map: SIDMap) -> dict[str, dict]:
    """NDCG@10 of each method per kind of target (users counted per kind)."""
    group = Counter(codes[:3] for codes in sid_map.item_to_codes.values())
    targets = [ex.target for ex in examples]
    ndcg = {name: per_user_ndcg(target_ranks(ranked, targets), 10) for name, ranked in lists.items()}
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, ex in enumerate(examples):
        t = sid_map.codes(ex.target)
        last = sid_map.codes(ex.history[-1]) if ex.history else None
        kinds = ["all", "repeat target" if ex.target in ex.history else "new target",
                 "same first code as the last item" if last and last[0] == t[0] else "other first code",
                 f"look-alikes sharing 3 codes: {min(group[t[:3]], 3)}{'+' if group[t[:3]] >= 3 else ''}"]
        for kind in kinds:
            for name in lists:
                scores[kind][name].append(float(ndcg[name][i]))
    return {kind: {"users": len(next(iter(by.values()))), **{n: float(np.mean(v)) for n, v in by.items()}}
            for kind, by in scores.items()}


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    from genrec.data.loader import load_data

    cfg, data_cfg = HfArgumentParser((CompareConfig, DataConfig)).parse_args_into_dataclasses(argv)
    if not (cfg.data and cfg.sid_map and cfg.predictions):
        raise SystemExit("--data, --sid_map and --predictions are required")
    rows = [json.loads(line) for line in Path(cfg.predictions).read_text().splitlines() if line.strip()]
    data = load_data(cfg.data, data_cfg, verbose=False)
    sid_map = SIDMap.load(cfg.sid_map)
    by_user = {ex.user_id: ex for ex in data.test}
    missing = [r["user_id"] for r in rows if r["user_id"] not in by_user]
    if missing:
        raise SystemExit(f"{cfg.predictions}: {len(missing)} users not in the test split of {cfg.data} "
                         f"(e.g. {missing[0]}); pass the evaluation's data options")
    examples = [by_user[r["user_id"]] for r in rows]
    wrong = [r["user_id"] for r, ex in zip(rows, examples) if r["target"] != ex.target]
    if wrong:
        raise SystemExit(f"{cfg.predictions}: targets differ from the test split for {len(wrong)} users "
                         f"(e.g. {wrong[0]}); pass the evaluation's data options")
    sasrec = SASRec(SASRecConfig(max_epochs=cfg.sasrec_epochs, seed=cfg.seed, progress=False))
    sasrec.fit(data.train, data.catalog, data.valid)
    lists = {"genrec": [r["items"] for r in rows], "sasrec": sasrec.recommend(examples, 20)}
    kinds = kind_table(lists, examples, sid_map)
    prefixes = prefix_table(lists, [ex.target for ex in examples], sid_map)
    print("| target kind | users | genrec NDCG@10 | SASRec NDCG@10 |\n| --- | --- | --- | --- |")
    for kind, r in kinds.items():
        print(f"| {kind} | {r['users']} | {r['genrec']:.4f} | {r['sasrec']:.4f} |")
    print("\n| first n codes | top-1 matches: genrec / SASRec | in the top 10: genrec / SASRec "
          "| distinct in the top 10: genrec / SASRec |\n| --- | --- | --- | --- |")
    for n in prefixes["genrec"]:
        g, s = prefixes["genrec"][n], prefixes["sasrec"][n]
        print(f"| {n} | {g['top1']:.3f} / {s['top1']:.3f} | {g['in_top10']:.3f} / {s['in_top10']:.3f} "
              f"| {g['distinct']:.2f} / {s['distinct']:.2f} |")
    result = {"predictions": cfg.predictions, "users": len(rows), "kinds": kinds, "prefixes": prefixes}
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
