"""The first N users' top-1 reasoning from an evaluation's predictions, as markdown (docs/bench/reasoning_samples.md).

Unedited: each step's block as the model wrote it, the SID token it chose, then the top item, the target and the
target's rank.

    python scripts/reasoning_samples.py PREDICTIONS.jsonl DATA_DIR SID_MAP N
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genrec.data.loader import load_catalog  # noqa: E402
from sid_tokenizer.sidmap import SIDMap  # noqa: E402


def sample_lines(predictions: Path, catalog, sid_map: SIDMap, n: int) -> list[str]:
    def title(item: str) -> str:
        return catalog.record(item).get(catalog.title_field or "") or catalog.render(item)

    out: list[str] = []
    for line in predictions.read_text(encoding="utf-8").splitlines()[:n]:
        row = json.loads(line)
        top, target = row["items"][0], row["target"]
        history = "; ".join(f"{k + 1}. {title(h)}" for k, h in enumerate(row["history"]))
        out.append(f"- user {row['user_id']}, history: {history}")
        blocks = row["reasoning"]  # one per level with a block (coarse: the first K - 2 levels)
        for k, token in enumerate(sid_map.tokens(top)):
            out.append(f"  - step {k + 1}: `<think> {blocks[k]}</think>{token}`" if k < len(blocks)
                       else f"  - step {k + 1}: `{token}` (no block at this level)")
        rank = row["items"].index(target) + 1 if target in row["items"] else "not in top 20"
        out.append(f"  - top-1: {title(top)} ({sid_map.sid_string(top)}); target: {title(target)} "
                   f"({sid_map.sid_string(target)}); target rank: {rank}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions")
    ap.add_argument("data")
    ap.add_argument("sid_map")
    ap.add_argument("n", type=int)
    args = ap.parse_args()
    print("\n".join(sample_lines(Path(args.predictions), load_catalog(args.data), SIDMap.load(args.sid_map), args.n)))


if __name__ == "__main__":
    main()
