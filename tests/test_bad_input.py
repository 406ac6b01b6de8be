"""The bad-input battery of issue 13: every case gets a one-line error naming what was wrong, or a counted,
reported skip; never a library stack trace, never silent loss. Malformed-file cases of the data loader stay in
tests/test_data_errors.py; this file adds the rest, mostly through the CLI entry (`genrec.cli.main`).

Battery (BATTERY below is the list; `test_battery_counts` keeps the counts honest):

| area      | case                                                  | outcome                       | test                 |
|-----------|-------------------------------------------------------|-------------------------------|----------------------|
| data      | malformed files (header, types, columns, numbers, ids, | error (file, line, field)     | test_data_errors.py  |
|           | UTF-8, duplicates, an item file of another set, JSON,  |  24 cases there               | (27 tests)           |
|           | CSV, ...)                                             |                               |                      |
| data      | items missing from .item (atomic, pre-split), items   | counted, reported: named by id | test_data_errors.py (3 tests) |
|           | with empty text                                       |                               |                      |
| data      | empty .inter                                          | error                         | test_empty_and_header_only_inter_through_cli |
| data      | header-only .inter                                    | error                         | test_empty_and_header_only_inter_through_cli |
| data      | 1 MB text field in .item / .user                      | counted, reported clip        | test_one_megabyte_text_field_is_clipped_and_counted |
| data      | 1 MB id field in .inter                               | error                         | test_one_megabyte_id_is_an_error |
| data      | 1 MB item id in a history list                        | error (bounded length)        | test_one_megabyte_unknown_id_message_stays_short |
| data      | two datasets' files in one folder (RecBole + RecBole,  | error                         | test_two_datasets_in_one_folder |
|           |  RecBole + MiniOneRec, two .item files only)          |                               |                      |
| data      | a folder without .inter (items only / nothing)        | error                         | test_folder_without_inter_through_cli |
| tokenizer | --levels 0                                            | error                         | test_tokenizer_bad_levels_and_codebook |
| tokenizer | --codebook_size 1                                     | error                         | test_tokenizer_bad_levels_and_codebook |
| tokenizer | codebook larger than the catalog                      | reported adjustment (warning + report) | test_codebook_larger_than_catalog |
| tokenizer | --out is an existing file                             | error                         | test_tokenizer_output_is_a_file |
| models    | model folder does not exist (recommend/evaluate/rl)   | error                         | test_model_folder_missing |
| models    | model folder without sid_map.json                     | error                         | test_model_folder_without_sid_map |
| models    | not a model folder (a fit-tokenizer folder as --model) | error                        | test_not_a_model_folder |
| models    | SID map of another data set, other ids (recommend/evaluate/rl) | error                | test_sid_map_of_another_dataset |
| models    | SID map of another data set, same ids, other texts    | error                         | test_sid_map_same_ids_other_texts |
| models    | checkpoint from another layout (recommend/evaluate)   | error                         | test_checkpoint_of_another_layout |
| models    | weights of another model size than config.json        | error                         | test_checkpoint_of_another_size |
| recommend | unknown ids in --history                              | error                         | test_recommend_unknown_ids |
| recommend | empty history                                         | error                         | test_recommend_empty_history |
| recommend | free text that matches no job                         | error                         | test_recommend_text_matching_no_job |
| evaluate  | K larger than the catalog                             | error                         | test_evaluate_k_larger_than_catalog |

Counts: 49 cases (27 in test_data_errors.py + 22 here), 44 clear errors, 5 counted/reported (the 1 MB text clip,
the codebook adjustment, and three data cases that RecBole accepts: items missing from the item file, atomic and
pre-split, and items with empty text, which join the catalog named by their id), 0 stack traces.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from genrec.cli import main
from genrec.data.config import DataConfig
from genrec.data.errors import MAX_MESSAGE_CHARS, DataFormatError
from genrec.data.loader import load_catalog, load_data
from sid_tokenizer.sidmap import SIDMap
from tests.helpers_tiny import copy_tiny_model, tiny_model_dir, tiny_sid_map, write_tiny_data_dir, write_tiny_tokenizer_dir

FIX = Path(__file__).parent / "fixtures" / "data"
MB = 1 << 20
FAST_TOK = ["--tfidf_dim", "16", "--cache_dir", "", "--threads", "1", "--kmeans_iters", "5", "--seed", "0"]
FAST_DEC = ["--num_beams", "4", "--max_block_tokens", "3"]

# (area, case, outcome) for every case of the battery; outcome "error" or "counted".
BATTERY = [
    *[("data", f"test_data_errors.py #{i}", "error") for i in range(1, 25)],
    ("data", "test_data_errors.py: items missing from the item file (atomic)", "counted"),
    ("data", "test_data_errors.py: items missing from the item file (pre-split)", "counted"),
    ("data", "test_data_errors.py: items with empty text", "counted"),
    ("data", "empty .inter", "error"),
    ("data", "header-only .inter", "error"),
    ("data", "1 MB text field", "counted"),
    ("data", "1 MB id", "error"),
    ("data", "1 MB id in a history list", "error"),
    ("data", "two datasets in one folder", "error"),
    ("data", "folder without .inter", "error"),
    ("tokenizer", "--levels 0", "error"),
    ("tokenizer", "--codebook_size 1", "error"),
    ("tokenizer", "codebook larger than the catalog", "counted"),
    ("tokenizer", "--out is an existing file", "error"),
    ("models", "model folder does not exist", "error"),
    ("models", "model folder without sid_map.json", "error"),
    ("models", "not a model folder", "error"),
    ("models", "SID map of another data set (other ids)", "error"),
    ("models", "SID map of another data set (same ids, other texts)", "error"),
    ("models", "checkpoint from another layout", "error"),
    ("models", "weights of another size", "error"),
    ("recommend", "unknown ids in --history", "error"),
    ("recommend", "empty history", "error"),
    ("recommend", "text matching no job", "error"),
    ("evaluate", "K larger than the catalog", "error"),
]


def test_battery_counts() -> None:
    import tests.test_data_errors as existing

    n_existing = sum(1 for name in dir(existing) if name.startswith("test_"))
    assert n_existing == sum(1 for case in BATTERY if case[1].startswith("test_data_errors.py"))
    here = [name for name in globals() if name.startswith("test_") and name != "test_battery_counts"]
    assert len(BATTERY) == 49 and len(here) >= 20
    assert sum(1 for c in BATTERY if c[2] == "error") == 44 and sum(1 for c in BATTERY if c[2] == "counted") == 5


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny data set, its hand-made SID map folder, the tiny model, and a SID map fitted on another catalog."""
    root = tmp_path_factory.mktemp("bad_input")
    data = write_tiny_data_dir(root / "data")
    tok = write_tiny_tokenizer_dir(root / "tok")
    other = SIDMap({f"x{i}": (i % 4, i) for i in range(12)}, [4, 12])  # same codebooks, other item ids
    other.save(root / "other_sid_map.json")
    return {"root": root, "data": str(data), "tok": str(tok), "model": str(tiny_model_dir()),
            "other": str(root / "other_sid_map.json")}


def cli_error(capsys, argv: list[str]) -> str:
    """Run `genrec <argv>`; it must fail with exactly one error line (no traceback); returns that line."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    # (a "--- Logging error ---" trace is pytest's captured stream closed under a library logger, not ours)
    assert err.count("Traceback") == err.count("--- Logging error ---"), err
    lines = [line for line in err.splitlines() if line.startswith(f"genrec {argv[0]}: error:")]
    assert len(lines) == 1, err
    assert len(lines[0]) < MAX_MESSAGE_CHARS + 100, lines[0][:300]
    return lines[0]


def _tiny_atomic(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in (FIX / "tiny").iterdir():
        shutil.copy(f, dest / f.name)
    return dest


# ----------------------------------------------------------------------------------------------- data
def test_empty_and_header_only_inter_through_cli(tmp_path, capsys) -> None:
    d = _tiny_atomic(tmp_path / "d")
    (d / "tiny.inter").write_text("", encoding="utf-8")
    line = cli_error(capsys, ["evaluate", "--data", str(d), "--baselines", "mostpop", "--output_dir", str(tmp_path / "o")])
    assert "tiny.inter: empty file (expected a 'name:type' header line and data lines)" in line
    (d / "tiny.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n", encoding="utf-8")
    line = cli_error(capsys, ["evaluate", "--data", str(d), "--baselines", "mostpop", "--output_dir", str(tmp_path / "o")])
    assert "tiny.inter: no data lines after the header" in line


def test_one_megabyte_text_field_is_clipped_and_counted(tmp_path, capsys) -> None:
    d = _tiny_atomic(tmp_path / "d")
    lines = (d / "tiny.item").read_text(encoding="utf-8").split("\n")
    cols = lines[2].split("\t")
    cols[1] = "A" * MB  # a 1 MB title on line 3
    lines[2] = "\t".join(cols)
    (d / "tiny.item").write_text("\n".join(lines), encoding="utf-8")
    cat = load_catalog(d)
    assert len(cat.record(cols[0])["title"]) == DataConfig().max_field_chars
    err = capsys.readouterr().err
    assert "tiny.item: 1 text value(s) longer than max_field_chars=100,000 clipped to it (first: line 3, " \
           "field 'title', 1,048,576 characters)" in err
    data = load_data(d, verbose=False)
    assert data.summary["text_values_clipped"] == 1  # the load summary counts it
    assert load_data(d, DataConfig(max_field_chars=0), verbose=False).summary["text_values_clipped"] == 0
    assert len(load_catalog(d, DataConfig(max_field_chars=0)).record(cols[0])["title"]) == MB  # no limit


def test_one_megabyte_id_is_an_error(tmp_path) -> None:
    d = _tiny_atomic(tmp_path / "d")
    lines = (d / "tiny.inter").read_text(encoding="utf-8").split("\n")
    lines[3] = "u" * MB + "\ti2\t110\t3"
    (d / "tiny.inter").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_data(d, verbose=False)
    e = exc.value
    assert (Path(e.path).name, e.line, e.field) == ("tiny.inter", 4, "user_id")
    assert "expected an id of at most 1,000 characters, got 1,048,576" in str(e) and len(str(e)) < 400


def test_one_megabyte_unknown_id_message_stays_short(tmp_path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    for f in (FIX / "tiny-presplit").iterdir():
        shutil.copy(f, d / f.name)
    lines = (d / "tiny.train.inter").read_text(encoding="utf-8").split("\n")
    lines[2] = "u1\ti1 " + "z" * MB + "\ti2"
    (d / "tiny.train.inter").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_data(d, verbose=False)
    msg = str(exc.value)
    assert "tiny.train.inter, line 3, field 'item_id_list': item 'zzz" in msg and "(1,048,576 characters)" in msg
    assert len(msg) < 400 and "\n" not in msg


def test_two_datasets_in_one_folder(tmp_path, capsys) -> None:
    d = _tiny_atomic(tmp_path / "d")  # RecBole + RecBole: in test_data_errors.py; here RecBole + MiniOneRec
    for f in (FIX / "tiny-minionerec").iterdir():
        shutil.copy(f, d / f.name)
    line = cli_error(capsys, ["evaluate", "--data", str(d), "--baselines", "mostpop", "--output_dir", str(tmp_path / "o")])
    assert "several datasets here (tiny.inter, MiniOneRec item.json); pass the path of the one to load" in line
    assert len(load_data(d / "tiny.inter", verbose=False).test) == 3  # naming one resolves it
    items = tmp_path / "items"  # two item files, no interactions: which catalog?
    items.mkdir()
    shutil.copy(FIX / "tiny" / "tiny.item", items / "a.item")
    shutil.copy(FIX / "tiny" / "tiny.item", items / "b.item")
    line = cli_error(capsys, ["fit-tokenizer", "--data", str(items), "--out", str(tmp_path / "t"), *FAST_TOK])
    assert "several item files and no interaction file here (a.item, b.item)" in line


def test_folder_without_inter_through_cli(tmp_path, capsys) -> None:
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(FIX / "tiny" / "tiny.item", d / "tiny.item")
    line = cli_error(capsys, ["evaluate", "--data", str(d), "--baselines", "mostpop", "--output_dir", str(tmp_path / "o")])
    assert "tiny.item: no interaction file: expected tiny.inter or pre-split files" in line
    (d / "tiny.item").unlink()
    line = cli_error(capsys, ["evaluate", "--data", str(d), "--baselines", "mostpop", "--output_dir", str(tmp_path / "o")])
    assert "no dataset found: expected <name>.inter + <name>.item" in line


# ----------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_bad_levels_and_codebook(env, tmp_path, capsys) -> None:
    base = ["fit-tokenizer", "--data", env["data"], "--out", str(tmp_path / "t"), *FAST_TOK]
    assert "tokenizer config: levels=0 is invalid: expected an integer from 1 to 20" in cli_error(capsys, base + ["--levels", "0"])
    assert "tokenizer config: codebook_size=1 is invalid: expected an integer >= 2" in \
        cli_error(capsys, base + ["--codebook_size", "1"])
    assert "template='{title}' is invalid: expected no template with encoder 'tfidf-fields'" in \
        cli_error(capsys, base + ["--template", "{title}"])  # the default encoder embeds each field on its own
    assert not (tmp_path / "t").exists()  # nothing written


def test_codebook_larger_than_catalog(env, tmp_path, capsys) -> None:
    out = tmp_path / "t"
    with pytest.warns(UserWarning, match=r"catalog of 48 items is small for codebook_size=256: using 12 codes per level"):
        assert main(["fit-tokenizer", "--data", env["data"], "--out", str(out), "--levels", "2",
                     "--codebook_size", "256", *FAST_TOK]) == 0
    report = json.loads((out / "tokenizer_report.json").read_text())
    assert report["codebook_sizes"][:2] == [12, 12]  # the adjustment is recorded, every item still has a SID
    assert len(SIDMap.load(out)) == 48


def test_tokenizer_output_is_a_file(env, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    line = cli_error(capsys, ["fit-tokenizer", "--data", env["data"], "--out", str(tmp_path / "afile"), *FAST_TOK])
    assert "afile: --out is an existing file; expected a folder to write into" in line
    line = cli_error(capsys, ["fit-tokenizer", "--data", env["data"], "--out", str(tmp_path / "afile" / "sub"), *FAST_TOK])
    assert "afile: is a file, so --out" in line
    assert (tmp_path / "afile").read_text() == "x"


# ----------------------------------------------------------------------------------------------- models
def _recommend(env, model, *extra):
    return ["recommend", "--model", str(model), "--data", env["data"], "--history", "j001, j002", *FAST_DEC, *extra]


def _evaluate(env, model, out, *extra):
    return ["evaluate", "--model", str(model), "--data", env["data"], "--output_dir", str(out), "--baselines", "",
            *FAST_DEC, "--progress", "false", *extra]


def _rl(env, model, out, *extra):
    return ["rl", "--model", str(model), "--data", env["data"], "--output_dir", str(out), "--use_cpu", "true", *extra]


def test_model_folder_missing(env, tmp_path, capsys) -> None:
    nope = tmp_path / "nope"
    for argv in (_recommend(env, nope, "--sid_map", env["tok"]), _evaluate(env, nope, tmp_path / "o"),
                 _rl(env, nope, tmp_path / "o")):
        assert f"{nope}: model folder not found (--model)" in cli_error(capsys, argv)


def test_model_folder_without_sid_map(env, tmp_path, capsys) -> None:
    model = tiny_model_dir()  # build-model output made from a SID map object: it keeps no sid_map.json
    assert not (model / "sid_map.json").exists()
    for argv in (_recommend(env, model), _evaluate(env, model, tmp_path / "o"), _rl(env, model, tmp_path / "o")):
        line = cli_error(capsys, argv)
        assert f"{model / 'sid_map.json'}: SID map not found; pass --sid_map" in line


def test_not_a_model_folder(env, tmp_path, capsys) -> None:
    tok = tmp_path / "tok"
    assert main(["fit-tokenizer", "--data", env["data"], "--out", str(tok), "--levels", "2", "--codebook_size", "4",
                 *FAST_TOK]) == 0
    line = cli_error(capsys, _recommend(env, tok))
    assert f"{tok}: not a model folder, it has no config.json (this is a genrec fit-tokenizer folder: pass it as " \
           "--sid_map)" in line
    (tmp_path / "weights.bin").write_text("x")
    assert "weights.bin: --model is a file; expected a model folder" in \
        cli_error(capsys, _evaluate(env, tmp_path / "weights.bin", tmp_path / "o"))


def test_sid_map_of_another_dataset(env, tmp_path, capsys) -> None:
    expected = f"{env['other']}: SID map of another data set: none of the 48 items of {env['data']} has a SID"
    assert expected in cli_error(capsys, _recommend(env, env["model"], "--sid_map", env["other"]))
    assert expected in cli_error(capsys, _evaluate(env, env["model"], tmp_path / "o", "--sid_map", env["other"]))
    assert expected in cli_error(capsys, _rl(env, env["model"], tmp_path / "o", "--sid_map", env["other"]))
    # a map that lacks only some catalog items is a counted, reported skip (they are never recommended)
    sm = tiny_sid_map()
    partial = SIDMap({k: v for k, v in sm.item_to_codes.items() if k != "j311"}, sm.codebook_sizes)
    from genrec.checks import check_sid_map_catalog
    from genrec.data.loader import load_catalog as lc

    assert check_sid_map_catalog(partial, lc(env["data"]), "p.json", "d", command="recommend") == 1
    assert "[recommend] 1 of 48 catalog items of d have no SID in p.json (e.g. 'j311'); they are never recommended" \
        in capsys.readouterr().err


def test_sid_map_same_ids_other_texts(env, tmp_path, capsys) -> None:
    tok = tmp_path / "tok"
    assert main(["fit-tokenizer", "--data", env["data"], "--out", str(tok), "--levels", "2", "--codebook_size", "4",
                 *FAST_TOK]) == 0
    fitted = SIDMap.load(tok).catalog
    assert fitted["source"] == "data" and fitted["items"] == 48 and len(fitted["sha256"]) == 64
    data2 = write_tiny_data_dir(tmp_path / "data2")  # the same item ids with other titles: another market
    item = data2 / "tiny-jobs.item"
    item.write_text(item.read_text().replace("Analyst", "Welder").replace("Nurse", "Baker"))
    argv = ["recommend", "--model", env["model"], "--sid_map", str(tok), "--data", str(data2), "--history", "j001",
            *FAST_DEC]
    line = cli_error(capsys, argv)
    assert f"{tok}: SID map fitted on another catalog (fitted on 'data', 48 items): {data2} has its item ids but " \
           "other item texts" in line
    # the catalog it was fitted on passes the check (and a reordered file is the same catalog)
    from genrec.checks import check_sid_map_catalog

    cat = load_catalog(env["data"])
    assert check_sid_map_catalog(SIDMap.load(tok), cat, tok, env["data"]) == 0


def test_checkpoint_of_another_layout(env, tmp_path, capsys) -> None:
    model = copy_tiny_model(tmp_path / "m")
    info = json.loads((model / "genrec_model.json").read_text())
    (model / "genrec_model.json").write_text(json.dumps({**info, "stage": "sft1", "layout": "direct"}))
    line = cli_error(capsys, _recommend(env, model, "--sid_map", env["tok"], "--layout", "interleaved"))
    assert "a stage-1 model (layout 'direct' in genrec_model.json) writes SID tokens only; it needs --layout direct" in line
    (model / "genrec_model.json").write_text(json.dumps({**info, "stage": "sft2", "layout": "blocks_first"}))
    line = cli_error(capsys, _evaluate(env, model, tmp_path / "o", "--sid_map", env["tok"], "--layout", "interleaved"))
    assert "the model was trained on the 'blocks_first' layout (genrec_model.json) but --layout is 'interleaved'" in line


def test_checkpoint_of_another_size(env, tmp_path, capsys) -> None:
    model = copy_tiny_model(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "hidden_size": 32, "intermediate_size": 64}))
    line = cli_error(capsys, _recommend(env, model, "--sid_map", env["tok"]))
    assert f"{model}: its weights do not fit its config.json (tensor sizes differ)" in line


# ----------------------------------------------------------------------------------------------- recommend, evaluate
def _rec(env, history):
    return ["recommend", "--model", env["model"], "--sid_map", env["tok"], "--data", env["data"], "--history", history,
            *FAST_DEC]


def test_recommend_unknown_ids(env, capsys) -> None:
    line = cli_error(capsys, _rec(env, "j001, zz999"))
    assert "history: 1 of 2 ids are not items of the catalog: 'zz999' (its ids look like 'j000'" in line
    line = cli_error(capsys, _rec(env, "45038 34036"))  # ids of another data set
    assert "2 of 2 ids are not items of the catalog: '45038', '34036'" in line


def test_recommend_empty_history(env, capsys) -> None:
    for history in (" , ", ";", " ; ;"):
        assert "has no entries: give item ids (comma- or space-separated) or free-text entries separated by ';'" \
            in cli_error(capsys, _rec(env, history))
    assert "give exactly one of --history (item ids or free text) and --user" in cli_error(capsys, _rec(env, ""))


def test_recommend_text_matching_no_job(env, capsys) -> None:
    line = cli_error(capsys, _rec(env, "xqzv wpok"))
    assert "history entry 'xqzv wpok' is neither a catalog item id nor close to any job text" in line


def test_evaluate_k_larger_than_catalog(env, tmp_path, capsys) -> None:
    line = cli_error(capsys, _evaluate(env, env["model"], tmp_path / "o", "--sid_map", env["tok"], "--topk", "5,100"))
    assert "top-k 100 is larger than the catalog (48 items); every K of --topk must be at most 48" in line
    assert not (tmp_path / "o").exists()
