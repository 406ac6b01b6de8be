"""Benchmark the masked SID log-probs of RL training (rl/sid_mask.py) against the previous implementation.

What is timed (the part of `SAPOTrainer._get_per_token_logps_and_entropies` that is ours, LM forward excluded):
finding the SID positions of a batch of completions and the trie node the sampler drew each one from, then the
log-softmax restricted to the allowed children at those positions, forward and forward + backward.

- `legacy`: the implementation before it used `genrec.trie.SIDTrie` (a Python dict prefix -> children, a Python walk
  over every SID token, an (M, V) bool mask and `masked_fill`), copied here verbatim as the baseline.
- `grammar`: the current code, `genrec.grammar.ResponseGrammar.positions` + `rl.sid_mask.masked_logps` (the
  list and SIDTable APIs measured in docs/bench/sid_mask.md were removed with issue 11).

Batch: 16 constrained interleaved completions x 200 tokens (4 blocks of ~40 text tokens), a 3000-item catalog,
4 levels x codebook 32, M = 64 SID positions; vocabularies of the tiny model (~2.2k) and of Qwen3 (151,936).

    PYTHONPATH=. .venv/bin/python scripts/bench_sid_mask.py [--threads 1] [--reps 200]

Writes bench_results/sid_mask.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from genrec.response import ResponseSpec
from genrec.grammar import ResponseGrammar
from genrec.trie import SIDTrie
from rl.sid_mask import masked_logps
from sid_tokenizer.sidmap import SIDMap

PAD, EOS, OPEN, CLOSE = 0, 1, 2, 3


# ---------------------------------------------------------------- the previous implementation (baseline)
class LegacySIDTable:
    """rl/sid_mask.py SIDTable before it used SIDTrie (verbatim logic)."""

    def __init__(self, sid_map: SIDMap, spec) -> None:
        ids = spec.level_token_ids
        children: dict[tuple[int, ...], set[int]] = {}
        for codes in sid_map.item_to_codes.values():
            for level in range(len(codes)):
                children.setdefault(tuple(codes[:level]), set()).add(ids[level][codes[level]])
        self.token_level, self.token_code = spec.token_level.clone(), spec.token_code.clone()
        self.children = {k: sorted(v) for k, v in children.items()}
        self.num_levels = sid_map.num_levels

    def sid_positions(self, completion_ids, completion_mask):
        vocab = len(self.token_level)
        safe = completion_ids.clamp(min=0, max=vocab - 1)
        levels = self.token_level.to(completion_ids.device)[safe]
        codes = self.token_code.to(completion_ids.device)[safe]
        is_sid = (levels >= 0) & completion_mask.bool() & (completion_ids < vocab)
        out_rows, out_cols, allowed, prefix = [], [], [], []
        current_row, row_ok = -1, True
        for r, c in is_sid.nonzero().tolist():
            if r != current_row:
                current_row, prefix, row_ok = r, [], True
            if not row_ok:
                continue
            node = self.children.get(tuple(prefix))
            tid = int(completion_ids[r, c])
            if int(levels[r, c]) != len(prefix) or node is None or tid not in node:
                row_ok = False
                continue
            out_rows.append(r)
            out_cols.append(c)
            allowed.append(node)
            prefix.append(int(codes[r, c]))
            if len(prefix) == self.num_levels:
                prefix = []
        return out_rows, out_cols, allowed


def legacy_masked_token_logps(logits, tokens, allowed):
    mask = torch.zeros_like(logits, dtype=torch.bool)
    row_idx = torch.tensor([i for i, ids in enumerate(allowed) for _ in ids], dtype=torch.long, device=logits.device)
    col_idx = torch.tensor([t for ids in allowed for t in ids], dtype=torch.long, device=logits.device)
    mask[row_idx, col_idx] = True
    logits = logits.float()
    log_z = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return logits.gather(1, tokens.view(-1, 1)).squeeze(1) - log_z


# ---------------------------------------------------------------- data
def make_case(vocab: int, n_items: int, levels: int, codebook: int, rows: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_text = vocab - levels * codebook
    tables = [list(range(n_text + k * codebook, n_text + (k + 1) * codebook)) for k in range(levels)]
    spec = ResponseSpec.from_ids(think_open_id=OPEN, think_close_id=CLOSE, eos_id=EOS, pad_id=PAD,
                                 level_token_ids=tables, vocab_size=vocab)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n_items:
        seen.add(tuple(int(c) for c in rng.integers(0, codebook, size=levels)))
    sid_map = SIDMap({f"i{i}": c for i, c in enumerate(sorted(seen))}, [codebook] * levels)
    items = sorted(seen)
    ids = torch.full((rows, length), PAD, dtype=torch.long)
    mask = torch.zeros((rows, length), dtype=torch.long)
    for r in range(rows):
        codes = items[int(rng.integers(len(items)))]
        seq: list[int] = []
        for k in range(levels):
            n = int(rng.integers(30, 47))  # ~40-token blocks, 200 tokens in all with tags, SIDs and EOS
            seq += [OPEN] + rng.integers(4, n_text, size=n).tolist() + [CLOSE, tables[k][codes[k]]]
        seq = (seq + [EOS])[:length]
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
    return sid_map, spec, ids, mask


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(vocab: int, args) -> dict:
    sid_map, spec, ids, mask = make_case(vocab, args.items, args.levels, args.codebook, args.rows, args.length)
    t0 = time.perf_counter()
    legacy = LegacySIDTable(sid_map, spec)
    build_legacy = time.perf_counter() - t0
    t0 = time.perf_counter()
    grammar = ResponseGrammar(spec, SIDTrie.from_spec(sid_map, spec), 64)
    build_new = time.perf_counter() - t0

    rows, cols, allowed = legacy.sid_positions(ids, mask)
    m = len(rows)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(m, vocab, generator=gen).requires_grad_(True)
    tokens = ids[rows, cols]

    # identical positions / allowed sets, equal log-probs and gradients
    rn, cn, nodes = grammar.positions(ids, mask).sid()
    assert (rn.tolist(), cn.tolist()) == (rows, cols), "SID positions differ from the legacy walk"
    assert [grammar.trie.children(n)[0] for n in nodes.tolist()] == allowed, "allowed sets differ"
    ref = legacy_masked_token_logps(logits, tokens, allowed)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    new = masked_logps(grammar.trie, logits, tokens, nodes)
    (g_new,) = torch.autograd.grad(new.sum(), logits)
    max_diff = max(float((ref - new).detach().abs().max()), float((g_ref - g_new).abs().max()))
    assert max_diff < 1e-5, max_diff

    def legacy_fwd():
        r, c, a = legacy.sid_positions(ids, mask)
        return legacy_masked_token_logps(logits, ids[r, c], a)

    def grammar_fwd():
        r, c, n = grammar.positions(ids, mask).sid()
        return masked_logps(grammar.trie, logits, ids[r, c], n)

    out = {"vocab": vocab, "sid_positions": m, "build_s": {"legacy": build_legacy, "new": build_new},
           "max_abs_diff": max_diff, "median_s": {}}
    for name, fn in (("legacy", legacy_fwd), ("grammar", grammar_fwd)):
        fwd = median_time(lambda: fn().detach(), args.reps)
        bwd = median_time(lambda: torch.autograd.grad(fn().sum(), logits), args.reps)
        out["median_s"][name] = {"forward": fwd, "forward_backward": bwd}
    walk = {
        "legacy": median_time(lambda: legacy.sid_positions(ids, mask), args.reps),
        "grammar": median_time(lambda: grammar.positions(ids, mask).sid(), args.reps),
    }
    out["walk_only_s"] = walk
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--codebook", type=int, default=32)
    p.add_argument("--vocabs", default="2200,151936")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = [run_case(int(v), args) for v in args.vocabs.split(",")]
    print(f"\n{args.rows} completions x {args.length} tokens, {args.items} items, {args.levels} levels x {args.codebook}, "
          f"{args.threads} thread(s), median of {args.reps}")
    print(f"{'vocab':>7} {'M':>4} {'impl':>7} {'walk ms':>8} {'fwd ms':>8} {'fwd+bwd ms':>11} {'speed-up fwd':>13} {'fwd+bwd':>8}")
    for res in results:
        base = res["median_s"]["legacy"]
        for name, t in res["median_s"].items():
            print(f"{res['vocab']:>7} {res['sid_positions']:>4} {name:>7} {1e3 * res['walk_only_s'][name]:>8.3f} "
                  f"{1e3 * t['forward']:>8.3f} {1e3 * t['forward_backward']:>11.3f} "
                  f"{base['forward'] / t['forward']:>12.1f}x {base['forward_backward'] / t['forward_backward']:>7.1f}x")
        print(f"        table build: legacy {res['build_s']['legacy'] * 1e3:.1f} ms, SIDTrie {res['build_s']['new'] * 1e3:.1f} ms;"
              f" max |diff| of log-probs and gradients {res['max_abs_diff']:.1e}")
    out = Path(__file__).resolve().parents[1] / "bench_results" / "sid_mask.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
