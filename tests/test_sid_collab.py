"""Collaborative part of the SIDs (sid_tokenizer/collab.py): co-view counts, PPMI, and what it does to the codes."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest

from genrec.cli import main
from sid_tokenizer.collab import collaborative_vectors, cooccurrence, coview_identity_vectors, impute_from_text, ppmi
from sid_tokenizer.tokenizer import SIDTokenizer
from tests.helpers_tiny import write_tiny_data_dir
from tests.sid_helpers import TEMPLATE, tiny_catalog, tiny_config


def test_cooccurrence_counts_pairs_within_the_window_on_a_hand_built_sequence():
    # 0 1 0 2 with window 2: lag 1 pairs (1,0) (0,1) (2,0); lag 2 pairs (0,0: same item, skipped) (2,1)
    c = cooccurrence([[0, 1, 0, 2]], 4, window=2).toarray()
    want = np.zeros((4, 4))
    for a, b in [(1, 0), (0, 1), (2, 0), (2, 1)]:
        want[a, b] += 1
        want[b, a] += 1
    assert np.array_equal(c, want)
    assert cooccurrence([[0, 1, 0, 2]], 4, window=1).toarray()[2, 1] == 0  # 3 steps apart: outside window 1
    m = ppmi(cooccurrence([[0, 1], [0, 1], [2, 3], [0, 2]], 4, window=1)).toarray()
    assert (m >= 0).all() and m[0, 1] > 0 and m[1, 3] == 0 and np.allclose(m, m.T)


def test_collaborative_vectors_are_unit_or_zero_and_deterministic():
    rng = random.Random(0)
    seqs = [[rng.randrange(30) for _ in range(8)] for _ in range(50)]
    v, info = collaborative_vectors(seqs, 40, dim=8, window=2, seed=3)
    norms = np.linalg.norm(v, axis=1)
    assert v.shape == (40, 8)
    assert np.allclose(norms[:30][norms[:30] > 0], 1.0, atol=1e-5)
    assert (norms[30:] == 0).all()  # items 30-39 were never viewed
    assert info["items_with_coviews"] == pytest.approx(30 / 40)
    v2, _ = collaborative_vectors(seqs, 40, dim=8, window=2, seed=3)
    assert np.array_equal(v, v2)


def _two_camps(catalog, seed=0):
    """Sequences where the even-numbered items are only ever viewed with each other, and the odd ones likewise."""
    ids = list(catalog.item_ids)
    rng = random.Random(seed)
    camps = [ids[0::2], ids[1::2]]
    return [[rng.choice(camps[u % 2]) for _ in range(12)] for u in range(400)], camps


def test_coviews_shape_the_codes_and_new_items_are_placed_by_text(tmp_path):
    catalog = tiny_catalog(300)
    seqs, camps = _two_camps(catalog)

    def purity(sid_map):  # how well level 0 (2 codes) separates the two camps
        a = [sid_map.codes(i)[0] for i in camps[0]]
        return max(np.mean(np.array(a) == c) for c in set(a))

    text_only = SIDTokenizer(tiny_config(codebook_size=2, collab_dim=0)).fit_catalog(catalog)
    tok = SIDTokenizer(tiny_config(codebook_size=2, collab_dim=8, collab_weight=3.0))
    with_cf = tok.fit_catalog(catalog, sequences=seqs)
    assert purity(with_cf) > 0.95 > purity(text_only)
    assert tok.report["collab"]["items_with_coviews"] > 0.9 and tok.embedding_dim == 32 + 8

    # a new item has no co-views: encoded from its text (zero collaborative part), the same after save/load
    new = ["Truck Driver at Nowhere Freight in Boston. Industry: Logistics. Skills: routing"]
    tok.save(tmp_path / "tok")
    again = SIDTokenizer.load(tmp_path / "tok")
    assert again.collab_dim == 8
    assert np.array_equal(tok.encode(new), again.encode(new)) and tok.encode(new).shape == (1, 3)
    # the fitted items keep their SIDs through the text table
    texts = catalog.texts(TEMPLATE)
    assert np.array_equal(again.encode(texts), np.array([with_cf.codes(i)[:3] for i in catalog.item_ids]))


def test_fit_without_sequences_warns_and_uses_text_only():
    catalog = tiny_catalog(120)
    with pytest.warns(UserWarning, match="no interaction sequences"):
        tok = SIDTokenizer(tiny_config(collab_dim=8))
        with_default = tok.fit_catalog(catalog)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text_only = SIDTokenizer(tiny_config(collab_dim=0)).fit_catalog(catalog)
    assert with_default.item_to_codes == text_only.item_to_codes and tok.report["collab"] is None


def test_fit_tokenizer_cli_reads_the_train_interactions(tmp_path, capsys):
    data = write_tiny_data_dir(tmp_path / "data")
    common = ["fit-tokenizer", "--data", str(data), "--levels", "2", "--codebook_size", "4", "--tfidf_dim", "16",
              "--cache_dir", "", "--threads", "1", "--kmeans_iters", "5"]
    assert main(common + ["--out", str(tmp_path / "cf"), "--collab_dim", "4"]) == 0
    report = json.loads((tmp_path / "cf" / "tokenizer_report.json").read_text())
    assert report["collab"]["items_with_coviews"] > 0 and report["collab"]["dim"] == 4
    assert json.loads((tmp_path / "cf" / "tokenizer_config.json").read_text())["collab_dim"] == 4
    assert main(common + ["--out", str(tmp_path / "text"), "--collab_dim", "0"]) == 0
    assert json.loads((tmp_path / "text" / "tokenizer_report.json").read_text())["collab"] is None
    assert main(common + ["--out", str(tmp_path / "pop"), "--dedup_order", "popularity"]) == 0
    assert json.loads((tmp_path / "pop" / "tokenizer_report.json").read_text())["dedup_order"] == "popularity"
    assert json.loads((tmp_path / "text" / "tokenizer_report.json").read_text())["dedup_order"] == "residual"
    assert main(common + ["--out", str(tmp_path / "bad"), "--collab_window", "0"]) != 0
    assert "collab_window=0 is invalid" in capsys.readouterr().err


def test_items_without_coviews_borrow_their_text_neighbours_vectors():
    text = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.95, 0.05]], dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    cf = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=np.float32)  # item 4: no co-views
    out = impute_from_text(cf, text, neighbours=2)
    assert np.allclose(out[4], [1, 0, 0])  # its two nearest texts are items 0 and 1
    assert np.array_equal(out[:4], cf[:4])
    assert np.array_equal(impute_from_text(np.zeros((3, 2), np.float32), text[:3]), np.zeros((3, 2)))


def test_id_only_dataset_gets_sids_from_coviews(tmp_path, capsys):
    """An ID-only dataset (no .item file): fit-tokenizer switches to no text encoder and co-view vectors, so the
    level-0 codes separate two camps of items that are only ever viewed together; refitting is a no-op."""
    from genrec.data.recbole import write_atomic
    from sid_tokenizer.sidmap import SIDMap

    rng = random.Random(0)
    camps = [[f"x{i}" for i in range(0, 40, 2)], [f"x{i}" for i in range(1, 40, 2)]]
    rows = [[f"u{u}", rng.choice(camps[u % 2]), t] for u in range(200) for t in range(8)]
    (tmp_path / "data").mkdir()
    write_atomic(tmp_path / "data" / "ids.inter", ["user_id:token", "item_id:token", "timestamp:float"], rows)
    argv = ["fit-tokenizer", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "tok"), "--levels", "2",
            "--codebook_size", "2", "--min_items_per_code", "1", "--cache_dir", "", "--threads", "1"]
    assert main(argv) == 0
    assert "no text (ID-only dataset)" in capsys.readouterr().err
    saved = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert saved["encoder"]["kind"] == "none" and saved["collab_dim"] == 64
    assert SIDTokenizer.load(tmp_path / "tok").encoder.kind == "none"  # loads with its no-text encoder
    assert json.loads((tmp_path / "tok" / "sid_labels.json").read_text()) == {}  # ids name no area
    m = SIDMap.load(tmp_path / "tok" / "sid_map.json")
    assert len(m) == 40 and len(set(m.item_to_codes.values())) == 40
    level0 = [{m.codes(i)[0] for i in camp} for camp in camps]
    assert level0[0].isdisjoint(level0[1])
    assert main(argv) == 0 and "already fitted" in capsys.readouterr().out


def test_coview_identity_vectors_keep_every_item_apart_and_coviewed_items_close():
    """The no-text vectors: every item its own direction, even items with identical co-views or none at all,
    and items viewed together closer than items never viewed together; the same seed, the same vectors."""
    # items 0-3 only ever viewed together (two identical co-view patterns: 0 and 1), 4-7 likewise, 8-9 never viewed
    seqs = [[0, 2, 1, 3], [1, 3, 0, 2], [4, 5, 6, 7], [7, 6, 5, 4]] * 5
    v, info = coview_identity_vectors(seqs, 10, dim=32, window=2, seed=1)
    norms = np.linalg.norm(v, axis=1)  # SVD half + projection half; items 8-9 have no SVD half
    assert v.shape == (10, 32) and np.allclose(norms[:8], 1.0, atol=1e-5) and np.allclose(norms[8:], 0.5 ** 0.5)
    assert len({tuple(np.round(row, 4)) for row in v}) == 10  # all distinct
    sim = v @ v.T
    within = [sim[a, b] for camp in ((0, 1, 2, 3), (4, 5, 6, 7)) for a in camp for b in camp if a < b]
    across = [sim[a, b] for a in range(4) for b in range(4, 8)]
    assert min(within) > max(across)
    assert info["items_with_coviews"] == pytest.approx(0.8)
    assert np.array_equal(v, coview_identity_vectors(seqs, 10, dim=32, window=2, seed=1)[0])
