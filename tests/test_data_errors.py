"""Every kind of bad input gives a DataFormatError naming the file, the line and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from genrec.data.config import DataConfig
from genrec.data.errors import DataFormatError
from genrec.data.loader import load_catalog, load_data
from genrec.data.recbole import read_atomic

FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A writable copy of the tiny atomic dataset."""
    for f in (FIX / "tiny").iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


@pytest.fixture
def presplit(tmp_path: Path) -> Path:
    for f in (FIX / "tiny-presplit").iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


@pytest.fixture
def mor(tmp_path: Path) -> Path:
    for f in (FIX / "tiny-minionerec").iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def edit_line(path: Path, lineno: int, new: str | None) -> None:
    """Replace (or delete, when `new` is None) 1-based line `lineno`."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if new is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = new
    path.write_text("\n".join(lines), encoding="utf-8")


def check(exc: pytest.ExceptionInfo[DataFormatError], name: str, line: int | None, field: str | None, words: str) -> None:
    e = exc.value
    assert Path(e.path).name == name, str(e)
    assert e.line == line, str(e)
    assert e.field == field, str(e)
    assert words in str(e), str(e)
    assert name in str(e)




def test_missing_header_and_empty_file(tiny: Path) -> None:
    (tiny / "tiny.inter").write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", None, None, "empty file")
    (tiny / "tiny.inter").write_text("\nu1\ti1\t1\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 1, None, "expected a 'name:type' header")
    (tiny / "tiny.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", None, None, "no data lines")


def test_header_entry_without_type(tiny: Path) -> None:
    # a header-less file: the first data line is read as the header and rejected
    edit_line(tiny / "tiny.inter", 1, None)
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 1, "u1", "is not 'name:type'")
    edit_line(tiny / "tiny.item", 1, "item_id:token\ttitle\tcompany:token_seq\tindustry:token_seq")
    with pytest.raises(DataFormatError) as exc:
        load_catalog(tiny)
    check(exc, "tiny.item", 1, "title", "header entry 2")


def test_unknown_type_and_duplicate_column(tiny: Path) -> None:
    edit_line(tiny / "tiny.inter", 1, "user_id:token\titem_id:token\ttimestamp:int\tview_seconds:float")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 1, "timestamp", "unknown type 'int'")
    edit_line(tiny / "tiny.inter", 1, "user_id:token\titem_id:token\ttimestamp:float\titem_id:float")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 1, "item_id", "duplicate column")


def test_missing_required_column(tiny: Path) -> None:
    edit_line(tiny / "tiny.inter", 1, "user_id:token\titem_id:token\ttime:float\tview_seconds:float")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 1, "timestamp", "missing required column(s) 'timestamp'")
    edit_line(tiny / "tiny.user", 1, "uid:token\texperience:token_seq\tinterests:token_seq")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, DataConfig(), verbose=False)
    check(exc, "tiny.user", 1, "user_id", "missing required column")


def test_wrong_column_count(tiny: Path) -> None:
    edit_line(tiny / "tiny.inter", 6, "u1\ti3\t130")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 6, None, "expected 4 TAB-separated fields")
    edit_line(tiny / "tiny.inter", 6, "u1\ti3\t130\t2\textra")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 6, None, "found 5")


def test_non_numeric_timestamp(tiny: Path) -> None:
    edit_line(tiny / "tiny.inter", 9, "u1\ti1\t2014-11-06\t4")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 9, "timestamp", "expected a finite number, got '2014-11-06'")
    edit_line(tiny / "tiny.inter", 9, "u1\ti1\t\t4")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 9, "timestamp", "expected a finite number, got ''")
    edit_line(tiny / "tiny.inter", 9, "u1\ti1\tnan\t4")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 9, "timestamp", "expected a finite number, got 'nan'")


def test_empty_id(tiny: Path) -> None:
    edit_line(tiny / "tiny.inter", 4, "\ti2\t110\t3")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", 4, "user_id", "empty value")


def test_duplicate_item_ids(tiny: Path) -> None:
    edit_line(tiny / "tiny.item", 8, "i3\tData Analyst\tInitech\tTechnology")
    with pytest.raises(DataFormatError) as exc:
        load_catalog(tiny)
    check(exc, "tiny.item", 8, "item_id", "duplicate item id 'i3' (first on line 4)")


def test_duplicate_user_ids(tiny: Path) -> None:
    with open(tiny / "tiny.user", "a", encoding="utf-8") as f:
        f.write("u2\tx\ty\n")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.user", 5, "user_id", "duplicate user id 'u2' (first on line 3)")


def test_unknown_items_join_the_catalog_by_id_or_drop(tiny: Path) -> None:
    """An interaction item missing from the .item file joins the catalog named by its id (RecBole keeps such
    interactions), in the same order for load_catalog (the tokenizer) and load_data; drop_unknown_items drops it."""
    edit_line(tiny / "tiny.inter", 11, "u3\tnope\t95\t1")
    d = load_data(tiny, verbose=False)
    assert d.summary["items_not_in_item_file"] == 1 and d.summary["unknown_items_dropped"] == 0
    assert d.catalog.item_ids[-1] == "nope"
    assert d.catalog.record("nope") == {"title": "nope", "company": "", "industry": ""}
    assert load_catalog(tiny).item_ids == d.catalog.item_ids
    assert any("nope" in (*e.history, e.target) for e in d.train + d.valid + d.test)
    kept = load_data(tiny, DataConfig(drop_unknown_items=True), verbose=False)
    assert kept.summary["unknown_items_dropped"] == 1 and "nope" not in kept.catalog
    assert "nope" not in load_catalog(tiny, DataConfig(drop_unknown_items=True))


def test_item_file_of_another_dataset(tiny: Path) -> None:
    text = (tiny / "tiny.item").read_text(encoding="utf-8")
    (tiny / "tiny.item").write_text(text.replace("\ti", "\tx").replace("\ni", "\nx"), encoding="utf-8")
    for load in (lambda: load_data(tiny, verbose=False), lambda: load_catalog(tiny)):
        with pytest.raises(DataFormatError) as exc:
            load()
        check(exc, "tiny.inter", None, "item_id", "none of the 6 item ids in the interactions is in the item file")


def test_unknown_items_presplit(presplit: Path) -> None:
    edit_line(presplit / "tiny.train.inter", 3, "u1\ti1 zz\ti2")
    d = load_data(presplit, verbose=False)
    assert d.summary["items_not_in_item_file"] == 1 and d.catalog.record("zz")["title"] == "zz"
    assert load_catalog(presplit).item_ids == d.catalog.item_ids
    d = load_data(presplit, DataConfig(drop_unknown_items=True), verbose=False)
    assert d.summary["unknown_items_dropped"] == 1
    assert (len(d.train), d.summary["train_rows_read"]) == (2, 3)


def test_items_without_text_are_named_by_id(tiny: Path) -> None:
    edit_line(tiny / "tiny.item", 6, "i5\t\t \t")
    cat = load_catalog(tiny)
    assert cat.record("i5") == {"title": "i5", "company": "", "industry": ""}
    assert load_data(tiny, verbose=False).summary["items_without_text"] == 1
    # selecting only a field that is empty for some items: those items are named by id in it
    cat = load_catalog(FIX / "tiny", DataConfig(item_text_fields=["industry"]))
    assert cat.record("i2") == {"industry": "i2"} and cat.record("i1") == {"industry": "Food and Beverages"}


def test_unknown_text_field(tiny: Path) -> None:
    with pytest.raises(DataFormatError) as exc:
        load_catalog(tiny, DataConfig(item_text_fields=["salary"]))
    check(exc, "tiny.item", 1, "salary", "not a text column")
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, DataConfig(profile_fields=["age"]), verbose=False)
    check(exc, "tiny.user", 1, "age", "not a text column")


def test_non_utf8(tiny: Path) -> None:
    raw = (tiny / "tiny.item").read_bytes().replace("Caf\u00e9".encode(), b"Caf\xe9")  # Latin-1 e-acute
    (tiny / "tiny.item").write_bytes(raw)
    with pytest.raises(DataFormatError) as exc:
        load_catalog(tiny)
    check(exc, "tiny.item", 5, None, "not valid UTF-8 (byte 0xe9")


def test_empty_split(tiny: Path) -> None:
    # every user has exactly 3 interactions -> leave-one-out leaves train empty
    (tiny / "tiny.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\t2\nu1\ti3\t3\n", encoding="utf-8"
    )
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, verbose=False)
    check(exc, "tiny.inter", None, None, "the train split is empty")
    assert "min_interactions=3" in str(exc.value)


def test_empty_presplit_file(presplit: Path) -> None:
    (presplit / "tiny.valid.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n")
    with pytest.raises(DataFormatError) as exc:
        load_data(presplit, verbose=False)
    check(exc, "tiny.valid.inter", None, None, "no data lines")
    # rows exist but all are dropped as unknown: the split is empty
    (presplit / "tiny.valid.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\nu1\ti1\tzz\n")
    with pytest.raises(DataFormatError) as exc:
        load_data(presplit, DataConfig(drop_unknown_items=True), verbose=False)
    check(exc, "tiny.valid.inter", None, None, "the valid split is empty")


def test_missing_presplit_file(presplit: Path) -> None:
    (presplit / "tiny.test.inter").unlink()
    with pytest.raises(DataFormatError) as exc:
        load_data(presplit, verbose=False)
    check(exc, "tiny.test.inter", None, None, "missing pre-split file")


def test_ambiguous_folder(tiny: Path) -> None:
    shutil.copy(tiny / "tiny.inter", tiny / "other.inter")
    with pytest.raises(DataFormatError, match="several datasets here") as exc:
        load_data(tiny, verbose=False)
    assert "other.inter" in str(exc.value) and "tiny.inter" in str(exc.value)
    assert len(load_data(tiny / "tiny.inter", verbose=False).test) == 3  # naming the file resolves it


def test_items_only_folder(tmp_path: Path) -> None:
    shutil.copy(FIX / "tiny" / "tiny.item", tmp_path / "tiny.item")
    assert len(load_catalog(tmp_path)) == 7  # enough for the tokenizer
    assert len(load_catalog(tmp_path / "tiny.item")) == 7
    with pytest.raises(DataFormatError) as exc:
        load_data(tmp_path, verbose=False)
    check(exc, "tiny.item", None, None, "no interaction file")


def test_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="no dataset found"):
        load_data(tmp_path, verbose=False)


def test_minionerec_bad_history(mor: Path) -> None:
    edit_line(mor / "train.csv", 3, '1,"4, 2",2,"[]",Server')
    with pytest.raises(DataFormatError) as exc:
        load_data(mor, verbose=False)
    check(exc, "train.csv", 3, "history_item_id", "expected a list like")


def test_minionerec_missing_column_and_lines_after_multiline_field(mor: Path) -> None:
    # a quoted field spanning two lines: the next record's line number still counts physical lines
    (mor / "valid.csv").write_text(
        'user_id,history_item_id,item_id,item_title\n0,"[1]",2,"two\nlines"\n0,"[1]",\n', encoding="utf-8"
    )
    with pytest.raises(DataFormatError) as exc:
        load_data(mor, verbose=False)
    check(exc, "valid.csv", 4, None, "expected 4 fields, found 3")
    (mor / "valid.csv").write_text("user_id,history,item_id\n0,[1],2\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_data(mor, verbose=False)
    check(exc, "valid.csv", 1, "history_item_id", "missing required column")


def test_minionerec_unknown_item_and_missing_split(mor: Path) -> None:
    edit_line(mor / "test.csv", 3, '1,"[4, 99]",2,"[]",Server')
    d = load_data(mor, verbose=False)
    assert d.summary["items_not_in_item_file"] == 1 and d.catalog.record("99")["title"] == "99"
    assert load_catalog(mor).item_ids == d.catalog.item_ids
    (mor / "valid.csv").unlink()
    with pytest.raises(DataFormatError, match="missing valid CSV"):
        load_data(mor, verbose=False)


def test_minionerec_item_json_errors(mor: Path) -> None:
    p = mor / "item.json"
    p.write_text('{\n "1": {"title": "a"},\n "2": {"title": "b"},\n "1": {"title": "c"}\n}', encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_catalog(mor)
    check(exc, "item.json", None, "item_id", "duplicate item id '1'")
    p.write_text('{\n "1": {"title": "a"},\n "2": {"title": "b"\n}', encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_catalog(mor)
    check(exc, "item.json", 4, None, "invalid JSON")
    p.write_text(json.dumps({"1": {"title": "", "description": None}, "2": {"title": "b"}}), encoding="utf-8")
    assert load_catalog(mor).record("1") == {"title": "1", "description": ""}  # no text: named by its id
    p.write_text(json.dumps([{"item_id": 1, "title": "a"}, {"title": "b"}]), encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_catalog(mor)
    check(exc, "item.json", None, "item_id", "record #1")
    p.write_text(json.dumps([{"id": 1, "title": "a"}, {"id": 2, "title": "b"}]), encoding="utf-8")
    assert load_catalog(mor).item_ids[:2] == ["1", "2"]  # the rest: interaction ids the file lacks


def test_read_atomic_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as exc:
        read_atomic(tmp_path / "x.inter")
    check(exc, "x.inter", None, None, "file not found")


def test_item_text_fields_without_an_item_file(tiny: Path) -> None:
    (tiny / "tiny.item").unlink()  # an ID-only dataset loads (tests/test_data_loaders.py), but has no columns to pick
    with pytest.raises(DataFormatError) as exc:
        load_data(tiny, DataConfig(item_text_fields=["title"]), verbose=False)
    check(exc, "tiny.item", None, None, "missing item file, but item_text_fields ['title'] asks for its columns")
