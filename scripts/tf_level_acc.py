"""Teacher-forced SID accuracy per level: how well a model picks the target's level-k code given the right prefix.

Why: an interleaved model's evaluation mixes two skills, writing the blocks and choosing a SID token after them.
Feeding the teacher's blocks (and the target's earlier codes) isolates the second one: if the stage-2 model beats
the direct model here but not in the evaluation, the blocks it writes are the bottleneck; if not, the SID-after-
block mapping is. Reads trace rows (`genrec traces` output, valid split by default).

    python scripts/tf_level_acc.py --traces runs/traces --sid_map runs/tok \
        --model runs/sft1/final:direct,runs/sft2/final:interleaved,runs/sft2/final:direct [--split valid] [--rows 500]

Prints per-level accuracy (argmax over that level's codes) and writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.prompts import DIRECT_INSTRUCTION, REASON_INSTRUCTION, PromptConfig  # noqa: E402
from genrec.response import DIRECT, render_response  # noqa: E402
from genrec.traces.dataset import load_traces  # noqa: E402
from genrec.wording import fill  # noqa: E402
from sid_tokenizer.sidmap import SIDMap, sid_token  # noqa: E402


def level_accuracy(model, tokenizer, rows, sid_map: SIDMap, layout: str, noun: str = "job") -> list[float]:
    level_ids = [torch.tensor([tokenizer.convert_tokens_to_ids(sid_token(k, c)) for c in range(n)])
                 for k, n in enumerate(sid_map.codebook_sizes)]
    hits = [0] * sid_map.num_levels
    for row in rows:
        codes = list(row["codes"])
        if layout == DIRECT:
            prompt = row["prompt"].replace(fill(REASON_INSTRUCTION, noun), fill(DIRECT_INSTRUCTION, noun))
            completion = render_response(None, [sid_token(k, c) for k, c in enumerate(codes)], DIRECT)
        else:
            prompt, completion = row["prompt"], row["completion"]
        ids = tokenizer(prompt + completion)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        for k, c in enumerate(codes):
            pos = ids.index(int(level_ids[k][c]), len(tokenizer(prompt)["input_ids"]) - 1)
            pred = int(logits[pos - 1, level_ids[k]].argmax())
            hits[k] += pred == c
    return [h / len(rows) for h in hits]


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", required=True)
    ap.add_argument("--sid_map", required=True)
    ap.add_argument("--model", required=True, help="comma-separated PATH:LAYOUT (direct | interleaved)")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sid_map = SIDMap.load(args.sid_map)
    ds = load_traces(args.traces, sid_map, args.split)
    rows = ds.select(range(min(args.rows, len(ds))))
    results = {}
    for spec in args.model.split(","):
        path, layout = spec.rsplit(":", 1)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        noun = PromptConfig.load_or_default(args.traces).item_noun  # the traces' (saved resolved; older: job)
        acc = level_accuracy(model, tok, rows, sid_map, layout, "job" if noun == "auto" else noun)
        results[spec] = acc
        print(f"| {spec} | " + " | ".join(f"{a:.3f}" for a in acc) + " |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": len(rows), "split": args.split, "accuracy": results}, indent=1))


if __name__ == "__main__":
    main()
