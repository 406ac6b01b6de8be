"""Benchmark constrained decoding.

1. `generate` with vs without `SIDLogitsProcessor` at the same settings on the project's tiny Llama shape
   (genrec.modeling.TinyModelConfig, random weights), a 100k-item catalog (3 x 256 codes + dedup level).
   Same settings, EOS included; with random weights the unconstrained run almost never emits EOS and the
   constrained one almost never closes a block early, so both run the full length (the step counts are
   printed). Runs alternate and medians are compared; the time spent inside the processor is measured too,
   because on a shared machine it is the steadier number.
2. Mask throughput on the 100k-item trie: `SIDLogitsProcessor.__call__` on a (B, V) batch in a few row
   states, against a per-row Python baseline (dict trie + loop over rows, the common public approach).

Usage:
    PYTHONPATH=. .venv/bin/python scripts/bench_constrained.py [--quick] [--threads 2]
Writes bench_results/constrained.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from genrec.constrained import SIDLogitsProcessor
from genrec.modeling import TinyModelConfig
from genrec.response import DIRECT, INTERLEAVED, ResponseSpec
from genrec.trie import SIDTrie

PAD, EOS, N_TEXT = 0, 1, 2048


def catalog(n_items: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Random 3 x 256 SIDs plus a dedup level that makes them unique."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n_items, 3))
    base = base[np.lexsort(base.T[::-1])]
    same = np.r_[False, (base[1:] == base[:-1]).all(1)]
    dedup = np.zeros(n_items, dtype=np.int64)
    for i in np.nonzero(same)[0]:
        dedup[i] = dedup[i - 1] + 1
    return np.c_[base, dedup], [256, 256, 256, int(dedup.max()) + 1]


def build(n_items: int):
    codes, sizes = catalog(n_items)
    open_id, close_id = N_TEXT, N_TEXT + 1
    start = N_TEXT + 2
    tables = []
    for s in sizes:
        tables.append(list(range(start, start + s)))
        start += s
    vocab = start
    spec = ResponseSpec.from_ids(
        think_open_id=open_id, think_close_id=close_id, eos_id=EOS, pad_id=PAD, level_token_ids=tables,
        vocab_size=vocab, text_forbidden=[2],
    )
    trie = SIDTrie.from_codes(codes, tables)
    return spec, trie, vocab


def tiny_model(vocab: int) -> LlamaForCausalLM:
    c = TinyModelConfig()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


class Timed(LogitsProcessor):
    """Wraps a processor and sums the time spent inside it."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        return out


def time_generate(model, prompt, proc, new_tokens, reps, **kw) -> tuple[list[float], int]:
    times, steps = [], 0
    for _ in range(reps):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, pad_token_id=PAD,
                eos_token_id=EOS, top_k=None, top_p=None,
                logits_processor=LogitsProcessorList([proc] if proc is not None else []), **kw,
            )
        times.append(time.perf_counter() - t0)
        steps = out.shape[1] - prompt.shape[1]
    return times, steps


def bench_generate(spec, trie, vocab, reps: int, quick: bool) -> list[dict]:
    model = tiny_model(vocab)
    rows = []
    settings = [
        ("beam search 20 beams x 1 prompt", dict(num_beams=20, num_return_sequences=20, do_sample=False), 1),
        ("beam search 20 beams x 4 prompts", dict(num_beams=20, num_return_sequences=20, do_sample=False), 4),
        ("sampling 8 prompts x 16 rollouts", dict(do_sample=True, num_return_sequences=16), 8),
        ("greedy 8 prompts", dict(do_sample=False), 8),
    ]
    if quick:
        settings = settings[:1]
    for layout, block in ((INTERLEAVED, 16), (DIRECT, 0)):
        sp = spec.with_layout(layout)
        for name, kw, n_prompts in settings:
            prompt = torch.randint(3, N_TEXT, (n_prompts, 48), generator=torch.Generator().manual_seed(1))
            proc = SIDLogitsProcessor(sp, trie, max_block_tokens=block)
            new_tokens = proc.max_response_tokens
            time_generate(model, prompt, None, new_tokens, 1, **kw)  # warm-up
            base, con, share = [], [], []
            for _ in range(reps):  # alternate to share machine noise
                t, base_steps = time_generate(model, prompt, None, new_tokens, 1, **kw)
                base += t
                timed = Timed(proc)
                t, con_steps = time_generate(model, prompt, timed, new_tokens, 1, **kw)
                con += t
                share.append(timed.seconds / t[0])
            b, c, sh = statistics.median(base), statistics.median(con), statistics.median(share)
            rows.append({
                "layout": layout, "setting": name, "new_tokens": new_tokens, "steps_unconstrained": base_steps,
                "steps_constrained": con_steps, "unconstrained_s": b, "constrained_s": c, "ratio": c / b,
                "processor_share": sh, "reps": reps,
            })
            print(f"{layout:12s} {name:34s} steps {base_steps:3d}/{con_steps:3d}  unconstrained {b:7.3f}s  "
                  f"constrained {c:7.3f}s  ratio {c / b:5.2f}  time inside processor {100 * sh:4.1f}%", flush=True)
    return rows


class PythonBaseline:
    """Per-row Python trie walk (dict of prefix -> allowed ids), the common public implementation."""

    def __init__(self, codes: np.ndarray, tables: list[list[int]], spec: ResponseSpec) -> None:
        self.children: dict[tuple[int, ...], list[int]] = {}
        for row in codes.tolist():
            for d in range(len(row)):
                self.children.setdefault(tuple(row[:d]), set()).add(tables[d][row[d]])  # type: ignore[arg-type]
        self.children = {k: sorted(v) for k, v in self.children.items()}
        self.spec = spec

    def __call__(self, completion: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        bias = torch.full_like(scores, float("-inf"))  # additive bias, the same fast masking op as ours
        for r, row in enumerate(completion.tolist()):
            prefix = tuple(self.spec.sid_of(t)[1] for t in row if self.spec.sid_of(t) is not None)
            bias[r, self.children[prefix]] = 0.0
        return scores + bias


def bench_masks(spec, trie, vocab, codes, reps: int) -> list[dict]:
    rng = np.random.default_rng(0)
    sp = spec.with_layout(DIRECT)
    tables = [list(t) for t in spec.level_token_ids]
    baseline = PythonBaseline(codes, tables, sp)
    rows = []
    for batch in (20, 320):
        for depth in (0, 1, 2, 3):
            items = rng.choice(len(codes), size=batch)
            comp = torch.tensor([[tables[j][codes[i, j]] for j in range(depth)] for i in items], dtype=torch.long)
            comp = comp.view(batch, depth)
            prompt = torch.full((batch, 8), 5, dtype=torch.long)
            ids = torch.cat([prompt, comp], 1)
            scores = torch.randn(batch, vocab)
            proc = SIDLogitsProcessor(sp, trie, prompt_len=8)
            ours = _rate(lambda: proc(ids, scores), reps)
            base = _rate(lambda: baseline(comp, scores), max(3, reps // 4))
            rows.append({"batch": batch, "sid_depth": depth, "calls_per_s": ours, "rows_per_s": ours * batch,
                         "baseline_calls_per_s": base, "speedup": ours / base})
            print(f"batch {batch:4d} SID depth {depth}: {ours:8.1f} calls/s ({ours * batch:10.0f} rows/s)  "
                  f"python baseline {base:7.1f} calls/s  speedup {ours / base:5.1f}x", flush=True)
    # reasoning rows: inside a thinking block (text mask), interleaved layout
    spi = spec.with_layout(INTERLEAVED)
    for batch in (20, 320):
        comp = torch.cat([torch.full((batch, 1), spi.think_open_id), torch.randint(3, N_TEXT, (batch, 200))], 1)
        ids = torch.cat([torch.full((batch, 8), 5), comp], 1)
        scores = torch.randn(batch, vocab)
        proc = SIDLogitsProcessor(spi, trie, max_block_tokens=512, prompt_len=8)
        ours = _rate(lambda: proc(ids, scores), reps)
        rows.append({"batch": batch, "state": "thinking block, 200 tokens generated, rows reordered (full recompute)",
                     "calls_per_s": ours, "rows_per_s": ours * batch})
        print(f"batch {batch:4d} inside a block after 200 tokens, full recompute: {ours:8.1f} calls/s "
              f"({ours * batch:10.0f} rows/s)")
        # the same, one token per call as in sampling/greedy (rows only grow: incremental update)
        proc = SIDLogitsProcessor(spi, trie, max_block_tokens=512, prompt_len=8)
        times = []
        for n in range(100, 201):
            t0 = time.perf_counter()
            proc(ids[:, : 8 + 1 + n], scores)
            times.append(time.perf_counter() - t0)
        inc = 1.0 / statistics.median(times[1:])
        rows.append({"batch": batch, "state": "thinking block, 100-200 tokens, one new token per call (incremental)",
                     "calls_per_s": inc, "rows_per_s": inc * batch})
        print(f"batch {batch:4d} inside a block, one new token per call:  {inc:8.1f} calls/s ({inc * batch:10.0f} rows/s)")
    return rows


def _rate(fn, reps: int) -> float:
    """Calls per second from the median call time (robust to other jobs on a shared machine)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one generate setting, fewer repetitions")
    ap.add_argument("--skip-generate", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    spec, trie, vocab = build(args.items)
    codes, _ = catalog(args.items)
    build_s = time.perf_counter() - t0
    print(f"trie: {trie.num_items} items, {trie.num_nodes} nodes, vocab {vocab}, built in {build_s:.2f}s")
    result = {"items": trie.num_items, "nodes": trie.num_nodes, "vocab": vocab, "trie_build_s": build_s,
              "threads": args.threads, "torch": torch.__version__}
    result["masks"] = bench_masks(spec, trie, vocab, codes, 50 if not args.quick else 10)
    if not args.skip_generate:
        result["generate"] = bench_generate(spec, trie, vocab, args.reps if not args.quick else 2, args.quick)
    out = Path("bench_results/constrained.json")
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
