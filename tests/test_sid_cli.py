"""`genrec fit-tokenizer` end to end on a tiny catalog written to disk, through genrec.cli.main."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from genrec.cli import main
from sid_tokenizer.sidmap import SIDMap, parse_sid_string
from sid_tokenizer.tokenizer import SIDTokenizer
from tests.sid_helpers import TEMPLATE, tiny_catalog, write_item_file

FAST = ["--levels", "3", "--codebook_size", "16", "--tfidf_dim", "32", "--cache_dir", "", "--threads", "1",
        "--kmeans_iters", "10"]
REPORT_KEYS = {
    "num_items", "levels", "codebook_sizes", "collision_rate_before_dedup", "max_items_per_sid_before_dedup",
    "collision_rate", "utilization", "perplexity", "recon_mse", "fit_seconds", "embed_seconds",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_data")
    write_item_file(tiny_catalog(300), folder)
    return folder


def test_fit_tokenizer_cli_writes_every_output(tmp_path, data_dir):
    out = tmp_path / "tok"
    cfg = tmp_path / "tok.yaml"
    cfg.write_text(f"template: '{TEMPLATE}'\nencoder: tfidf\nmethod: rqkmeans\nseed: 1\n")
    assert main(["fit-tokenizer", "--data", str(data_dir), "--out", str(out), "--config", str(cfg), *FAST]) == 0
    for name in ("tokenizer.safetensors", "tokenizer_config.json", "sid_map.json", "sid_labels.json",
                 "tokenizer_report.json"):
        assert (out / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "tb"))

    catalog = tiny_catalog(300)
    sid_map = SIDMap.load(out)
    assert set(sid_map.item_to_codes) == set(catalog.item_ids)
    assert len(set(sid_map.item_to_codes.values())) == len(catalog)
    assert sid_map.num_levels == 4 and sid_map.codebook_sizes[:3] == [16, 16, 16]
    raw = json.loads((out / "sid_map.json").read_text())
    assert raw["items"]["job0000"].startswith("<a_") and raw["items"]["job0000"].count("<") == 4

    labels = json.loads((out / "sid_labels.json").read_text())
    assert labels == sid_map.labels and labels
    assert all(1 <= len(parse_sid_string(k)) <= 3 for k in labels)

    report = json.loads((out / "tokenizer_report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["num_items"] == 300 and report["levels"] == 4 and report["collision_rate"] == 0.0
    assert report["codebook_sizes"] == sid_map.codebook_sizes
    assert report["collision_rate_before_dedup"] > 0  # the tiny catalog has exact duplicate texts
    assert all(0 < u <= 1 for u in report["utilization"]) and len(report["perplexity"]) == 4
    assert report["template"] == TEMPLATE and report["method"] == "rqkmeans" and report["seed"] == 1

    # The saved tokenizer encodes the catalog's own texts to their SID prefixes.
    tok = SIDTokenizer.load(out)
    expected = np.array([sid_map.codes(i)[:3] for i in catalog.item_ids])
    assert np.array_equal(tok.encode(catalog.texts(TEMPLATE)), expected)
    codes = tok.encode(catalog.texts(TEMPLATE), use_known=False)
    assert (codes[:, :2] == expected[:, :2]).all(axis=1).mean() >= 0.99


def test_fit_tokenizer_cli_rqvae_and_existing_output(tmp_path, data_dir, capsys):
    out = tmp_path / "tok"
    args = ["fit-tokenizer", "--data", str(data_dir), "--out", str(out), "--method", "rqvae", "--steps", "30",
            "--hidden_dims", "64", "--latent_dim", "16", "--batch_size", "512", *FAST]
    assert main(args) == 0
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["method"] == "rqvae" and report["collision_rate"] == 0.0
    capsys.readouterr()
    assert main(args) == 0  # the same command again: the folder is complete, nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert main([*args, "--steps", "31"]) == 1  # other settings: the SID map later stages use is kept
    assert "already exists: pass --overwrite true" in capsys.readouterr().err
    assert main(args + ["--overwrite", "true"]) == 0


def test_fit_tokenizer_rerun_on_changed_texts_is_not_a_no_op(tmp_path, capsys):
    """Same settings, same folder, same item ids, but other item texts: the SID map is not silently kept."""
    data = tmp_path / "data"
    data.mkdir()
    write_item_file(tiny_catalog(300), data)
    out = tmp_path / "tok"
    args = ["fit-tokenizer", "--data", str(data), "--out", str(out), *FAST]
    assert main(args) == 0
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    (item_file,) = data.glob("*.item")
    lines = item_file.read_text(encoding="utf-8").splitlines()
    header, first = lines[0].split("\t"), lines[1].split("\t")
    col = next(i for i, h in enumerate(header) if h.startswith("title"))
    first[col] = "Underwater Basket Weaver"
    item_file.write_text("\n".join([lines[0], "\t".join(first), *lines[2:]]) + "\n", encoding="utf-8")
    assert main(args) == 1
    assert "fitted on another catalog" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--levels", "0"], "levels=0 is invalid"),
        (["--encoder", "no-such-encoder"], "unknown encoder 'no-such-encoder'"),
        (["--method", "rqkmeans", "--codebook_size", "1"], "codebook_size=1 is invalid"),
    ],
)
def test_fit_tokenizer_cli_bad_config(tmp_path, data_dir, capsys, extra, message):
    args = ["fit-tokenizer", "--data", str(data_dir), "--out", str(tmp_path / "o"), *FAST, *extra]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "sid_map.json").exists()


def test_fit_tokenizer_cli_npy_with_wrong_rows(tmp_path, data_dir, capsys):
    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((299, 8), dtype=np.float32))
    assert main(["fit-tokenizer", "--data", str(data_dir), "--out", str(tmp_path / "o"), *FAST,
                 "--encoder", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: has 299 rows but the catalog has 300 items" in err


def test_fit_tokenizer_cli_missing_data(tmp_path, capsys):
    assert main(["fit-tokenizer", "--out", str(tmp_path / "o")]) == 1
    assert "--data is required" in capsys.readouterr().err
    assert main(["fit-tokenizer", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tokenizer.yaml", "tokenizer_rqvae.yaml", "tokenizer_minilm.yaml"])
def test_shipped_configs_parse_and_validate(name):
    from pathlib import Path

    from trl import TrlParser

    from genrec.commands import fit_tokenizer

    path = Path(__file__).resolve().parents[1] / "configs" / name
    parser = TrlParser(fit_tokenizer.CONFIG_CLASSES)
    args, cfg, _ = parser.parse_args_and_config(["--config", str(path), "--data", "x"])
    cfg.validate()
    assert args.data == "x" and cfg.levels == 3 and cfg.codebook_size == 256
