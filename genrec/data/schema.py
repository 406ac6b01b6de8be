"""Core in-memory data types shared by every stage: the item catalog and (user, history, target) examples.

Item and user ids are strings (RecBole `token` fields). Histories are ordered oldest -> newest.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field


TITLE_NAMES = ("name", "item_name", "product_name")  # Catalog.title_field's last resort


@dataclass(frozen=True, slots=True)
class Example:
    """One next-item prediction example: the user's history (oldest first) and the held-out target."""

    user_id: str
    history: tuple[str, ...]
    target: str
    profile: str = ""


@dataclass
class Catalog:
    """All items with their text fields (column name -> one string per item, aligned with `item_ids`)."""

    item_ids: list[str]
    fields: dict[str, list[str]]
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    noun: str = "job"
    """What an item is called in prompts and reasoning when `PromptConfig.item_noun` is 'auto' (genrec/wording.py);
    the loader sets it from the dataset's name."""
    text_free: bool = False
    """True for an ID-only dataset (interactions and no item file): each item's one field, 'title', is its id, so
    the tokenizer builds SIDs from co-views instead of text (`genrec fit-tokenizer`)."""

    def __post_init__(self) -> None:
        for name, values in self.fields.items():
            if len(values) != len(self.item_ids):
                raise ValueError(f"field '{name}' has {len(values)} values for {len(self.item_ids)} items")
        self._index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise ValueError("duplicate item ids in catalog")

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def index(self, item_id: str) -> int:
        return self._index[item_id]

    @property
    def field_names(self) -> list[str]:
        return list(self.fields)

    @property
    def title_field(self) -> str | None:
        """The field that names an item, which prompts, traces and displays quote: 'title'; else the first field whose
        name ends in 'title' (RecBole's ml-100k has 'movie_title'); else 'name', 'item_name' or 'product_name'; else
        None (they then render every field)."""
        if "title" in self.fields:
            return "title"
        for name in self.fields:
            if name.lower().endswith("title"):
                return name
        for name in self.fields:
            if name.lower() in TITLE_NAMES:
                return name
        return None

    def record(self, item_id: str) -> dict[str, str]:
        i = self._index[item_id]
        return {name: values[i] for name, values in self.fields.items()}

    def render(self, item_id: str, template: str | None = None) -> str:
        """Item text from a `str.format` template over its fields (missing fields render empty).

        Without a template: "field: value" pairs of the non-empty fields, joined with "; ".
        """
        rec = self.record(item_id)
        if template is None:
            return "; ".join(f"{k}: {v}" for k, v in rec.items() if v)
        names = {fname for _, fname, _, _ in string.Formatter().parse(template) if fname}
        values = {name: rec.get(name, "") for name in names}
        return " ".join(template.format(**values).split())

    def texts(self, template: str | None = None) -> list[str]:
        return [self.render(item_id, template) for item_id in self.item_ids]

    @property
    def _name_field(self) -> str:
        """Where an item known only by its id keeps that id: the title field, else the first field."""
        return self.title_field or next(iter(self.fields))

    def add_id_named(self, item_ids: list[str]) -> None:
        """Append items known only by their id (interactions name them, the item file lacks them): the id in the
        name field, every other field empty."""
        named = self._name_field
        for name, values in self.fields.items():
            values.extend(item_ids if name == named else [""] * len(item_ids))
        start = len(self.item_ids)
        self.item_ids.extend(item_ids)
        self._index.update((item, start + i) for i, item in enumerate(item_ids))

    def name_textless_by_id(self, stats: dict | None = None) -> int:
        """Give each item whose fields are all empty its id as its name (RecBole keeps such items); returns how many,
        also added to `stats["items_without_text"]` (the load summary) when there are any."""
        named, n = self._name_field, 0
        for i, item in enumerate(self.item_ids):
            if not any(values[i] for values in self.fields.values()):
                self.fields[named][i] = item
                n += 1
        if stats is not None and n:
            stats["items_without_text"] = stats.get("items_without_text", 0) + n
        return n


@dataclass
class RecData:
    """A loaded dataset: catalog, user profiles and the three splits, plus a load summary (counts)."""

    name: str
    catalog: Catalog
    profiles: dict[str, str]
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    summary: dict[str, int | float | str] = field(default_factory=dict)
