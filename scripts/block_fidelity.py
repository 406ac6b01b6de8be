"""How often a reasoning model writes the block the grounded teacher would write for the item it chose.

For the evidence style a block depends only on the prompt and the SID prefix already generated, so the teacher's
block for the model's own top item is the right block; a model that writes it wrong conditions its next SID token
on wrong evidence. Reads an evaluation's predictions file (`predictions_<model>_<protocol>.jsonl`).

    python scripts/block_fidelity.py --predictions runs/ev/predictions_genrec-interleaved_all.jsonl \
        --data runs/data --sid_map runs/tok [--cite_titles] [--style evidence] [--history_lines 10]

Prints per-level exact-match rates of the top item's blocks and writes them as JSON beside the predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.data.loader import load_catalog  # noqa: E402
from genrec.data.schema import Example  # noqa: E402
from genrec.traces.grounded import GroundedConfig, grounded_blocks  # noqa: E402
from sid_tokenizer.sidmap import SIDMap  # noqa: E402


def fidelity(predictions: Path, catalog, sid_map: SIDMap, cfg: GroundedConfig) -> list[float]:
    hits, n = [0] * sid_map.num_levels, 0
    for line in predictions.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not row.get("reasoning") or not row.get("items"):
            continue
        expected = grounded_blocks(Example(row["user_id"], tuple(row["history"]), row["items"][0], ""), catalog,
                                   sid_map, cfg)
        n += 1
        for k, (want, got) in enumerate(zip(expected, row["reasoning"])):
            hits[k] += " ".join(want.split()) == " ".join(got.split())
    if not n:
        raise SystemExit(f"{predictions}: no row with reasoning (a direct-layout model?)")
    return [h / n for h in hits]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sid_map", required=True)
    ap.add_argument("--style", default="evidence")
    ap.add_argument("--cite_titles", action="store_true", help="the prompts showed item text (history_format both)")
    ap.add_argument("--history_lines", type=int, default=10)
    args = ap.parse_args()
    cfg = GroundedConfig(style=args.style, cite_titles=args.cite_titles, history_lines=args.history_lines)
    rates = fidelity(Path(args.predictions), load_catalog(args.data), SIDMap.load(args.sid_map), cfg)
    print("| level | " + " | ".join(str(k) for k in range(len(rates))) + " |")
    print("|---|" + "---|" * len(rates))
    print("| block = teacher's | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
    out = Path(args.predictions).with_suffix(".fidelity.json")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"args": vars(args), "per_level": rates}, indent=1))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
