"""The repeat prior (eval/repeat.py): its estimate from train, the re-ranking, and the `+repeat` rows of
`genrec evaluate` on a tiny data set whose targets repeat history items."""

from __future__ import annotations

import json
import math

import pytest

from eval.repeat import RepeatPrior, recent_distinct
from genrec.cli import main
from genrec.data.schema import Example
from tests.helpers_tiny import tiny_model_dir, write_tiny_data_dir, write_tiny_tokenizer_dir


def test_prior_is_counted_on_valid_unless_valid_is_evaluated():
    from eval.repeat import fit_prior
    from genrec.data.schema import RecData

    train = [Example("u", ("a",), "a")]
    valid = [Example("u", ("a", "b"), "c"), Example("v", ("x",), "x")]
    data = RecData("d", None, {}, train, valid, [])
    assert (fit_prior(data).split, fit_prior(data).weight) == ("valid", 0.5)
    assert (fit_prior(data, "valid").split, fit_prior(data, "valid").weight) == ("train", 1.0)
    assert fit_prior(RecData("d", None, {}, train, [], [])).split == "train"


def test_prior_is_the_share_of_repeat_targets_by_recency_rank():
    train = [
        Example("u1", ("a", "b", "a"), "a"),  # distinct recency order a, b: rank 0
        Example("u1", ("a", "b", "a", "c"), "b"),  # order c, a, b: rank 2
        Example("u2", ("x",), "y"),  # not a repeat
        Example("u3", (), "z"),  # empty history
    ]
    prior = RepeatPrior.fit(train)
    assert prior.weight == pytest.approx(2 / 4)
    assert prior.rank_probs == pytest.approx((0.5, 0.0, 0.5))
    assert recent_distinct(("a", "b", "a", "c")) == ["c", "a", "b"]
    assert RepeatPrior.fit([Example("u", ("x",), "y")]).weight == 0.0


def test_mix_reranks_history_items_by_the_mixture():
    prior = RepeatPrior(0.4, (0.75, 0.25))
    scored = [("m1", math.log(0.55)), ("m2", math.log(0.2)), ("h2", math.log(0.1))]
    out = prior.mix(scored, history=("h2", "h1"), k=4)
    # m1: 0.6 * 0.55 = 0.33; h1: 0.4 * 0.75 = 0.30 (not in the beam list);
    # h2: 0.6 * 0.1 + 0.4 * 0.25 = 0.16; m2: 0.6 * 0.2 = 0.12.
    assert [item for item, _ in out] == ["m1", "h1", "h2", "m2"]
    assert [math.exp(lp) for _, lp in out] == pytest.approx([0.33, 0.30, 0.16, 0.12])
    assert prior.mix(scored, ("h2", "h1"), k=2) == out[:2]
    assert RepeatPrior(0.0).mix(scored, ("h1",), k=2) == scored[:2]
    tied = RepeatPrior(0.5, (1.0,)).mix([("m", math.log(1.0))], history=("h",), k=2)
    assert [item for item, _ in tied] == ["m", "h"]  # ties keep the model's order


def test_apply_keeps_a_level_weighted_lists_order_among_model_items():
    """A level-weighted beam list is not in the order of its plain scores: the mixture must keep the list's order
    (and its probability mass), not re-sort the model's items by their plain log-probabilities."""
    from eval.beam import Beam
    from eval.repeat import apply_repeat_prior

    prior = RepeatPrior(0.5, (1.0,))
    # the search ranked m1 first although its plain probability (0.2) is below m2's (0.5)
    beams = [Beam("m1", math.log(0.2), (0,)), Beam("m2", math.log(0.5), (1,)), Beam("m3", math.log(0.1), (2,))]
    ex = Example("u", ("h",), "m1")
    out = apply_repeat_prior(prior, [beams], [ex], 4, lambda item, lp: Beam(item, lp, ()))[0]
    # model mode: 0.5, 0.2, 0.1 in list order m1, m2, m3 (x 0.5); repeat mode: h 1.0 (x 0.5)
    assert [b.item_id for b in out] == ["h", "m1", "m2", "m3"]
    assert [math.exp(b.score) for b in out] == pytest.approx([0.5, 0.25, 0.1, 0.05])
    # a list already in plain order (no level weights) is the plain mixture
    plain = sorted(beams, key=lambda b: -b.score)
    again = apply_repeat_prior(prior, [plain], [ex], 4, lambda item, lp: Beam(item, lp, ()))[0]
    assert [(b.item_id, b.score) for b in again] == prior.mix([(b.item_id, b.score) for b in plain], ex.history, 4)


def _with_repeats(folder):
    """Rewrite the tiny pre-split files so every target with a history repeats its last item."""
    for split in ("train", "valid", "test"):
        path = folder / f"tiny-jobs.{split}.inter"
        lines = path.read_text().splitlines()
        out = [lines[0]]
        for line in lines[1:]:
            user, history, target = line.split("\t")
            out.append("\t".join([user, history, history.split()[-1] if history.strip() else target]))
        path.write_text("\n".join(out) + "\n")
    return folder


def test_evaluate_reports_repeat_rows_from_the_same_beams(tmp_path):
    data = _with_repeats(write_tiny_data_dir(tmp_path / "data"))
    tok = write_tiny_tokenizer_dir(tmp_path / "tok")
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", str(data), "--model", str(tiny_model_dir()), "--sid_map", str(tok),
               "--layout", "direct", "--output_dir", str(out), "--topk", "1,5,10", "--num_beams", "4",
               "--baselines", "recent", "--progress", "false"])
    assert rc == 0
    report = json.loads((out / "eval_report.json").read_text())
    results, meta = report["results"], report["meta"]
    assert list(results) == ["genrec-direct", "genrec-direct+repeat", "recent"]
    assert meta["repeat_prior"]["weight"] > 0.5 and meta["repeat_prior"]["rank_probs"][0] == pytest.approx(1.0)
    assert meta["repeat_prior"]["split"] == "valid"
    preds = [json.loads(x) for x in (out / "predictions_genrec-direct+repeat_all.jsonl").read_text().splitlines()]
    base = [json.loads(x) for x in (out / "predictions_genrec-direct_all.jsonl").read_text().splitlines()]
    assert [p["user_id"] for p in preds] == [p["user_id"] for p in base]
    for p in preds:
        assert len(p["items"]) == 10 and len(set(p["items"])) == 10
        assert p["items"][0] == p["history"][-1]  # weight * 1.0 beats (1 - weight) * any model probability
    # every test target is its last history item, so the mixture ranks it first: recall@1 = 1
    assert results["genrec-direct+repeat"]["all"]["recall@1"] == 1.0
    assert results["genrec-direct"]["all"]["recall@1"] < 1.0
    # under `new` history items are excluded: the prior adds nothing
    assert results["genrec-direct+repeat"].get("new", {}).get("ndcg@10") == results["genrec-direct"].get("new", {}).get("ndcg@10")
    paired = meta["paired_ndcg10"]
    assert "genrec-direct+repeat - genrec-direct [all]" in paired
    assert "genrec-direct+repeat - recent [all]" in paired
    assert "`+repeat` rows" in (out / "report.md").read_text()
    rc = main(["evaluate", "--data", str(data), "--model", str(tiny_model_dir()), "--sid_map", str(tok),
               "--layout", "direct", "--output_dir", str(tmp_path / "off"), "--topk", "1,5,10", "--num_beams", "4",
               "--baselines", "", "--progress", "false", "--repeat_prior", "false", "--protocols", "all"])
    assert rc == 0
    assert list(json.loads((tmp_path / "off" / "eval_report.json").read_text())["results"]) == ["genrec-direct"]


def test_recommend_applies_the_prior_from_the_data(tmp_path, capsys):
    data = _with_repeats(write_tiny_data_dir(tmp_path / "data"))
    tok = write_tiny_tokenizer_dir(tmp_path / "tok")
    user, history, _ = (data / "tiny-jobs.test.inter").read_text().splitlines()[1].split("\t")
    base = ["recommend", "--data", str(data), "--model", str(tiny_model_dir()), "--sid_map", str(tok),
            "--topk", "3", "--num_beams", "4", "--layout", "direct", "--json", "true"]
    assert main(base + ["--user", user]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["repeat_prior"]["weight"] > 0.5
    assert payload["recommendations"][0]["item_id"] == history.split()[-1]
    assert main(base + ["--user", user, "--repeat_prior", "false"]) == 0
    assert json.loads(capsys.readouterr().out)["repeat_prior"] is None
    assert main(base[:-2] + ["--history", history.split()[-1]]) == 0
    assert "repeat prior w=" in capsys.readouterr().out
    # --user reads the data as the data flags say (as `genrec evaluate` does): a shorter --max_history, a shorter history
    assert len(payload["history"]) > 1
    assert main(base + ["--user", user, "--max_history", "1"]) == 0
    assert len(json.loads(capsys.readouterr().out)["history"]) == 1
