"""Stage 1 taught by SASRec (genrec/collab_distill.py): the soft targets are SASRec's next-item distribution folded
onto each SID level under the line's true coarser codes, read from the same lines; and a real stage-1 run with it."""

from __future__ import annotations

import pytest
import torch

from eval.baselines.sasrec import SASRec, SASRecConfig
from genrec.cli import main
from genrec.collab_distill import SASRecDistiller, user_fold
from genrec.modeling import load_model_and_tokenizer, load_tokenizer
from genrec.prompts import PromptConfig
from genrec.sft import SFTStageConfig, sasrec_teachers, sequence_rows
from tests.helpers_tiny import tiny_model_dir, tiny_recdata, tiny_sid_map, write_tiny_data_dir

torch.set_num_threads(1)
REC, SIDS = tiny_recdata(), tiny_sid_map()
QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]


def _batch(rows: dict, n: int):
    ids = rows["input_ids"][:n]
    width = max(map(len, ids))
    inputs = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    labels = torch.full((n, width), -100)
    for b, (r, m) in enumerate(zip(ids, rows["completion_mask"][:n])):
        inputs[b, :len(r)] = torch.tensor(r)
        mask[b, :len(r)] = 1
        labels[b, :len(r)] = torch.where(torch.tensor(m) == 1, torch.tensor(r), torch.tensor(-100))
    return inputs, mask, labels


def test_soft_targets_are_sasrecs_distribution_folded_onto_each_level():
    tok = load_tokenizer(tiny_model_dir())
    sasrec = SASRec(SASRecConfig(max_epochs=3, seed=0)).fit(REC.train, REC.catalog, REC.valid)
    teacher = SASRecDistiller(sasrec, tok, SIDS)
    rows = sequence_rows(REC.catalog, SIDS, REC.train, tok, PromptConfig(reasoning=False))
    inputs, mask, labels = _batch(rows, 3)
    got_rows, cols, probs = teacher.targets(inputs, mask, labels)
    # every SID target of a line with a line before it, and no other position
    expected = []
    for b in range(3):
        lines = teacher.lines(inputs[b, :int(mask[b].sum())].tolist())
        for start, _ in lines[1:]:
            expected += [(b, start + lvl - 1) for lvl in range(SIDS.num_levels) if labels[b, start + lvl] != -100]
    assert sorted(zip(got_rows.tolist(), cols.tolist())) == sorted(expected) and expected
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
    # recompute each target from SASRec's scores on the items of the lines above it, through the SID map
    id_of = {tok.convert_tokens_to_ids(t): t for t in SIDS.all_tokens()}
    for n, (b, col) in enumerate(zip(got_rows.tolist(), cols.tolist())):
        lines = teacher.lines(inputs[b, :int(mask[b].sum())].tolist())
        k = next(i for i, (start, _) in enumerate(lines) if start <= col + 1 < start + SIDS.num_levels)
        level = col + 1 - lines[k][0]
        items = [sasrec.item_ids[c - 1] for _, c in lines]
        seq = [0] * (teacher.max_len - k) + [sasrec.index[i] for i in items[:k]]
        with torch.no_grad():
            p = torch.softmax(sasrec.model.scores(torch.tensor([seq])), -1)[0]
        prefix = SIDS.codes(items[k])[:level]
        want: dict[str, float] = {}
        for item, c in sasrec.index.items():
            codes = SIDS.codes(item)
            if codes[:level] == prefix:
                tok_name = SIDS.tokens(item)[level]
                want[tok_name] = want.get(tok_name, 0.0) + float(p[c])
        total = sum(want.values())
        nonzero = {id_of[int(i)]: float(probs[n, i]) for i in torch.nonzero(probs[n]).flatten()}
        assert set(nonzero) <= set(want)
        for name, mass in want.items():
            assert abs(nonzero.get(name, 0.0) - mass / total) < 1e-5


def test_stage1_with_the_sasrec_teacher_through_the_cli(tmp_path):
    data = write_tiny_data_dir(tmp_path / "data")
    SIDS.save(tmp_path / "sid_map.json")
    finals = []
    for weight, folds in (("0.5", "1"), ("0", "1"), ("0.5", "2")):  # same seed, same rows
        out = tmp_path / f"sft1_{weight}_{folds}"
        assert main(["sft", "--stage", "1", "--model", str(tiny_model_dir()), "--sid_map",
                     str(tmp_path / "sid_map.json"), "--data", str(data), "--output_dir", str(out),
                     "--sasrec_distill_weight", weight, "--sasrec_distill_folds", folds, "--loss_impl", "full",
                     "--learning_rate", "5e-3",
                     "--per_device_train_batch_size", "8", "--max_steps", "6", "--save_steps", "6",
                     "--eval_valid", "false"] + QUIET) == 0
        finals.append(load_model_and_tokenizer(out / "final")[0])
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(finals[0](ids).logits, finals[1](ids).logits)  # the teacher changed the training
    assert not torch.allclose(finals[2](ids).logits, finals[1](ids).logits)  # cross-fitted: every row found its teacher
    with pytest.raises(ValueError, match="applies to stage 1"):
        SFTStageConfig(stage=2, sasrec_distill_weight=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SFTStageConfig(stage=1, sasrec_distill_weight=1.5)


def test_cross_fitted_teachers_teach_the_users_they_did_not_train_on(monkeypatch):
    import genrec.collab_distill as collab

    tok = load_tokenizer(tiny_model_dir())
    cfg = PromptConfig(reasoning=False)
    stage = SFTStageConfig(stage=1, sasrec_distill_weight=0.5, sasrec_distill_folds=2)
    trained_on = []  # the users each teacher is fitted on (the real fit runs)
    fit = collab.fit_sasrec_teacher
    monkeypatch.setattr(collab, "fit_sasrec_teacher", lambda train, *a, **k: (
        trained_on.append({ex.user_id for ex in train}), fit(train, *a, **k))[1])
    teachers, row_teacher = sasrec_teachers(stage, REC, SIDS, tok, cfg, seed=0)
    assert len(teachers) == 2
    for k, users_k in enumerate(trained_on):
        assert users_k and all(user_fold(u, 2) != k for u in users_k)  # teacher k never saw fold k
    assert set.union(*trained_on) == {ex.user_id for ex in REC.train}
    users = {ex.user_id for ex in REC.train}
    assert {user_fold(u, 2) for u in users} == {0, 1}  # both folds hold users here
    owners: dict[tuple, set] = {}
    for user in users:
        rows = sequence_rows(REC.catalog, SIDS, [ex for ex in REC.train if ex.user_id == user], tok, cfg)
        for ids in rows["input_ids"]:
            owners.setdefault(tuple(ids), set()).add(user)
    own = {row: users_ for row, users_ in owners.items() if len(users_) == 1}  # rows two users share are either's
    assert len(own) > len(owners) / 2
    for row, (user,) in own.items():  # every row of a user goes to the teacher of the user's fold
        assert row_teacher[hash(row)] == user_fold(user, 2)
    rows = sequence_rows(REC.catalog, SIDS, REC.train, tok, cfg)
    inputs, mask, labels = _batch(rows, 4)
    both = SASRecDistiller(teachers, tok, SIDS, row_teacher=row_teacher).targets(inputs, mask, labels)
    for k in (0, 1):  # each row's targets are those of its own teacher alone
        alone = SASRecDistiller(teachers[k], tok, SIDS).targets(inputs, mask, labels)
        mine = torch.tensor([row_teacher[hash(tuple(inputs[b, :int(mask[b].sum())].tolist()))] == k
                             for b in both[0].tolist()])
        assert torch.equal(both[0], alone[0]) and torch.equal(both[1], alone[1])
        assert torch.allclose(both[2][mine], alone[2][mine])
        if (~mine).any():
            assert not torch.allclose(both[2][~mine], alone[2][~mine])
    with pytest.raises(ValueError, match="folds"):
        SFTStageConfig(stage=1, sasrec_distill_folds=0)
    with pytest.raises(ValueError, match="matches no cross-fitted"):  # a row changed on its way (e.g. truncated)
        SASRecDistiller(teachers, tok, SIDS, row_teacher=row_teacher).targets(inputs[:, :-3], mask[:, :-3],
                                                                            labels[:, :-3])
