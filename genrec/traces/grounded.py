"""Built-in grounded teacher: short, offline, deterministic rationales, one per SID level.

Why: stage-2 SFT needs K reasoning blocks per example and most users have no LLM teacher at hand.
Each block argues for the target's level-k prefix with evidence a model could actually see at
inference time (history items sharing that prefix, their titles, the profile), and names the prefix
by its human label (SIDMap.labels). The SID tokens themselves never appear in the text: the block
argues, the SID token that follows it decides.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from genrec.data.schema import Catalog, Example
from sid_tokenizer.sidmap import SID_TOKEN_RE, SIDMap

_TAG_RE = re.compile(r"</?think>")


@dataclass
class GroundedConfig:
    """Options of the grounded teacher."""

    max_titles: int = 2
    """Cite at most this many history titles per block (most recent first)."""
    max_profile_words: int = 12
    title_field: str = "title"
    """Catalog field cited as the item's title (falls back to the rendered item text)."""
    seed: int = 0


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


def _quote_list(titles: list[str]) -> str:
    quoted = [f'"{t}"' for t in titles]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


_SEGMENT_RE = re.compile(r"\n|(?<=[.;])\s+")
_WORD_RE = re.compile(r"[a-z0-9]+")


def profile_segments(profile: str) -> list[str]:
    """The profile as short segments: one per line ("field: value" lines from the loaders) or sentence."""
    segs = [clean_text(s).rstrip(".;, ") for s in _SEGMENT_RE.split(profile)]
    return [s for s in segs if s]


def _profile_evidence(profile: str, query: str, max_words: int) -> str:
    """The profile segment sharing most words with `query` (the label and target text), shortened.

    Citing one relevant segment keeps blocks short and lets different levels cite different facts.
    """
    segs = profile_segments(profile)
    if not segs:
        return ""
    q = set(_WORD_RE.findall(query.lower()))
    best = max(segs, key=lambda seg: (len(q & set(_WORD_RE.findall(seg.lower()))), -segs.index(seg)))
    words = best.split()
    return " ".join(words[:max_words]).rstrip(".;,")


def _count(n: int, h: int) -> str:
    if n == h:
        return "the only past job" if h == 1 else f"all {h} past jobs"
    return f"{n} of the {h} past jobs"


def _level_name(level: int, num_levels: int) -> str:
    if level == 0:
        return "broad area"
    if level == num_levels - 1:
        return "specific job"
    return "narrower group" if level == 1 else f"level-{level + 1} group"


# Templates: {label} the prefix label, {titles} quoted history titles, {count} "2 of the 3 past jobs",
# {profile}, {level} the level's name, {target} the target's title.
MATCH_TEMPLATES = [
    "{count} {are} in {label}, for example {titles}, so the next job likely is too.",
    "The history leans toward {label}: {titles} {belong} there.",
    "Recent views like {titles} sit in {label}; the {level} should stay the same.",
    "Evidence for {label}: {titles} ({count}) share this {level}.",
    "Jobs such as {titles} show a steady interest in {label}.",
]
MATCH_PROFILE_TEMPLATES = [
    "The profile ({profile}) and past jobs such as {titles} both point to {label}.",
    "{titles} fall in {label}, which also fits the profile: {profile}.",
]
NO_MATCH_TEMPLATES = [
    "No past job is in {label}, but it fits the profile: {profile}.",
    "This is a move away from the history; the profile ({profile}) suggests {label}.",
    "The profile ({profile}) points to {label}, a new direction for this candidate.",
]
NO_MATCH_NO_PROFILE_TEMPLATES = [
    "None of the past jobs is in {label}; a change of direction toward it is likely.",
    "The next job leaves the earlier ones behind and moves to {label}.",
]
DEDUP_TEMPLATES = [
    "Pick the specific job: {target}.",
    "Choose {target} within this group.",
    "The best match here is {target}.",
]


def template_corpus() -> list[str]:
    """All fixed wording (to train the tiny model's tokenizer on)."""
    out = []
    for group in (MATCH_TEMPLATES, MATCH_PROFILE_TEMPLATES, NO_MATCH_TEMPLATES, NO_MATCH_NO_PROFILE_TEMPLATES,
                  DEDUP_TEMPLATES):
        out += [re.sub(r"\{[a-z]+\}", " ", t) for t in group]
    out += ["broad area narrower group specific job an earlier job a group of jobs like all the only past job is are"]
    return out


def _rng(seed: int, example: Example, level: int) -> random.Random:
    key = f"{seed}|{example.user_id}|{example.target}|{'/'.join(example.history)}|{level}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def _label(sid_map: SIDMap, prefix: tuple[int, ...], target_title: str) -> str:
    label = clean_text(sid_map.label(prefix))
    return f"'{label}'" if label else f"a group of jobs like \"{target_title}\""


def grounded_blocks(
    example: Example, catalog: Catalog, sid_map: SIDMap, cfg: GroundedConfig | None = None
) -> list[str]:
    """K = sid_map.num_levels rationale texts for `example` (last one short: the dedup level)."""
    cfg = cfg or GroundedConfig()
    if example.target not in sid_map:
        raise ValueError(f"user {example.user_id!r}: target {example.target!r} has no SID in the SID map")
    target = sid_map.codes(example.target)
    history = [h for h in example.history if h in sid_map]
    hist_codes = [sid_map.codes(h) for h in history]
    target_title = _title(example.target, catalog, cfg)
    num_levels = sid_map.num_levels
    blocks = []
    for level in range(num_levels):
        rng = _rng(cfg.seed, example, level)
        prefix = target[: level + 1]
        label = _label(sid_map, prefix, target_title)
        profile = _profile_evidence(example.profile, f"{label} {target_title}", cfg.max_profile_words)
        fields = {"level": _level_name(level, num_levels), "h": len(history), "profile": profile,
                  "target": f'"{target_title}"'}
        if level == num_levels - 1 and num_levels > 1:
            blocks.append(rng.choice(DEDUP_TEMPLATES).format(**fields))
            continue
        matches = [h for h, c in zip(history, hist_codes) if c[: level + 1] == prefix]
        # Most recent first, distinct titles.
        titles: list[str] = []
        for h in reversed(matches):
            t = _title(h, catalog, cfg)
            if t not in titles:
                titles.append(t)
        fields.update(label=label, count=_count(len(matches), len(history)),
                      are="is" if len(matches) == 1 else "are",
                      belong="belongs" if len(titles[: cfg.max_titles]) == 1 else "belong",
                      titles=_quote_list(titles[: cfg.max_titles]))
        if matches:
            pool = MATCH_TEMPLATES + (MATCH_PROFILE_TEMPLATES if profile and level == 0 else [])
        else:
            pool = NO_MATCH_TEMPLATES if profile else NO_MATCH_NO_PROFILE_TEMPLATES
        text = rng.choice(pool).format(**fields)
        blocks.append(text[0].upper() + text[1:])
    return blocks
