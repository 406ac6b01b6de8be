"""Benchmark: SAPO vs outcome-GRPO training step time on the same model, prompts and rollouts (target ratio <= 1.05).

Both runs use SAPOTrainer with constrained rollouts and masked SID log-probs; they differ only in the advantage
computation (per-step rewards, per-step normalisation, token scatter and length scaling vs one scalar per rollout).
learning_rate is 0 so that both algorithms sample exactly the same rollouts from the same seed; runs alternate
(grpo, sapo, grpo, sapo, ...) so drift on a shared machine hits both. Also reported: the time inside our advantage
code per generation batch, and the masked-log-prob overhead (sapo with masked_logprobs off).

    PYTHONPATH=. .venv/bin/python scripts/bench_rl.py                 # ~2-4 min on 2 CPU cores
    PYTHONPATH=. .venv/bin/python scripts/bench_rl.py --steps 4 --reps 1 --hidden 64 --layers 2   # smoke

Writes bench_results/rl.json. Uses the tiny catalog of tests/helpers_tiny.py (48 jobs, K = 2 levels).

The learning comparison (SFT only vs GRPO vs prefix-GRPO vs SAPO over seeds) is scripts/bench_learning.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_model(root: Path, hidden: int, layers: int) -> Path:
    from helpers_tiny import tiny_corpus, tiny_sid_map

    from genrec.modeling import TinyModelConfig, build_tiny_model

    cfg = TinyModelConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                          intermediate_size=3 * hidden, bpe_vocab_size=600)
    return build_tiny_model(root / "model", tiny_sid_map(), tiny_corpus(), cfg)


class StepTimer(TrainerCallback):
    """Wall-clock and process CPU time of each optimizer step (generation included)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._w, self._c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._w)
        self.cpu.append(time.process_time() - self._c)


def run_one(model_dir: Path, out_dir: Path, algorithm: str, args, masked: bool = True) -> dict:
    import torch
    from helpers_tiny import tiny_recdata, tiny_sid_map

    from genrec.modeling import load_model_and_tokenizer
    from rl.config import SAPOConfig
    from rl.data import build_rl_dataset
    from rl.trainer import SAPOTrainer

    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(model_dir)
    tok.padding_side = "left"
    rd = tiny_recdata()
    ds = build_rl_dataset(rd.train, rd.catalog, tiny_sid_map(), tok, max_examples=args.prompts * (args.steps + 1))
    cfg = SAPOConfig(
        output_dir=str(out_dir), algorithm=algorithm, num_generations=args.G,
        per_device_train_batch_size=args.G * args.prompts, max_steps=args.steps, learning_rate=0.0,
        max_block_tokens=args.max_block_tokens, max_completion_length=2 * (args.max_block_tokens + 3) + 1,
        masked_logprobs=masked, save_strategy="no", use_cpu=True, seed=0, report_to=[], disable_tqdm=True,
        shuffle_dataset=False,
    )
    trainer = SAPOTrainer(model, cfg, tiny_sid_map(), train_dataset=ds, processing_class=tok)
    adv_times: list[float] = []
    original = trainer.apply_step_advantages

    def timed(output, inputs):
        t0 = time.perf_counter()
        original(output, inputs)
        adv_times.append(time.perf_counter() - t0)

    trainer.apply_step_advantages = timed
    logp_times: list[float] = []
    original_logps = trainer._get_per_token_logps_and_entropies

    def timed_logps(*a, **kw):
        t0 = time.perf_counter()
        out = original_logps(*a, **kw)
        logp_times.append(time.perf_counter() - t0)
        return out

    trainer._get_per_token_logps_and_entropies = timed_logps
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step_times": timer.wall[1:], "step_cpu_times": timer.cpu[1:], "advantage_times": adv_times[1:],
            "logp_time_per_step": sum(logp_times) / max(len(timer.wall), 1),
            "mean_completion_length": statistics.mean(lengths)}  # first step: warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--prompts", type=int, default=2, help="prompts per step (batch = prompts x G rollouts)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max_block_tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "bench_results" / "rl.json"))
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    model_dir = build_model(root, args.hidden, args.layers)
    runs: dict[str, list[dict]] = {"grpo": [], "sapo": [], "sapo_unmasked": []}
    for rep in range(args.reps):
        for name, alg, masked in (("grpo", "grpo", True), ("sapo", "sapo", True), ("sapo_unmasked", "sapo", False)):
            r = run_one(model_dir, root / f"{name}-{rep}", alg, args, masked)
            runs[name].append(r)
            print(f"rep {rep} {name:14s} median step {statistics.median(r['step_times']):.3f}s wall, "
                  f"{statistics.median(r['step_cpu_times']):.3f}s cpu", file=sys.stderr)

    def med(name, key):
        return statistics.median(v for r in runs[name] for v in r[key])

    rows = {name: {"median_step_s": med(name, "step_times"), "median_step_cpu_s": med(name, "step_cpu_times"),
                   "median_advantage_s": med(name, "advantage_times"),
                   "mean_completion_length": statistics.mean(r["mean_completion_length"] for r in runs[name])}
            for name in runs}
    # Paired ratios: with learning_rate 0 and one seed, step j of rep r samples the same rollouts in every run.
    paired = [s / g for rs, rg in zip(runs["sapo"], runs["grpo"]) for s, g in zip(rs["step_times"], rg["step_times"])]
    paired_cpu = [s / g for rs, rg in zip(runs["sapo"], runs["grpo"])
                  for s, g in zip(rs["step_cpu_times"], rg["step_cpu_times"])]
    min_ratio = min(v for r in runs["sapo"] for v in r["step_times"]) / min(v for r in runs["grpo"] for v in r["step_times"])
    # Component estimate: the two algorithms differ only in the advantage code.
    component = 1 + (rows["sapo"]["median_advantage_s"] - rows["grpo"]["median_advantage_s"]) / rows["grpo"]["median_step_s"]
    ratio = statistics.median(paired)
    for name in rows:
        rows[name]["logp_s_per_step"] = statistics.mean(r["logp_time_per_step"] for r in runs[name])
    cpu_ratio = rows["sapo"]["median_step_cpu_s"] / rows["grpo"]["median_step_cpu_s"]
    mask_ratio = rows["sapo"]["median_step_cpu_s"] / rows["sapo_unmasked"]["median_step_cpu_s"]
    print(f"\nSAPO vs GRPO step time, {args.prompts} prompts x G={args.G}, tiny Llama hidden {args.hidden} x "
          f"{args.layers} layers, {args.threads} threads, {args.reps} reps x {args.steps - 1} timed steps")
    print(f"{'run':16s}{'step wall (s)':>15s}{'step cpu (s)':>14s}{'advantage code (s)':>20s}{'logp (s/step)':>15s}"
          f"{'mean completion':>17s}")
    for name, r in rows.items():
        print(f"{name:16s}{r['median_step_s']:15.3f}{r['median_step_cpu_s']:14.3f}{r['median_advantage_s']:20.4f}"
              f"{r['logp_s_per_step']:15.3f}{r['mean_completion_length']:17.1f}")
    print(f"sapo / grpo step time (target <= 1.05): median of paired steps {ratio:.3f} wall, "
          f"{statistics.median(paired_cpu):.3f} cpu; min over steps {min_ratio:.3f}; "
          f"advantage-code estimate {component:.4f}")
    print(f"log-prob passes per step: sapo masked {rows['sapo']['logp_s_per_step']:.3f}s, unmasked "
          f"{rows['sapo_unmasked']['logp_s_per_step']:.3f}s; median step cpu masked/unmasked {mask_ratio:.3f}")
    result = {"args": vars(args), "rows": rows, "ratio_sapo_over_grpo": ratio, "cpu_ratio_sapo_over_grpo": cpu_ratio,
              "paired_ratios_wall": paired, "paired_ratios_cpu": paired_cpu, "min_ratio": min_ratio,
              "component_ratio": component,
              "ratio_masked_over_unmasked_cpu": mask_ratio,
              "torch_threads": args.threads, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
