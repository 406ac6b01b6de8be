"""Two CPU processes (torchrun, gloo) take the same SFT step as one process on the same rows.

The step's loss is a weighted sum over its rows divided by the whole step's weight (`sid_weighted_loss`,
`GenrecSFTTrainer._get_num_items_in_batch`): with two processes each holds half the rows, so the divisor must be
gathered across them and DDP's gradient averaging undone. Plain SGD without gradient clipping (its update is
proportional to the gradient; Adam's first step and a clipped norm are not) and SID tokens weighted 2x make a wrong
divisor or a missing gather change the weights (checked: dropping the gather fails this test).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _sft(cmd: list[str], data: Path, sid_map: Path, model: Path, out: Path, per_device: int, cwd: Path) -> None:
    args = ["sft", "--stage", "1", "--model", str(model), "--sid_map", str(sid_map), "--data", str(data),
            "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", str(per_device),
            "--gradient_accumulation_steps", "1", "--optim", "sgd", "--max_grad_norm", "0", "--learning_rate", "1.0",
            "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--sid_loss_weight", "2", "--loss_impl", "full",
            "--train_sampling_strategy", "random", "--save_steps", "1", "--eval_valid", "false", "--use_cpu", "true",
            "--disable_tqdm", "true", "--report_to", "none", "--seed", "0", "--dataloader_drop_last", "true"]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def test_two_processes_take_the_step_of_one(tmp_path):
    from genrec.modeling import load_model_and_tokenizer
    from tests.helpers_tiny import copy_tiny_model, tiny_sid_map, write_tiny_data_dir

    model = copy_tiny_model(tmp_path / "model")
    data = write_tiny_data_dir(tmp_path / "data")
    sid_map = tmp_path / "sid_map.json"
    tiny_sid_map().save(sid_map)
    py = sys.executable
    _sft([py, "-m", "genrec.cli"], data, sid_map, model, tmp_path / "one", 4, tmp_path)
    with socket.socket() as sock:  # a free port, so parallel test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    _sft([py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, "-m", "genrec.cli"],
         data, sid_map, model, tmp_path / "two", 2, tmp_path)
    start = load_model_and_tokenizer(model)[0].state_dict()
    one = load_model_and_tokenizer(tmp_path / "one" / "final")[0].state_dict()
    two = load_model_and_tokenizer(tmp_path / "two" / "final")[0].state_dict()
    moved = [k for k in start if not torch.allclose(one[k], start[k])]
    assert moved, "the step changed no weight"
    for k in moved:
        assert torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4), k
