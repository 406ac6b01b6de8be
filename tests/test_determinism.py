"""Same data, config and seed -> the same SID map, the same trained weights on CPU, the same metrics (issue 13).

Both runs happen in one process with one torch thread (what is promised; see README "Determinism"): the tokenizer
fit twice gives byte-identical sid_map.json / sid_labels.json and equal tokenizer tensors; one tiny stage-1 SFT
run twice gives tensor-for-tensor equal weights (torch.equal) and the same loss; evaluating both gives the same
metrics.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genrec.cli import main
from tests.helpers_tiny import tiny_model_dir, write_tiny_data_dir

torch.set_num_threads(1)  # bit-identity is promised for a fixed thread count; 1 is also fastest on tiny models
QUIET = ["--disable_tqdm", "true", "--report_to", "none"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data_dir(tmp_path_factory.mktemp("det") / "data")


def _assert_same_tensors(a, b) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ between the two runs: {different[:5]}"


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_fit_tokenizer_twice_is_byte_identical(data, tmp_path, method) -> None:
    args = ["--data", str(data), "--method", method, "--levels", "2", "--codebook_size", "4", "--tfidf_dim", "16",
            "--cache_dir", "", "--threads", "1", "--kmeans_iters", "10", "--steps", "30", "--seed", "3"]
    for run in ("a", "b"):
        assert main(["fit-tokenizer", "--out", str(tmp_path / run), *args]) == 0
    for name in ("sid_map.json", "sid_labels.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    _assert_same_tensors(tmp_path / "a" / "tokenizer.safetensors", tmp_path / "b" / "tokenizer.safetensors")
    # the report differs only in timings
    ra, rb = (json.loads((tmp_path / r / "tokenizer_report.json").read_text()) for r in ("a", "b"))
    timing = {k for k in ra if k.endswith("_seconds")}
    assert {k: v for k, v in ra.items() if k not in timing} == {k: v for k, v in rb.items() if k not in timing}


def test_sft_twice_gives_identical_weights_and_metrics(data, tmp_path) -> None:
    from tests.helpers_tiny import tiny_sid_map

    tiny_sid_map().save(tmp_path / "sid_map.json")
    for run in ("a", "b"):
        assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map", str(tmp_path / "sid_map.json"),
                     "--data", str(data), "--output_dir", str(tmp_path / run), "--per_device_train_batch_size", "8",
                     "--learning_rate", "5e-3", "--logging_steps", "2", "--max_steps", "6", "--eval_valid", "false",
                     "--seed", "7", *QUIET]) == 0
    fa, fb = tmp_path / "a" / "final", tmp_path / "b" / "final"
    _assert_same_tensors(fa / "model.safetensors", fb / "model.safetensors")
    ia, ib = (json.loads((f / "genrec_model.json").read_text()) for f in (fa, fb))
    assert ia["final_train_loss"] == ib["final_train_loss"]
    # the same weights give the same metrics (beam search on CPU is deterministic too)
    for run, final in (("a", fa), ("b", fb)):
        assert main(["evaluate", "--data", str(data), "--model", str(final), "--baselines", "", "--num_beams", "4",
                     "--topk", "1,5,10", "--progress", "false", "--output_dir", str(tmp_path / f"eval_{run}")]) == 0
    timing = {"seconds", "users_per_second"}
    ma, mb = ({method: {protocol: {k: v for k, v in m.items() if k not in timing} for protocol, m in by_p.items()}
               for method, by_p in json.loads((tmp_path / f"eval_{r}" / "eval_report.json").read_text())["results"].items()}
              for r in ("a", "b"))
    assert ma["genrec-direct"]["all"]["num_users"] == 24 and ma == mb  # every metric equal (timings aside)
