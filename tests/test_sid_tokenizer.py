"""SIDTokenizer on tiny catalogs: determinism, dedup, cold start, small-catalog adaptation, save/load, errors."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from genrec.data.errors import DataFormatError
from sid_tokenizer.dedup import dedup_codes, dedup_size, residual_dedup_codes
from sid_tokenizer.embed import make_encoder
from sid_tokenizer.sidmap import SIDMap, parse_sid_string
from sid_tokenizer.tokenizer import SIDTokenizer
from tests.sid_helpers import TEMPLATE, tiny_catalog, tiny_config


@pytest.fixture(scope="module")
def catalog():
    return tiny_catalog(300)


@pytest.fixture(scope="module")
def fitted(catalog):
    tok = SIDTokenizer(tiny_config())
    return tok, tok.fit_catalog(catalog)


def prefixes(sid_map: SIDMap, ids: list[str], levels: int) -> np.ndarray:
    return np.array([sid_map.codes(i)[:levels] for i in ids])


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_same_seed_gives_identical_sids_across_separate_fits(catalog, method):
    a = SIDTokenizer(tiny_config(method=method, seed=3)).fit_catalog(catalog)
    b = SIDTokenizer(tiny_config(method=method, seed=3)).fit_catalog(catalog)
    c = SIDTokenizer(tiny_config(method=method, seed=4)).fit_catalog(catalog)
    assert a.item_to_codes == b.item_to_codes
    assert a.labels == b.labels
    assert a.item_to_codes != c.item_to_codes  # the seed matters, so the equality above is not vacuous


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_dedup_makes_every_sid_unique_and_report_is_sane(catalog, method):
    tok = SIDTokenizer(tiny_config(method=method))
    sid_map = tok.fit_catalog(catalog)
    rep = tok.report
    # The catalog holds exact duplicate texts, so collisions before dedup are certain.
    assert rep["collision_rate_before_dedup"] > 0
    assert rep["max_items_per_sid_before_dedup"] >= 2
    assert rep["collision_rate"] == 0.0
    assert len(set(sid_map.item_to_codes.values())) == len(catalog) == rep["num_items"]
    assert rep["levels"] == sid_map.num_levels == 4
    assert rep["codebook_sizes"] == sid_map.codebook_sizes
    assert sid_map.codebook_sizes[:3] == [16, 16, 16]
    assert sid_map.codebook_sizes[3] >= rep["max_items_per_sid_before_dedup"] + 1  # headroom for cold start
    assert len(rep["utilization"]) == len(rep["perplexity"]) == 4
    for u, p, size in zip(rep["utilization"][:3], rep["perplexity"][:3], sid_map.codebook_sizes):
        assert 0.5 <= u <= 1.0 and 1.0 <= p <= size
    assert rep["recon_mse"] > 0 and 0 < rep["recon_rel"] < 1.5
    assert rep["fit_seconds"] > 0 and rep["embed_seconds"] >= 0


def test_dedup_codes_follow_item_id_order_whatever_the_input_order():
    prefix = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0]])
    ids = ["z", "b", "a", "m", "c"]
    codes = dedup_codes(prefix, ids)
    assert codes.tolist() == [2, 0, 0, 1, 1]
    perm = [3, 0, 4, 2, 1]
    again = dedup_codes(prefix[perm], [ids[i] for i in perm])
    assert again.tolist() == codes[perm].tolist()
    assert dedup_size(1, 1) == 2 and dedup_size(3, 1) == 4 and dedup_size(4, 1) == 8 and dedup_size(2, 8) == 8


def test_dedup_codes_put_the_most_viewed_item_first_when_counts_are_given():
    prefix = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0]])
    ids = ["z", "b", "a", "m", "c"]
    codes = dedup_codes(prefix, ids, counts=np.array([5, 0, 1, 5, 3]))
    assert codes.tolist() == [1, 1, 2, 0, 0]  # [1, 2]: m and z tie on 5 views (id order), then a; [0, 0]: c, b


def test_popularity_dedup_order_follows_train_views_and_falls_back_to_ids(catalog):
    """The semantic codes do not change; within each collided group the most-viewed item gets d_0."""
    by_id = SIDTokenizer(tiny_config(dedup_order="id")).fit_catalog(catalog)
    groups: dict[tuple, list[str]] = {}
    for item in catalog.item_ids:
        groups.setdefault(by_id.codes(item)[:-1], []).append(item)
    group = max(groups.values(), key=len)
    assert len(group) >= 2
    last = sorted(group)[-1]  # the highest id: last in id order, viewed most below
    sequences = [[last, last, sorted(group)[0]], [last]]
    tok = SIDTokenizer(tiny_config(dedup_order="popularity"))
    by_views = tok.fit_catalog(catalog, sequences=sequences)
    assert by_views.codes(last)[-1] == 0 and by_id.codes(last)[-1] == len(group) - 1
    assert by_views.codes(sorted(group)[0])[-1] == 1
    assert all(by_views.codes(i)[:-1] == by_id.codes(i)[:-1] for i in catalog.item_ids)
    assert tok.report["dedup_order"] == "popularity"
    with pytest.warns(UserWarning, match="dedup_order 'popularity' but no interaction sequences"):
        fallback = SIDTokenizer(tiny_config(dedup_order="popularity"))
        assert fallback.fit_catalog(catalog).item_to_codes == by_id.item_to_codes
    assert fallback.report["dedup_order"] == "id"
    with pytest.raises(ValueError, match="dedup_order"):
        tiny_config(dedup_order="views").validate()


def test_residual_dedup_codes_take_the_nearest_free_centroid_closest_item_first():
    prefix = np.array([[0], [0], [1], [0]])
    dists = np.array([[0.5, 0.1, 3.0], [0.2, 0.3, 3.0], [0.4, 0.9, 0.0], [2.0, 1.0, 0.05]])
    # group [0]: item 3 (nearest 0.05) takes 2, item 0 (0.1) takes 1, item 1 (0.2) finds 0 free; group [1]: item 2 -> 2
    assert residual_dedup_codes(prefix, ["a", "b", "c", "d"], dists).tolist() == [1, 0, 2, 2]
    # a tie in distance goes to the lower item id, whatever the row order
    tie = residual_dedup_codes(np.zeros((2, 1), int), ["y", "x"], np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert tie.tolist() == [1, 0]


def test_residual_dedup_gives_the_same_code_to_the_same_difference_in_every_group():
    """Four groups of look-alikes (same base vector) whose members differ by one of four offsets (three per
    group): the 'residual' rule codes each offset alike in every group; the item-id rule does not."""
    rng = np.random.default_rng(0)
    bases = 10.0 * np.eye(8)[:4]
    offsets = 0.3 * np.eye(8)[4:8]
    emb, ids, kind = [], [], []
    for g in range(4):
        for j, t in enumerate(t for t in (3, 2, 1, 0) if t != g):  # ids run against the offsets' order
            emb.append(bases[g] + offsets[t] + 1e-4 * rng.standard_normal(8))
            ids.append(f"g{g}_{j}")
            kind.append(t)
    emb = np.array(emb, dtype=np.float32)
    cfg = dict(levels=1, codebook_size=4, min_items_per_code=1, dedup_min_size=1)  # 4 dedup codes
    by_residual = SIDTokenizer(tiny_config(dedup_order="residual", **cfg))
    sids = by_residual.fit(None, ids, embeddings=emb)
    by_id = SIDTokenizer(tiny_config(dedup_order="id", **cfg)).fit(None, ids, embeddings=emb)
    assert by_residual.report["dedup_order"] == "residual"
    assert len({sids.codes(i) for i in ids}) == len(ids)
    assert all(sids.codes(i)[:-1] == by_id.codes(i)[:-1] for i in ids)  # the semantic codes do not move
    assert len({sids.codes(i)[0] for i in ids}) == 4
    code_of_kind = {t: {sids.codes(i)[-1] for i, k in zip(ids, kind) if k == t} for t in range(4)}
    assert all(len(codes) == 1 for codes in code_of_kind.values()), code_of_kind
    assert any(len({by_id.codes(i)[-1] for i, k in zip(ids, kind) if k == t}) > 1 for t in range(4))
    # a new look-alike in group 0 with the offset group 0 lacks (0) takes that offset's code
    new = (bases[0] + offsets[0])[None].astype(np.float32)
    grown = by_residual.add_items(["new"], None, sids, embeddings=new)
    assert grown.codes("new")[0] == sids.codes("g0_0")[0]
    assert grown.codes("new")[-1] == code_of_kind[0].pop() and len(set(grown.item_to_codes.values())) == len(ids) + 1


def test_residual_dedup_on_fewer_items_than_dedup_codes_fills_the_level_then_errors():
    """3 items, 8 dedup codes: one centroid per item, the codes without a centroid go to later items, and a full
    level names its prefix."""
    emb = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    tok = SIDTokenizer(tiny_config(levels=2, codebook_size=4, dedup_min_size=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the codebook shrinks for 3 items
        sids = tok.fit(None, ["i0", "i1", "i2"], embeddings=emb)
    assert len(tok.dedup_centroids) == 3 and sids.codebook_sizes[-1] == 8
    grown, added = sids, []
    with pytest.raises(ValueError, match=r"dedup level is full for SID prefix"):
        for k in range(9):
            grown = tok.add_items([f"new{k}"], None, grown, embeddings=emb[:1])
            added.append(grown.codes(f"new{k}"))
    prefix = sids.codes("i0")[:-1]
    assert len(added) == 8 - sum(sids.codes(i)[:-1] == prefix for i in ["i0", "i1", "i2"])
    assert sorted(c[-1] for c in added + [sids.codes(i) for i in ["i0", "i1", "i2"]] if c[:-1] == prefix) == list(range(8))


def test_residual_dedup_on_a_catalog_survives_save_and_load(catalog, tmp_path):
    tok = SIDTokenizer(tiny_config())  # 'residual' is the default
    sid_map = tok.fit_catalog(catalog)
    assert tok.report["dedup_order"] == "residual"
    assert tok.report["collision_rate"] == 0.0 and len(set(sid_map.item_to_codes.values())) == len(catalog)
    by_id = SIDTokenizer(tiny_config(dedup_order="id")).fit_catalog(catalog)
    assert all(sid_map.codes(i)[:-1] == by_id.codes(i)[:-1] for i in catalog.item_ids)
    assert sid_map.item_to_codes != by_id.item_to_codes  # the rule changed some dedup codes
    tok.save(tmp_path)
    loaded = SIDTokenizer.load(tmp_path)
    assert loaded.dedup_centroids is not None and loaded.dedup_centroids.equal(tok.dedup_centroids)
    texts = catalog.texts(TEMPLATE)
    taken: dict[tuple, set] = {}
    for codes in sid_map.item_to_codes.values():
        taken.setdefault(codes[:-1], set()).add(codes[-1])

    def nearest_free(i: int) -> int:
        prefix = sid_map.codes(catalog.item_ids[i])[:-1]
        d = tok._residual_dists(tok.encoder.embed([texts[i]]), np.array([prefix]))[0]
        return next(c for c in np.argsort(d, kind="stable").tolist() if c not in taken[prefix])

    # a re-post of a fitted item whose nearest free centroid is not the smallest free code (so the rule shows)
    i = next(i for i in range(len(texts))
             if nearest_free(i) != min(set(range(sid_map.codebook_sizes[-1])) - taken[sid_map.codes(catalog.item_ids[i])[:-1]]))
    a = tok.add_items(["repost"], [texts[i]], sid_map)
    b = loaded.add_items(["repost"], [texts[i]], sid_map)
    assert a.codes("repost") == b.codes("repost")
    assert a.codes("repost")[:-1] == sid_map.codes(catalog.item_ids[i])[:-1] and a.codes("repost")[-1] == nearest_free(i)
    # two re-posts in one call: the same codes whatever their order; no items, no change
    one = tok.add_items(["r1", "r2"], [texts[i], texts[i]], sid_map)
    two = tok.add_items(["r2", "r1"], [texts[i], texts[i]], sid_map)
    assert one.codes("r1") == two.codes("r1") and one.codes("r2") == two.codes("r2") != one.codes("r1")
    assert list(one.item_to_codes)[-2:] == ["r1", "r2"]
    assert tok.add_items([], [], sid_map).item_to_codes == sid_map.item_to_codes


def test_residual_dedup_with_precomputed_embeddings_takes_texts_with_a_warning(catalog):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((len(catalog), 12)).astype(np.float32)
    tok = SIDTokenizer(tiny_config())
    sid_map = tok.fit(catalog.texts(TEMPLATE), list(catalog.item_ids), embeddings=emb)
    with pytest.warns(UserWarning, match="precomputed embeddings"):
        grown = tok.add_items(["repost"], [catalog.texts(TEMPLATE)[0]], sid_map)
    assert grown.codes("repost")[:-1] == sid_map.codes(catalog.item_ids[0])[:-1]
    by_vector = tok.add_items(["v"], None, sid_map, embeddings=emb[:1])
    assert by_vector.codes("v")[:-1] == sid_map.codes(catalog.item_ids[0])[:-1]


def test_tokenizer_saved_before_the_residual_rule_loads_as_id_order(catalog, tmp_path):
    import json

    tok = SIDTokenizer(tiny_config(dedup_order="id"))
    sid_map = tok.fit_catalog(catalog)
    tok.save(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    payload = json.loads(cfg_path.read_text())
    del payload["config"]["dedup_order"]  # what a session-14 save looks like
    cfg_path.write_text(json.dumps(payload))
    loaded = SIDTokenizer.load(tmp_path)
    assert loaded.cfg.dedup_order == "id" and loaded.dedup_centroids is None
    grown = loaded.add_items(["repost"], [catalog.texts(TEMPLATE)[0]], sid_map)
    prefix = grown.codes("repost")[:-1]
    used = {c[-1] for c in sid_map.item_to_codes.values() if c[:-1] == prefix}
    assert grown.codes("repost")[-1] == min(set(range(sid_map.codebook_sizes[-1])) - used)


def test_identical_texts_share_their_prefix(fitted, catalog):
    tok, sid_map = fitted
    texts = catalog.texts(TEMPLATE)
    groups: dict[str, list[str]] = {}
    for item, text in zip(catalog.item_ids, texts):
        groups.setdefault(text, []).append(item)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    assert dup_groups
    for group in dup_groups:
        assert len({sid_map.codes(i)[:3] for i in group}) == 1
        assert len({sid_map.codes(i)[3] for i in group}) == len(group)


def test_encode_reproduces_the_fitted_prefixes_without_the_text_table(fitted, catalog):
    tok, sid_map = fitted
    texts = catalog.texts(TEMPLATE)
    expected = prefixes(sid_map, catalog.item_ids, 3)
    assert np.array_equal(tok.encode(texts), expected)
    # The encoder + quantizer path alone gives the same first levels (the last level of colliding items was
    # spread at fit time, which the nearest rule for new items does not repeat).
    assert (tok.encode(texts, use_known=False)[:, :2] == expected[:, :2]).all(axis=1).mean() >= 0.99
    plain = SIDTokenizer(tiny_config(spread_last_level=False))
    plain_map = plain.fit_catalog(catalog)
    plain_expected = prefixes(plain_map, catalog.item_ids, 3)
    assert (plain.encode(texts, use_known=False) == plain_expected).all(axis=1).mean() >= 0.99


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_spread_last_level_leaves_only_identical_items_colliding(catalog, method):
    tok = SIDTokenizer(tiny_config(method=method, spread_last_level=True))
    sid_map = tok.fit_catalog(catalog)
    rep = tok.report
    duplicates = len(catalog) - len(set(catalog.texts(TEMPLATE)))
    assert rep["collision_rate_nearest_rule"] > rep["collision_rate_before_dedup"]
    assert rep["collision_rate_before_dedup"] == pytest.approx(duplicates / len(catalog))
    assert rep["spread_moved_items"] > 0
    # Moving an item only changes its last semantic code.
    plain = SIDTokenizer(tiny_config(method=method, spread_last_level=False)).fit_catalog(catalog)
    for item in catalog.item_ids:
        assert sid_map.codes(item)[:2] == plain.codes(item)[:2]


def test_cold_start_items_get_free_dedup_slots(fitted, catalog):
    tok, sid_map = fitted
    texts = catalog.texts(TEMPLATE)
    new_texts = [texts[0], "Registered Nurse at Hooli in Seattle. Industry: Healthcare. Skills: triage, cpr",
                 "Truck Driver at Acme in Reno. Industry: Logistics. Skills: routing, cdl license"]
    grown = tok.add_items(["new0", "new1", "new2"], new_texts, sid_map)
    assert len(grown) == len(sid_map) + 3
    assert len(set(grown.item_to_codes.values())) == len(grown)
    for item in catalog.item_ids:  # existing SIDs never move
        assert grown.codes(item) == sid_map.codes(item)
    # identical text -> identical prefix, and a dedup code nobody under that prefix had
    assert grown.codes("new0")[:3] == sid_map.codes(catalog.item_ids[0])[:3]
    taken = {c[3] for i, c in sid_map.item_to_codes.items() if c[:3] == grown.codes("new0")[:3]}
    assert grown.codes("new0")[3] not in taken
    assert all(0 <= grown.codes(f"new{k}")[3] < grown.codebook_sizes[3] for k in range(3))
    with pytest.raises(ValueError, match="already in the SID map"):
        tok.add_items([catalog.item_ids[5]], ["anything"], sid_map)


def test_full_dedup_level_is_a_clear_error(fitted, catalog):
    tok, sid_map = fitted
    text = catalog.texts(TEMPLATE)[7]
    size = sid_map.codebook_sizes[-1]
    same = sum(1 for c in sid_map.item_to_codes.values() if c[:3] == sid_map.codes(catalog.item_ids[7])[:3])
    free = size - same
    grown = tok.add_items([f"x{k}" for k in range(free)], [text] * free, sid_map)  # exactly fills the group
    assert len(grown) == len(sid_map) + free
    with pytest.raises(ValueError, match="dedup level is full"):
        tok.add_items(["one-too-many"], [text], grown)


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_save_load_round_trip_encodes_identically(tmp_path, catalog, method):
    tok = SIDTokenizer(tiny_config(method=method))
    sid_map = tok.fit_catalog(catalog)
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.safetensors").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    loaded = SIDTokenizer.load(tmp_path)
    new = ["Dispatcher at Globex in Austin. Industry: Logistics. Skills: routing", "Bartender in Miami, mixology"]
    assert np.array_equal(loaded.encode(new), tok.encode(new))
    assert np.array_equal(loaded.encode(catalog.texts(TEMPLATE)), prefixes(sid_map, catalog.item_ids, 3))
    assert loaded.codebook_sizes == sid_map.codebook_sizes


def test_small_catalog_shrinks_the_codebook_with_a_warning():
    small = tiny_catalog(60, duplicates=0)
    with pytest.warns(UserWarning, match="small for codebook_size=256"):
        tok = SIDTokenizer(tiny_config(codebook_size=256))
        sid_map = tok.fit_catalog(small)
    assert sid_map.codebook_sizes[:3] == [15, 15, 15]  # 60 items / 4 items per code
    assert len(set(sid_map.item_to_codes.values())) == 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the codebook fits
        SIDTokenizer(tiny_config(codebook_size=8)).fit_catalog(small)


def test_labels_describe_the_items_under_each_prefix(fitted, catalog):
    tok, sid_map = fitted
    texts = catalog.texts(TEMPLATE)
    level1 = {k for k in sid_map.labels if parse_sid_string(k).__len__() == 1}
    used1 = {sid_map.codes(i)[:1] for i in catalog.item_ids}
    assert len(level1) == len(used1)
    assert all(len(parse_sid_string(k)) <= 3 for k in sid_map.labels)  # never the dedup level
    for key, label in sid_map.labels.items():
        assert 1 <= len(label.replace(",", " ").split()) <= 4, (key, label)
    # A level-1 node whose items are mostly one industry is labelled with words from that industry.
    industries = catalog.fields["industry"]
    for code in sorted(used1):
        members = [k for k, i in enumerate(catalog.item_ids) if sid_map.codes(i)[:1] == code]
        top = max(set(industries[k] for k in members), key=lambda ind: sum(industries[k] == ind for k in members))
        share = sum(industries[k] == top for k in members) / len(members)
        if share == 1.0 and len(members) >= 5:
            words = set(re.findall(r"[\w+#&-]+", " ".join(texts[k].lower() for k in members)))
            label = sid_map.label(code)
            assert label and all(w in words for w in label.replace(",", " ").split())


def test_precomputed_embeddings(tmp_path):
    catalog = tiny_catalog(300, duplicates=0)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(catalog), 24)).astype(np.float32)
    path = tmp_path / "emb.npy"
    np.save(path, emb)
    tok = SIDTokenizer(tiny_config(encoder=str(path)))
    sid_map = tok.fit_catalog(catalog)
    assert len(sid_map) == len(catalog)
    texts = catalog.texts(TEMPLATE)
    unique = np.array([texts.count(t) == 1 for t in texts])  # repeated texts share the first one's vector
    got, want = tok.encode_embeddings(emb)[:, :2], prefixes(sid_map, catalog.item_ids, 3)[:, :2]
    assert unique.sum() > 250 and np.array_equal(got[unique], want[unique])
    with pytest.raises(ValueError, match="precomputed embeddings"):
        tok.encode(["some brand new job"], use_known=False)
    np.save(path, emb[:-1])
    with pytest.raises(DataFormatError, match=r"emb\.npy: has 299 rows but the catalog has 300 items"):
        SIDTokenizer(tiny_config(encoder=str(path))).fit_catalog(catalog)
    bad = emb.copy()
    bad[5, 3] = np.nan
    np.save(path, bad)
    with pytest.raises(DataFormatError, match="row 5 contains NaN"):
        SIDTokenizer(tiny_config(encoder=str(path))).fit_catalog(catalog)


@pytest.mark.parametrize(
    "over, match",
    [
        ({"levels": 0}, "levels=0 is invalid"),
        ({"codebook_size": 1}, "codebook_size=1 is invalid"),
        ({"method": "vq"}, "method='vq' is invalid: expected one of rqvae, rqkmeans"),
        ({"dedup_min_size": 0}, "dedup_min_size=0"),
    ],
)
def test_bad_config_is_a_clear_error(over, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**over).validate()


def test_unknown_encoder_is_a_clear_error(catalog):
    with pytest.raises(ValueError, match="unknown encoder 'no-such-encoder'"):
        SIDTokenizer(tiny_config(encoder="no-such-encoder")).fit_catalog(catalog)
    with pytest.raises(ValueError, match="could not load it as a Hugging Face encoder"):
        SIDTokenizer(tiny_config(encoder="nobody/no-such-model-xyz")).fit_catalog(catalog)


def test_bad_fit_inputs_are_clear_errors():
    tok = SIDTokenizer(tiny_config())
    with pytest.raises(ValueError, match="2 texts for 3 item ids"):
        tok.fit(["a b", "c d"], ["1", "2", "3"])
    with pytest.raises(ValueError, match="item id '1' appears more than once"):
        tok.fit(["a b", "c d", "e f"], ["1", "2", "1"])
    with pytest.raises(ValueError, match="not fitted"):
        tok.encode(["x"])


def test_tfidf_encoder_state_round_trip():
    enc = make_encoder("tfidf", tfidf_dim=8)
    texts = tiny_catalog(80).texts(TEMPLATE)
    enc.fit(texts)
    meta, tensors = enc.state()
    again = type(enc).from_state(meta, tensors)
    assert np.allclose(enc.embed(texts[:10]), again.embed(texts[:10]), atol=1e-6)


# ------------------------------------------------------------------ per-field TF-IDF (encoder 'tfidf-fields')


def _long_description_catalog(n: int = 120):
    """Jobs whose long description is the same for every job of a title, with a city that only the short `city`
    field names: one TF-IDF over the joined text hardly sees the city, a block per field does."""
    from genrec.data.schema import Catalog

    titles = ["Registered Nurse", "Truck Driver", "Line Cook", "Data Scientist"]
    words = "responsible for daily operations quality standards team collaboration safety reporting".split()
    rows = []
    for i in range(n):
        title = titles[i % len(titles)]
        rows.append({"title": title, "city": CITIES6[(i // len(titles)) % 6],
                     "description": f"{title}: " + " ".join(words * 6), "constant": "full time"})
    return Catalog([f"j{i:03d}" for i in range(n)], {k: [r[k] for r in rows] for k in rows[0]})


CITIES6 = ["Boston", "Denver", "Austin", "Seattle", "Miami", "Chicago"]


def test_field_blocks_separate_items_that_differ_in_a_short_field():
    cat = _long_description_catalog()
    same_title_other_city = (0, 4)  # item 0 and 4: same title and description, other city
    cos = {}
    for name, over in (("plain", dict(encoder="tfidf")), ("fields", dict(encoder="tfidf-fields", tfidf_whole_share=0)),
                       ("hybrid", dict(encoder="tfidf-fields"))):
        tok = SIDTokenizer(tiny_config(template=None, tfidf_field_dim=8, **over))
        tok.fit_catalog(cat)
        emb = tok.encoder.embed(tok.catalog_texts(cat))
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5), name
        a, b = (emb[i] for i in same_title_other_city)
        cos[name] = float(a @ b)
        if name != "plain":
            assert tok.encoder.kept == ["title", "city", "description"]  # the constant field carries nothing
    assert cos["plain"] > 0.85  # the city is one word among ~60
    assert cos["fields"] < 0.7  # one block of three (the city's) differs: about 2/3
    assert cos["fields"] + 0.05 < cos["hybrid"] < cos["plain"] - 0.05  # half the weight on the whole text


def test_field_tfidf_tokenizer_saves_loads_and_encodes_new_items(tmp_path, catalog):
    from sid_tokenizer.embed import FIELD_SEP

    tok = SIDTokenizer(tiny_config(template=None, encoder="tfidf-fields", tfidf_field_dim=8))
    sid_map = tok.fit_catalog(catalog)
    assert len(set(sid_map.item_to_codes.values())) == len(catalog)
    tok.save(tmp_path)
    loaded = SIDTokenizer.load(tmp_path)
    texts = loaded.catalog_texts(catalog)  # fields in the fitted order
    assert np.array_equal(loaded.encode(texts, use_known=False), prefixes(sid_map, catalog.item_ids, 3))
    new = FIELD_SEP.join(["Dispatcher", "Globex", "Austin", "Logistics", "routing"])
    assert np.array_equal(loaded.encode([new]), tok.encode([new]))
    with pytest.raises(ValueError, match="has 2 fields, expected 5"):
        loaded.encode([FIELD_SEP.join(["Dispatcher", "Globex"])])
    with pytest.raises(ValueError, match="no template with encoder 'tfidf-fields'"):
        SIDTokenizer(tiny_config(encoder="tfidf-fields"))  # tiny_config sets a template
