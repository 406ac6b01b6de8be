"""Built-in grounded teacher: short, offline, deterministic reasoning blocks, one per SID level.

Why: stage-2 SFT needs K reasoning blocks per example and most users have no LLM teacher at hand. Each block
is written from what the prompt shows (the numbered history lines, their titles when the prompt has them, the
label of the area already generated), so a model can produce it at inference before its SID token. Two styles:
'evidence' (default) states which history lines share the prefix written so far; 'pointer' names the history
line the next job follows at that level, or says the level is new. The SID tokens never appear in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genrec.data.schema import Catalog, Example
from genrec.wording import DEFAULT_NOUN, fill, noun_forms
from sid_tokenizer.sidmap import SID_TOKEN_RE, SIDMap

_TAG_RE = re.compile(r"</?think>")


GROUNDED_STYLES = ("evidence", "pointer")


@dataclass
class GroundedConfig:
    """Options of the grounded teacher."""

    title_field: str = ""
    """Catalog field cited as the item's title ('' = `Catalog.title_field`; falls back to the rendered item text)."""
    history_lines: int = 10
    """History lines the prompt shows (PromptConfig.prompt_max_history): blocks cite these line numbers."""
    cite_titles: bool = True
    """Quote the cited job's title (only when the prompt shows item text, so the model can copy it)."""
    noun: str = ""
    """What the blocks call an item ('' = the catalog's, `Catalog.noun`); the prompts' `PromptConfig.noun`."""
    style: str = "evidence"
    """'evidence': each block states what the prompt says about the level given the prefix already written (which
    history lines share it), no decision; 'pointer': each block names the line the target follows at that level
    (the teacher's decision, made before the SID token). docs/bench/learning.md compares them."""

    def __post_init__(self) -> None:
        if self.style not in GROUNDED_STYLES:
            raise ValueError(f"grounded style must be one of {GROUNDED_STYLES}, got {self.style!r}")


def clean_text(text: str) -> str:
    """Evidence text with SID tokens and think tags removed (they must only appear as real tokens)."""
    text = SID_TOKEN_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    return " ".join(text.split())


def _noun(catalog: Catalog, cfg: GroundedConfig) -> str:
    """What the blocks call an item: the config's (the prompts' noun), else the catalog's."""
    return cfg.noun or catalog.noun


def _title(item_id: str, catalog: Catalog, cfg: GroundedConfig) -> str:
    if item_id in catalog:
        rec = catalog.record(item_id)
        text = rec.get(cfg.title_field or catalog.title_field or "") or catalog.render(item_id)
    else:
        text = ""
    return clean_text(text) or fill("an earlier {noun}", _noun(catalog, cfg))


def _label(sid_map: SIDMap, prefix: tuple[int, ...]) -> str:
    label = clean_text(sid_map.label(prefix))
    return f"'{label}'" if label else "this group"


def _cite(pos: int, item_id: str, catalog: Catalog, cfg: GroundedConfig) -> str:
    """'job 3 "Title"', or 'job 3' without titles; an ID-only catalog's "title" is its id, which is no evidence and
    which a small model miscopies, so its blocks cite the line number only."""
    noun = noun_forms(_noun(catalog, cfg))["noun"]
    cite_title = cfg.cite_titles and not catalog.text_free
    return f'{noun} {pos} "{_title(item_id, catalog, cfg)}"' if cite_title else f"{noun} {pos}"


# Fixed wording of the blocks: {noun}, {nouns}, {Noun}, {Nouns} are what the catalog calls an item (`Catalog.noun`,
# genrec/wording.py: "job" on job data, as before), the other {...} are filled in by grounded_blocks. Evidence style:
LAST_VIEWED = "Last viewed: {cite}; {n} of the {h} past {nouns} are in its area."
LAST_VIEWED_ONE = "Last viewed: {cite}."
IN_AREA = "{lines} {are} in this area."
IN_GROUP = "{lines} {are} in this group."
NONE_IN_AREA = "No past {noun} is in this area."
NONE_IN_GROUP = "No past {noun} is in this group."
# Pointer style:
AREA_MATCH = "Area of {cite}, like {n} of the {h} past {nouns}."
AREA_MATCH_ONE = "Area of {cite}."
AREA_NEW = "A new area, unlike the {h} past {nouns}."
AREA_EMPTY = "No past {nouns} to go by."
AREA_NAMED = "In {label}: "
GROUP_MATCH = "the group of {cite}."
GROUP_NEW = "a new group."
ITEM_REPEAT = "{cite} again."
ITEM_NEW = "a {noun} not viewed before."


def template_corpus(noun: str = DEFAULT_NOUN) -> list[str]:
    """All fixed wording for items called `noun` (to train the tiny model's tokenizer on)."""
    words = [LAST_VIEWED, LAST_VIEWED_ONE, IN_AREA, IN_GROUP, NONE_IN_AREA, NONE_IN_GROUP, AREA_MATCH, AREA_MATCH_ONE,
             AREA_NEW, AREA_EMPTY, AREA_NAMED, GROUP_MATCH, GROUP_NEW, ITEM_REPEAT, ITEM_NEW]
    return [re.sub(r"\{[a-z]+\}", " ", fill(t, noun)) for t in words] + [
        fill("{Noun} {Nouns} and is are {noun} this group", noun)]


def _lines(positions: list[int], noun: str, limit: int = 3) -> str:
    """'Job 9', 'Jobs 9 and 6', 'Jobs 9, 6 and 2' (most recent first, at most `limit`; 'Item 9' on item data)."""
    forms = noun_forms(noun)
    nums = [str(p) for p in positions[:limit]]
    if len(nums) == 1:
        return f"{forms['Noun']} {nums[0]}"
    return forms["Nouns"] + " " + ", ".join(nums[:-1]) + " and " + nums[-1]


def evidence_blocks(target: tuple[int, ...], lines: list[tuple[int, str, tuple[int, ...]]], catalog: Catalog,
                    sid_map: SIDMap, cfg: GroundedConfig) -> list[str]:
    """Evidence style: block k is a function of the prompt and of the codes already written (levels < k) only."""
    noun = _noun(catalog, cfg)
    blocks = []
    for level in range(sid_map.num_levels):
        if level == 0:
            if not lines:
                blocks.append(fill(AREA_EMPTY, noun))
                continue
            pos, item, codes = lines[-1]
            n = sum(c[:1] == codes[:1] for _, _, c in lines)
            cite = _cite(pos, item, catalog, cfg)
            blocks.append(fill(LAST_VIEWED, noun).format(cite=cite, n=n, h=len(lines)) if len(lines) > 1
                          else LAST_VIEWED_ONE.format(cite=cite))
            continue
        prefix = target[:level]
        shared = [pos for pos, _, c in reversed(lines) if c[:level] == prefix]
        are = "is" if len(shared) == 1 else "are"
        if level == 1:
            text = (fill(IN_AREA, noun).format(lines=_lines(shared, noun), are=are) if shared
                    else fill(NONE_IN_AREA, noun))
            text = AREA_NAMED.format(label=_label(sid_map, target[:1])) + text[0].lower() + text[1:]
        else:
            text = (fill(IN_GROUP, noun).format(lines=_lines(shared, noun), are=are) if shared
                    else fill(NONE_IN_GROUP, noun))
        blocks.append(text)
    return blocks


def pointer_blocks(target: tuple[int, ...], lines: list[tuple[int, str, tuple[int, ...]]], catalog: Catalog,
                   sid_map: SIDMap, cfg: GroundedConfig) -> list[str]:
    """Pointer style: block k names the most recent shown line sharing the target's first k+1 codes, or says the
    level is new (the teacher's decision, made before the SID token, which then copies that line's code)."""
    noun = _noun(catalog, cfg)
    num_levels = sid_map.num_levels
    blocks = []
    for level in range(num_levels):
        prefix = target[: level + 1]
        matches = [(pos, item) for pos, item, codes in lines if codes[: level + 1] == prefix]
        cite = _cite(*matches[-1], catalog, cfg) if matches else ""
        if level == 0:
            if not lines:
                text = fill(AREA_EMPTY, noun)
            elif not matches:
                text = fill(AREA_NEW, noun).format(h=len(lines))
            elif len(matches) == 1:
                text = AREA_MATCH_ONE.format(cite=cite)
            else:
                text = fill(AREA_MATCH, noun).format(cite=cite, n=len(matches), h=len(lines))
        else:
            if level == num_levels - 1:
                text = fill(ITEM_REPEAT if matches else ITEM_NEW, noun).format(cite=cite)
            else:
                text = (GROUP_MATCH if matches else GROUP_NEW).format(cite=cite)
            # The area just chosen, by name (its label is a function of the code already written); deeper labels
            # are too many for a small model to learn to write.
            text = (AREA_NAMED.format(label=_label(sid_map, target[:1])) if level == 1 else "") + text
            text = text[0].upper() + text[1:]
        blocks.append(text)
    return blocks


def grounded_blocks(
    example: Example, catalog: Catalog, sid_map: SIDMap, cfg: GroundedConfig | None = None
) -> list[str]:
    """K = sid_map.num_levels blocks for `example`, each writable from the prompt before its SID token.

    Line numbers and titles are those of the prompt (its last `history_lines` items); the only label named is that
    of the area already generated (block 1). The target's own level-k label never appears before its SID token: a
    block that names it teaches "label -> code", which a small model cannot use at inference (measured in
    docs/bench/learning.md).
    """
    cfg = cfg or GroundedConfig()
    if example.target not in sid_map:
        raise ValueError(f"user {example.user_id!r}: target {example.target!r} has no SID in the SID map")
    target = sid_map.codes(example.target)
    history = [h for h in example.history if h in sid_map][-cfg.history_lines:]
    lines = [(pos, item, sid_map.codes(item)) for pos, item in enumerate(history, 1)]
    style = evidence_blocks if cfg.style == "evidence" else pointer_blocks
    return style(target, lines, catalog, sid_map, cfg)
