"""The trace dataset: (prompt, completion) rows for stage-2 SFT, saved with `datasets` and validated on load.

Row fields: prompt, completion (rendered by genrec.response.render_response, no EOS), user_id, target,
codes (the target's SID codes), blocks (the K rationale texts, so another layout can be re-rendered).
Folder layout: `<out>/train`, `<out>/valid` (DatasetDict.save_to_disk), `traces_config.json`,
`prompt_config.json` (the prompt settings SFT/RL/eval must reuse).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from datasets import Dataset, DatasetDict, load_from_disk

from genrec.data.errors import DataFormatError
from genrec.data.schema import Catalog, Example
from genrec.prompts import PromptConfig, fit_prompt
from genrec.stage_output import check_complete
from genrec.traces.budget import TRACES_CONFIG_FILE
from genrec.grammar import block_levels
from genrec.response import INTERLEAVED, render_response
from sid_tokenizer.sidmap import LEVEL_LETTERS, SID_TOKEN_RE, SIDMap, atomic_write_text, sid_string, sid_token

COLUMNS = ("prompt", "completion", "user_id", "target", "codes", "blocks")

BlocksFn = Callable[[Sequence[Example]], list[list[str]]]
"""A teacher: K rationale texts for each example of a batch."""


def render_completion(blocks: Sequence[str], codes: Sequence[int], layout: str) -> str:
    """The completion text for SFT. It starts with `<think>` (or a SID token): an added token, so TRL's
    prompt+completion join (no separator) cannot merge it with the prompt's last word."""
    tokens = [sid_token(k, c) for k, c in enumerate(codes)]
    return render_response(list(blocks), tokens, layout)


def build_trace_rows(
    examples: Sequence[Example],
    catalog: Catalog,
    sid_map: SIDMap,
    tokenizer,
    prompt_cfg: PromptConfig,
    teacher: BlocksFn,
    *,
    layout: str = INTERLEAVED,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, list]:
    """Columns of the trace dataset for `examples` (teacher called batch by batch)."""
    from tqdm.auto import tqdm

    rows: dict[str, list] = {c: [] for c in COLUMNS}
    with_block = block_levels(layout, sid_map.num_levels)
    bar = tqdm(total=len(examples), desc="traces", disable=not progress)
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start : start + batch_size])
        for ex in batch:
            if ex.target not in sid_map:
                raise ValueError(f"user {ex.user_id!r}: target {ex.target!r} has no SID in the SID map")
        fitted = [fit_prompt(ex, catalog, sid_map, tokenizer, prompt_cfg) for ex in batch]
        # The teacher sees the history the prompt shows: when the token budget drops old lines, the blocks must not
        # cite them, and line numbers start at the first line shown.
        all_blocks = teacher([replace(ex, history=ex.history[len(ex.history) - shown:])
                              for ex, (_, shown) in zip(batch, fitted)])
        for ex, blocks, (prompt, _) in zip(batch, all_blocks, fitted):
            if len(blocks) != sid_map.num_levels:
                raise ValueError(f"teacher gave {len(blocks)} blocks for user {ex.user_id!r}, expected {sid_map.num_levels}")
            codes = list(sid_map.codes(ex.target))
            blocks = [b if k in with_block else "" for k, b in enumerate(blocks)]  # levels the layout has no block for
            rows["prompt"].append(prompt)
            rows["completion"].append(render_completion(blocks, codes, layout))
            rows["user_id"].append(ex.user_id)
            rows["target"].append(ex.target)
            rows["codes"].append(codes)
            rows["blocks"].append(list(blocks))
        bar.update(len(batch))
    bar.close()
    return rows


def save_traces(out_dir: str | os.PathLike, splits: dict[str, dict[str, list]], info: dict, prompt_cfg: PromptConfig) -> Path:
    """Write the DatasetDict and its config files; the dataset folder is replaced only when complete."""
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dd = DatasetDict({name: Dataset.from_dict(cols) for name, cols in splits.items()})
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".dataset."))
    try:
        dd.save_to_disk(str(tmp))
        for name in splits:
            if (out_dir / name).exists():
                shutil.rmtree(out_dir / name)
        for entry in tmp.iterdir():
            os.replace(entry, out_dir / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prompt_cfg.save(out_dir)
    atomic_write_text(out_dir / TRACES_CONFIG_FILE, json.dumps(info, indent=1))
    return out_dir


def load_traces(path: str | os.PathLike, sid_map: SIDMap, split: str = "train") -> Dataset:
    """Load one split and check every row against the SID map (DataFormatError naming row and field)."""
    path = Path(path)
    check_complete(path)  # half-written by an interrupted `genrec traces`: refused in one line
    folder = path / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: trace split '{split}' not found (run `genrec traces` first)")
    ds = load_from_disk(str(folder))
    missing = [c for c in ("prompt", "completion", "target", "codes") if c not in ds.column_names]
    if missing:
        raise DataFormatError(folder, f"missing columns {missing} (have {ds.column_names})")
    validate_trace_rows(ds, sid_map, folder)
    return ds


def validate_trace_rows(ds: Dataset, sid_map: SIDMap, where: str | os.PathLike) -> None:
    """Every row's codes must be a catalog SID, and the completion's SID tokens must spell exactly those codes."""
    for i, row in enumerate(ds.select_columns(["completion", "target", "codes"])):
        codes = tuple(row["codes"])
        item = sid_map.item_for_codes(codes)
        if item is None:
            raise DataFormatError(where, f"row {i}: SID {sid_string(codes)} (target {row['target']!r}) is not in the SID map's "
                                         f"catalog (traces built with another SID map?)", field="codes")
        if item != row["target"]:
            raise DataFormatError(where, f"row {i}: codes belong to item {item!r}, not to target {row['target']!r}",
                                  field="codes")
        found = _found_levels(row["completion"])
        if [c for _, c in found] != list(codes) or [lvl for lvl, _ in found] != list(range(len(codes))):
            toks = [m.group(0) for m in SID_TOKEN_RE.finditer(row["completion"])]
            raise DataFormatError(where, f"row {i}: completion SID tokens {toks} do not spell the target's SID "
                                         f"{sid_map.sid_string(row['target'])}", field="completion")


def _found_levels(text: str) -> list[tuple[int, int]]:
    return [(LEVEL_LETTERS.index(letter), int(code)) for letter, code in SID_TOKEN_RE.findall(text)]
