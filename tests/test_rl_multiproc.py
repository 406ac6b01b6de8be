"""Two CPU processes (torchrun, gloo) produce the same per-token advantages as one process on the same rollouts,
including a layout where one group of G rollouts spans both processes.

The rollouts are sampled once for real (constrained, one process), saved, and replayed in place of TRL's generate
call in both runs, so that only the gather / normalise / slice path differs. This file is also the worker script:
`torchrun --nproc_per_node 2 tests/test_rl_multiproc.py ...`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _trainer(model_dir: str, out_dir: str, g: int, per_device: int, replay: list[list[int]] | None):
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    from tests.helpers_tiny import tiny_recdata, tiny_sid_map

    from genrec.modeling import load_model_and_tokenizer
    from rl.config import SAPOConfig
    from rl.data import build_rl_dataset
    from rl.trainer import SAPOTrainer

    class ReplayTrainer(SAPOTrainer):
        """Returns this process's slice of previously sampled completions instead of sampling."""

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            if replay is None:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations)
            start = self.accelerator.process_index * len(prompt_ids)
            return [list(r) for r in replay[start : start + len(prompt_ids)]], None

    model, tok = load_model_and_tokenizer(model_dir)
    tok.padding_side = "left"
    rd = tiny_recdata()
    ds = build_rl_dataset(rd.train[:8], rd.catalog, tiny_sid_map(), tok)
    cfg = SAPOConfig(
        output_dir=out_dir, num_generations=g, per_device_train_batch_size=per_device, max_completion_length=24,
        max_block_tokens=4, save_strategy="no", use_cpu=True, seed=0, report_to=[], disable_tqdm=True,
    )
    trainer = ReplayTrainer(model, cfg, tiny_sid_map(), train_dataset=ds, processing_class=tok)
    trainer.model.train()
    return trainer, ds


def _global_inputs(ds, g: int, n_rows: int) -> list[dict]:
    rows = []
    i = 0
    while len(rows) < n_rows:
        rows += [dict(ds[i]) for _ in range(g)]
        i += 1
    return rows[:n_rows]


def _rows(out) -> tuple[list[list[int]], list[list[float]]]:
    ids, adv = [], []
    for c, m, a in zip(out["completion_ids"], out["completion_mask"], out["advantages"]):
        n = int(m.sum())
        ids.append(c[:n].tolist())
        adv.append(a[:n].tolist())
    return ids, adv


def worker(args) -> None:
    torch.set_num_threads(1)
    saved = torch.load(args.replay, weights_only=True) if args.replay else None
    replay = saved["ids"] if saved else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer, ds = _trainer(args.model, args.out, args.g, args.per_device, replay)
    rank = trainer.accelerator.process_index
    assert trainer.accelerator.num_processes == world, "accelerate did not start one process per torchrun rank"
    all_inputs = _global_inputs(ds, args.g, args.per_device * world)
    local = all_inputs[rank * args.per_device : (rank + 1) * args.per_device]
    if saved:
        for x, t in zip(local, saved["targets"][rank * args.per_device :]):
            x["target_codes"] = list(t)
        out = trainer._generate_and_score_completions(local)
        targets = saved["targets"]
    else:
        # Sampling run: make each group informative whatever was sampled (target = SID of its first rollout, so
        # it has at least one exact match) and recompute the advantages of the same rollouts.
        from genrec.response import parse_response

        out = trainer._generate_and_score_completions(local)
        targets = []
        for j in range(0, len(local), args.g):
            first = parse_response(out["completion_ids"][j][out["completion_mask"][j].bool()].tolist(), trainer.spec)
            targets += [list(first.codes)] * args.g
        for x, t in zip(local, targets):
            x["target_codes"] = t
        trainer.apply_step_advantages(out, local)
    ids, adv = _rows(out)
    torch.save({"ids": ids, "adv": adv, "targets": targets}, f"{args.save}.rank{rank}.pt")


def _run(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("g,per_device", [(4, 2), (2, 4)], ids=["group-spans-processes", "groups-local"])
def test_two_processes_match_one(tmp_path, g, per_device):
    from tests.helpers_tiny import copy_tiny_model

    model_dir = copy_tiny_model(tmp_path / "model")
    me = str(Path(__file__).resolve())
    py = sys.executable
    n = 2 * per_device
    # 1) one process samples all n rollouts for real and computes the reference advantages
    _run([py, me, "--model", str(model_dir), "--out", str(tmp_path / "o1"), "--g", str(g),
          "--per_device", str(n), "--save", str(tmp_path / "ref")], tmp_path)
    ref = torch.load(tmp_path / "ref.rank0.pt", weights_only=True)
    torch.save({"ids": ref["ids"], "targets": ref["targets"]}, tmp_path / "replay.pt")
    # 2) two processes replay the same rollouts
    _run([py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + g), me,
          "--model", str(model_dir), "--out", str(tmp_path / "o2"), "--g", str(g), "--per_device", str(per_device),
          "--replay", str(tmp_path / "replay.pt"), "--save", str(tmp_path / "dist")], tmp_path)
    got_ids, got_adv = [], []
    for rank in range(2):
        part = torch.load(tmp_path / f"dist.rank{rank}.pt", weights_only=True)
        got_ids += part["ids"]
        got_adv += part["adv"]
    assert got_ids == ref["ids"]
    assert any(any(v != 0 for v in row) for row in ref["adv"]), "degenerate batch: every advantage is 0"
    for a, b in zip(got_adv, ref["adv"]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--g", type=int, required=True)
    p.add_argument("--per_device", type=int, required=True)
    p.add_argument("--replay", default="")
    p.add_argument("--save", required=True)
    worker(p.parse_args())


@pytest.mark.slow
def test_two_process_training_through_the_cli(tmp_path):
    """`torchrun --nproc_per_node 2 -m genrec.cli rl ...` trains (DDP on gloo, masked log-probs through the wrapped
    model, KL reference, a group spanning the processes) and writes the final model once."""
    from tests.helpers_tiny import copy_tiny_model, write_tiny_data_dir, write_tiny_tokenizer_dir

    copy_tiny_model(tmp_path / "model")
    write_tiny_data_dir(tmp_path / "data")
    write_tiny_tokenizer_dir(tmp_path / "tok")
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
          "-m", "genrec.cli", "rl", "--config", str(REPO / "configs" / "rl_sapo.yaml"),
          "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--sid_map", str(tmp_path / "tok"),
          "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--max_examples", "8", "--num_generations", "4",
          "--per_device_train_batch_size", "2", "--max_block_tokens", "4", "--max_completion_length", "24",
          "--beta", "0.01", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no"], tmp_path)
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
