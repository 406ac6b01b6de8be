"""Loaders on small hand-written datasets (tests/fixtures/data): expected examples worked out by hand."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from genrec.data.config import DataConfig
from genrec.data.errors import DataFormatError
from genrec.data.loader import format_summary, load_catalog, load_data
from genrec.data.recbole import read_atomic, write_atomic
from genrec.data.schema import Example

FIX = Path(__file__).parent / "fixtures" / "data"
TINY, PRESPLIT, MOR = FIX / "tiny", FIX / "tiny-presplit", FIX / "tiny-minionerec"

U1_PROFILE = "experience: Cook at Dave's (2010-2012); Dishwasher at Haven (2009-2010)\ninterests: Chef; Baker"


def triples(examples: list[Example]) -> set[tuple[str, tuple[str, ...], str]]:
    return {(e.user_id, e.history, e.target) for e in examples}


def test_atomic_leave_one_out_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    d = load_data(TINY)
    # u1 chronological: i1 i2 i2 i3 i1 -> collapsed i1 i2 i3 i1; u2: i4(102) i2(105) i3(105, later in file) i1;
    # u3: i4 i5 i4; u4 has one interaction and is dropped.
    assert triples(d.test) == {
        ("u1", ("i1", "i2", "i3"), "i1"),
        ("u2", ("i4", "i2", "i3"), "i1"),
        ("u3", ("i4", "i5"), "i4"),
    }
    assert triples(d.valid) == {("u1", ("i1", "i2"), "i3"), ("u2", ("i4", "i2"), "i3"), ("u3", ("i4",), "i5")}
    assert triples(d.train) == {("u1", ("i1",), "i2"), ("u2", ("i4",), "i2")}
    s = d.summary
    assert (s["interactions_read"], s["users_read"], s["repeats_collapsed"]) == (13, 4, 1)
    assert (s["users_dropped_few_interactions"], s["users"], s["unknown_items_dropped"]) == (1, 3, 0)
    assert (s["train_examples"], s["valid_examples"], s["test_examples"], s["items"]) == (2, 3, 3, 7)
    assert s["test_repeat_target_frac"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["test_target_is_last_frac"] == 0.0
    assert s["test_targets_unseen_in_train"] == 0  # i1 and i4 occur in train histories
    assert d.name == "tiny"
    err = capsys.readouterr().err
    assert "consecutive repeats collapsed" in err and "test examples" in err
    assert format_summary(s).splitlines()[0].startswith("[genrec.data] tiny")


def test_profiles_and_catalog_text() -> None:
    d = load_data(TINY, verbose=False)
    by_user = {e.user_id: e.profile for e in d.test}
    assert by_user == {"u1": U1_PROFILE, "u2": "interests: Barista", "u3": ""}
    assert set(d.profiles) == {"u1", "u2", "u3"}
    cat = d.catalog
    assert cat.item_ids == ["i1", "i2", "i3", "i4", "i5", "i6", "i7"]
    assert cat.field_names == ["title", "company", "industry"]
    # quotes, commas and a Unicode line separator inside a field stay literal, on one record
    assert cat.record("i1")["company"] == "Dave's \"American\" Bistro"
    assert cat.record("i4")["company"] == "Caf\u00e9 M\u00fcller\u2028Berlin"
    assert cat.render("i5") == "title: Receptionist"


def test_repeat_options() -> None:
    d = load_data(TINY, DataConfig(collapse_repeats=False), verbose=False)
    assert ("u1", ("i1", "i2", "i2", "i3"), "i1") in triples(d.test)
    assert triples([e for e in d.train if e.user_id == "u1"]) == {("u1", ("i1",), "i2"), ("u1", ("i1", "i2"), "i2")}
    assert d.summary["repeats_collapsed"] == 0
    assert d.summary["test_repeat_target_frac"] == pytest.approx(2 / 3, abs=1e-4)

    d = load_data(TINY, DataConfig(allow_repeat_target=False, collapse_repeats=False), verbose=False)
    assert all(e.target not in e.history for e in d.train + d.valid + d.test)
    # dropped: u1 train (i1,i2)->i2, u1 test ->i1, u3 test ->i4
    assert d.summary["repeat_targets_dropped"] == 3
    assert triples(d.test) == {("u2", ("i4", "i2", "i3"), "i1")}


def test_max_history_and_min_interactions() -> None:
    d = load_data(TINY, DataConfig(max_history=2), verbose=False)
    assert ("u1", ("i2", "i3"), "i1") in triples(d.test)
    assert max(len(e.history) for e in d.train + d.valid + d.test) == 2
    d = load_data(TINY, DataConfig(min_interactions=4), verbose=False)
    assert {e.user_id for e in d.test} == {"u1", "u2"}
    assert d.summary["users_dropped_few_interactions"] == 2
    # min_interactions=2 keeps u3's valid/test; u4 (1 item) still gives nothing
    d = load_data(TINY, DataConfig(min_interactions=1, max_history=0), verbose=False)
    assert {e.user_id for e in d.test} == {"u1", "u2", "u3"}


def test_kcore() -> None:
    # counts after collapse: i1:3 (u1 x2, u2), i2:2, i3:2, i4:3 (u2, u3 x2), i5:1, i6:1.
    # 2-core: drop u4 (1 interaction), i5, i6 -> u3 becomes i4 i4 -> collapsed to i4 (1 interaction) -> dropped,
    # then i4 has 1 left (u2) -> dropped -> u2: i2 i3 i1.
    d = load_data(TINY, DataConfig(kcore=2, min_interactions=3), verbose=False)
    assert triples(d.test) == {("u1", ("i1", "i2", "i3"), "i1"), ("u2", ("i2", "i3"), "i1")}
    assert d.summary["kcore_users_dropped"] == 2
    assert d.summary["repeats_collapsed"] == 2  # u1's i2 i2, then u3's i4 i4 after i5 went


def test_temporal_split() -> None:
    d = load_data(TINY, DataConfig(split="temporal", split_ratios="6,2,2"), verbose=False)
    # 11 interactions kept; time ranks 0..11 minus the collapsed one (rank 8); cut after 7 -> train,
    # next 2 -> valid, last 2 -> test. A user's first interaction is never a target.
    assert triples(d.train) == {
        ("u3", ("i4",), "i5"),
        ("u3", ("i4", "i5"), "i4"),
        ("u2", ("i4",), "i2"),
        ("u2", ("i4", "i2"), "i3"),
    }
    assert triples(d.valid) == {("u1", ("i1",), "i2"), ("u1", ("i1", "i2"), "i3")}
    assert triples(d.test) == {("u2", ("i4", "i2", "i3"), "i1"), ("u1", ("i1", "i2", "i3"), "i1")}
    assert d.summary["first_interactions_not_targets"] == 3
    assert d.summary["test_targets_unseen_in_train"] == 2  # i1 is never in a train example
    assert d.summary["split"] == "temporal"


def test_presplit_used_as_given() -> None:
    d = load_data(PRESPLIT, verbose=False)
    assert d.summary["format"] == "recbole-presplit"
    # no collapsing in given histories; truncated to the 10 most recent; an empty history is kept
    assert ("u1", ("i1", "i2"), "i2") in triples(d.train)
    long = next(e for e in d.train if e.user_id == "u2")
    assert long.history == ("i3", "i5", "i6", "i1", "i2", "i3", "i4", "i5", "i6", "i7")
    assert triples(d.test) == {("u1", ("i1", "i2", "i2", "i3"), "i1"), ("u3", (), "i4")}
    assert (len(d.train), len(d.valid), len(d.test)) == (3, 1, 2)
    d = load_data(PRESPLIT, DataConfig(allow_repeat_target=False), verbose=False)
    assert d.summary["repeat_targets_dropped"] == 3  # u1 (i1 i2)->i2 train, u2 ->i1 train, u1 test ->i1
    with pytest.raises(ValueError, match="kcore"):
        load_data(PRESPLIT, DataConfig(kcore=2), verbose=False)


def test_minionerec_csv() -> None:
    d = load_data(MOR, verbose=False)
    assert d.summary["format"] == "minionerec-csv"
    assert triples(d.train) == {
        ("0", ("1", "2"), "3"),
        ("1", ("4",), "2"),
        ("0", ("2", "3", "4", "5", "6", "7", "1", "2", "3", "4"), "5"),  # 11 given, 10 most recent kept
    }
    assert triples(d.test) == {("0", ("1", "2", "3", "4"), "1"), ("1", ("4", "2"), "2")}
    cat = d.catalog
    assert cat.item_ids == ["1", "2", "3", "4", "5", "6", "7"]
    assert cat.record("1")["categories"] == "Food, Kitchen"
    assert cat.record("4")["description"] == ""
    assert cat.record("5")["categories"] == ""
    assert load_catalog(MOR, DataConfig(item_text_fields=["title"])).field_names == ["title"]


def test_minionerec_subfolder_layout(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
        shutil.copy(MOR / f"{split}.csv", tmp_path / split / f"Industrial_5_2016-10-2018-11.csv")
    (tmp_path / "index").mkdir()
    shutil.copy(MOR / "item.json", tmp_path / "index" / "Industrial.item.json")
    d = load_data(tmp_path, verbose=False)
    assert len(d.train) == 3 and len(d.catalog) == 7


def test_load_catalog_and_path_forms() -> None:
    cat = load_catalog(TINY)
    assert len(cat) == 7
    assert load_catalog(TINY / "tiny.item").item_ids == cat.item_ids
    assert load_catalog(PRESPLIT).item_ids == cat.item_ids
    assert load_catalog(TINY, DataConfig(item_text_fields=["title", "industry"])).field_names == ["title", "industry"]
    assert len(load_data(TINY / "tiny.inter", verbose=False).test) == 3
    assert len(load_data(PRESPLIT / "tiny.test.inter", verbose=False).test) == 2


def test_crlf_bom_blank_lines(tmp_path: Path) -> None:
    for f in TINY.iterdir():
        text = f.read_text(encoding="utf-8")
        if f.suffix == ".inter":
            lines = text.split("\n")
            text = "\n".join(lines[:3] + ["", "   "] + lines[3:]) + "\n\n"
        (tmp_path / f.name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    d = load_data(tmp_path, verbose=False)
    ref = load_data(TINY, verbose=False)
    assert triples(d.train) == triples(ref.train) and triples(d.test) == triples(ref.test)
    assert d.catalog.record("i1") == ref.catalog.record("i1")
    t = read_atomic(tmp_path / "tiny.inter")
    assert t.lines[:4] == [2, 3, 6, 7]  # blank lines 4 and 5 skipped, numbering kept


def test_drop_unknown_items(tmp_path: Path) -> None:
    for f in TINY.iterdir():
        shutil.copy(f, tmp_path / f.name)
    with open(tmp_path / "tiny.inter", "a", encoding="utf-8") as fh:
        fh.write("u1\tghost\t151\t0\nu2\tghost\t1\t0\n")
    d = load_data(tmp_path, DataConfig(drop_unknown_items=True), verbose=False)
    assert d.summary["unknown_items_dropped"] == 2
    assert triples(d.test) == triples(load_data(TINY, verbose=False).test)


def test_write_atomic_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "x.inter"
    old_mask = os.umask(0o022)
    try:
        write_atomic(
            p,
            ["user_id:token", ("item_id_list", "token_seq"), "item_id:token", "timestamp:float"],
            [("u1", ["i1", "i2"], "i3", 1.0), ("u2", (), "i1", 2.5), ("u3", "a b", "i2", 7)],
        )
    finally:
        os.umask(old_mask)
    t = read_atomic(p)
    assert t.names == ["user_id", "item_id_list", "item_id", "timestamp"]
    assert t.types == ["token", "token_seq", "token", "float"]
    assert t.col("item_id_list") == ["i1 i2", "", "a b"]
    assert t.floats("timestamp") == [1.0, 2.5, 7.0]
    assert [q.name for q in p.parent.iterdir()] == ["x.inter"]  # no temp file left
    assert p.stat().st_mode & 0o777 == 0o644  # umask respected, not mkstemp's 0600
    with pytest.raises(ValueError, match="TAB or newline"):
        write_atomic(p, ["item_id:token", "title:token_seq"], [("i1", "two\nlines")])
    with pytest.raises(ValueError, match="type must be one of"):
        write_atomic(p, ["item_id:int"], [("i1",)])
    with pytest.raises(ValueError, match="2 values for 1 columns"):
        write_atomic(p, ["item_id:token"], [("i1", "x")])
    assert t.col("user_id") == read_atomic(p).col("user_id")  # failed writes left the old file intact


def test_data_config_validation() -> None:
    assert DataConfig().ratios() == pytest.approx((0.8, 0.1, 0.1))
    assert DataConfig(item_text_fields="title, company").item_text_fields == ["title", "company"]  # type: ignore[arg-type]
    for bad in (
        {"split": "random"},
        {"split_ratios": "8,1"},
        {"split_ratios": "a,b,c"},
        {"split_ratios": "0,1,1"},
        {"max_history": -1},
        {"kcore": 1.5},
    ):
        with pytest.raises(ValueError, match="DataConfig"):
            DataConfig(**bad)  # type: ignore[arg-type]


def test_data_config_parses_with_trl() -> None:
    from trl import TrlParser

    (cfg,) = TrlParser((DataConfig,)).parse_args_and_config(
        ["--split", "temporal", "--max_history", "5", "--collapse_repeats", "false", "--item_text_fields", "title", "company"]
    )
    assert (cfg.split, cfg.max_history, cfg.collapse_repeats) == ("temporal", 5, False)
    assert cfg.item_text_fields == ["title", "company"]
    assert "leave-one-out" in TrlParser((DataConfig,)).format_help()


def test_dataformaterror_is_raised_not_library_errors() -> None:
    with pytest.raises(DataFormatError, match="no such file or folder"):
        load_data(FIX / "does-not-exist")


def test_id_only_atomic_dataset_names_items_by_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No .item file: the catalog is the interaction file's item ids (first appearance), each named by its id, and
    the splits are the ones the same interactions give with an item file."""
    shutil.copytree(TINY, tmp_path / "tiny")
    (tmp_path / "tiny" / "tiny.item").unlink()
    d = load_data(tmp_path / "tiny")
    with_text = load_data(TINY, verbose=False)
    assert d.catalog.text_free and not with_text.catalog.text_free
    assert d.catalog.item_ids == ["i1", "i2", "i3", "i4", "i5", "i6"]  # file order; i7 is only in the .item file
    assert d.catalog.fields == {"title": d.catalog.item_ids} and d.catalog.title_field == "title"
    for split in ("train", "valid", "test"):
        assert triples(getattr(d, split)) == triples(getattr(with_text, split))
    assert d.summary["item_text"].startswith("none") and d.summary["items"] == 6
    assert "no tiny.item file" in capsys.readouterr().err
    assert load_catalog(tmp_path / "tiny").item_ids == d.catalog.item_ids


def test_id_only_presplit_dataset(tmp_path: Path) -> None:
    shutil.copytree(PRESPLIT, tmp_path / "p")
    (tmp_path / "p" / "tiny.item").unlink()
    d = load_data(tmp_path / "p", verbose=False)
    named = {i for ex in (d.train, d.valid, d.test) for e in ex for i in (*e.history, e.target)}
    assert d.catalog.text_free and set(d.catalog.item_ids) == named
    assert triples(d.test) == triples(load_data(PRESPLIT, verbose=False).test)
    # the tokenizer's catalog is the loader's, in the same order, and each split file is read once per load
    assert load_catalog(tmp_path / "p").item_ids == d.catalog.item_ids
    assert d.catalog.noun == load_data(PRESPLIT, verbose=False).catalog.noun


def test_id_only_presplit_files_are_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genrec.data.loader as loader

    shutil.copytree(PRESPLIT, tmp_path / "p")
    (tmp_path / "p" / "tiny.item").unlink()
    reads: list[str] = []
    real = loader.read_atomic

    def counting(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loader, "read_atomic", counting)
    load_data(tmp_path / "p", verbose=False)
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 3, reads
