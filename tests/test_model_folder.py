"""genrec/model_folder.py: the schema of genrec_model.json (older keys included), atomic saves, the layout guard and
the block-budget resolver. The real stages writing and reading it are tested in test_sft.py (sft -> rl/evaluate with a
wrong layout), test_rl_cli.py and test_rl_block_budget.py."""

from __future__ import annotations

import json

import pytest

from genrec.model_folder import (
    MODEL_INFO_FILE,
    ModelInfo,
    check_layout,
    load_info,
    resolve_block_budget,
    resolve_layout,
    save_model_folder,
)
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS


def test_older_files_map_onto_the_schema(tmp_path):
    (tmp_path / MODEL_INFO_FILE).write_text(json.dumps({
        "origin": "tiny", "sft_stage": 2, "rl_algorithm": "grpo", "rl_layout": "blocks_first",
        "rl_max_block_tokens": 40, "rl_base": "runs/sft2/final", "rl_steps": 3}))
    info = load_info(tmp_path)
    assert (info.stage, info.layout, info.max_block_tokens, info.base) == ("rl", "blocks_first", 40, "runs/sft2/final")
    assert info.extra == {"origin": "tiny", "rl_steps": 3}
    assert resolve_layout(tmp_path, info, "auto") == "blocks_first"
    assert resolve_block_budget(info, 0) == 40 and resolve_block_budget(info, 7) == 7
    legacy_stage1 = ModelInfo.from_dict({"sft_stage": 1})
    assert legacy_stage1.stage == "sft1" and resolve_layout(tmp_path, legacy_stage1, "auto") == "direct"
    assert load_info(tmp_path / "nothing") == ModelInfo()
    assert resolve_block_budget(ModelInfo(), 0) == DEFAULT_MAX_BLOCK_TOKENS


def test_save_is_atomic_and_round_trips(tmp_path):
    from tests.helpers_tiny import tiny_sid_map

    out = tmp_path / "final"
    info = ModelInfo(stage="sft2", layout="interleaved", max_block_tokens=53, sft_stage=2, base="m", extra={"x": 1})
    save_model_folder(out, info, sid_map=tiny_sid_map())
    assert load_info(out) == info and (out / "sid_map.json").is_file()
    derived = info.derive(stage="rl", rl_algorithm="sapo", extra={"rl_steps": 2})
    assert derived.to_dict() == {"stage": "rl", "layout": "interleaved", "max_block_tokens": 53, "sft_stage": 2,
                                 "rl_algorithm": "sapo", "base": "m", "x": 1, "rl_steps": 2}

    class Broken:
        def save_pretrained(self, path, **kw):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_model_folder(out, derived, model=Broken())
    assert load_info(out) == info, "the old folder stays when a save fails"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"], "no temporary folder left"


def test_layout_guard(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        ModelInfo(layout="sideways")
    check_layout(tmp_path, ModelInfo(stage="base"), "blocks_first")  # a base model accepts any layout
    check_layout(tmp_path, ModelInfo(stage="sft2", layout="blocks_first"), "blocks_first")
    with pytest.raises(ValueError, match="trained on the 'blocks_first' layout .* pass --layout blocks_first"):
        check_layout(tmp_path, ModelInfo(stage="sft2", layout="blocks_first"), "interleaved")
    with pytest.raises(ValueError, match="needs --layout direct"):
        check_layout(tmp_path, ModelInfo(stage="sft1", layout="direct"), "interleaved")
    with pytest.raises(ValueError, match="--layout direct is for stage-1 models"):
        check_layout(tmp_path, ModelInfo(stage="rl", layout="interleaved"), "direct")
    with pytest.raises(ValueError, match="--layout direct is for stage-1 models"):
        check_layout(tmp_path, ModelInfo.from_dict({"sft_stage": 2}), "direct")  # older file, no layout
