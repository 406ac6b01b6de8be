"""`DataConfig`: how interactions become train/valid/test examples (parsed by TrlParser via genrec/cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("loo", "temporal")


@dataclass
class DataConfig:
    """Options of the data loader. Every field has a default; see docs/data.md."""

    split: str = field(
        default="loo",
        metadata={
            "help": "How to split raw interactions: 'loo' (leave-one-out per user: last -> test, second last -> "
            "valid, earlier -> train) or 'temporal' (global time cut by --split_ratios). Ignored for pre-split files.",
            "choices": list(SPLITS),
        },
    )
    split_ratios: str = field(
        default="8,1,1",
        metadata={"help": "train,valid,test proportions of interactions for --split temporal (e.g. '8,1,1')."},
    )
    max_history: int = field(
        default=10,
        metadata={"help": "Keep only the most recent N history items of each example (0 = keep all)."},
    )
    min_interactions: int = field(
        default=3,
        metadata={
            "help": "Drop users with fewer interactions than this (counted after collapsing repeats); under "
            "leave-one-out a user needs >= 3 to appear in train, valid and test. Ignored for pre-split files."
        },
    )
    kcore: int = field(
        default=0,
        metadata={
            "help": "Iterative k-core filter: repeatedly drop users and items with fewer than k interactions "
            "(0 = off). Not available for pre-split files."
        },
    )
    collapse_repeats: bool = field(
        default=True,
        metadata={
            "help": "Collapse consecutive repeats of the same item by a user (re-opening the same job) into one "
            "interaction. Pre-split histories are used as given."
        },
    )
    allow_repeat_target: bool = field(
        default=True,
        metadata={"help": "Keep examples whose target already appears in the history (False drops them)."},
    )
    drop_unknown_items: bool = field(
        default=False,
        metadata={
            "help": "Interactions with items missing from the item file: False = keep them, and add those items to "
            "the catalog named by their id (as RecBole keeps them); True = drop the interactions. Both are counted "
            "in the load summary."
        },
    )
    item_text_fields: list[str] | None = field(
        default=None,
        metadata={"help": "Item columns to keep as text (default: every column except the item id)."},
    )
    profile_fields: list[str] | None = field(
        default=None,
        metadata={"help": "User columns joined into the profile text (default: every column except the user id)."},
    )
    max_field_chars: int = field(
        default=100_000,
        metadata={"help": "Item and user text values longer than this many characters are clipped to it, counted "
                  "and reported (0 = no limit). Ids longer than 1,000 characters are always an error."},
    )

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"DataConfig.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        self.ratios()  # validates
        for name in ("max_history", "min_interactions", "kcore", "max_field_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"DataConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("item_text_fields", "profile_fields"):
            value = getattr(self, name)
            if isinstance(value, str):  # a YAML scalar or a single flag value: accept "a,b"
                setattr(self, name, [v.strip() for v in value.split(",") if v.strip()])

    def ratios(self) -> tuple[float, float, float]:
        """`split_ratios` as three fractions summing to 1."""
        raw = self.split_ratios
        parts = raw if isinstance(raw, (list, tuple)) else str(raw).replace(":", ",").split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"DataConfig.split_ratios must be three numbers like '8,1,1', got {raw!r}") from None
        if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0 or sum(values) <= 0:
            raise ValueError(
                f"DataConfig.split_ratios must be three non-negative numbers with train > 0, like '8,1,1'; got {raw!r}"
            )
        total = sum(values)
        return values[0] / total, values[1] / total, values[2] / total
