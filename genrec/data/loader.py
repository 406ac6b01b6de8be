"""`load_data` / `load_catalog`: detect the input format, read it, split it, and summarise what happened.

Formats (see docs/data.md):
- RecBole atomic: `<name>.inter` (user_id, item_id, timestamp, ...), `<name>.item`, optional `<name>.user`.
- RecBole pre-split: `<name>.{train,valid,test}.inter` (user_id, item_id_list, item_id) + `<name>.item`.
- MiniOneRec: train/valid/test CSV (user_id, history_item_id, item_id) + item.json.

Without the `.item` file a RecBole dataset is ID-only: its catalog is every item id of the interaction files (first
appearance order), each named by its id (`Catalog.text_free`), and its SIDs come from co-views.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path

from genrec.data import minionerec
from genrec.data.config import DataConfig
from genrec.data.errors import DataFormatError, short
from genrec.data.recbole import MAX_ID_CHARS, AtomicTable, gc_paused, read_atomic, read_items, read_users
from genrec.data.schema import Catalog, Example, RecData
from genrec.data.splits import (
    chronological_sequences,
    has_consecutive_repeat,
    collapse_consecutive,
    drop_repeat_targets,
    kcore_filter,
    leave_one_out,
    repeat_stats,
    temporal_split,
)
from genrec.wording import dataset_noun

PRESPLIT = ("train", "valid", "test")
ID_ONLY_FIELD = "title"  # the one field of an ID-only catalog: the item's id, what prompts and displays quote


@dataclass
class Source:
    """Where the data lives: `kind` is 'atomic', 'presplit' or 'minionerec'."""

    kind: str
    name: str
    folder: Path
    item_file: Path | None  # None: an ID-only RecBole dataset (no .item file)
    inter_files: dict[str, Path] = field(default_factory=dict)  # 'all' or train/valid/test
    user_file: Path | None = None


def _atomic_source(folder: Path, name: str, kind: str) -> Source:
    item = folder / f"{name}.item"
    user = folder / f"{name}.user"
    if kind == "presplit":
        files = {s: folder / f"{name}.{s}.inter" for s in PRESPLIT}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise DataFormatError(missing[0], "missing pre-split file (need .train.inter, .valid.inter and .test.inter)")
    else:
        files = {"all": folder / f"{name}.inter"}
    return Source(kind, name, folder, item if item.is_file() else None, files, user if user.is_file() else None)


def detect(path: str | Path) -> Source:
    """Find the dataset at `path`: a folder, or one of its files (`x.inter`, `x.train.inter`, `x.item`)."""
    path = Path(path)
    if path.is_file():
        n = path.name
        for s in PRESPLIT:
            if n.endswith(f".{s}.inter"):
                return _atomic_source(path.parent, n[: -len(f".{s}.inter")], "presplit")
        if n.endswith(".inter"):
            return _atomic_source(path.parent, n[: -len(".inter")], "atomic")
        for ext in (".item", ".user"):
            if n.endswith(ext):
                name = n[: -len(ext)]
                if (path.parent / f"{name}.inter").is_file():
                    return _atomic_source(path.parent, name, "atomic")
                if any((path.parent / f"{name}.{s}.inter").is_file() for s in PRESPLIT):
                    return _atomic_source(path.parent, name, "presplit")
                item = path.parent / f"{name}.item"
                if not item.is_file():
                    raise DataFormatError(item, "missing item file")
                return Source("items", name, path.parent, item)
        if n.endswith(".csv") or n.endswith(".json"):
            return detect(path.parent)
        raise DataFormatError(path, "unrecognised file; pass a dataset folder or a .inter/.item file")
    if not path.is_dir():
        raise DataFormatError(path, "no such file or folder")
    presplit = {p.name[: -len(".train.inter")] for p in path.glob("*.train.inter")}
    plain = {
        p.name[: -len(".inter")]
        for p in path.glob("*.inter")
        if not any(p.name.endswith(f".{s}.inter") for s in PRESPLIT)
    }
    for s in ("valid", "test"):  # a lone valid/test file means the set is incomplete
        presplit |= {p.name[: -len(f".{s}.inter")] for p in path.glob(f"*.{s}.inter")}
    names = sorted(presplit | plain)
    try:
        found = minionerec.find_files(path)
    except DataFormatError:
        if not names:
            raise
        found = None  # stray CSVs beside RecBole files: not a second complete dataset
    if len(names) > 1 or (presplit and plain) or (names and found is not None):
        listed = sorted(f"{n}.inter" for n in plain) + sorted(f"{n}.train.inter" for n in presplit)
        if found is not None:
            listed.append(f"MiniOneRec {found[1].name}")
        raise DataFormatError(path, f"several datasets here ({', '.join(listed)}); pass the path of the one to load")
    if presplit:
        return _atomic_source(path, names[0], "presplit")
    if plain:
        return _atomic_source(path, names[0], "atomic")
    if found is not None:
        splits, item_json = found
        return Source("minionerec", path.name, path, item_json, dict(splits))
    items = sorted(path.glob("*.item"))
    if len(items) == 1:  # catalog only (enough for load_catalog)
        return Source("items", items[0].name[: -len(".item")], path, items[0])
    if len(items) > 1:
        raise DataFormatError(path, f"several item files and no interaction file here ({', '.join(p.name for p in items)}); "
                              "pass the path of the one to load")
    raise DataFormatError(
        path, "no dataset found: expected <name>.inter + <name>.item, <name>.{train,valid,test}.inter, "
        "or MiniOneRec train/valid/test CSV + item.json"
    )


def load_catalog(path: str | Path, cfg: DataConfig | None = None) -> Catalog:
    """Only the items (for the tokenizer): the `.item` file or MiniOneRec `item.json` of the dataset at `path`."""
    src, cfg = detect(path), cfg or DataConfig()
    if src.item_file is None:
        _check_id_only(src, cfg)
    catalog = _read_catalog(src, cfg)
    if src.item_file is not None and src.kind != "items" and not cfg.drop_unknown_items:
        add_unknown_items(catalog, _interaction_item_ids(src), next(iter(src.inter_files.values())))
    return catalog


def _read_catalog(src: Source, cfg: DataConfig, stats: dict | None = None) -> Catalog:
    """The items of `src` (RecBole `.item`, MiniOneRec `item.json`, or the interactions' ids when there is no item
    file), named by the dataset (`Catalog.noun`)."""
    if src.item_file is None:  # callers have run _check_id_only
        return id_only_catalog(_interaction_item_ids(src), src.name)
    if src.kind == "minionerec":
        catalog = minionerec.read_item_json(src.item_file, cfg.item_text_fields, cfg.max_field_chars, stats)
    else:
        catalog = read_items(src.item_file, cfg.item_text_fields, cfg.max_field_chars, stats)
    catalog.noun = dataset_noun(src.name)
    return catalog


def id_only_catalog(item_ids: Iterable[str], dataset_name: str) -> Catalog:
    """The catalog of an ID-only dataset: each distinct id once (first appearance), its id as its one text field,
    named by the dataset (`Catalog.noun`)."""
    ids = list(dict.fromkeys(item_ids))
    catalog = Catalog(item_ids=ids, fields={ID_ONLY_FIELD: list(ids)}, text_free=True)
    catalog.noun = dataset_noun(dataset_name)
    return catalog


def add_unknown_items(catalog: Catalog, interaction_ids: Iterable[str], path: str | Path) -> int:
    """Add the interactions' items that the item file lacks (first appearance order), named by id; return how many.

    RecBole accepts interactions whose item has no row in the `.item` file (its features are then empty); so does
    genrec, instead of stopping a run. When none of the ids is in the item file, the file belongs to another dataset
    (or the ids are written differently), and that is an error about `path`."""
    seen: dict[str, None] = {}
    known = 0
    for item in interaction_ids:
        if item in catalog._index:
            known += 1
        else:
            seen.setdefault(item)
    if seen and not known:
        first = next(iter(seen))
        raise DataFormatError(path, f"none of the {len(seen):,} item ids in the interactions is in the item file "
                              f"(the first is {short(first)}): is it this dataset's item file, with the same ids?",
                              field="item_id")
    catalog.add_id_named(list(seen))
    return len(seen)


def _given_rows(src: Source) -> dict[str, tuple[list[str], list[str], list[list[str]]]]:
    """(users, targets, histories) of each split file of a pre-split RecBole set or MiniOneRec CSVs, in PRESPLIT order.

    Ids are checked here, history ids included, so a broken line never becomes an item of the catalog."""
    rows = {}
    for split in PRESPLIT:
        path = src.inter_files[split]
        if src.kind == "minionerec":
            r = minionerec.read_split_csv(path)
            rows[split] = (r.users, r.targets, r.histories)
            continue
        t = read_atomic(path)
        t.require("user_id", "item_id_list", "item_id")
        t.check_nonempty("user_id")
        t.check_nonempty("item_id")
        histories = [h.split() for h in t.col("item_id_list")]
        for ids, line in zip(histories, t.lines):
            if ids and max(map(len, ids)) > MAX_ID_CHARS:  # a broken line, not an item to add to the catalog
                bad = next(x for x in ids if len(x) > MAX_ID_CHARS)
                raise DataFormatError(t.path, f"item {short(bad)} is not an id (at most {MAX_ID_CHARS:,} "
                                      "characters): a lost separator?", line=line, field="item_id_list")
        rows[split] = (t.col("user_id"), t.col("item_id"), histories)
    return rows


def _row_item_ids(rows: dict[str, tuple[list[str], list[str], list[list[str]]]]) -> Iterable[str]:
    """The item ids of `_given_rows` output in file order (each row's history before its target)."""
    for _, targets, histories in rows.values():
        for hist, target in zip(histories, targets):
            yield from hist
            yield target


def _interaction_item_ids(src: Source) -> Iterable[str]:
    """Every item id the interaction files of `src` name, in file order (histories before targets, per row)."""
    if src.kind in ("presplit", "minionerec"):
        yield from _row_item_ids(_given_rows(src))
        return
    table = read_atomic(src.inter_files["all"])
    table.require("item_id")
    table.check_nonempty("item_id")
    yield from table.col("item_id")


def _check_id_only(src: Source, cfg: DataConfig) -> None:
    if cfg.item_text_fields:
        raise DataFormatError(src.folder / f"{src.name}.item", f"missing item file, but item_text_fields "
                              f"{cfg.item_text_fields} asks for its columns (without it the items have ids only)")


def _note_id_only(src: Source) -> None:
    print(f"[genrec.data] {src.folder / src.name}: no {src.name}.item file, so the items are known by id only: prompts "
          "name them by id and the SIDs come from co-views (docs/data.md, 'ID-only datasets')", file=sys.stderr)


def load_data(path: str | Path, cfg: DataConfig | None = None, *, verbose: bool = True) -> RecData:
    """Load, filter and split a dataset; the summary of counts is printed (when `verbose`) and stored."""
    with gc_paused():
        return _load_data(path, cfg or DataConfig(), verbose)


def _load_data(path: str | Path, cfg: DataConfig, verbose: bool) -> RecData:
    src = detect(path)
    if src.kind == "items":
        raise DataFormatError(src.item_file, f"no interaction file: expected {src.name}.inter or pre-split files")
    stats: dict[str, int] = {"text_values_clipped": 0}
    if src.item_file is None:
        _check_id_only(src, cfg)
        if verbose:
            _note_id_only(src)
    # an ID-only catalog is built from the interactions the loaders below read anyway (not read twice)
    catalog = None if src.item_file is None else _read_catalog(src, cfg, stats)
    if src.kind == "minionerec":
        profiles: dict[str, str] = {}
        data = _load_given(src, catalog, profiles, cfg)
    else:
        profiles = (read_users(src.user_file, cfg.profile_fields, cfg.max_field_chars, stats)
                    if src.user_file else {})
        if src.kind == "presplit":
            data = _load_given(src, catalog, profiles, cfg)
        else:
            data = _load_atomic(src, catalog, profiles, cfg)
    data.summary.update(stats)
    if verbose:
        print(format_summary(data.summary), file=sys.stderr)
    return data


def _load_atomic(src: Source, catalog: Catalog | None, profiles: dict[str, str], cfg: DataConfig) -> RecData:
    """`catalog` None: an ID-only dataset, whose catalog is the interaction table's item ids."""
    table: AtomicTable = read_atomic(src.inter_files["all"])
    table.require("user_id", "item_id", "timestamp")
    table.check_nonempty("user_id")
    table.check_nonempty("item_id")
    users, items = table.col("user_id"), table.col("item_id")
    if catalog is None:
        catalog = id_only_catalog(items, src.name)
    times = table.floats("timestamp")
    n_read = len(items)
    keep_rows: list[int] | None = None
    unknown = set(items).difference(catalog._index)
    n_unknown = n_added = 0
    if unknown:
        if cfg.drop_unknown_items:
            keep_rows = [i for i, it in enumerate(items) if it not in unknown]
            n_unknown = n_read - len(keep_rows)
        else:
            n_added = add_unknown_items(catalog, items, table.path)
    rows = keep_rows if keep_rows is not None else range(n_read)
    seqs, ranks = chronological_sequences(users, items, times, rows, with_ranks=cfg.split == "temporal")
    n_users = len(seqs)
    collapsed = 0
    if cfg.collapse_repeats:
        for u, s in seqs.items():
            if has_consecutive_repeat(s):
                new, r, n = collapse_consecutive(s, ranks[u] if ranks is not None else None)
                seqs[u] = new
                if ranks is not None:
                    ranks[u] = r  # type: ignore[assignment]
                collapsed += n
    summary: dict[str, int | float | str] = {
        "name": src.name,
        "format": "recbole-atomic",
        "split": cfg.split,
        "interactions_read": n_read,
        "users_read": n_users,
        "unknown_items_dropped": n_unknown,
        "items_not_in_item_file": n_added,
        "repeats_collapsed": collapsed,
    }
    if cfg.kcore > 1:
        seqs, ranks, kstats = kcore_filter(seqs, cfg.kcore, ranks, collapse=cfg.collapse_repeats)
        summary["repeats_collapsed"] = collapsed + kstats.pop("repeats_collapsed")
        summary.update(kstats)
    few = [u for u, s in seqs.items() if len(s) < max(cfg.min_interactions, 1)]
    for u in few:
        del seqs[u]
        if ranks is not None:
            del ranks[u]
    summary["users_dropped_few_interactions"] = len(few)
    summary["users"] = len(seqs)
    summary["interactions_used"] = sum(map(len, seqs.values()))
    if cfg.split == "loo":
        train, valid, test = leave_one_out(seqs, cfg.max_history, profiles)
    else:
        assert ranks is not None
        train, valid, test, no_hist = temporal_split(seqs, ranks, cfg.ratios(), cfg.max_history, profiles)
        summary["first_interactions_not_targets"] = no_hist
    return _finish(src, catalog, profiles, cfg, summary, train, valid, test, str(table.path))


def _load_given(src: Source, catalog: Catalog | None, profiles: dict[str, str], cfg: DataConfig) -> RecData:
    """Pre-split RecBole files or MiniOneRec CSVs: examples used as given (history truncated to max_history).

    `catalog` None: an ID-only dataset, whose catalog is the split files' item ids."""
    if cfg.kcore > 1:
        raise ValueError(f"kcore={cfg.kcore} cannot be applied to pre-split data ({src.folder}); set kcore=0")
    summary: dict[str, int | float | str] = {
        "name": src.name,
        "format": "recbole-presplit" if src.kind == "presplit" else "minionerec-csv",
        "split": "given",
        "interactions_read": 0,
        "unknown_items_dropped": 0,
        "items_not_in_item_file": 0,
        "repeats_collapsed": 0,
    }
    rows = _given_rows(src)  # read once: the catalog or its unknown items, and the examples, come from these rows
    if catalog is None:
        catalog = id_only_catalog(_row_item_ids(rows), src.name)
    if not cfg.drop_unknown_items and src.item_file is not None:
        summary["items_not_in_item_file"] = add_unknown_items(
            catalog, _row_item_ids(rows), next(iter(src.inter_files.values())))
    known = catalog._index
    out: dict[str, list[Example]] = {}
    mh = cfg.max_history
    for split, (users, targets, histories) in rows.items():
        examples: list[Example] = []
        dropped = 0
        for u, h, tgt in zip(users, histories, targets):
            if tgt not in known or any(x not in known for x in h):  # only with drop_unknown_items (else added)
                dropped += 1
                continue
            if mh and len(h) > mh:
                h = h[-mh:]
            examples.append(Example(u, tuple(h), tgt, profiles.get(u, "")))
        summary["interactions_read"] = int(summary["interactions_read"]) + len(users)
        summary[f"{split}_rows_read"] = len(users)
        summary["unknown_items_dropped"] = int(summary["unknown_items_dropped"]) + dropped
        out[split] = examples
    summary["users"] = len({e.user_id for ex in out.values() for e in ex})
    paths = {s: str(p) for s, p in src.inter_files.items()}
    return _finish(src, catalog, profiles, cfg, summary, out["train"], out["valid"], out["test"], paths)


def _finish(
    src: Source,
    catalog: Catalog,
    profiles: dict[str, str],
    cfg: DataConfig,
    summary: dict[str, int | float | str],
    train: list[Example],
    valid: list[Example],
    test: list[Example],
    where: str | dict[str, str],
) -> RecData:
    """Shared tail: repeat-target option, statistics, and the empty-split check."""
    splits = {"train": train, "valid": valid, "test": test}
    if not cfg.allow_repeat_target:
        total = 0
        for name in splits:
            splits[name], n = drop_repeat_targets(splits[name])
            total += n
        summary["repeat_targets_dropped"] = total
    for name, ex in splits.items():
        summary[f"{name}_examples"] = len(ex)
    in_hist, is_last = repeat_stats(splits["test"])
    summary["test_repeat_target_frac"] = round(in_hist, 4)
    summary["test_target_is_last_frac"] = round(is_last, 4)
    seen = {e.target for e in splits["train"]}
    if summary["split"] == "given" or not cfg.allow_repeat_target:
        seen.update(chain.from_iterable(e.history for e in splits["train"]))
    else:
        # Split from raw sequences: a train history item is a train target or the user's first item,
        # and the first item is history[0] of that user's first train example. Same set, 10x cheaper.
        seen.update(e.history[0] for e in splits["train"] if e.history)
    summary["test_targets_unseen_in_train"] = sum(1 for e in splits["test"] if e.target not in seen)
    summary["items"] = len(catalog)
    if catalog.text_free:
        summary["item_text"] = "none (ID-only: no item file)"
    summary["profiles"] = len(profiles)
    for name, ex in splits.items():
        if not ex:
            path = where[name] if isinstance(where, dict) else where
            raise DataFormatError(
                path,
                f"the {name} split is empty after loading ({summary.get('users', 0)} users kept; "
                f"split={summary['split']}, min_interactions={cfg.min_interactions}, kcore={cfg.kcore}, "
                f"allow_repeat_target={cfg.allow_repeat_target})",
            )
    return RecData(src.name, catalog, profiles, splits["train"], splits["valid"], splits["test"], summary)


SUMMARY_LABELS = {
    "interactions_read": "interactions (rows) read",
    "users_read": "users read",
    "unknown_items_dropped": "unknown-item interactions dropped",
    "items_not_in_item_file": "items not in the item file (by id)",
    "items_without_text": "items without text (named by id)",
    "repeats_collapsed": "consecutive repeats collapsed",
    "kcore_interactions_dropped": "k-core: interactions dropped",
    "kcore_users_dropped": "k-core: users dropped",
    "users_dropped_few_interactions": "users dropped (< min_interactions)",
    "users": "users kept",
    "interactions_used": "interactions used",
    "repeat_targets_dropped": "repeat-target examples dropped",
    "train_examples": "train examples",
    "valid_examples": "valid examples",
    "test_examples": "test examples",
    "test_repeat_target_frac": "test targets already in history",
    "test_target_is_last_frac": "test targets = last history item",
    "test_targets_unseen_in_train": "test targets unseen in train",
    "items": "items in catalog",
    "text_values_clipped": "text values clipped (max_field_chars)",
    "profiles": "user profiles",
}


def format_summary(summary: dict[str, int | float | str]) -> str:
    """A short human-readable table of the load summary."""
    head = f"[genrec.data] {summary.get('name', '?')} ({summary.get('format', '?')}, split={summary.get('split', '?')})"
    rows = []
    for key, label in SUMMARY_LABELS.items():
        if key in summary:
            v = summary[key]
            text = f"{v:.1%}" if isinstance(v, float) else f"{v:,}"
            rows.append(f"  {label:<36}{text:>10}")
    return "\n".join([head, *rows])
