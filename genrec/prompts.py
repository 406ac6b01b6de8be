"""Prompts: a user's history (SIDs and/or item text) and profile, as text for the LM, within a token budget.

Why one function: SFT, RL and evaluation must show the model exactly the same prompt, so they all
call `build_prompt` with the same `PromptConfig` (saved next to every trained model as prompt_config.json).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from genrec.data.schema import Catalog, Example
from genrec.response import INTERLEAVED, render_response
from genrec.traces.grounded import GroundedConfig, grounded_blocks
from genrec.wording import AUTO, DEFAULT_NOUN, check_item_noun, fill
from sid_tokenizer.sidmap import SIDMap, atomic_write_text

PROMPT_CONFIG_FILE = "prompt_config.json"
HISTORY_FORMATS = ("sid", "text", "both")
HISTORY_REASONING = ("", "evidence", "pointer")

# Prompt wording: templates over what an item is called ({noun}, {Nouns}, {person}: genrec/wording.py, filled from
# `Catalog.noun`); on job data they read exactly as before ("Jobs viewed", "this candidate").
PROFILE_HEADER = "{Person} profile:"
HISTORY_HEADER = "{Nouns} viewed, oldest first:"
REASON_INSTRUCTION = (
    "Recommend the next {noun} for this {person}. Reason step by step: one short thought per level of "
    "the {noun}'s semantic ID, each followed by that level's ID token."
)
DIRECT_INSTRUCTION = "Recommend the next {noun} for this {person}. Answer with its semantic ID only."
# The plain prompts' former answer cue: no prompt uses it now, it stays in template_corpus so the tiny model's
# tokenizer (trained on that corpus) keeps the same vocabulary.
ANSWER_CUE = "Answer:"
SYSTEM_PROMPT = "You are a {noun} recommender. {Nouns} are written as semantic IDs, coarse to fine."


@dataclass
class PromptConfig:
    """How a prompt is built (stored with each trained model so later stages reuse it)."""

    history_format: str = field(default="both", metadata={
        "help": "'sid': SID tokens only; 'text': item text only; 'both': SID then text on each line."})
    item_template: str = field(default="", metadata={
        "help": "str.format template over catalog fields, e.g. '{title} at {company}, {city}'. Empty: the catalog's "
                "title field ('title', else e.g. 'movie_title': Catalog.title_field), else every non-empty field as "
                "'name: value'."})
    prompt_max_history: int = field(default=10, metadata={
        "help": "Keep at most this many of the most recent history items."})
    include_profile: bool = field(default=False, metadata={
        "help": "Show the user's profile text. Off by default: on the synthetic market it lowered stage-1 NDCG@10 "
                "from 0.089 to 0.069 and made SFT 1.8x slower (docs/bench/learning.md, session 4)."})
    max_prompt_tokens: int = field(default=512, metadata={
        "help": "Token budget: the oldest history items are dropped first, then the profile is shortened."})
    use_chat_template: bool = field(default=False, metadata={
        "help": "Wrap the prompt in the tokenizer's chat template (instruct models); off for the tiny model."})
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={
        "help": "System turn of chat prompts ({noun}, {Nouns}, {person} are filled from the catalog's item noun)."})
    reasoning: bool = field(default=True, metadata={
        "help": "True: ask for step-by-step reasoning (stage 2, RL, eval); False: ask for the SID only (stage 1)."})
    item_noun: str = field(default="auto", metadata={
        "help": "What prompts and reasoning call an item: a word ('item', 'product', 'movie') or 'singular/plural'. "
                "'auto': the catalog's, 'job' when the dataset's name contains 'job', else 'item' (genrec/wording.py). "
                "Saved resolved with each trace folder and model."})
    history_reasoning: str = field(default="", metadata={
        "help": "Reasoning prompts only: write every history line as the grounded teacher reasons to it ('evidence' "
                "or 'pointer': its K thinking blocks interleaved with its SID tokens, from the lines above it), so the "
                "prompt holds worked examples of the answer and stage 2 can train every line of a user's history in "
                "one pass (`genrec sft --stage2_tasks sequence`). '' = plain lines. Needs SIDs in the history."})

    def __post_init__(self) -> None:
        if self.history_format not in HISTORY_FORMATS:
            raise ValueError(f"history_format must be one of {HISTORY_FORMATS}, got {self.history_format!r}")
        if self.prompt_max_history < 1:
            raise ValueError(f"prompt_max_history must be >= 1, got {self.prompt_max_history}")
        if self.history_reasoning not in HISTORY_REASONING:
            raise ValueError(f"history_reasoning must be one of {HISTORY_REASONING}, got {self.history_reasoning!r}")
        if self.history_reasoning and self.history_format == "text":
            raise ValueError("history_reasoning needs SID tokens in the history lines: use history_format sid or both")
        if self.max_prompt_tokens < 16:
            raise ValueError(f"max_prompt_tokens must be >= 16, got {self.max_prompt_tokens}")
        check_item_noun(self.item_noun)

    def noun(self, catalog: Catalog) -> str:
        """The item noun these prompts use: `item_noun`, or for 'auto' the catalog's."""
        return catalog.noun if self.item_noun == AUTO else self.item_noun

    def resolved(self, catalog: Catalog) -> "PromptConfig":
        """This config with 'auto' replaced by the catalog's noun: what a stage that loaded data saves."""
        return replace(self, item_noun=self.noun(catalog))

    def save(self, folder: str | os.PathLike) -> None:
        atomic_write_text(Path(folder) / PROMPT_CONFIG_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "PromptConfig":
        path = Path(folder) / PROMPT_CONFIG_FILE
        payload = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"{path}: unknown prompt settings {sorted(unknown)}")
        payload.setdefault("item_noun", DEFAULT_NOUN)  # saved before the setting existed: job wording
        if payload.get("system_prompt") == fill(SYSTEM_PROMPT, DEFAULT_NOUN):  # the default, saved filled before
            payload["system_prompt"] = SYSTEM_PROMPT
        return cls(**payload)

    @classmethod
    def load_or_default(cls, folder: str | os.PathLike | None) -> "PromptConfig":
        if folder is not None and (Path(folder) / PROMPT_CONFIG_FILE).is_file():
            return cls.load(folder)
        return cls()


def resolve_item_template(catalog: Catalog, template: str) -> str | None:
    """The template actually used (None means Catalog.render's 'name: value' default)."""
    if template:
        return template
    name = catalog.title_field
    return "{" + name + "}" if name else None


def item_text(item_id: str, catalog: Catalog, cfg: PromptConfig) -> str:
    return catalog.render(item_id, resolve_item_template(catalog, cfg.item_template))


def format_history_line(pos: int, item_id: str, catalog: Catalog, sid_map: SIDMap, cfg: PromptConfig) -> str:
    parts = [f"{pos}."]
    if cfg.history_format in ("sid", "both"):
        parts.append(sid_map.sid_string(item_id))
    if cfg.history_format in ("text", "both"):
        parts.append(item_text(item_id, catalog, cfg))
    return " ".join(p for p in parts if p)


def reasons_in_history(cfg: PromptConfig) -> bool:
    """Whether the history lines of this prompt carry thinking blocks (reasoning prompts with history_reasoning)."""
    return bool(cfg.reasoning and cfg.history_reasoning)


def history_answers(items, catalog: Catalog, sid_map: SIDMap, cfg: PromptConfig) -> list[tuple[str, str]]:
    """(answer, text) of every shown history line: a line reads '{pos}. {answer} {text}'.

    The answer is the item's SID string, or with `history_reasoning` the whole interleaved response the grounded
    teacher writes for that item given the lines above it: exactly what the model writes after the prompt's cue.
    """
    items = list(items)
    shows_text = cfg.history_format in ("text", "both")
    texts = [item_text(i, catalog, cfg) if shows_text else "" for i in items]
    if not reasons_in_history(cfg):
        answers = [sid_map.sid_string(i) if cfg.history_format != "text" else "" for i in items]
        return list(zip(answers, texts))
    teacher = GroundedConfig(history_lines=cfg.prompt_max_history, cite_titles=shows_text, style=cfg.history_reasoning,
                             noun=cfg.noun(catalog))
    answers = [render_response(grounded_blocks(Example("", tuple(items[:j]), item, ""), catalog, sid_map, teacher),
                               sid_map.tokens(item), INTERLEAVED) for j, item in enumerate(items)]
    return list(zip(answers, texts))


def history_lines(items, catalog: Catalog, sid_map: SIDMap, cfg: PromptConfig) -> list[str]:
    """The prompt's numbered history lines for `items` (oldest first, numbered from 1)."""
    if not reasons_in_history(cfg):
        return [format_history_line(i + 1, item, catalog, sid_map, cfg) for i, item in enumerate(items)]
    return [" ".join(p for p in (f"{pos}.", answer, text) if p)
            for pos, (answer, text) in enumerate(history_answers(items, catalog, sid_map, cfg), 1)]


def instruction(cfg: PromptConfig, noun: str = DEFAULT_NOUN) -> str:
    return fill(REASON_INSTRUCTION if cfg.reasoning else DIRECT_INSTRUCTION, noun)


def prompt_head(profile: str, cfg: PromptConfig, noun: str = DEFAULT_NOUN) -> str:
    """Everything of a plain prompt before its first history line (profile, instruction, history header)."""
    lines = [fill(PROFILE_HEADER, noun), profile] if profile else []
    lines += [instruction(cfg, noun), fill(HISTORY_HEADER, noun)]
    return "\n".join(lines) + "\n"


def next_item_cue(position: int) -> str:
    """The answer cue of a plain prompt: the number of the next history line, e.g. '4. '.

    Why a line number and not 'Answer:': a plain prompt is then a prefix of the user's whole history written
    out line by line, so one training row can carry the loss of every item of a sequence (stage-1 `sequence`
    task) and each item's context is exactly the prompt the model sees at inference. The trailing space is its
    own token because SID and think tokens are split out of running text.
    """
    return f"{position}. "


def _body(history_lines: list[str], profile: str, cfg: PromptConfig, noun: str) -> str:
    """Chat prompts: profile, history, instruction (the chat template adds the answer turn)."""
    lines = []
    if profile:
        lines += [fill(PROFILE_HEADER, noun), profile]
    lines.append(fill(HISTORY_HEADER, noun))
    lines += history_lines if history_lines else ["(none)"]
    lines.append(instruction(cfg, noun))
    return "\n".join(lines)


def _plain(history_lines: list[str], profile: str, cfg: PromptConfig, noun: str) -> str:
    return prompt_head(profile, cfg, noun) + "".join(line + "\n" for line in history_lines) + next_item_cue(
        len(history_lines) + 1)


def wrap_prompt(body: str, tokenizer, cfg: PromptConfig, noun: str = DEFAULT_NOUN) -> str:
    """A chat prompt: `body` as the user turn (after the system turn), ending with the assistant turn opener.
    Plain prompts are not wrapped (they end with `next_item_cue`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("use_chat_template is on but the tokenizer has no chat template (set use_chat_template=false)")
    system = fill(cfg.system_prompt, noun)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": body}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def count_tokens(text: str, tokenizer) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt(example: Example, catalog: Catalog, sid_map: SIDMap, tokenizer, cfg: PromptConfig | None = None) -> str:
    """The prompt text for one example (target never shown); fits `cfg.max_prompt_tokens`.

    Truncation order: keep the most recent `prompt_max_history` items; drop the oldest ones while over
    budget (at least one is kept); then shorten the profile from its end; raise ValueError if even that
    does not fit.
    """
    return fit_prompt(example, catalog, sid_map, tokenizer, cfg)[0]


def fit_prompt(example: Example, catalog: Catalog, sid_map: SIDMap, tokenizer,
               cfg: PromptConfig | None = None) -> tuple[str, int]:
    """`build_prompt`'s text and how many of the most recent history items it shows (what a reasoning trace for
    this prompt may cite: its lines are numbered from the first item shown)."""
    cfg = cfg or PromptConfig()
    for item in example.history:
        if item not in sid_map:
            raise ValueError(f"user {example.user_id!r}: history item {item!r} has no SID in the SID map")
        if cfg.history_format != "sid" and item not in catalog:
            raise ValueError(f"user {example.user_id!r}: history item {item!r} is not in the catalog")
    history = list(example.history[-cfg.prompt_max_history:])
    profile = example.profile.strip() if cfg.include_profile else ""

    noun = cfg.noun(catalog)

    def render(first: int, prof: str) -> str:
        lines = history_lines(history[first:], catalog, sid_map, cfg)
        if not cfg.use_chat_template:
            return _plain(lines, prof, cfg, noun)
        return wrap_prompt(_body(lines, prof, cfg, noun), tokenizer, cfg, noun)

    # Drop the oldest items: binary search for the smallest `first` that fits (fewer items -> fewer tokens).
    lo, hi = 0, max(len(history) - 1, 0)
    if count_tokens(render(0, profile), tokenizer) <= cfg.max_prompt_tokens:
        return render(0, profile), len(history)
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(render(mid, profile), tokenizer) <= cfg.max_prompt_tokens:
            hi = mid
        else:
            lo = mid + 1
    prompt = render(lo, profile)
    if count_tokens(prompt, tokenizer) <= cfg.max_prompt_tokens:
        return prompt, len(history) - lo
    # Shorten the profile (token-wise, from its end).
    if profile:
        ids = tokenizer(profile, add_special_tokens=False)["input_ids"]
        over = count_tokens(prompt, tokenizer) - cfg.max_prompt_tokens
        keep = len(ids) - over
        while keep > 0:
            prompt = render(lo, tokenizer.decode(ids[:keep]).strip() + " ...")
            if count_tokens(prompt, tokenizer) <= cfg.max_prompt_tokens:
                return prompt, len(history) - lo
            keep -= max(1, over // 4)
        prompt = render(lo, "")
        if count_tokens(prompt, tokenizer) <= cfg.max_prompt_tokens:
            return prompt, len(history) - lo
    raise ValueError(
        f"user {example.user_id!r}: the prompt needs {count_tokens(prompt, tokenizer)} tokens with one history item "
        f"and no profile, over max_prompt_tokens={cfg.max_prompt_tokens}; raise max_prompt_tokens or shorten item_template"
    )


# Stage-1 alignment prompts (item text <-> SID); kept here so every prompt wording lives in one file.
ITEM_TO_SID = "{Noun}: {text}\nSemantic ID:"
SID_TO_ITEM = "Semantic ID: {sid}\n{Noun}:"


def item_to_sid_prompt(item_id: str, catalog: Catalog, cfg: PromptConfig) -> str:
    return fill(ITEM_TO_SID, cfg.noun(catalog)).format(text=item_text(item_id, catalog, cfg))


def sid_to_item_prompt(item_id: str, sid_map: SIDMap, noun: str = DEFAULT_NOUN) -> str:
    return fill(SID_TO_ITEM, noun).format(sid=sid_map.sid_string(item_id))


def template_corpus(noun: str = DEFAULT_NOUN) -> list[str]:
    """Every fixed prompt wording for items called `noun` (to train the tiny model's tokenizer on)."""
    fixed = (PROFILE_HEADER, HISTORY_HEADER, REASON_INSTRUCTION, DIRECT_INSTRUCTION, ANSWER_CUE, SYSTEM_PROMPT,
             ITEM_TO_SID, SID_TO_ITEM)
    return [fill(t, noun) for t in fixed] + ["(none)"] + [f"{i}." for i in range(1, 21)]


def with_overrides(cfg: PromptConfig, **changes) -> PromptConfig:
    return replace(cfg, **changes)
