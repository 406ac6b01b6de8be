"""What `genrec evaluate` does: load data, build every method, evaluate under each protocol, write the report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from eval.baselines import MostPop, RecentItems, SASRec, SASRecConfig
from eval.config import EvalConfig
from eval.generative import load_generative
from eval.harness import check_k, evaluate_ranker, validate_examples
from eval.metrics import paired_difference
from eval.protocols import excludes_history, select_examples
from eval.repeat import REPEAT_SUFFIX, apply_repeat_prior, fit_prior
from eval.report import write_report
from genrec.data.splits import seeded_subset
from genrec.model_folder import load_info, resolve_layout
from genrec.stage_output import begin_writing, end_writing
from sid_tokenizer.sidmap import atomic_write_text


def _log(msg: str) -> None:
    print(f"[eval] {msg}", file=sys.stderr, flush=True)


def model_labels(model_dirs: list[str]) -> list[str]:
    """Short unique labels for model folders: the shortest unique path suffix, without a trailing 'final'.

    runs/sft1/final, runs/sft2/final, runs/rl/final -> sft1, sft2, rl.
    """
    parts = [Path(d).resolve().parts for d in model_dirs]
    labels = [p[-1] for p in parts]
    for n in range(1, max((len(p) for p in parts), default=1)):
        candidate = ["/".join(p[-n:]) for p in parts]
        if len(set(candidate)) == len(candidate):
            labels = candidate
            break
    out = []
    for label in labels:
        trimmed = label[: -len("/final")] if label.endswith("/final") else label
        out.append(trimmed or label)
    if len(set(out)) != len(out):  # e.g. "x" and "x/final"
        out = labels
    if len(set(out)) != len(out):  # the same folder twice
        out = [f"{label}#{i + 1}" for i, label in enumerate(out)]
    return out


def _write_predictions(path: Path | None, beams, examples) -> list[list[str]]:
    """Write one JSON line per user (when `path` is given) and return the ranking for the metrics."""
    if path is None:
        return [[b.item_id for b in bs] for bs in beams]
    lines = []
    for ex, bs in zip(examples, beams):
        lines.append(json.dumps({
            "user_id": ex.user_id, "target": ex.target, "history": list(ex.history),
            "items": [b.item_id for b in bs], "scores": [b.score if b.score != float("-inf") else None for b in bs],
            "filled": [b.filled for b in bs], "reasoning": list(bs[0].blocks) if bs else [],
        }, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return [[b.item_id for b in bs] for bs in beams]


def _predictions_path(out_dir: Path, name: str, protocol: str, save: bool = True) -> Path | None:
    if not save:
        return None
    return out_dir / f"predictions_{name.replace(':', '_').replace('/', '_')}_{protocol}.jsonl"


def paired_comparisons(methods: list[str], protocols: list[str], per_user: dict) -> dict[str, dict]:
    """Paired per-user NDCG@10 differences on the same users: each generative model minus the one before it
    (stage 1 -> stage 2 -> RL in `genrec run`), each repeat-mixture row minus its model, and every generative
    row minus each baseline."""
    generative = [m for m in methods if m.startswith("genrec")]
    models = [m for m in generative if not m.endswith(REPEAT_SUFFIX)]
    baselines = [m for m in methods if not m.startswith("genrec")]
    pairs = list(zip(models[1:], models[:-1]))
    pairs += [(m, m[: -len(REPEAT_SUFFIX)]) for m in generative if m.endswith(REPEAT_SUFFIX)]
    pairs += [(m, b) for m in generative for b in baselines]
    out: dict[str, dict] = {}
    for p in protocols:
        for a, b in pairs:
            ua, ub = per_user[(a, p)].get("ndcg@10"), per_user[(b, p)].get("ndcg@10")
            if ua is not None and ub is not None:
                out[f"{a} - {b} [{p}]"] = paired_difference(ua, ub, seed=0)
    return out


def run_evaluation(cfg: EvalConfig, data_cfg=None) -> tuple[dict, dict[str, Path]]:
    """Evaluate the configured models and baselines; returns (results, written paths)."""
    from genrec.checks import check_output_dir, load_checked_sid_map
    from genrec.data.loader import load_data

    if not cfg.data:
        raise ValueError("--data is required: the dataset folder or file prefix to evaluate on")
    data = load_data(cfg.data, data_cfg, verbose=False)
    split_examples = getattr(data, cfg.eval_split)
    examples = seeded_subset(split_examples, cfg.max_users, cfg.seed)
    if len(examples) < len(split_examples):
        _log(f"evaluating a seeded sample of {len(examples):,} of the {len(split_examples):,} {cfg.eval_split} examples "
             "(--max_users)")
    validate_examples(examples, data.catalog, split=cfg.eval_split, source=str(cfg.data))
    ks = cfg.topk_list()
    check_k(ks[-1], len(data.catalog))
    check_output_dir(cfg.output_dir)
    protocols, skipped = [], {}
    for p in cfg.protocol_list():
        if select_examples(examples, p):
            protocols.append(p)
        else:
            skipped[p] = "no example left (every target repeats a history item)"
            _log(f"protocol {p!r} skipped: {skipped[p]}")
    if not protocols:
        raise ValueError(f"no protocol leaves examples to evaluate ({', '.join(skipped)})")
    out_dir = Path(cfg.output_dir)
    results: dict[str, dict[str, dict[str, float]]] = {}
    per_user: dict[tuple[str, str], dict] = {}  # (method, protocol) -> per-user NDCG@10, for paired intervals
    meta: dict = {
        "data": str(cfg.data), "dataset": data.name, "split": cfg.eval_split, "num_examples": len(examples),
        "split_examples": len(split_examples),
        "catalog_size": len(data.catalog), "topk": ks, "protocols": protocols, "data_summary": data.summary,
        "config": {k: v for k, v in vars(cfg).items()}, "methods": {}, "skipped_protocols": skipped,
    }
    if data_cfg is not None:
        meta["data_config"] = {k: v for k, v in vars(data_cfg).items()}

    # Generative models: check every test item has a SID and every layout fits its folder before loading any model.
    layouts = cfg.layout_list()
    for i, model_dir in enumerate(cfg.model_list()):
        sid_map = load_checked_sid_map(model_dir, cfg.sid_map or None, data.catalog, cfg.data, command="evaluate")
        validate_examples(examples, data.catalog, split=cfg.eval_split, source=str(cfg.data), sid_map=sid_map)
        resolve_layout(model_dir, load_info(model_dir), layouts[i] if len(layouts) > 1 else layouts[0])
    labels = model_labels(cfg.model_list())
    prior = fit_prior(data, cfg.eval_split) if cfg.repeat_prior and cfg.model_list() else None
    if prior is not None:
        meta["repeat_prior"] = prior.to_dict()
        _log(f"repeat prior from {prior.examples} {prior.split} examples: weight {prior.weight:.3f} "
             f"(share of targets found in their own history)" + ("; no repeats, rows skipped" if not prior.weight else ""))
        if not prior.weight:
            prior = None
    begin_writing(out_dir)  # until the report is written, readers and `genrec run` see the folder as incomplete
    for i, model_dir in enumerate(cfg.model_list()):
        layout = layouts[i] if len(layouts) > 1 else layouts[0]
        t0 = time.perf_counter()
        rec = load_generative(
            model_dir, data.catalog, sid_map_path=cfg.sid_map or None, layout=layout, num_beams=cfg.num_beams,
            max_block_tokens=cfg.model_block_budget(), min_block_tokens=cfg.min_block_tokens,
            batch_size=cfg.batch_size, device=cfg.device, progress=cfg.progress, level_weights=cfg.level_weight_list(),
        ).fit(data.train, data.catalog)
        name = rec.name if len(cfg.model_list()) == 1 else f"{rec.name}:{labels[i]}"
        _log(f"{name}: {model_dir}, layout {rec.layout}, {cfg.num_beams} beams, {len(examples)} users")
        results[name] = {}
        mixed_name = name + REPEAT_SUFFIX
        if prior is not None:
            results[mixed_name] = {}
        # One beam search for every protocol: they differ only at the last SID level (SIDBeamSearch.search_variants).
        start = time.perf_counter()
        variants = rec.recommend_beams_variants(examples, ks[-1], [excludes_history(p) for p in protocols])
        search_seconds = time.perf_counter() - start
        position = {id(ex): i for i, ex in enumerate(examples)}
        for protocol, all_beams in zip(protocols, variants):
            beams_of: dict[str, list] = {}

            def ranker(exs, k, exclude, _all=all_beams, _protocol=protocol, _name=name, _store=beams_of):
                _store["beams"] = [_all[position[id(ex)]] for ex in exs]
                return _write_predictions(_predictions_path(out_dir, _name, _protocol, cfg.save_predictions), _store["beams"], exs)

            metrics = evaluate_ranker(ranker, examples, data.catalog, protocol=protocol, ks=ks, sid_map=rec.sid_map,
                                      per_user=per_user.setdefault((name, protocol), {}))
            # the shared search's time on every protocol's row (the protocols are not timed apart)
            metrics["seconds"] = search_seconds
            metrics["users_per_second"] = len(examples) / search_seconds if search_seconds > 0 else float("inf")
            metrics["filled"] = float(sum(b.filled for beams in beams_of["beams"] for b in beams))
            results[name][protocol] = metrics
            _log(f"{name} [{protocol}]: ndcg@10={metrics.get('ndcg@10', float('nan')):.4f} "
                 f"recall@10={metrics.get('recall@10', float('nan')):.4f} invalid={int(metrics['invalid'])} "
                 f"({metrics['users_per_second']:.2f} users/s)")
            if prior is not None:
                def mixed_ranker(exs, k, exclude, _rec=rec, _protocol=protocol, _name=mixed_name, _store=beams_of):
                    beams = _store["beams"]
                    if not exclude:  # the `new` protocol excludes history items: the prior has nothing to add
                        beams = apply_repeat_prior(prior, beams, exs, k, _rec.history_beam)
                    return _write_predictions(_predictions_path(out_dir, _name, _protocol, cfg.save_predictions), beams, exs)

                mixed = evaluate_ranker(mixed_ranker, examples, data.catalog, protocol=protocol, ks=ks,
                                        sid_map=rec.sid_map, per_user=per_user.setdefault((mixed_name, protocol), {}))
                mixed["seconds"] += metrics["seconds"]  # the beam search it re-ranks
                mixed["users_per_second"] = metrics["users_per_second"]
                results[mixed_name][protocol] = mixed
                _log(f"{mixed_name} [{protocol}]: ndcg@10={mixed.get('ndcg@10', float('nan')):.4f} "
                     f"recall@10={mixed.get('recall@10', float('nan')):.4f}")
        meta["methods"][name] = {"model": model_dir, "layout": rec.layout, "num_beams": cfg.num_beams,
                                 "level_weights": rec.search.level_weights,  # None: the plain log-probability
                                 "max_block_tokens": rec.max_block_tokens, "load_and_eval_seconds": time.perf_counter() - t0}

    # Baselines, through the same harness.
    for base in cfg.baseline_list():
        t0 = time.perf_counter()
        if base == "mostpop":
            method = MostPop().fit(data.train, data.catalog)
        elif base == "recent":
            method = RecentItems().fit(data.train, data.catalog)
        else:
            _log(f"training SASRec on {len(data.train)} examples (early stopping on valid NDCG@10)")
            method = SASRec(SASRecConfig(max_epochs=cfg.sasrec_max_epochs, seed=cfg.seed, progress=cfg.progress))
            method.fit(data.train, data.catalog, data.valid)
        fit_s = time.perf_counter() - t0
        results[base] = {
            p: evaluate_ranker(method.recommend, examples, data.catalog, protocol=p, ks=ks,
                               per_user=per_user.setdefault((base, p), {})) for p in protocols
        }
        meta["methods"][base] = {"fit_seconds": fit_s}
        if base == "sasrec":
            meta["methods"][base].update(epochs=len(method.history), best_valid_ndcg10=method.best_valid_ndcg10)
        _log(f"{base}: ndcg@10 " + ", ".join(f"{p}={results[base][p].get('ndcg@10', float('nan')):.4f}" for p in protocols))

    if not results:
        raise ValueError("nothing to evaluate: pass --model and/or --baselines")
    meta["protocol_users"] = {p: len(select_examples(examples, p)) for p in protocols}
    meta["excludes_history"] = {p: excludes_history(p) for p in protocols}
    meta["paired_ndcg10"] = paired_comparisons(list(results), protocols, per_user)
    paths = write_report(out_dir, results, meta)
    end_writing(out_dir)
    _log(f"report written to {paths['md']}")
    return results, paths
