"""scripts/compare_sasrec.py: the per-level spread and per-kind tables on hand-built lists."""

import importlib.util
import sys
from pathlib import Path

import pytest

from genrec.data.schema import Example
from sid_tokenizer.sidmap import SIDMap

_spec = importlib.util.spec_from_file_location(
    "compare_sasrec", Path(__file__).resolve().parents[1] / "scripts" / "compare_sasrec.py")
compare = importlib.util.module_from_spec(_spec)
sys.modules["compare_sasrec"] = compare  # dataclasses look their module up there
_spec.loader.exec_module(compare)

# Two areas (first code 0 and 1); items a0/a1 are look-alikes (same first three codes), b0 is alone.
SIDS = SIDMap({"a0": (0, 0, 0, 0), "a1": (0, 0, 0, 1), "a2": (0, 1, 0, 0), "b0": (1, 0, 0, 0)}, [2, 2, 2, 2])


def test_prefix_table_counts_matches_and_spread():
    lists = {"clumped": [["a0", "a1", "a2"], ["a0", "a1", "a2"]], "spread": [["b0", "a0", "a2"], ["a2", "b0", "a1"]]}
    table = compare.prefix_table(lists, ["a1", "b0"], SIDS)
    clumped, spread = table["clumped"], table["spread"]
    assert clumped[1] == {"top1": 0.5, "in_top10": 0.5, "distinct": 1.0}  # never leaves area 0
    assert spread[1] == {"top1": 0.0, "in_top10": 1.0, "distinct": 2.0}
    assert clumped[3]["distinct"] == 2.0 and spread[3]["distinct"] == 3.0
    assert clumped[4]["top1"] == 0.0 and clumped[4]["in_top10"] == 0.5  # a1 is listed second for user 1


def test_kind_table_splits_users_by_target_kind():
    examples = [Example("u1", ("a2", "a0"), "a0"),  # re-view, same area as the last item, a look-alike pair
                Example("u2", ("a0",), "b0")]       # new item in another area, alone in its prefix
    lists = {"m": [["a0", "b0"], ["a1", "a2"]]}
    kinds = compare.kind_table(lists, examples, SIDS)
    assert kinds["all"] == {"users": 2, "m": pytest.approx(0.5)}
    assert kinds["repeat target"] == {"users": 1, "m": 1.0}
    assert kinds["new target"] == {"users": 1, "m": 0.0}
    assert kinds["same first code as the last item"]["users"] == 1
    assert kinds["other first code"]["users"] == 1
    assert kinds["look-alikes sharing 3 codes: 2"]["m"] == 1.0
    assert kinds["look-alikes sharing 3 codes: 1"]["m"] == 0.0
