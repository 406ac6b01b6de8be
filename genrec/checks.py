"""Checks at the boundary where a command reads its inputs, shared so that every command says the same one line.

- `check_output_dir`: an output path that exists as a file (not a folder) is refused before any work is done.
- `require_model_folder`: a model folder that does not exist, is a file, or holds no model (e.g. a fit-tokenizer
  folder passed as --model) is refused before transformers is asked to load it.
- `check_sid_map_catalog`: a SID map fitted on another data set than --data is refused (no catalog item has a SID,
  or the same ids with other texts, told by the catalog fingerprint `genrec fit-tokenizer` records); catalog items
  the map lacks are counted and reported.

Every error is a ValueError / FileNotFoundError / FileExistsError, which `genrec.cli.main` prints as one line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODEL_FILES = ("config.json",)  # what `from_pretrained` needs first in a model folder


def check_output_dir(path: str | os.PathLike, flag: str = "--output_dir") -> Path:
    """`path` as a Path; FileExistsError when it exists and is not a folder (an output folder is created later)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: {flag} is an existing file; expected a folder to write into "
                              "(a new path, or an existing folder)")
    for parent in path.parents:  # a file on the way (`out.txt/sub`) cannot hold a folder either
        if parent.exists():
            if not parent.is_dir():
                raise FileExistsError(f"{parent}: is a file, so {flag} {path} cannot be created under it")
            break
    return path


def require_model_folder(path: str | os.PathLike, flag: str = "--model") -> Path:
    """`path` as a Path if it is a model folder (config.json present); a one-line error naming what it is otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model folder not found ({flag})")
    if not path.is_dir():
        raise ValueError(f"{path}: {flag} is a file; expected a model folder (the output of genrec build-model, "
                         "or <output_dir>/final of genrec sft / genrec rl)")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        what = ""
        if (path / "sid_map.json").is_file() and (path / "tokenizer_config.json").is_file() and \
                (path / "tokenizer.safetensors").is_file():
            what = " (this is a genrec fit-tokenizer folder: pass it as --sid_map)"
        elif (path / "final" / "config.json").is_file():
            what = f" (did you mean {path / 'final'}?)"
        raise ValueError(f"{path}: not a model folder, it has no {', '.join(missing)}{what}; expected the output of "
                         "genrec build-model, or <output_dir>/final of genrec sft / genrec rl")
    return path


def check_sid_map_catalog(sid_map, catalog, sid_map_where: str | os.PathLike, data_where: str | os.PathLike,
                          *, command: str = "genrec") -> int:
    """Refuse a SID map that belongs to another data set than `catalog`; return how many catalog items it lacks.

    Errors (one line): no catalog item has a SID; or the map records the catalog it was fitted on
    (`SIDMap.catalog`) and this catalog has the same ids but other item texts. Items without a SID are never
    recommended: their count is reported on stderr (a counted skip), not an error.
    """
    from sid_tokenizer.sidmap import catalog_matches

    ids = list(catalog.item_ids)
    missing = [i for i in ids if i not in sid_map]
    fitted = sid_map.catalog or {}
    source = f" (fitted on {fitted['source']!r}, {fitted.get('items', '?'):,} items)" if fitted.get("source") else ""
    if len(missing) == len(ids):
        some = next(iter(sid_map.item_to_codes), None)
        raise ValueError(
            f"{sid_map_where}: SID map of another data set{source}: none of the {len(ids):,} items of {data_where} "
            f"has a SID (the map has {len(sid_map):,} items, e.g. {some!r}; the catalog e.g. {ids[0]!r}); pass the "
            "SID map fitted on this data (genrec fit-tokenizer --data ...) and the model trained with it"
        )
    if fitted and not missing and catalog_matches(fitted, ids, catalog.fields) is False:
        raise ValueError(
            f"{sid_map_where}: SID map fitted on another catalog{source}: {data_where} has its item ids but other "
            "item texts (another data set with the same ids, e.g. another synthetic market?); pass the SID map "
            "fitted on this data, or refit it (genrec fit-tokenizer --data ...) if you edited the items on purpose"
        )
    if missing:
        print(f"[{command}] {len(missing):,} of {len(ids):,} catalog items of {data_where} have no SID in "
              f"{sid_map_where} (e.g. {missing[0]!r}); they are never recommended", file=sys.stderr)
    return len(missing)


def load_checked_sid_map(model_dir: str | os.PathLike, sid_map_path: str | os.PathLike | None, catalog,
                         data_where: str | os.PathLike, *, command: str = "genrec"):
    """The SID map a command decodes with (--sid_map, else the model folder's), checked against --data's catalog
    (`check_sid_map_catalog`) after the model folder itself (`require_model_folder`)."""
    from genrec.model_folder import SID_MAP_FILE, resolve_sid_map

    require_model_folder(model_dir)
    sid_map = resolve_sid_map(model_dir, sid_map_path or None)
    where = Path(sid_map_path) if sid_map_path else Path(model_dir) / SID_MAP_FILE
    check_sid_map_catalog(sid_map, catalog, where, data_where, command=command)
    return sid_map
