"""What `genrec evaluate` does: load data, build every method, evaluate under each protocol, write the report."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from eval.baselines import MostPop, RecentItems, SASRec, SASRecConfig
from eval.collab_prior import SASREC_SUFFIX, CollabPrior, hybrid_beams, sasrec_log_probs
from eval.config import EvalConfig
from eval.generative import load_generative
from eval.harness import check_k, evaluate_ranker, validate_examples
from eval.metrics import paired_difference
from eval.protocols import excludes_history, select_examples
from eval.repeat import REPEAT_SUFFIX, apply_repeat_prior, fit_prior, list_log_probs
from eval.report import write_report
from genrec.data.splits import seeded_subset
from genrec.model_folder import load_info, resolve_layout
from genrec.stage_output import begin_writing, end_writing
from sid_tokenizer.sidmap import atomic_write_text


SASREC_SUBDIR = "sasrec"  # <output_dir>/sasrec: the SASRec of the '+sasrec' rows, for `genrec recommend --sasrec`
COLLAB_JSON = "collab_prior.json"  # in that folder: the fitted weight of each evaluated model


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


def _strip_suffix(method: str) -> str | None:
    """The row a derived row re-ranks ('x+sasrec+repeat' -> 'x+sasrec' -> 'x'), None for a model's own row."""
    for suffix in (REPEAT_SUFFIX, SASREC_SUFFIX):
        if method.endswith(suffix):
            return method[: -len(suffix)]
    return None


def paired_comparisons(methods: list[str], protocols: list[str], per_user: dict) -> dict[str, dict]:
    """Paired per-user NDCG@10 differences on the same users: each generative model minus the one before it
    (stage 1 -> stage 2 -> RL in `genrec run`), each re-ranked row ('+sasrec', '+repeat') minus the row it
    re-ranks, and every generative row minus each baseline."""
    generative = [m for m in methods if m.startswith("genrec")]
    models = [m for m in generative if _strip_suffix(m) is None]
    baselines = [m for m in methods if not m.startswith("genrec")]
    pairs = list(zip(models[1:], models[:-1]))
    pairs += [(m, _strip_suffix(m)) for m in generative if _strip_suffix(m) in methods]
    both = SASREC_SUFFIX + REPEAT_SUFFIX  # the hybrid with the prior against the model with the prior
    pairs += [(m, m[: -len(both)] + REPEAT_SUFFIX) for m in generative
              if m.endswith(both) and m[: -len(both)] + REPEAT_SUFFIX in methods]
    pairs += [(m, b) for m in generative for b in baselines]
    out: dict[str, dict] = {}
    for p in protocols:
        for a, b in pairs:
            ua, ub = per_user[(a, p)].get("ndcg@10"), per_user[(b, p)].get("ndcg@10")
            if ua is not None and ub is not None:
                out[f"{a} - {b} [{p}]"] = paired_difference(ua, ub, seed=0)
    return out


def _train_sasrec(cfg: EvalConfig, data) -> tuple[SASRec, float]:
    t0 = time.perf_counter()
    _log(f"training SASRec on {len(data.train)} examples (early stopping on valid NDCG@10)")
    method = SASRec(SASRecConfig(max_epochs=cfg.sasrec_max_epochs, seed=cfg.seed, progress=cfg.progress))
    method.fit(data.train, data.catalog, data.valid)
    return method, time.perf_counter() - t0


class _Repeat:
    """Re-rank a list with the repeat prior (the '+repeat' rows); under `new` the list is kept."""

    def __init__(self, prior, rec) -> None:
        self.prior, self.rec = prior, rec

    def __call__(self, beams, exs, k, exclude):
        return beams if exclude else apply_repeat_prior(self.prior, beams, exs, k, self.rec.history_beam)


class _Hybrid:
    """Fuse a list with SASRec at the weight fitted for the protocol (the '+sasrec' rows), then the repeat prior if
    given (`hybrid_beams`). `sasrec_cache` is shared by a model's two hybrid rows: SASRec scores each list once."""

    def __init__(self, fitted: dict[bool, CollabPrior], sasrec: SASRec, rec, prior=None,
                 sasrec_cache: dict | None = None) -> None:
        self.fitted, self.sasrec, self.rec, self.prior = fitted, sasrec, rec, prior  # fitted: by excludes_history
        self.cache = {} if sasrec_cache is None else sasrec_cache

    def __call__(self, beams, exs, k, exclude):
        fitted = self.fitted[exclude]
        key = (id(beams), exclude)
        if key not in self.cache:
            self.cache.clear()  # one protocol's lists at a time
            self.cache[key] = sasrec_log_probs(self.sasrec, exs, beams, fitted.candidates, exclude)
        return hybrid_beams(fitted.weight, beams, self.cache[key], exs, k, k, self.rec.history_beam, self.prior,
                            exclude)

    def to_dict(self, protocols: list[str]) -> dict:
        return {p: self.fitted[excludes_history(p)].to_dict() for p in protocols}


def rl_trained_users(model_dir: str) -> set[str]:
    """Users whose valid-split targets an RL model trained on (`genrec rl --rl_split valid` records them in
    genrec_model.json): a weight fitted on their valid lists would see the model at its best."""
    extra = load_info(model_dir).extra
    return set(map(str, extra.get("rl_prompt_users") or [])) if extra.get("rl_split") == "valid" else set()


def _derived_rows(name: str, rec, prior, sasrec, valid_pool, k: int, protocols: list[str],
                  cfg: EvalConfig, trained_users: set[str] = frozenset()) -> tuple[list[tuple[str, object]], float]:
    """The rows that re-rank a model's list: '+repeat', then '+sasrec' and '+sasrec+repeat'. Each SASRec weight is
    fitted on held-out valid users for the row and protocol it serves (one more beam search, on those users): a
    seeded sample of `valid_pool` without `trained_users` (an RL model's valid prompts); under `new` (history items
    excluded, repeat targets dropped) the sampled users whose target is a new item. `--sasrec_prior_weight` fixes
    the weight instead. Returns the rows and the fit's seconds."""
    rows: list[tuple[str, object]] = []
    if prior is not None:
        rows.append((name + REPEAT_SUFFIX, _Repeat(prior, rec)))
    if sasrec is None:
        return rows, 0.0
    t0 = time.perf_counter()
    flags = sorted({excludes_history(p) for p in protocols})
    candidates = cfg.sasrec_prior_candidates
    if cfg.sasrec_prior_weight >= 0:
        fixed = CollabPrior(cfg.sasrec_prior_weight, candidates, split="fixed (--sasrec_prior_weight)")
        fitted = fitted_r = {exclude: fixed for exclude in flags}
    else:
        held_out = [ex for ex in valid_pool if ex.user_id not in trained_users]
        note = (f" (leaving out the {len(valid_pool) - len(held_out)} valid examples of the {len(trained_users)} users "
                "whose targets RL trained on)") if trained_users else ""
        if not held_out:
            note = " (every valid user was an RL prompt of this model: its weight may be too small)"
            held_out = valid_pool
        collab_examples = seeded_subset(held_out, cfg.sasrec_prior_users, cfg.seed)
        _log(f"{name}: fitting the SASRec weight on {len(collab_examples)} valid users{note}")
        variants = dict(zip(flags, rec.recommend_beams_variants(collab_examples, k, flags)))
        position = {id(ex): i for i, ex in enumerate(collab_examples)}
        fitted, fitted_r = {}, {}
        for protocol in dict.fromkeys(protocols):
            exclude = excludes_history(protocol)
            exs = select_examples(collab_examples, protocol)  # under `new`: the users whose target is a new item
            beams = [variants[exclude][position[id(ex)]] for ex in exs]
            if not exs:
                fitted[exclude] = fitted_r[exclude] = CollabPrior(
                    0.0, candidates, split="valid: no new-item target among the sampled users (the model's list)")
                continue
            lists = [list_log_probs(bs) for bs in beams]
            sas = sasrec_log_probs(sasrec, exs, beams, candidates, exclude)
            fitted[exclude] = CollabPrior.fit(lists, sas, exs, k, "valid", candidates)
            fitted_r[exclude] = fitted[exclude] if exclude or prior is None else CollabPrior.fit(
                lists, sas, exs, k, "valid", candidates, rerank=lambda fused, ex: prior.mix(fused, ex.history, k))
            _log(f"{name}{SASREC_SUFFIX} [{protocol}]: weight {fitted[exclude].weight}"
                 + (f"; {name}{SASREC_SUFFIX}{REPEAT_SUFFIX}: {fitted_r[exclude].weight}"
                    if fitted_r[exclude] is not fitted[exclude] else "")
                 + " (valid NDCG@10 by weight: "
                 + ", ".join(f"{w:g}: {v:.4f}" for w, v in fitted[exclude].valid_ndcg10.items()) + ")")
    cache: dict = {}
    rows.append((name + SASREC_SUFFIX, _Hybrid(fitted, sasrec, rec, sasrec_cache=cache)))
    if prior is not None:
        rows.append((name + SASREC_SUFFIX + REPEAT_SUFFIX, _Hybrid(fitted_r, sasrec, rec, prior, sasrec_cache=cache)))
    return rows, time.perf_counter() - t0


def _search_processes(cfg: EvalConfig) -> int:
    """--processes resolved (auto: genrec/parallel.py `worker_processes`), logged when more than one."""
    import torch

    from eval.generative import resolve_device
    from genrec.parallel import worker_processes

    threads = torch.get_num_threads()
    n = worker_processes(cfg.processes, resolve_device(cfg.device).type, threads)
    if n > 1:
        _log(f"beam searches in {n} worker processes of 1 thread each (--processes)")
    return n


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

    collab_on, fit_pool, sasrec, sasrec_seconds = False, [], None, 0.0
    if cfg.sasrec_prior_on():
        fit = cfg.sasrec_prior_weight < 0
        why_not = ("" if not fit else
                   "it fits its weight on the valid split, which is the split evaluated" if cfg.eval_split == "valid"
                   else "the data has no valid split to fit its weight on" if not data.valid else "")
        if why_not and cfg.sasrec_prior == "true":
            raise ValueError(f"--sasrec_prior true: {why_not}; give --sasrec_prior_weight or --sasrec_prior false")
        if why_not:
            _log(f"'{SASREC_SUFFIX}' rows skipped: {why_not} (--sasrec_prior_weight fixes the weight instead)")
        collab_on = not why_not
        if collab_on and fit:
            fit_pool = list(data.valid)  # the pool each model's fit users are sampled from
            validate_examples(fit_pool, data.catalog, split="valid", source=str(cfg.data))
    # Generative models: check every test item has a SID and every layout fits its folder before loading any model.
    layouts = cfg.layout_list()
    for i, model_dir in enumerate(cfg.model_list()):
        sid_map = load_checked_sid_map(model_dir, cfg.sid_map or None, data.catalog, cfg.data, command="evaluate")
        validate_examples(examples, data.catalog, split=cfg.eval_split, source=str(cfg.data), sid_map=sid_map)
        if fit_pool:  # the valid users the '+sasrec' weights are fitted on (a sample per model)
            validate_examples(fit_pool, data.catalog, split="valid", source=str(cfg.data), sid_map=sid_map)
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
    if (out_dir / SASREC_SUBDIR).is_dir():  # an earlier evaluation's: never beside this one's weights
        shutil.rmtree(out_dir / SASREC_SUBDIR)
    if collab_on:
        sasrec, sasrec_seconds = _train_sasrec(cfg, data)
    collab_weights: dict[str, dict] = {}
    processes = _search_processes(cfg) if cfg.model_list() else 1
    meta["search_processes"] = processes
    for i, model_dir in enumerate(cfg.model_list()):
        layout = layouts[i] if len(layouts) > 1 else layouts[0]
        t0 = time.perf_counter()
        rec = load_generative(
            model_dir, data.catalog, sid_map_path=cfg.sid_map or None, layout=layout, num_beams=cfg.num_beams,
            max_block_tokens=cfg.model_block_budget(), min_block_tokens=cfg.min_block_tokens,
            batch_size=cfg.batch_size, device=cfg.device, progress=cfg.progress, level_weights=cfg.level_weight_list(),
            beam_cache=cfg.beam_cache, processes=processes,
        ).fit(data.train, data.catalog)
        name = rec.name if len(cfg.model_list()) == 1 else f"{rec.name}:{labels[i]}"
        _log(f"{name}: {model_dir}, layout {rec.layout}, {cfg.num_beams} beams, {len(examples)} users")
        results[name] = {}
        derived, fit_seconds = _derived_rows(name, rec, prior, sasrec, fit_pool, ks[-1], protocols, cfg,
                                             rl_trained_users(model_dir))
        for row, _ in derived:
            results[row] = {}
        hybrids = {row: rerank.fitted for row, rerank in derived if isinstance(rerank, _Hybrid)}
        if hybrids:  # what `genrec recommend --sasrec` reads for this model (None: that protocol was not evaluated)
            plain, with_prior = hybrids[name + SASREC_SUFFIX], hybrids.get(name + SASREC_SUFFIX + REPEAT_SUFFIX, {})
            collab_weights[str(Path(model_dir).resolve())] = {
                "method": name, "weight": plain[False].weight if False in plain else None,
                "weight_with_repeat_prior": with_prior[False].weight if False in with_prior else None,
                "weight_new_items": plain[True].weight if True in plain else None,
                # how the fitted lists were made: `genrec recommend --sasrec` fuses the same way
                "list_length": ks[-1], "candidates": cfg.sasrec_prior_candidates, "layout": rec.layout,
                "num_beams": cfg.num_beams, "level_weights": rec.search.level_weights}
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
            for row, rerank in derived:
                def derived_ranker(exs, k, exclude, _rerank=rerank, _protocol=protocol, _row=row, _store=beams_of):
                    beams = _rerank(_store["beams"], exs, k, exclude)
                    path = _predictions_path(out_dir, _row, _protocol, cfg.save_predictions)
                    return _write_predictions(path, beams, exs)

                other = evaluate_ranker(derived_ranker, examples, data.catalog, protocol=protocol, ks=ks,
                                        sid_map=rec.sid_map, per_user=per_user.setdefault((row, protocol), {}))
                other["seconds"] += metrics["seconds"]  # the beam search it re-ranks
                other["users_per_second"] = metrics["users_per_second"]
                results[row][protocol] = other
                _log(f"{row} [{protocol}]: ndcg@10={other.get('ndcg@10', float('nan')):.4f} "
                     f"recall@10={other.get('recall@10', float('nan')):.4f}")
        meta["methods"][name] = {"model": model_dir, "layout": rec.layout, "num_beams": cfg.num_beams,
                                 "level_weights": rec.search.level_weights,  # None: the plain log-probability
                                 "max_block_tokens": rec.max_block_tokens, "load_and_eval_seconds": time.perf_counter() - t0}
        for row, rerank in derived:
            if isinstance(rerank, _Hybrid):
                meta["methods"][row] = {"sasrec_prior": rerank.to_dict(protocols),
                                        "repeat_prior": rerank.prior is not None, "fit_seconds": fit_seconds}

    # Baselines, through the same harness.
    for base in cfg.baseline_list():
        t0 = time.perf_counter()
        if base == "mostpop":
            method = MostPop().fit(data.train, data.catalog)
        elif base == "recent":
            method = RecentItems().fit(data.train, data.catalog)
        elif sasrec is not None:  # trained before the models, for their '+sasrec' rows
            method = sasrec
        else:
            method, _ = _train_sasrec(cfg, data)
        fit_s = sasrec_seconds if method is sasrec else time.perf_counter() - t0
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
    if sasrec is not None:  # the SASRec and its weights together, once every model is evaluated
        sasrec.save(out_dir / SASREC_SUBDIR)
        atomic_write_text(out_dir / SASREC_SUBDIR / COLLAB_JSON, json.dumps(collab_weights, indent=1))
        meta["sasrec_prior"] = {"folder": str(out_dir / SASREC_SUBDIR), "candidates": cfg.sasrec_prior_candidates,
                                "fit_split": "valid" if fit_pool else None,
                                "fit_users": min(len(fit_pool), cfg.sasrec_prior_users or len(fit_pool)),
                                "fixed_weight": cfg.sasrec_prior_weight if cfg.sasrec_prior_weight >= 0 else None}
    meta["protocol_users"] = {p: len(select_examples(examples, p)) for p in protocols}
    meta["excludes_history"] = {p: excludes_history(p) for p in protocols}
    meta["paired_ndcg10"] = paired_comparisons(list(results), protocols, per_user)
    paths = write_report(out_dir, results, meta)
    end_writing(out_dir)
    _log(f"report written to {paths['md']}")
    return results, paths
