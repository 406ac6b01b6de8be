"""Upper bound of an evidence-style reasoning model: its beam search with the grounded teacher writing every block.

Why: an interleaved model's NDCG mixes two skills, writing the blocks and choosing SID tokens after them. For the
evidence style a block is a function of the prompt and the beam's own SID prefix, so the teacher can write the right
block for every beam. If the model scores much higher with the teacher's blocks than with its own, block writing is
the bottleneck; if not, the SID-after-block mapping is. Users, histories and targets come from an evaluation's
predictions file, so the comparison is paired with that run's model-written blocks.

    python scripts/oracle_blocks.py --model runs/sft2/final --data runs/data --sid_map runs/tok \
        --predictions runs/ev/predictions_genrec-interleaved_all.jsonl [--num_beams 10] [--max_users 500]

Prints NDCG@10 and Recall@10 with model-written and teacher-written blocks on the same users, and the paired
difference (eval.metrics.paired_difference); --out writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eval.beam import SIDBeamSearch  # noqa: E402
from eval.metrics import paired_difference  # noqa: E402
from genrec.data.loader import load_catalog  # noqa: E402
from genrec.data.schema import Example  # noqa: E402
from genrec.model_folder import load_info, resolve_block_budget, resolve_layout  # noqa: E402
from genrec.modeling import load_model_and_tokenizer  # noqa: E402
from genrec.prompts import PromptConfig, build_prompt  # noqa: E402
from genrec.response import render_block  # noqa: E402
from genrec.traces.grounded import GroundedConfig, evidence_blocks  # noqa: E402
from sid_tokenizer.sidmap import SIDMap  # noqa: E402


class TeacherBlockSearch(SIDBeamSearch):
    """The same constrained beam search, with each beam's block `level` written by the evidence teacher."""

    def __init__(self, *args, teacher_lines: list, catalog, teacher_cfg: GroundedConfig, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lines, self.catalog, self.teacher_cfg = teacher_lines, catalog, teacher_cfg

    def _teacher_ids(self, user: int, level: int, prefix: tuple[int, ...]) -> list[int]:
        target = prefix + (0,) * (self.sid_map.num_levels - len(prefix))  # block `level` reads target[:level] only
        text = evidence_blocks(target, self.lines[user], self.catalog, self.sid_map, self.teacher_cfg)[level]
        return self.tokenizer(render_block(text), add_special_tokens=False)["input_ids"][1:]  # after <think>

    def _block(self, kv, logits, rows, level, live):
        forced = [self._teacher_ids(i // rows.n, level, tuple(rows.codes[i].tolist())) if bool(live[i]) else []
                  for i in range(logits.shape[0])]
        after = logits.clone()
        for b in rows.blocks:
            b.append([])
        for t in range(max(len(f) for f in forced)):
            feed = torch.tensor([f[t] if t < len(f) else self.pad_id for f in forced])
            mask = torch.tensor([[int(t < len(f))] for f in forced])
            out = self._forward(kv, feed[:, None], mask)
            for i, f in enumerate(forced):
                if t == len(f) - 1:
                    after[i] = out[i]
                elif t < len(f) - 1:
                    rows.blocks[i][-1].append(f[t])
        return after


def ranks(search: SIDBeamSearch, prompts: list[str], targets: list[str], batch: int = 8) -> list[int | None]:
    out: list[int | None] = []
    for s in range(0, len(prompts), batch):
        for beams, target in zip(search.search(prompts[s:s + batch], k=20), targets[s:s + batch]):
            items = [b.item_id for b in beams]
            out.append(items.index(target) if target in items else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sid_map", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--num_beams", type=int, default=10)
    ap.add_argument("--max_users", type=int, default=500)
    ap.add_argument("--layout", default="auto", help="decode layout; auto = the model folder's")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    catalog, sid_map = load_catalog(args.data), SIDMap.load(args.sid_map)
    model, tok = load_model_and_tokenizer(args.model)
    model.eval()
    cfg = PromptConfig.load(args.model)
    info = load_info(args.model)
    budget = resolve_block_budget(info, 0)
    layout = resolve_layout(args.model, info, args.layout)  # the folder's own layout (coarse, interleaved) by default
    rows = [json.loads(x) for x in Path(args.predictions).read_text().splitlines()][: args.max_users]
    examples = [Example(r["user_id"], tuple(r["history"]), r["target"], "") for r in rows]
    prompts = [build_prompt(e, catalog, sid_map, tok, cfg) for e in examples]
    teacher_cfg = GroundedConfig(history_lines=cfg.prompt_max_history, cite_titles=cfg.history_format != "sid")
    lines = []
    for e in examples:
        hist = [h for h in e.history if h in sid_map][-teacher_cfg.history_lines:]
        lines.append([(p, h, sid_map.codes(h)) for p, h in enumerate(hist, 1)])
    common = dict(num_beams=args.num_beams, max_block_tokens=budget, cache="dynamic")  # teacher blocks may be longer
    result = {}
    for name, search in (("model blocks", SIDBeamSearch(model, tok, sid_map, layout, **common)),
                         ("teacher blocks", TeacherBlockSearch(model, tok, sid_map, layout, teacher_lines=lines,
                                                               catalog=catalog, teacher_cfg=teacher_cfg, **common))):
        r = ranks(search, prompts, [e.target for e in examples])
        result[name] = np.array([1 / math.log2(x + 2) if x is not None and x < 10 else 0.0 for x in r])
        recall = np.mean([x is not None and x < 10 for x in r])
        print(f"| {name} | NDCG@10 {result[name].mean():.4f} | Recall@10 {recall:.4f} | users {len(r)} |", flush=True)
    diff = paired_difference(result["teacher blocks"], result["model blocks"])
    print("teacher - model blocks:", {k: round(v, 4) for k, v in diff.items()})
    if args.out:
        Path(args.out).write_text(json.dumps({k: float(v.mean()) for k, v in result.items()} | {"paired": diff}, indent=1))


if __name__ == "__main__":
    main()
