"""Benchmark of the semantic-ID tokenizer: fit time and SID quality, ours (RQ-VAE, RQ-KMeans) vs faiss's
ResidualQuantizer on the same embeddings in the same run, plus an encoder comparison (TF-IDF+SVD vs MiniLM).

Quality numbers per run: collisions before dedup, largest colliding group, per-level utilisation and perplexity,
relative reconstruction error, and a neighbour-quality proxy: how often two jobs viewed consecutively by the same
user share their SID prefix (depth 1 and 2), against random pairs (the lift). The encoder itself is scored by
co-view recall@k in embedding space (is the next-viewed job among the k nearest neighbours of the previous one).

    PYTHONPATH=. .venv/bin/python scripts/bench_tokenizer.py --sets jobs-kaggle,amazon-industrial-mini,synth-10k \
        --encoders tfidf,minilm --methods rqvae,rqkmeans,faiss-rq
    PYTHONPATH=. .venv/bin/python scripts/bench_tokenizer.py --sets synth-100k --encoders tfidf

Writes bench_results/tokenizer.json (merged by key with earlier runs) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sid_tokenizer.config import TokenizerConfig  # noqa: E402
from sid_tokenizer.embed import embed_catalog, make_encoder  # noqa: E402
from sid_tokenizer.metrics import collision_stats, level_usage, prefix_share_rate  # noqa: E402
from sid_tokenizer.tokenizer import SIDTokenizer  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
csv.field_size_limit(1 << 30)


# ----------------------------------------------------------------------------------------------- data
def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Tiny RecBole atomic reader: (column names without types, rows)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        rows = [r + [""] * (len(header) - len(r)) for r in reader if r]
    return header, rows


def item_texts(item_file: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) with the default template of Catalog.render: 'field: value' pairs of non-empty fields."""
    header, rows = read_tsv(item_file)
    ids = [r[0] for r in rows]
    texts = ["; ".join(f"{h}: {v}" for h, v in zip(header[1:], r[1:]) if v) for r in rows]
    return ids, texts


def coview_pairs(folder: Path, name: str, index: dict[str, int]) -> np.ndarray:
    """Consecutive distinct items of the same user (by time), as index pairs into the catalog."""
    pairs: list[tuple[int, int]] = []
    inter = folder / f"{name}.inter"
    if inter.is_file():
        header, rows = read_tsv(inter)
        u, i, t = header.index("user_id"), header.index("item_id"), header.index("timestamp")
        by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for r in rows:
            by_user[r[u]].append((float(r[t]), r[i]))
        for seq in by_user.values():
            seq.sort()
            items = [s for _, s in seq]
            pairs += [(index[a], index[b]) for a, b in zip(items, items[1:]) if a != b and a in index and b in index]
    else:  # pre-split: history list + target
        for split in ("train", "valid", "test"):
            header, rows = read_tsv(folder / f"{name}.{split}.inter")
            h, i = header.index("item_id_list"), header.index("item_id")
            for r in rows:
                items = r[h].split() + [r[i]]
                pairs += [(index[a], index[b]) for a, b in zip(items, items[1:]) if a != b and a in index and b in index]
    return np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)


def load_set(name: str, work: Path) -> tuple[list[str], list[str], np.ndarray, str]:
    """(ids, texts, co-view pairs, description) of a benchmark set."""
    if name.startswith("synth-"):
        from genrec.data.synth import SynthConfig, generate_market, write_market

        n = {"synth-10k": 10_000, "synth-100k": 100_000}[name]
        folder = work / name
        if not (folder / "jobs-synth.item").is_file():
            write_market(generate_market(SynthConfig(num_jobs=n, num_users=max(2000, n // 5), progress=False)),
                         folder)
        ids, texts = item_texts(folder / "jobs-synth.item")
        index = {i: k for k, i in enumerate(ids)}
        return ids, texts, coview_pairs(folder, "jobs-synth", index), f"genrec.data.synth, {n} jobs, seed 0"
    folder = SHARED / name
    if not folder.is_dir():
        raise SystemExit(f"{folder} not found (real sets need ../shared/data)")
    ids, texts = item_texts(folder / f"{name}.item")
    index = {i: k for k, i in enumerate(ids)}
    return ids, texts, coview_pairs(folder, name, index), f"../shared/data/{name}"


# -------------------------------------------------------------------------------------------- metrics
def coview_recall(emb: np.ndarray, pairs: np.ndarray, ks=(10, 100), max_pairs: int = 5000) -> dict[str, float]:
    """Among all items, is b in the k nearest (cosine) neighbours of a, for co-view pairs (a, b)?"""
    if len(pairs) == 0:
        return {}
    rng = np.random.default_rng(0)
    if len(pairs) > max_pairs:
        pairs = pairs[rng.choice(len(pairs), max_pairs, replace=False)]
    x = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1)
    ranks = []
    for s in range(0, len(pairs), 1024):
        p = torch.from_numpy(pairs[s : s + 1024])
        sim = x[p[:, 0]] @ x.T
        sim[torch.arange(len(p)), p[:, 0]] = -2.0  # exclude the item itself
        target = sim[torch.arange(len(p)), p[:, 1]].unsqueeze(1)
        ranks.append((sim > target).sum(1))
    r = torch.cat(ranks).numpy()
    return {f"coview_recall@{k}": float((r < k).mean()) for k in ks}


def sid_quality(codes: np.ndarray, sizes: list[int], pairs: np.ndarray, x: np.ndarray, x_hat: np.ndarray) -> dict:
    util, ppl = level_usage(codes, sizes)
    col = collision_stats(codes)
    rng = np.random.default_rng(0)
    rand = rng.integers(0, len(codes), size=(20000, 2))
    out = {
        "collision_rate_before_dedup": col["collision_rate"],
        "max_items_per_sid_before_dedup": col["max_items_per_sid"],
        "utilization": util,
        "perplexity": ppl,
        "recon_rel": float(((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()),
    }
    for depth in (1, 2):
        share, base = prefix_share_rate(codes, pairs, depth), prefix_share_rate(codes, rand, depth)
        out[f"coview_share_d{depth}"] = share
        out[f"random_share_d{depth}"] = base
        out[f"coview_lift_d{depth}"] = share / base if base > 0 else float("nan")
    return out


# -------------------------------------------------------------------------------------------- runners
def run_ours(method: str, emb: np.ndarray, ids: list[str], levels: int, k: int, seed: int, **over) -> dict:
    # quantizers compared on the same given embeddings: no collaborative part (that is measured end to end)
    cfg = TokenizerConfig(method=method, levels=levels, codebook_size=k, seed=seed, cache_dir="", **{"collab_dim": 0, **over})
    tok = SIDTokenizer(cfg)
    sid_map = tok.fit(None, ids, embeddings=emb)
    rep = tok.report
    codes = np.array([sid_map.codes(i)[:levels] for i in ids])
    with torch.no_grad():
        x_hat = tok.quantizer.reconstruct(torch.from_numpy(codes)).numpy()
    q = sid_quality(codes, rep["codebook_sizes"][:levels], PAIRS, emb, x_hat)
    q.update(fit_seconds=rep["fit_seconds"], dedup_size=rep["codebook_sizes"][-1],
             collision_rate_nearest_rule=rep["collision_rate_nearest_rule"],
             spread_moved_items=rep["spread_moved_items"],
             collision_rate_after_dedup=rep["collision_rate"])
    return q


def run_faiss(emb: np.ndarray, levels: int, k: int, seed: int) -> dict:
    import faiss

    nbits = int(np.log2(k))
    if 2**nbits != k or nbits != 8:
        return {"skipped": "faiss peer run only at codebook size 256 (8-bit codes)"}
    t0 = time.perf_counter()
    rq = faiss.ResidualQuantizer(emb.shape[1], levels, nbits)
    rq.verbose = False
    rq.cp.seed = seed
    rq.train(emb)
    packed = rq.compute_codes(emb)
    fit = time.perf_counter() - t0
    codes = packed[:, :levels].astype(np.int64)
    x_hat = rq.decode(packed)
    q = sid_quality(codes, [k] * levels, PAIRS, emb, x_hat)
    q.update(fit_seconds=fit, max_beam_size=int(rq.max_beam_size))
    return q


PAIRS = np.zeros((0, 2), dtype=np.int64)


def markdown(results: dict) -> str:
    """The results JSON as a markdown table (for docs/bench/tokenizer.md)."""
    head = ("| set | encoder | method | items | embed s | fit s | collisions (nearest rule) | max group | "
            "utilisation L1/L2/L3 | perplexity L1/L2/L3 | recon rel | co-view share d1 (lift) | d2 (lift) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, r in results.items():
        if "skipped" in r:
            continue
        set_name, enc, method = key.split("|")[:3]
        extra = key.split("|")[4] if len(key.split("|")) > 4 else ""
        if extra:
            method = f"{method} ({extra})"
        nearest = r.get("collision_rate_nearest_rule", r["collision_rate_before_dedup"])
        emb = "cached" if r.get("embed_seconds") is None else f"{r['embed_seconds']:.1f}"
        lines.append(
            f"| {set_name} | {enc} | {method} | {r['num_items']} | {emb} | {r['fit_seconds']:.1f} | "
            f"{r['collision_rate_before_dedup']:.4f} ({nearest:.4f}) | {r['max_items_per_sid_before_dedup']} | "
            f"{'/'.join(f'{u:.2f}' for u in r['utilization'])} | {'/'.join(f'{p:.0f}' for p in r['perplexity'])} | "
            f"{r['recon_rel']:.3f} | {r['coview_share_d1']:.3f} (x{r['coview_lift_d1']:.0f}) | "
            f"{r['coview_share_d2']:.3f} (x{r['coview_lift_d2']:.0f}) |"
        )
    enc_lines = ["| set | encoder | embed s | co-view recall@10 | co-view recall@100 |", "|---|---|---|---|---|"]
    seen = set()
    for key, r in results.items():
        set_name, enc = key.split("|")[:2]
        if (set_name, enc) in seen or "encoder_coview_recall@10" not in r:
            continue
        seen.add((set_name, enc))
        emb = "cached" if r.get("embed_seconds") is None else f"{r['embed_seconds']:.1f}"
        enc_lines.append(f"| {set_name} | {enc} | {emb} | {r['encoder_coview_recall@10']:.3f} | "
                         f"{r['encoder_coview_recall@100']:.3f} |")
    return "\n".join(enc_lines) + "\n\n" + "\n".join(lines)


def main() -> None:
    global PAIRS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="jobs-kaggle,amazon-industrial-mini,synth-10k")
    ap.add_argument("--encoders", default="tfidf,minilm")
    ap.add_argument("--methods", default="rqvae,rqkmeans,faiss-rq")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(REPO / "bench_results" / "tokenizer_work"))
    ap.add_argument("--out", default=str(REPO / "bench_results" / "tokenizer.json"))
    ap.add_argument("--set-option", action="append", default=[], help="extra TokenizerConfig key=value (ours)")
    ap.add_argument("--markdown", action="store_true", help="only print the results JSON as a markdown table")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy/scipy BLAS (SVD) and faiss's OpenMP
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    over = {}
    for kv in args.set_option:
        key, value = kv.split("=", 1)
        over[key] = json.loads(value) if value[:1] in "0123456789-[tf" else value
    work = Path(args.work)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    table = []
    for set_name in args.sets.split(","):
        ids, texts, PAIRS, desc = load_set(set_name, work)
        print(f"\n## {set_name}: {len(ids)} items, {len(PAIRS)} co-view pairs ({desc})", flush=True)
        for enc_name in args.encoders.split(","):
            enc = make_encoder(enc_name, seed=args.seed)
            emb, info = embed_catalog(enc, texts, cache_dir=str(work / "emb_cache"))
            enc_q = coview_recall(emb, PAIRS)
            print(f"  encoder {enc_name}: dim {emb.shape[1]}, {info['seconds']:.1f}s "
                  f"({'cached' if info['cached'] else 'computed'}), {enc_q}", flush=True)
            for method in args.methods.split(","):
                key = f"{set_name}|{enc_name}|{method}|{args.levels}x{args.codebook_size}"
                if over:
                    key += "|" + ",".join(f"{k}={v}" for k, v in sorted(over.items()))
                if method == "faiss-rq":
                    res = run_faiss(emb, args.levels, args.codebook_size, args.seed)
                else:
                    res = run_ours(method, emb, ids, args.levels, args.codebook_size, args.seed, **over)
                res.update(num_items=len(ids), data=desc, encoder=enc_name, embed_dim=int(emb.shape[1]),
                           embed_seconds=info["seconds"] if not info["cached"] else None,
                           threads=args.threads, **{f"encoder_{k}": v for k, v in enc_q.items()})
                results[key] = res
                table.append((key, res))
                if "skipped" in res:
                    print(f"  {method}: {res['skipped']}")
                    continue
                nearest = res.get("collision_rate_nearest_rule", res["collision_rate_before_dedup"])
                print(f"  {method:9s} fit {res['fit_seconds']:6.1f}s  coll {res['collision_rate_before_dedup']:.4f}"
                      f" (nearest {nearest:.4f})"
                      f"  maxgrp {res['max_items_per_sid_before_dedup']:3d}  util "
                      f"{'/'.join(f'{u:.2f}' for u in res['utilization'])}  ppl "
                      f"{'/'.join(f'{p:.0f}' for p in res['perplexity'])}  rel {res['recon_rel']:.3f}  coview d1 "
                      f"{res['coview_share_d1']:.3f} (x{res['coview_lift_d1']:.1f}) d2 {res['coview_share_d2']:.3f} "
                      f"(x{res['coview_lift_d2']:.0f})", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
