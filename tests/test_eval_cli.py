"""`genrec evaluate` and `genrec recommend` end to end on the tiny model and tiny data set, plus bad input."""

from __future__ import annotations

import json

import pytest

from genrec.cli import main
from sid_tokenizer.sidmap import SIDMap
from tests.helpers_tiny import tiny_model_dir, tiny_sid_map, write_tiny_data_dir, write_tiny_tokenizer_dir

FAST = ["--num_beams", "4", "--max_block_tokens", "3", "--progress", "false"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {
        "data": str(write_tiny_data_dir(root / "data")),
        "tok": str(write_tiny_tokenizer_dir(root / "tok")),
        "model": str(tiny_model_dir()),
        "root": root,
    }


def _evaluate(setup, out, *extra):
    return main(["evaluate", "--data", setup["data"], "--model", setup["model"], "--sid_map", setup["tok"],
                 "--output_dir", str(out), "--topk", "1,5,10", *FAST, *extra])


def test_evaluate_writes_complete_report(setup, tmp_path, capsys):
    out = tmp_path / "out"
    assert _evaluate(setup, out, "--baselines", "mostpop,recent", "--max_users", "12") == 0
    report = json.loads((out / "eval_report.json").read_text())
    results = report["results"]
    assert set(results) == {"genrec-interleaved", "mostpop", "recent"}
    for method, per in results.items():
        assert set(per) == {"all", "new"}
        for protocol, m in per.items():
            for key in ("recall@10", "ndcg@10", "mrr", "invalid", "coverage", "num_users", "seconds", "users_per_second"):
                assert key in m, (method, protocol, key)
            assert m["invalid"] == 0 and m["duplicates"] == 0 and m["short_lists"] == 0
            assert 0.0 <= m["ndcg@10"] <= m["recall@10"] <= 1.0
    gen = results["genrec-interleaved"]["all"]
    assert gen["num_users"] == 12 and gen["filled"] == 0
    assert "sid_level0_acc" in gen and "sid_level1_acc" in gen
    assert report["meta"]["methods"]["genrec-interleaved"]["layout"] == "interleaved"
    md = (out / "report.md").read_text()
    assert "| genrec-interleaved | all | 12 |" in md and "| recent | new |" in md
    for png in ("recall_at_k.png", "ndcg_at_k.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    preds = [json.loads(line) for line in (out / "predictions_genrec-interleaved_all.jsonl").read_text().splitlines()]
    assert len(preds) == 12
    for p in preds:
        assert len(p["items"]) == 10 and len(set(p["items"])) == 10
        assert p["scores"] == sorted(p["scores"], reverse=True)
        assert len(p["reasoning"]) == 2
    assert "| genrec-interleaved |" in capsys.readouterr().out
    assert not list(out.glob(".*tmp*")), "no temp files left behind"
    # Paired intervals on the same users: the per-user NDCG@10 differences recomputed from the saved predictions.
    paired = report["meta"]["paired_ndcg10"]
    assert set(paired) == {f"genrec-interleaved - {b} [{p}]" for b in ("mostpop", "recent") for p in ("all", "new")}
    from eval.metrics import per_user_ndcg, target_ranks
    gen_user = per_user_ndcg(target_ranks([p["items"] for p in preds], [p["target"] for p in preds]), 10)
    assert gen_user.mean() == pytest.approx(gen["ndcg@10"])
    r = paired["genrec-interleaved - mostpop [all]"]
    assert r["users"] == 12 and r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
    assert r["mean_diff"] == pytest.approx(gen["ndcg@10"] - results["mostpop"]["all"]["ndcg@10"])
    assert "## Paired NDCG@10 differences" in md and "genrec-interleaved - recent [new]" in md


def test_evaluate_direct_layout_and_subset(setup, tmp_path):
    out = tmp_path / "out"
    assert _evaluate(setup, out, "--layout", "direct", "--baselines", "", "--max_users", "5", "--protocols", "all") == 0
    results = json.loads((out / "eval_report.json").read_text())["results"]
    assert list(results) == ["genrec-direct"]
    assert results["genrec-direct"]["all"]["num_users"] == 5
    meta = json.loads((out / "eval_report.json").read_text())["meta"]
    assert meta["num_examples"] == 5 and meta["split_examples"] > 5
    assert f"- num_examples: 5 (a seeded sample of the split's {meta['split_examples']}: --max_users)" in (
        out / "report.md").read_text()


def test_protocols_from_one_search_equal_each_protocol_alone(setup, tmp_path):
    """`all,new` shares one beam search per model; every prediction file equals the protocol's own run."""
    both, alone = tmp_path / "both", {p: tmp_path / p for p in ("all", "new")}
    assert _evaluate(setup, both, "--baselines", "", "--max_users", "12") == 0
    for p, out in alone.items():
        assert _evaluate(setup, out, "--baselines", "", "--max_users", "12", "--protocols", p) == 0
    report = json.loads((both / "eval_report.json").read_text())["results"]["genrec-interleaved"]
    for p, out in alone.items():
        name = f"predictions_genrec-interleaved_{p}.jsonl"
        shared = [json.loads(x) for x in (both / name).read_text().splitlines()]
        single = [json.loads(x) for x in (out / name).read_text().splitlines()]
        assert [x["items"] for x in shared] == [x["items"] for x in single]
        assert [x["reasoning"] for x in shared] == [x["reasoning"] for x in single]
        one = json.loads((out / "eval_report.json").read_text())["results"]["genrec-interleaved"][p]
        assert report[p]["ndcg@10"] == one["ndcg@10"] and report[p]["num_users"] == one["num_users"]
    preds = {p: [json.loads(x) for x in (both / f"predictions_genrec-interleaved_{p}.jsonl").read_text().splitlines()]
             for p in alone}
    assert any(set(x["items"]) & set(x["history"]) for x in preds["all"]), "exclusion should change some lists"
    assert not any(set(x["items"]) & set(x["history"]) for x in preds["new"])


def test_beam_cache_flag_gives_the_same_predictions(setup, tmp_path):
    """`--beam_cache static` (one prompt copy per beam row) and the default shared-prefix cache write the same lists and
    reasoning through the whole CLI."""
    files = {}
    for cache in ("auto", "static"):
        out = tmp_path / cache
        assert _evaluate(setup, out, "--baselines", "", "--max_users", "8", "--beam_cache", cache) == 0
        rows = [json.loads(line) for line in (out / "predictions_genrec-interleaved_all.jsonl").read_text().splitlines()]
        files[cache] = [(r["items"], r["reasoning"]) for r in rows]
    assert files["auto"] == files["static"] and len(files["auto"]) == 8
    assert main(["evaluate", "--data", setup["data"], "--beam_cache", "paged"]) == 1


def test_worker_processes_give_the_same_predictions(setup, tmp_path, monkeypatch):
    """`--processes 2` shares the beam-search batches out to two forked workers: the same lists, scores and reasoning
    as one process, in the users' order, through the whole CLI."""
    import os

    import genrec.parallel

    started = tmp_path / "workers"
    start_worker = genrec.parallel._start_worker

    def start_and_record(parent):  # inherited by the forked workers: each writes its pid
        start_worker(parent)
        with open(started, "a") as f:
            f.write(f"{os.getpid()}\n")

    monkeypatch.setattr(genrec.parallel, "_start_worker", start_and_record)
    files, meta = {}, {}
    for n in (1, 2):
        out = tmp_path / str(n)
        assert _evaluate(setup, out, "--baselines", "", "--max_users", "10", "--batch_size", "2", "--processes",
                         str(n)) == 0
        rows = [json.loads(line) for line in (out / "predictions_genrec-interleaved_all.jsonl").read_text().splitlines()]
        files[n] = [(r["user_id"], r["items"], r["scores"], r["reasoning"]) for r in rows]
        meta[n] = json.loads((out / "eval_report.json").read_text())["meta"]["search_processes"]
        workers = set(started.read_text().split()) if started.exists() else set()
        assert len(workers) == (0 if n == 1 else 2) and str(os.getpid()) not in workers
    assert files[1] == files[2] and len(files[1]) == 10
    assert meta == {1: 1, 2: 2}


def test_evaluate_bad_input(setup, tmp_path, capsys):
    # SID map that lacks some test items
    sm = tiny_sid_map()
    partial = SIDMap({k: v for k, v in sm.item_to_codes.items() if not k.startswith("j0")}, sm.codebook_sizes)
    partial.save(tmp_path / "partial.json")
    rc = main(["evaluate", "--data", setup["data"], "--model", setup["model"], "--sid_map", str(tmp_path / "partial.json"),
               "--output_dir", str(tmp_path / "o1"), "--baselines", "", *FAST])
    assert rc == 1
    err = capsys.readouterr().err
    assert "has no semantic ID" in err and "user 'u000'" in err

    # K larger than the 48-item catalog
    assert _evaluate(setup, tmp_path / "o2", "--topk", "5,100") == 1
    assert "larger than the catalog (48 items)" in capsys.readouterr().err

    # empty test split (header only)
    data2 = write_tiny_data_dir(tmp_path / "data2")
    (data2 / "tiny-jobs.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n")
    rc = main(["evaluate", "--data", str(data2), "--output_dir", str(tmp_path / "o3"), "--baselines", "mostpop"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "tiny-jobs.test.inter" in err or "test split is empty" in err

    # nothing to evaluate / bad options
    assert main(["evaluate", "--data", setup["data"], "--baselines", "", "--output_dir", str(tmp_path / "o4")]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["evaluate", "--data", setup["data"], "--protocols", "cold"]) == 1
    assert "--protocols: expected some of all, new, got 'cold'" in capsys.readouterr().err


def test_recommend_ids_and_free_text(setup, capsys):
    base = ["recommend", "--data", setup["data"], "--model", setup["model"], "--sid_map", setup["tok"],
            "--topk", "3", "--num_beams", "4", "--max_block_tokens", "3"]
    assert main(base + ["--history", "j001, j002"]) == 0
    out = capsys.readouterr().out
    assert "j001: Data Engineer" in out and "Top 3 jobs:" in out
    assert out.count("step 1: <a_") == 3 and out.count("step 2: <b_") == 3
    # labels of the SID levels are shown (families of the tiny map)
    assert any(f in out for f in ("Data and analytics", "Nursing and care", "Sales and retail", "Logistics and driving"))

    assert main(base + ["--history", "icu nurse; data scientist", "--json", "true", "--exclude_history", "true"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [h["item_id"] for h in payload["history"]] == ["j104", "j002"]
    recs = payload["recommendations"]
    assert len(recs) == 3 and len({r["item_id"] for r in recs}) == 3
    assert not {"j104", "j002"} & {r["item_id"] for r in recs}
    assert all(len(r["steps"]) == 2 for r in recs)


def test_recommend_bad_input(setup, capsys):
    base = ["recommend", "--data", setup["data"], "--model", setup["model"], "--sid_map", setup["tok"]]
    assert main(base + ["--history", "zzzz qqqq"]) == 1
    assert "neither a catalog item id nor close" in capsys.readouterr().err
    assert main(base) == 1
    assert "exactly one of --history" in capsys.readouterr().err
    assert main(base + ["--user", "nobody"]) == 1
    assert "user 'nobody'" in capsys.readouterr().err
    assert main(base + ["--history", "j001", "--topk", "49"]) == 1
    assert "larger than the catalog" in capsys.readouterr().err


def test_generative_recommender_stays_inside_the_catalog():
    """A SID map with items outside the catalog: the beam only walks catalog items, nothing is filled."""
    from eval.generative import GenerativeRecommender
    from genrec.data.schema import Catalog
    from genrec.modeling import load_model_and_tokenizer
    from tests.helpers_tiny import tiny_catalog, tiny_examples

    full = tiny_catalog()
    keep = [i for i in full.item_ids if not i.startswith("j3")]  # drop a whole family (12 items)
    catalog = Catalog(keep, {k: [full.record(i)[k] for i in keep] for k in full.fields})
    model, tok = load_model_and_tokenizer(tiny_model_dir())
    rec = GenerativeRecommender(model, tok, tiny_sid_map(), catalog, layout="direct", num_beams=36)
    _, _, test = tiny_examples()
    test = [ex for ex in test if not ex.target.startswith("j3") and not any(h.startswith("j3") for h in ex.history)][:3]
    lists = rec.recommend(test, 36)
    for items in lists:
        assert len(items) == 36 and set(items) == set(keep)
    assert rec.stats["filled"] == 0


def test_evaluate_several_models_get_distinct_names(setup, tmp_path):
    import shutil

    from eval.run import model_labels

    assert model_labels(["runs/sft1/final", "runs/sft2/final", "runs/rl/final"]) == ["sft1", "sft2", "rl"]
    assert model_labels(["m", "m"]) == ["m#1", "m#2"]
    a = shutil.copytree(setup["model"], tmp_path / "a" / "final")
    b = shutil.copytree(setup["model"], tmp_path / "b" / "final")
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", setup["data"], "--model", f"{a},{b}", "--layout", "direct,interleaved",
               "--sid_map", setup["tok"], "--output_dir", str(out), "--topk", "1,5", "--max_users", "3",
               "--protocols", "all", "--baselines", "", "--num_beams", "2", "--max_block_tokens", "2",
               "--progress", "false"])
    assert rc == 0
    results = json.loads((out / "eval_report.json").read_text())["results"]
    assert set(results) == {"genrec-direct:a", "genrec-interleaved:b"}
    assert (out / "predictions_genrec-direct_a_all.jsonl").is_file()


def test_protocol_without_examples_is_skipped_and_recorded(tmp_path):
    from genrec.data.recbole import read_atomic, write_atomic

    data = write_tiny_data_dir(tmp_path / "data")
    test_file = data / "tiny-jobs.test.inter"
    t = read_atomic(test_file)
    rows = [[u, h, h.split()[-1]] for u, h in zip(t.col("user_id"), t.col("item_id_list"))]  # target = last viewed
    write_atomic(test_file, ["user_id:token", "item_id_list:token_seq", "item_id:token"], rows)
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(data), "--output_dir", str(out), "--baselines", "recent,mostpop"]) == 0
    report = json.loads((out / "eval_report.json").read_text())
    assert set(report["results"]["recent"]) == {"all"}
    assert "new" in report["meta"]["skipped_protocols"]
    assert report["results"]["recent"]["all"]["recall@1"] == 1.0  # the target is the most recent item


def test_auto_batch_size_is_about_160_beam_rows():
    from eval.config import EvalConfig

    assert EvalConfig(num_beams=10).batch_size == 16 and EvalConfig(num_beams=20).batch_size == 8
    assert EvalConfig(num_beams=500).batch_size == 1 and EvalConfig(num_beams=20, batch_size=3).batch_size == 3
    with pytest.raises(ValueError, match="--batch_size must be >= 1, or 0 for auto"):
        EvalConfig(batch_size=-1)
