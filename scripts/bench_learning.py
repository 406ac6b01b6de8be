"""Learning comparison: SFT only vs GRPO vs prefix-GRPO vs SAPO from one stage-2 checkpoint, several seeds.

One `genrec rl` run per algorithm x seed, equal budget from one config, then the evaluation harness on the
same test users; for docs/bench/learning.md:
  * runs and evaluations go through the CLI in up to --jobs parallel processes (1 torch thread each),
  * the zero-advantage-group fractions are read from each run's TensorBoard events (EventAccumulator),
  * a markdown table of mean +- std over seeds.
Resumable: a run with <run>/final/model.safetensors, or an evaluation with <run>/eval/eval_report.json, is skipped.

    PYTHONPATH=. .venv/bin/python scripts/bench_learning.py --model runs/bl/synth/sft2/final \
        --data runs/bl/synth/data --config configs/bench_rl.yaml --out runs/bl/synth/compare \
        --seeds 0,1,2 --max_users 150 --num_beams 10 --jobs 2

Writes <out>/learning.json and <out>/learning.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.metrics import paired_difference  # noqa: E402
from eval.collab_prior import SASREC_SUFFIX  # noqa: E402  the '+sasrec' and '+repeat' rows are re-rankings,
from eval.repeat import REPEAT_SUFFIX  # noqa: E402  not the model's own
DERIVED = (REPEAT_SUFFIX, SASREC_SUFFIX)

REPO = Path(__file__).resolve().parents[1]
ZERO_TAGS = ("algorithm", "outcome", "all_steps")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _alive(out_dir: Path) -> bool:
    """A `genrec rl` or `genrec evaluate` process (e.g. from an interrupted or another driver) writes this folder."""
    return subprocess.run(["pgrep", "-f", "--", f"--output_dir {out_dir}( |$)"], capture_output=True).returncode == 0


def _trained(run_dir: Path) -> bool:
    return (run_dir / "final" / "model.safetensors").is_file() and not _alive(run_dir)


def _done_or_running_elsewhere(cmd: list[str], out_dir: Path) -> bool:
    """Another driver (e.g. one started with other --seeds) finished or is running this job: skip it."""
    marker = out_dir / ("eval_report.json" if "evaluate" in cmd else "final/model.safetensors")
    return marker.is_file() or _alive(out_dir)


def run_pool(jobs: list[tuple[list[str], Path, Path | None]], parallel: int, external: list[Path] = ()) -> None:
    """Run (argv, log file, run folder it needs trained or None), at most `parallel` at once, first ready first;
    stop on the first failure. Evaluations share the pool with training, so no slot idles at the end.
    `external`: runs still trained by another process (an interrupted driver); each takes a slot while alive.
    Jobs another driver is running are skipped but waited for, so the summary can read their outputs."""
    pending, running, elsewhere = list(jobs), [], []
    while pending or running or any(_alive(d) for d in elsewhere):
        while len(running) + sum(_alive(d) for d in external) < parallel:
            ready = [j for j in pending if j[2] is None or _trained(j[2])]
            if not ready:
                break
            pending.remove(ready[0])
            cmd, log, _ = ready[0]
            if _done_or_running_elsewhere(cmd, log.parent):
                print(f"[learning] skip (finished or running in another driver): {log}", file=sys.stderr, flush=True)
                elsewhere.append(log.parent)
                continue
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"[learning] start {' '.join(cmd)}  (log {log})", file=sys.stderr, flush=True)
            running.append((subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=_env(),
                                             cwd=REPO), cmd, log, time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            proc, cmd, log, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                for p, *_ in running:
                    p.terminate()
                raise SystemExit(f"[learning] failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
            print(f"[learning] done in {time.perf_counter() - t0:.0f}s: {log}", file=sys.stderr, flush=True)


def zero_adv_fractions(run_dir: Path) -> dict:
    """Per-step series and mean of train/sid/frac_zero_adv_groups/* from the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for ev in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if "frac_zero_adv_groups" in tag or tag.endswith("sid/exact_match_rate") or "sid/match_rate" in tag:
                short = tag.split("sid/", 1)[1]
                series.setdefault(short, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return {k: {"per_step": [v[s] for s in sorted(v)], "mean": statistics.mean(v.values())} for k, v in series.items()}


def mean_std(vals: list[float]) -> dict:
    return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "runs": vals}


@functools.lru_cache(maxsize=None)  # each evaluation is read once, though it appears in several pairs
def user_ndcg(eval_dir: Path, k: int = 10) -> dict[str, float]:
    """Per-user NDCG@k from the evaluation's saved predictions (all-items protocol)."""
    (path,) = sorted(p for p in eval_dir.glob("predictions_*_all.jsonl")
                     if not any(d in p.name for d in DERIVED))[:1] or [None]
    if path is None:
        raise SystemExit(f"[learning] {eval_dir}: no predictions_*_all.jsonl (evaluate with --save_predictions true)")
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out[r["user_id"]] = next((1 / math.log2(i + 2) for i, x in enumerate(r["items"][:k]) if x == r["target"]), 0.0)
    return out


def paired_bootstrap(eval_dirs: dict[tuple[str, int], Path], a: str, b: str, seeds: list[int],
                     n_boot: int = 2000) -> dict:
    """Mean per-user NDCG@10 difference a - b over (seed, user) pairs (same seed = same prompts and test users),
    with a 95% bootstrap interval. Pairs are resampled as if independent: it ignores seed-level variance, so read
    it beside the across-seed std."""
    diffs: list[float] = []
    for s in seeds:
        da = user_ndcg(eval_dirs[(a, s)] if a != "sft_only" else eval_dirs[("sft_only", 0)])
        db = user_ndcg(eval_dirs[(b, s)] if b != "sft_only" else eval_dirs[("sft_only", 0)])
        diffs += [da[u] - db[u] for u in da if u in db]
    d = paired_difference(diffs, [0.0] * len(diffs), num_samples=n_boot)
    return {"mean_diff": d["mean_diff"], "ci95": [d["ci_low"], d["ci_high"]], "p_le_0": d["p_le_0"], "pairs": d["users"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="stage-2 checkpoint: the SFT-only baseline and every RL start")
    p.add_argument("--data", required=True)
    p.add_argument("--sid_map", default="")
    p.add_argument("--config", default=str(REPO / "configs" / "bench_rl.yaml"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--algorithms", default="grpo,grpo_prefix,sapo")
    p.add_argument("--rl_flags", default="", help="extra `genrec rl` flags shared by every run")
    p.add_argument("--data_flags", default="", help="data-loading flags for both `genrec rl` and `genrec evaluate` "
                                                    "(e.g. '--collapse_repeats false' for jobs-kaggle)")
    p.add_argument("--max_users", type=int, default=150)
    p.add_argument("--eval_seed", type=int, default=42, help="seed of the evaluated user subset (same for all)")
    p.add_argument("--num_beams", type=int, default=10)
    p.add_argument("--max_block_tokens", type=int, default=32, help="evaluation block budget (0 = auto)")
    p.add_argument("--layout", default="auto", help="evaluation layout (auto: from the model; direct for stage-1)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--skip_eval", action="store_true", help="train only")
    args = p.parse_args()
    import shlex

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    algorithms = [a for a in args.algorithms.split(",") if a]
    py = [sys.executable, "-m", "genrec.cli"]
    extra = ["--sid_map", args.sid_map] if args.sid_map else []

    runs = {(alg, s): out / f"{alg}-s{s}" for alg in algorithms for s in seeds}
    train = [(py + ["rl", "--config", args.config, "--model", args.model, "--data", args.data, "--algorithm", alg,
                    "--seed", str(s)] + extra + shlex.split(args.data_flags) + shlex.split(args.rl_flags)
              + ["--output_dir", str(d)],
              d / "train.log", None)
             for (alg, s), d in runs.items()
             if not (d / "final" / "model.safetensors").is_file() and not _alive(d)]
    models = {("sft_only", 0): (Path(args.model), out / "sft_only" / "eval", None)}
    models.update({k: (d / "final", d / "eval", d) for k, d in runs.items()})
    evals = [] if args.skip_eval else [
        (py + ["evaluate", "--data", args.data, "--model", str(m), "--output_dir", str(e), "--eval_split", "test",
               "--num_beams", str(args.num_beams), "--max_block_tokens", str(args.max_block_tokens), "--layout", args.layout,
               "--max_users", str(args.max_users), "--seed", str(args.eval_seed), "--protocols", "all",
               "--baselines", "", "--no_progress"] + extra + shlex.split(args.data_flags), e / "eval.log", dep)
        for m, e, dep in models.values() if not (e / "eval_report.json").is_file()]
    t0 = time.perf_counter()
    run_pool(train + evals, args.jobs, [d for d in runs.values() if _alive(d)])
    wall_s = time.perf_counter() - t0
    if args.skip_eval:
        return

    per_run: dict[str, dict] = {}
    for (method, s), (m, e, _) in models.items():
        report = json.loads((e / "eval_report.json").read_text())
        (metrics,) = [v for k, v in report["results"].items() if not k.endswith(DERIVED)]  # the model's own row
        row = {"metrics": metrics["all"], "num_users": report["meta"]["num_examples"]}
        if method != "sft_only":
            row["zero_adv"] = zero_adv_fractions(m.parent)
        per_run[f"{method}-s{s}"] = row
    summary: dict[str, dict] = {}
    for method in ["sft_only"] + algorithms:
        rows = [r for k, r in per_run.items() if k.rsplit("-s", 1)[0] == method]
        cell = {key: mean_std([r["metrics"][key] for r in rows]) for key in ("ndcg@10", "recall@10", "sid_level0_acc",
                                                                              "sid_level1_acc") if key in rows[0]["metrics"]}
        for tag in ZERO_TAGS:
            vals = [r["zero_adv"]["frac_zero_adv_groups/" + tag]["mean"] for r in rows
                    if "frac_zero_adv_groups/" + tag in r.get("zero_adv", {})]
            if vals:
                cell["zero_adv_" + tag] = mean_std(vals)
        vals = [r["zero_adv"]["exact_match_rate"]["mean"] for r in rows if "exact_match_rate" in r.get("zero_adv", {})]
        if vals:
            cell["rollout_exact_match"] = mean_std(vals)
        summary[method] = cell

    def fmt(c, key, nd=4):
        v = c.get(key)
        return f"{v['mean']:.{nd}f} ± {v['std']:.{nd}f}" if v else "-"

    lines = ["| method | NDCG@10 | Recall@10 | top-1 level-0 acc | top-1 level-1 acc | zero-adv groups (own reward) "
             "| zero-adv groups (outcome, same rollouts) | rollout exact match |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, c in summary.items():
        lines.append(f"| {method} | {fmt(c, 'ndcg@10')} | {fmt(c, 'recall@10')} | {fmt(c, 'sid_level0_acc', 3)} "
                     f"| {fmt(c, 'sid_level1_acc', 3)} | {fmt(c, 'zero_adv_algorithm', 3)} "
                     f"| {fmt(c, 'zero_adv_outcome', 3)} | {fmt(c, 'rollout_exact_match', 3)} |")
    eval_dirs = {k: e for k, (_, e, _) in models.items()}
    pairs = [(x, y) for i, x in enumerate(algorithms[::-1]) for y in algorithms[::-1][i + 1:] + ["sft_only"]]
    paired = {f"{x} - {y}": paired_bootstrap(eval_dirs, x, y, seeds) for x, y in pairs}
    lines += ["", "Paired per-user NDCG@10 differences (seed x user pairs, 95% bootstrap interval):", "",
              "| pair | mean diff | 95% interval | P(diff <= 0) | pairs |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['mean_diff']:+.4f} | [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {r['p_le_0']:.3f} "
              f"| {r['pairs']} |" for name, r in paired.items()]
    table = "\n".join(lines)
    print(table)
    result = {"args": vars(args), "summary": summary, "paired_ndcg10": paired, "per_run": per_run, "wall_seconds": wall_s, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("learning.json", json.dumps(result, indent=1)), ("learning.md", table + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(f"wrote {out / 'learning.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
