"""Micro-benchmark: bool-mask `masked_fill` vs a precomputed additive bias in the beam search's masking (eval/beam.py).

1. Greedy thinking-block step (`SIDBeamSearch._block`, once per generated text token): allowed = text tokens while
   the block is under budget, `</think>` once it reached `min_block_tokens`, only `</think>` at `max_block_tokens`.
   - `masked_fill`: build the (R, V) bool mask, then `logits.masked_fill(~allow, -inf).argmax(1)` (previous code);
   - `bias`: three precomputed (V,) rows of 0 / -inf (under min, between, at max), `logits + bias[status]`.
2. Trie expansion (`SIDBeamSearch._expand`, once per SID level): `torch.where(bool allowed mask, score + logp, -inf)`
   vs an additive bias filled from the trie (`SIDTrie.fill_allowed` with value 0.0 over -inf).

Both forms are checked to give identical results. R = users x beams rows (default 8 x 20 = 160, `genrec evaluate`'s
defaults), V = the tiny model's vocabulary (~2.2k) and Qwen3's (151,936).

    PYTHONPATH=. .venv/bin/python scripts/bench_beam_mask.py [--threads 1] [--reps 200]

Writes bench_results/beam_mask.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from genrec.trie import SIDTrie

NEG_INF = float("-inf")


def paired_ms(fn_a, fn_b, reps: int) -> tuple[float, float, float]:
    """Median ms of a and b, alternating a, b, a, b, ... (drift on a shared machine hits both), and the median of
    the paired ratios a / b."""
    fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, ts in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ta), 1e3 * statistics.median(tb), statistics.median(a / b for a, b in zip(ta, tb))


def block_case(rows: int, vocab: int, reps: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, vocab, generator=gen)
    close, max_b, min_b = 3, 48, 4
    text = torch.ones(vocab, dtype=torch.bool)
    text[:4] = False
    text[vocab - 128:] = False  # SID tokens
    blen = torch.randint(0, max_b + 1, (rows,), generator=gen)
    bias = torch.full((3, vocab), NEG_INF)
    bias[0].masked_fill_(text, 0.0)
    bias[1].masked_fill_(text, 0.0)
    bias[1, close] = 0.0
    bias[2, close] = 0.0

    def old():
        allow = text[None, :] & (blen < max_b)[:, None]
        allow[:, close] = blen >= min_b
        return logits.masked_fill(~allow, NEG_INF).argmax(dim=1)

    def new():
        status = (blen >= min_b).long() + (blen >= max_b).long()
        return (logits + bias.index_select(0, status)).argmax(dim=1)

    assert torch.equal(old(), new())
    a, b, ratio = paired_ms(old, new, reps)
    return {"rows": rows, "vocab": vocab, "masked_fill_ms": a, "bias_ms": b, "speedup": ratio}


def expand_case(rows: int, vocab: int, reps: int) -> dict:
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 32, size=(3000, 4)), axis=0)
    tables = [list(range(vocab - 128 + 32 * k, vocab - 128 + 32 * (k + 1))) for k in range(4)]
    trie = SIDTrie(codes, tables)
    gen = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(rows, vocab, generator=gen), dim=-1)
    score = -torch.rand(rows, generator=gen)
    nodes = torch.tensor(rng.integers(1, 1 + 32, size=rows))  # level-1 nodes (children of the root)
    nodes = torch.as_tensor(trie.child_node[nodes.numpy() - 1])

    def old():
        allowed = trie.allowed_mask(nodes, vocab)
        return torch.where(allowed, score[:, None] + logp, torch.full_like(logp, NEG_INF))

    def new():
        bias = torch.full((rows, vocab), NEG_INF)
        trie.fill_allowed(bias, torch.arange(rows), nodes, 0.0)
        return logp + bias + score[:, None]

    assert torch.equal(old(), new())
    a, b, ratio = paired_ms(old, new, reps)
    return {"rows": rows, "vocab": vocab, "where_ms": a, "bias_ms": b, "speedup": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--rows", default="20,160")
    p.add_argument("--vocabs", default="2200,151936")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [int(r) for r in args.rows.split(",")]
    vocabs = [int(v) for v in args.vocabs.split(",")]
    res = {"args": vars(args), "block": [], "expand": []}
    print(f"{args.threads} thread(s), median of {args.reps} (ms)")
    print(f"{'step':>7} {'rows':>5} {'vocab':>7} {'bool mask':>10} {'bias':>8} {'paired speed-up':>18}")
    for r in rows:
        for v in vocabs:
            b = block_case(r, v, args.reps)
            res["block"].append(b)
            print(f"{'block':>7} {r:>5} {v:>7} {b['masked_fill_ms']:>10.3f} {b['bias_ms']:>8.3f} {b['speedup']:>17.2f}x")
    for r in rows:
        for v in vocabs:
            e = expand_case(r, v, max(args.reps // 4, 5))
            res["expand"].append(e)
            print(f"{'expand':>7} {r:>5} {v:>7} {e['where_ms']:>10.3f} {e['bias_ms']:>8.3f} {e['speedup']:>17.2f}x")
    out = Path(__file__).resolve().parents[1] / "bench_results" / "beam_mask.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
