"""`genrec evaluate`: offline top-k evaluation of SLM checkpoints and baselines in one harness.

    genrec evaluate --config configs/eval.yaml --model runs/rl/final --data data/jobs-kaggle

Writes <output_dir>/eval_report.json, report.md, recall_at_k.png, ndcg_at_k.png and, per model and
protocol, predictions_<method>_<protocol>.jsonl. See docs/evaluation.md.
"""

from __future__ import annotations

from genrec.data.config import DataConfig

from eval.config import EvalConfig

HELP = "Offline top-k evaluation (Recall/NDCG@K, MRR, coverage) of models and baselines, both protocols."
CONFIG_CLASSES = (EvalConfig, DataConfig)


def run(cfg: EvalConfig, data_cfg: DataConfig) -> None:
    from eval.run import run_evaluation
    from eval.report import markdown_table

    results, _ = run_evaluation(cfg, data_cfg)
    print(markdown_table(results))
