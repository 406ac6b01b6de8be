"""Built-in grounded teacher: short, offline, deterministic reasoning blocks, one per SID level.

Why: stage-2 SFT needs K reasoning blocks per example and most users have no LLM teacher at hand. Each block
is written from what the prompt shows (the numbered history lines, their titles when the prompt has them, the
label of the SID prefix already generated), so a model can produce it at inference before its SID token: it
points to the history job the next job follows at that level, or says the level is new. The SID tokens
themselves never appear in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genrec.data.schema import Catalog, Example
from sid_tokenizer.sidmap import SID_TOKEN_RE, SIDMap

_TAG_RE = re.compile(r"</?think>")


@dataclass
class GroundedConfig:
    """Options of the grounded teacher."""

    max_titles: int = 2
    """LLM-teacher fallback only (kept for its config)."""
    max_profile_words: int = 12
    title_field: str = "title"
    """Catalog field cited as the item's title (falls back to the rendered item text)."""
    seed: int = 0
    history_lines: int = 10
    """History lines the prompt shows (PromptConfig.prompt_max_history): blocks cite these line numbers."""
    cite_titles: bool = True
    """Quote the cited job's title (only when the prompt shows item text, so the model can copy it)."""


def clean_text(text: str) -> str:
    """Evidence text with SID tokens and think tags removed (they must only appear as real tokens)."""
    text = SID_TOKEN_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    return " ".join(text.split())


def _title(item_id: str, catalog: Catalog, cfg: GroundedConfig) -> str:
    if item_id in catalog:
        rec = catalog.record(item_id)
        text = rec.get(cfg.title_field) or catalog.render(item_id)
    else:
        text = ""
    return clean_text(text) or "an earlier job"


def _label(sid_map: SIDMap, prefix: tuple[int, ...]) -> str:
    label = clean_text(sid_map.label(prefix))
    return f"'{label}'" if label else "this group"


def _cite(pos: int, item_id: str, catalog: Catalog, cfg: GroundedConfig) -> str:
    return f'job {pos} "{_title(item_id, catalog, cfg)}"' if cfg.cite_titles else f"job {pos}"


# Fixed wording of the blocks ({...} filled in by grounded_blocks).
AREA_MATCH = "Area of {cite}, like {n} of the {h} past jobs."
AREA_MATCH_ONE = "Area of {cite}."
AREA_NEW = "A new area, unlike the {h} past jobs."
AREA_EMPTY = "No past jobs to go by."
AREA_NAMED = "In {label}: "
GROUP_MATCH = "the group of {cite}."
GROUP_NEW = "a new group."
JOB_REPEAT = "{cite} again."
JOB_NEW = "a job not viewed before."


def template_corpus() -> list[str]:
    """All fixed wording (to train the tiny model's tokenizer on)."""
    words = [AREA_MATCH, AREA_MATCH_ONE, AREA_NEW, AREA_EMPTY, AREA_NAMED, GROUP_MATCH, GROUP_NEW, JOB_REPEAT, JOB_NEW]
    return [re.sub(r"\{[a-z]+\}", " ", t) for t in words] + ["job this group"]


def grounded_blocks(
    example: Example, catalog: Catalog, sid_map: SIDMap, cfg: GroundedConfig | None = None
) -> list[str]:
    """K = sid_map.num_levels blocks for `example`, each writable from the prompt before its SID token.

    Block k says which shown history line (if any) the next job follows at level k: "Area of job 5 ...", "In
    '<label of the area just chosen>': the group of job 5.", "Job 5 again." at the last level. The line numbers
    and titles are those of the prompt, and the only label named is that of the area already generated (in
    block 1; deeper labels are too many for a small model to learn to write), so a model can write the block from what it sees; the block's choice of line (or "new") is the
    decision, and the SID token that follows copies that line's code. The target's own level-k label never
    appears before its SID token (a block that names it teaches "label -> code", which a small model cannot use
    at inference, measured in docs/bench/learning.md).
    """
    cfg = cfg or GroundedConfig()
    if example.target not in sid_map:
        raise ValueError(f"user {example.user_id!r}: target {example.target!r} has no SID in the SID map")
    target = sid_map.codes(example.target)
    history = [h for h in example.history if h in sid_map][-cfg.history_lines:]
    lines = [(pos, item, sid_map.codes(item)) for pos, item in enumerate(history, 1)]
    num_levels = sid_map.num_levels
    blocks = []
    for level in range(num_levels):
        prefix = target[: level + 1]
        matches = [(pos, item) for pos, item, codes in lines if codes[: level + 1] == prefix]
        cite = _cite(*matches[-1], catalog, cfg) if matches else ""
        if level == 0:
            if not lines:
                text = AREA_EMPTY
            elif not matches:
                text = AREA_NEW.format(h=len(lines))
            elif len(matches) == 1:
                text = AREA_MATCH_ONE.format(cite=cite)
            else:
                text = AREA_MATCH.format(cite=cite, n=len(matches), h=len(lines))
        else:
            if level == num_levels - 1:
                text = (JOB_REPEAT if matches else JOB_NEW).format(cite=cite)
            else:
                text = (GROUP_MATCH if matches else GROUP_NEW).format(cite=cite)
            # The area just chosen, by name (its label is a function of the code already written); deeper labels
            # are too many for a small model to learn to write.
            text = (AREA_NAMED.format(label=_label(sid_map, target[:1])) if level == 1 else "") + text
            text = text[0].upper() + text[1:]
        blocks.append(text)
    return blocks
