"""The SASRec fusion at decoding (eval/collab_prior.py): the fused order, the weight fitted on valid users, the
'+sasrec' rows of `genrec evaluate`, the saved SASRec and `genrec recommend --sasrec`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from eval.baselines.sasrec import SASRec, SASRecConfig
from eval.beam import Beam
from eval.collab_prior import CollabPrior, apply_collab_prior, fuse, hybrid_beams
from genrec.cli import main
from genrec.data.schema import Example
from helpers_tiny import tiny_catalog, tiny_examples, tiny_model_dir, write_tiny_data_dir, write_tiny_tokenizer_dir


def test_weight_zero_keeps_the_models_list_and_a_large_weight_follows_sasrec():
    # the model's list in its own order (apply_collab_prior gives a level-weighted list's scores in list order)
    scored = [("a", -1.0), ("b", -2.0), ("c", -3.0)]
    sas = {"a": math.log(0.05), "b": math.log(0.2), "c": math.log(0.3), "d": math.log(0.4)}
    assert fuse(scored, sas, 0.0, 3) == scored  # weight 0: the model's list, scores included
    # d (SASRec only) gets the list's lowest score minus 1; with a large weight SASRec's order decides
    assert [it for it, _ in fuse(scored, sas, 50.0, 4)] == ["d", "c", "b", "a"]
    # weight 1: a = -1 + log .05 = -4.00, b = -2 + log .2 = -3.61, c = -3 + log .3 = -4.20, d = -4 + log .4 = -4.92
    fused = fuse(scored, sas, 1.0, 4)
    assert [it for it, _ in fused] == ["b", "a", "c", "d"]
    # probabilities: renormalised over the candidates, scaled to the model list's mass
    mass = sum(math.exp(lp) for _, lp in scored)
    assert sum(math.exp(lp) for _, lp in fused) == pytest.approx(mass)
    # an item SASRec excludes (-inf, a history item under `new`) leaves the list when the weight is positive
    sas_excl = dict(sas, b=float("-inf"))
    assert "b" not in [it for it, _ in fuse(scored, sas_excl, 1.0, 4)]


def test_fit_picks_the_weight_that_ranks_held_out_targets_best():
    model = [[(f"i{j}", -0.1 * j) for j in range(12)] for _ in range(4)]  # the target sits 11th: outside the top 10
    examples = [Example(f"u{u}", ("h",), "i10") for u in range(4)]
    helpful = [{"i10": math.log(0.9), "i0": math.log(0.01)} for _ in range(4)]
    fitted = CollabPrior.fit(model, helpful, examples, k=10, split="valid", grid=(0.0, 0.5, 1.0))
    assert fitted.weight > 0 and fitted.valid_ndcg10[0.0] == 0.0 and fitted.valid_ndcg10[fitted.weight] > 0.5
    useless = [{f"i{j}": math.log(1 / 12) for j in range(12)} for _ in range(4)]  # uniform: every weight ties
    assert CollabPrior.fit(model, useless, examples, k=10, grid=(0.0, 0.5, 1.0)).weight == 0.0  # flat: the model


def _flip_users(improved: int, worsened: int, unchanged: int, improved_late: int = 0):
    """Users whose target t SASRec moves from 2nd to 1st (improved: at weight 0.25 and up; improved_late: only from
    weight 1, the model's margin being larger), from 1st to 2nd (worsened), or leaves 1st."""
    lists, sas = [], []
    for kind in ["+"] * improved + ["L"] * improved_late + ["-"] * worsened + ["="] * unchanged:
        lists.append([("o", -1.0), ("t", -1.5)] if kind == "+" else [("o", -1.0), ("t", -3.0)] if kind == "L" else
                     [("t", -1.0), ("o", -1.5)])
        sas.append({"t": math.log(0.9), "o": math.log(0.1)} if kind in "+L" else
                   {"t": math.log(0.1), "o": math.log(0.9)} if kind == "-" else {"t": math.log(0.5), "o": math.log(0.5)})
    return lists, sas, [Example(f"u{i}", ("h",), "t") for i in range(len(lists))]


def test_fit_takes_the_best_weight_only_when_sasrec_clearly_helps():
    # SASRec helps 8 users of 20 (6 from weight 0.25, 2 more from weight 1) and hurts 1: weight 1 is the best, and
    # clearly above weight 0, so it is taken (not 0.25, the smallest weight near it: the rule before session 26)
    lists, sas, exs = _flip_users(6, 1, 11, improved_late=2)
    fitted = CollabPrior.fit(lists, sas, exs, k=10, grid=(0.0, 0.25, 1.0))
    assert fitted.valid_ndcg10[1.0] > fitted.valid_ndcg10[0.25] > fitted.valid_ndcg10[0.0] and fitted.weight == 1.0
    # 2 helped and 1 hurt of 20: weight 1 is better on average, but its gain (+0.018) is within one standard error
    # (0.032) of weight 0's, so the model's ranking stays
    lists, sas, exs = _flip_users(2, 1, 17)
    fitted = CollabPrior.fit(lists, sas, exs, k=10, grid=(0.0, 1.0))
    assert fitted.valid_ndcg10[1.0] > fitted.valid_ndcg10[0.0] and fitted.weight == 0.0
    # 6 helped and 1 hurt (+0.092, se 0.045): taken
    lists, sas, exs = _flip_users(6, 1, 13)
    assert CollabPrior.fit(lists, sas, exs, k=10, grid=(0.0, 1.0)).weight == 1.0
    # SASRec only hurts: weight 0
    lists, sas, exs = _flip_users(1, 6, 13)
    assert CollabPrior.fit(lists, sas, exs, k=10, grid=(0.0, 1.0)).weight == 0.0


def test_hybrid_applies_the_repeat_prior_to_the_fused_list_and_not_under_new():
    from eval.repeat import RepeatPrior

    beams = [[Beam("a", -1.0, ()), Beam("b", -2.0, ()), Beam("c", -3.0, ())]]
    sas = [{"a": math.log(0.1), "b": math.log(0.1), "c": math.log(0.7), "h": math.log(0.1)}]
    ex = [Example("u", ("h",), "h")]
    prior = RepeatPrior(0.9, (1.0,))  # the most recent history item takes 0.9 of the mass
    make = lambda item, lp: Beam(item, lp, ())  # noqa: E731
    fused = hybrid_beams(1.0, beams, sas, ex, 4, 4, make)[0]
    # a: -1 + log .1 = -3.30, c: -3 + log .7 = -3.36, b: -2 + log .1 = -4.30, h: (-3 - 1) + log .1 = -6.30
    assert [b.item_id for b in fused] == ["a", "c", "b", "h"]
    with_prior = hybrid_beams(1.0, beams, sas, ex, 4, 2, make, prior)[0]
    assert [b.item_id for b in with_prior] == ["h", fused[0].item_id]  # the prior brings h first, then the fused top
    # under `new` the prior adds nothing (history items are excluded there)
    assert [b.item_id for b in hybrid_beams(1.0, beams, sas, ex, 4, 2, make, prior, exclude_history=True)[0]] == \
        [b.item_id for b in fused[:2]]
    # weight 0 with the prior is the '+repeat' row exactly
    from eval.repeat import apply_repeat_prior

    assert hybrid_beams(0.0, beams, sas, ex, 3, 3, make, prior)[0] == apply_repeat_prior(prior, beams, ex, 3, make)[0]


def test_apply_keeps_the_models_beams_and_builds_sasrecs_own():
    beams = [Beam("a", -2.0, (0, 0), blocks=("why a",)), Beam("b", -1.0, (0, 1)),
             Beam("f", float("-inf"), (1, 1), filled=True)]
    sas = [{"a": math.log(0.5), "b": math.log(0.1), "z": math.log(0.4)}]
    out = apply_collab_prior(1.0, [beams], sas, 3, lambda item, lp: Beam(item, lp, ()))[0]
    # the level-weighted list gives a -1 and b -2 (its scores in list order); z gets -2 - 1:
    # a = -1 + log .5 = -1.69, z = -3 + log .4 = -3.92, b = -2 + log .1 = -4.30; f (filled, -inf) is outside the list
    assert [b.item_id for b in out] == ["a", "z", "b"]
    assert out[0].blocks == ("why a",) and out[1].codes == ()


def test_sasrec_saved_and_loaded_scores_the_same(tmp_path):
    train, valid, test = tiny_examples()
    catalog = tiny_catalog()
    sas = SASRec(SASRecConfig(max_epochs=2, seed=0)).fit(train, catalog, valid)
    lists = [[test[0].target]] * len(test)
    before = sas.candidate_log_probs(test, lists, top_n=5)
    loaded = SASRec.load(sas.save(tmp_path / "sasrec"))
    after = loaded.candidate_log_probs(test, lists, top_n=5)
    assert before == after and all(len(d) >= 5 for d in before)
    # the log-probabilities are SASRec's full-catalog softmax
    with torch.no_grad():
        ref = torch.log_softmax(sas.model.scores(sas._encode(test[:1], "t")), dim=1)[0]
    assert before[0][test[0].target] == pytest.approx(float(ref[sas.index[test[0].target]]))
    excl = sas.candidate_log_probs(test[:1], [[]], top_n=len(catalog.item_ids), exclude_history=True)[0]
    assert not set(excl) & set(test[0].history) and len(excl) == len(catalog.item_ids) - len(set(test[0].history))
    (tmp_path / "bad").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved SASRec"):
        SASRec.load(tmp_path / "bad")
    (tmp_path / "sasrec" / "sasrec.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="sasrec.json: not a readable SASRec"):
        SASRec.load(tmp_path / "sasrec")


def _evaluate(tmp_path, out, *extra):
    data = write_tiny_data_dir(tmp_path / "data")
    tok = write_tiny_tokenizer_dir(tmp_path / "tok")
    argv = ["evaluate", "--data", str(data), "--model", str(tiny_model_dir()), "--sid_map", str(tok),
            "--layout", "direct", "--output_dir", str(out), "--topk", "1,5,10", "--num_beams", "4",
            "--sasrec_max_epochs", "3", "--progress", "false", *extra]
    return main(argv), data, tok


def test_evaluate_fits_the_sasrec_weight_on_valid_users_per_protocol(tmp_path):
    out = tmp_path / "out"
    rc, data, _ = _evaluate(tmp_path, out, "--baselines", "sasrec", "--sasrec_prior_users", "10")
    assert rc == 0
    report = json.loads((out / "eval_report.json").read_text())
    results, meta = report["results"], report["meta"]
    assert list(results)[:2] == ["genrec-direct", "genrec-direct+sasrec"] and "sasrec" in results
    by_protocol = meta["methods"]["genrec-direct+sasrec"]["sasrec_prior"]
    fitted, fitted_new = by_protocol["all"], by_protocol["new"]
    assert fitted["split"] == "valid" and fitted["examples"] == 10 and len(fitted["valid_ndcg@10"]) == 8
    # under `new` the weight is fitted on the valid users whose target is a new item
    new_users = sum(1 for line in (data / "tiny-jobs.valid.inter").read_text().splitlines()[1:]
                    if line.split("\t")[2] not in line.split("\t")[1].split())
    assert 0 < fitted_new["examples"] <= min(10, new_users)
    for protocol, metrics in results["genrec-direct+sasrec"].items():
        assert metrics["invalid"] == 0 and metrics["duplicates"] == 0, protocol
    weights = json.loads((out / "sasrec" / "collab_prior.json").read_text())
    (entry,) = weights.values()
    assert (entry["weight"], entry["weight_new_items"], entry["list_length"]) == (fitted["weight"],
                                                                                  fitted_new["weight"], 10)
    assert "`+sasrec` rows: a hybrid" in (out / "report.md").read_text()


def test_the_weight_of_an_rl_model_is_not_fitted_on_its_rl_prompts(tmp_path):
    import shutil

    from genrec.data.loader import load_data

    data = write_tiny_data_dir(tmp_path / "data")
    model = tmp_path / "rl_model"
    shutil.copytree(tiny_model_dir(), model)
    valid = load_data(str(data), verbose=False).valid
    trained = [ex.user_id for ex in valid][3:]  # RL trained on every valid user but 3
    info = json.loads((model / "genrec_model.json").read_text())
    info.update(rl_split="valid", rl_prompt_users=trained)  # as `genrec rl --rl_split valid` records them
    (model / "genrec_model.json").write_text(json.dumps(info))
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(data), "--model", str(model), "--sid_map",
                 str(write_tiny_tokenizer_dir(tmp_path / "tok")), "--layout", "direct", "--output_dir", str(out),
                 "--topk", "1,5,10", "--num_beams", "4", "--sasrec_max_epochs", "2", "--progress", "false",
                 "--baselines", "sasrec", "--sasrec_prior_users", "10", "--protocols", "all"]) == 0
    meta = json.loads((out / "eval_report.json").read_text())["meta"]
    # the fit samples from the valid users RL did not train on: 3 of them, where 10 were asked for
    assert meta["methods"]["genrec-direct+sasrec"]["sasrec_prior"]["all"]["examples"] == 3


def test_the_fused_row_is_the_fusion_and_recommend_ranks_the_same(tmp_path, capsys):
    out = tmp_path / "out"
    rc, data, tok = _evaluate(tmp_path, out, "--baselines", "sasrec", "--sasrec_prior_weight", "2")
    assert rc == 0
    meta = json.loads((out / "eval_report.json").read_text())["meta"]
    assert meta["methods"]["genrec-direct+sasrec"]["sasrec_prior"]["all"]["weight"] == 2.0
    assert "genrec-direct+sasrec - genrec-direct [all]" in meta["paired_ndcg10"]
    assert "genrec-direct+sasrec - sasrec [all]" in meta["paired_ndcg10"]
    # the row at weight 2 is the fusion of the model's own predictions (list of 10) with the saved SASRec
    preds = [json.loads(x) for x in (out / "predictions_genrec-direct_all.jsonl").read_text().splitlines()]
    fused_rows = [json.loads(x) for x in (out / "predictions_genrec-direct+sasrec_all.jsonl").read_text().splitlines()]
    sas = SASRec.load(out / "sasrec")
    ex = [Example(p["user_id"], tuple(p["history"]), p["target"]) for p in preds]
    logps = sas.candidate_log_probs(ex, [p["items"] for p in preds], 20)
    changed = 0
    for p, f, lp in zip(preds, fused_rows, logps):
        plain = sorted((s for s in p["scores"] if s is not None), reverse=True)  # in list order, as list_log_probs
        scored = list(zip(p["items"], plain))
        assert f["items"] == [it for it, _ in fuse(scored, lp, 2.0, 10)]
        changed += f["items"] != p["items"]
    assert changed > 0  # SASRec moved some lists: the check above is not an identity

    # `genrec recommend --sasrec` reads the weight and list length this model was evaluated with
    user = preds[0]["user_id"]
    capsys.readouterr()
    assert main(["recommend", "--model", str(tiny_model_dir()), "--sid_map", str(tok), "--data", str(data),
                 "--user", user, "--layout", "direct", "--num_beams", "4", "--sasrec", str(out / "sasrec"),
                 "--repeat_prior", "false", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["sasrec"]["weight"], shown["sasrec"]["list_length"]) == (2.0, 10)
    assert [r["item_id"] for r in shown["recommendations"]] == fused_rows[0]["items"]
    # a model the evaluation did not fit a weight for is a clear error, unless the weight is given
    other = tmp_path / "other_model"
    import shutil

    shutil.copytree(tiny_model_dir(), other)
    argv = ["recommend", "--model", str(other), "--sid_map", str(tok), "--data", str(data), "--user", user,
            "--layout", "direct", "--sasrec", str(out / "sasrec")]
    assert main(argv) == 1
    assert "no weight fitted for --model" in capsys.readouterr().err
    assert main([*argv, "--sasrec_weight", "1"]) == 0


def test_sasrec_rows_off_and_impossible(tmp_path, capsys):
    rc, _, _ = _evaluate(tmp_path, tmp_path / "off", "--baselines", "sasrec", "--sasrec_prior", "false",
                         "--protocols", "all")
    assert rc == 0
    results = json.loads((tmp_path / "off" / "eval_report.json").read_text())["results"]
    assert not any(name.endswith("+sasrec") for name in results)
    assert not (tmp_path / "off" / "sasrec").exists()
    # the weight is fitted on valid: evaluating on valid cannot have the rows
    rc, _, _ = _evaluate(tmp_path, tmp_path / "v", "--baselines", "", "--sasrec_prior", "true", "--eval_split", "valid")
    assert rc == 1
    assert "--sasrec_prior true: it fits its weight on the valid split" in capsys.readouterr().err
    # a fixed weight needs no fit: the rows are possible on valid too
    rc, _, _ = _evaluate(tmp_path, tmp_path / "v2", "--baselines", "", "--sasrec_prior", "true", "--eval_split", "valid",
                         "--sasrec_prior_weight", "1", "--protocols", "all")
    assert rc == 0
    assert "genrec-direct+sasrec" in json.loads((tmp_path / "v2" / "eval_report.json").read_text())["results"]
