"""Evaluation outputs: eval_report.json, report.md (summary table) and Recall@K / NDCG@K plots.

Every file is written atomically (temp file in the same folder, then rename), so an interrupted run
never leaves a half-written report next to a complete-looking one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sid_tokenizer.sidmap import atomic_output, atomic_write_text

REPORT_JSON = "eval_report.json"
REPORT_MD = "report.md"
RECALL_PNG = "recall_at_k.png"
NDCG_PNG = "ndcg_at_k.png"

Results = Mapping[str, Mapping[str, Mapping[str, float]]]  # method -> protocol -> metric -> value


def _cutoffs(results: Results, prefix: str) -> list[int]:
    ks: set[int] = set()
    for per_protocol in results.values():
        for metrics in per_protocol.values():
            ks.update(int(key.split("@")[1]) for key in metrics if key.startswith(prefix + "@"))
    return sorted(ks)


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def markdown_table(results: Results, ks: Sequence[int] | None = None) -> str:
    """One row per (method, protocol): Recall/NDCG at each K, MRR, coverage, invalid, users, users/s."""
    ks = list(ks or _cutoffs(results, "recall"))
    head = ["method", "protocol", "users"] + [f"R@{k}" for k in ks] + [f"N@{k}" for k in ks] + [
        "MRR", "coverage", "invalid", "users/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, per_protocol in results.items():
        for protocol, m in per_protocol.items():
            cells = [method, protocol, f"{int(m.get('num_users', 0))}"]
            cells += [f"{m.get(f'recall@{k}', float('nan')):.4f}" for k in ks]
            cells += [f"{m.get(f'ndcg@{k}', float('nan')):.4f}" for k in ks]
            cells += [f"{m.get('mrr', float('nan')):.4f}", f"{m.get('coverage', float('nan')):.4f}",
                      f"{int(m.get('invalid', 0))}", f"{m.get('users_per_second', float('nan')):.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _atomic_savefig(fig, path: Path) -> None:
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def plot_metric(results: Results, metric: str, path: Path) -> None:
    """Metric@K curves, one line per method, one panel per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = _cutoffs(results, metric)
    protocols = sorted({p for per in results.values() for p in per}, key=lambda p: (p != "all", p))
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.2 * len(protocols), 3.8), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for method, per_protocol in results.items():
            if protocol not in per_protocol:
                continue
            m = per_protocol[protocol]
            ax.plot(ks, [m.get(f"{metric}@{k}", float("nan")) for k in ks], marker="o", label=method)
        ax.set_xticks(ks)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric.upper() if metric == 'ndcg' else metric.capitalize()}@K")
        ax.set_title(f"protocol: {protocol}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    try:
        _atomic_savefig(fig, path)
    finally:
        plt.close(fig)


def write_report(out_dir: str | Path, results: Results, meta: Mapping | None = None) -> dict[str, Path]:
    """Write eval_report.json, report.md and the two plots into `out_dir`; returns their paths."""
    if not results:
        raise ValueError("write_report: no results to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    payload = {"meta": meta, "results": results}
    paths = {"json": out / REPORT_JSON, "md": out / REPORT_MD, "recall": out / RECALL_PNG, "ndcg": out / NDCG_PNG}
    atomic_write_text(paths["json"], json.dumps(_json_safe(payload), indent=1))
    md = ["# Evaluation report", ""]
    for key in ("data", "split", "num_examples", "protocols", "topk"):
        if key in meta:
            md.append(f"- {key}: {meta[key]}")
            if key == "num_examples" and meta.get("split_examples", meta[key]) > meta[key]:
                md[-1] += f" (a seeded sample of the split's {meta['split_examples']}: --max_users)"
    md += ["", markdown_table(results), "",
           "R = Recall (hit rate), N = NDCG, one held-out item per user; protocol `all`: every item is a "
           "candidate; `new`: history items excluded, repeat targets dropped. invalid must be 0.", "",
           *([f"`+repeat` rows: the model's own list re-ranked with a repeat prior counted on the "
              f"{meta['repeat_prior'].get('split') or 'valid'} split (weight {meta['repeat_prior']['weight']:.3f} = "
              "share of its targets found in their own history; "
              "eval/repeat.py); under `new` it equals the model's row.", ""] if meta.get("repeat_prior") else []),
           *([f"`+sasrec` rows: a hybrid of two models, not the generative model alone: its list and SASRec's top "
              f"{meta['sasrec_prior']['candidates']} items scored by log p_model + w log p_SASRec, w "
              + (f"fitted per row and protocol on {meta['sasrec_prior']['fit_users']} users of the valid split (an RL "
                 "model's own valid prompts left out)"
                 if meta["sasrec_prior"].get("fit_users") else f"fixed at {meta['sasrec_prior'].get('fixed_weight')}")
              + " (eval/collab_prior.py; the weights are in eval_report.json under methods). `+sasrec+repeat`: the "
              "repeat prior on the fused list.", ""]
             if meta.get("sasrec_prior") else []),
           f"![Recall@K]({RECALL_PNG})", f"![NDCG@K]({NDCG_PNG})", ""]
    paired = meta.get("paired_ndcg10") or {}
    if paired:
        md += ["## Paired NDCG@10 differences (same users, 95% bootstrap interval)", "",
               "| pair | mean diff | 95% interval | P(diff <= 0) | users |", "|---|---|---|---|---|"]
        md += [f"| {name} | {r['mean_diff']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p_le_0']:.3f} | "
               f"{r['users']} |" for name, r in paired.items()]
        md += ["", "An interval that excludes 0 is a difference outside the noise of this user sample.", ""]
    atomic_write_text(paths["md"], "\n".join(md))
    plot_metric(results, "recall", paths["recall"])
    plot_metric(results, "ndcg", paths["ndcg"])
    return paths
