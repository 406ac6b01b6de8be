"""Evaluation throughput (users/s) and peak memory of the constrained SID beam search, CPU, tiny model.

    PYTHONPATH=. .venv/bin/python scripts/bench_eval.py                 # default grid, ~10 min on 2 busy cores
    PYTHONPATH=. .venv/bin/python scripts/bench_eval.py --users 16 --quick

Set-up: the synthetic market (genrec synth defaults: 3,000 jobs), a random unique 3-level SID map
(32 x 32 x 8 codes), the default tiny Llama (hidden 128, 4 layers) with random weights, prompts from
`build_prompt` (history <= 10, SID + title). Each configuration runs in a fresh subprocess so its peak
RSS is its own. The reference is HF `generate(num_beams=B, num_return_sequences=B)` with the team's
SIDLogitsProcessor, in the one layout HF beam search can do correctly (direct, no reasoning); the
ratio ours / HF is measured in the same run. Prints a table; writes bench_results/bench_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench_results"
WORK = OUT / "bench_eval"
CODEBOOKS = [32, 32, 8]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare() -> None:
    """Synthetic market, random SID map and tiny model under bench_results/bench_eval (built once)."""
    import numpy as np

    from genrec.data.loader import load_data
    from genrec.data.synth import SynthConfig, generate_market, write_market
    from genrec.modeling import TinyModelConfig, build_tiny_model, default_corpus
    from sid_tokenizer.sidmap import SIDMap

    data_dir = WORK / "synth"
    if not (data_dir / "jobs-synth.inter").exists():
        write_market(generate_market(SynthConfig(out=str(data_dir))), data_dir)
    if not (WORK / "sid_map.json").exists():
        data = load_data(data_dir, verbose=False)
        rng = np.random.default_rng(0)
        space = int(np.prod(CODEBOOKS))
        flat = rng.choice(space, size=len(data.catalog), replace=False)
        codes = np.stack(np.unravel_index(flat, CODEBOOKS), axis=1)
        SIDMap({i: tuple(c) for i, c in zip(data.catalog.item_ids, codes.tolist())}, CODEBOOKS).save(WORK / "sid_map.json")
    if not (WORK / "model" / "config.json").exists():
        data = load_data(data_dir, verbose=False)
        sid_map = SIDMap.load(WORK / "sid_map.json")
        build_tiny_model(WORK / "model", sid_map, default_corpus(data.catalog, data.profiles.values()), TinyModelConfig())


def single(args: argparse.Namespace) -> dict:
    """One configuration (run in its own process)."""
    import torch

    torch.set_num_threads(args.threads)
    from eval.beam import SIDBeamSearch
    from genrec.constrained import SIDLogitsProcessor
    from genrec.data.loader import load_data
    from genrec.modeling import load_model_and_tokenizer
    from genrec.prompts import PromptConfig, build_prompt
    from sid_tokenizer.sidmap import SIDMap

    data = load_data(WORK / "synth", verbose=False)
    sid_map = SIDMap.load(WORK / "sid_map.json")
    model, tok = load_model_and_tokenizer(WORK / "model")
    model.eval()
    pcfg = PromptConfig(reasoning=args.layout != "direct")
    examples = data.test[: args.users]
    prompts = [build_prompt(ex, data.catalog, sid_map, tok, pcfg) for ex in examples]
    prompt_tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) / len(prompts)
    rss0 = _rss_mb()
    search = SIDBeamSearch(model, tok, sid_map, args.layout, num_beams=args.beams, max_block_tokens=args.block)
    t0 = time.perf_counter()
    top1 = []
    if args.impl == "ours":
        for s in range(0, len(prompts), args.batch):
            res = search.search(prompts[s:s + args.batch], args.beams)
            assert all(len(r) == args.beams and len({b.item_id for b in r}) == args.beams for r in res)
            top1 += [r[0].item_id for r in res]
    else:  # HF beam search with the constraint processor (direct layout only)
        proc = SIDLogitsProcessor(search.spec, search.trie, max_block_tokens=args.block)
        tok.padding_side = "left"
        with torch.no_grad():
            for s in range(0, len(prompts), args.batch):
                enc = tok(prompts[s:s + args.batch], return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(
                    **enc, do_sample=False, num_beams=args.beams, num_return_sequences=args.beams, top_k=None,
                    top_p=None, temperature=None, repetition_penalty=1.0, logits_processor=[proc],
                    max_new_tokens=proc.max_response_tokens, early_stopping=True, length_penalty=0.0,
                )
                proc.reset()
                n = enc["input_ids"].shape[1]
                for row in out[:: args.beams]:
                    codes = [search.spec.sid_of(t)[1] for t in row[n:].tolist() if search.spec.sid_of(t)]
                    top1.append(sid_map.item_for_codes(codes))
    secs = time.perf_counter() - t0
    return {
        "impl": args.impl, "layout": args.layout, "beams": args.beams, "batch": args.batch, "block": args.block,
        "users": len(prompts), "seconds": secs, "users_per_s": len(prompts) / secs, "prompt_tokens": prompt_tokens,
        "rss_after_load_mb": rss0, "peak_rss_mb": _rss_mb(), "top1": top1, "threads": args.threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="only the 20-beam batch-8 rows")
    ap.add_argument("--out", default=str(OUT / "bench_eval.json"))
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="ours")
    ap.add_argument("--layout", default="direct")
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=32)
    args = ap.parse_args()
    if args.single:
        print("RESULT " + json.dumps(single(args)))
        return

    prepare()
    grid = [
        ("ours", "direct", 20, 8, 0), ("hf", "direct", 20, 8, 0),
        ("ours", "blocks_first", 20, 8, 32), ("ours", "interleaved", 20, 8, 32),
    ]
    if not args.quick:
        grid += [("ours", "direct", 20, 1, 0), ("hf", "direct", 20, 1, 0),
                 ("ours", "interleaved", 20, 8, 16), ("ours", "interleaved", 10, 8, 32),
                 ("ours", "interleaved", 20, 1, 32)]
    rows = []
    for impl, layout, beams, batch, block in grid:
        cmd = [sys.executable, __file__, "--single", "--impl", impl, "--layout", layout, "--beams", str(beams),
               "--batch", str(batch), "--block", str(max(block, 1)), "--users", str(args.users), "--threads", str(args.threads)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"configuration {impl}/{layout} failed")
        rows.append(json.loads(line[0][7:]))
        r = rows[-1]
        print(f"  {impl:4s} {layout:12s} beams={beams:2d} batch={batch} block={block:2d}: {r['users_per_s']:.2f} users/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)

    by = {(r["impl"], r["layout"], r["beams"], r["batch"], r["block"] if r["layout"] != "direct" else 0): r for r in rows}
    print(f"\nusers={args.users}, threads={args.threads}, prompt ~{rows[0]['prompt_tokens']:.0f} tokens, "
          f"catalog 3000 items, SID {CODEBOOKS}")
    print("| impl | layout | beams | users/batch | block tokens | users/s | peak RSS MB (after load) | vs HF direct |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        hf = by.get(("hf", "direct", r["beams"], r["batch"], 0))
        ratio = f"{r['users_per_s'] / hf['users_per_s']:.2f}x" if hf and r["impl"] == "ours" and r["layout"] == "direct" else ""
        block = "-" if r["layout"] == "direct" else str(r["block"])
        print(f"| {r['impl']} | {r['layout']} | {r['beams']} | {r['batch']} | {block} | {r['users_per_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} ({r['rss_after_load_mb']:.0f}) | {ratio} |")
    for batch in (8, 1):
        a, b = by.get(("ours", "direct", 20, batch, 0)), by.get(("hf", "direct", 20, batch, 0))
        if a and b:
            agree = sum(x == y for x, y in zip(a["top1"], b["top1"])) / len(a["top1"])
            print(f"top-1 agreement ours vs HF (direct, batch {batch}): {agree:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "users": args.users, "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
