"""The response format: K reasoning steps, each a thinking block plus one SID token, then EOS.

Four layouts (K = number of SID levels, dedup level included):

- ``interleaved`` (default): ``<think> b1</think><a_x><think> b2</think><b_y>...<eos>``
- ``coarse``: interleaved over the first K-2 levels, the last two SID tokens adjacent:
  ``<think> b1</think><a_x><think> b2</think><b_y><c_z><d_w><eos>`` (K = 4; `genrec.grammar.coarse_levels`)
- ``blocks_first``:          ``<think> b1</think><think> b2</think>...<a_x><b_y>...<eos>``
- ``direct`` (no reasoning, stage 1 and the no-reasoning baseline): ``<a_x><b_y>...<eos>``

This module renders the text form used as SFT completions (`render_response`), holds the token ids the
parser and the constrained decoder need (`ResponseSpec`), writes a response as token ids from its SID codes and
block tokens (`response_token_ids`, the inverse of the parser), and parses generated token ids back into steps
(`parse_response`) so RL can score each step and map advantages onto its tokens
(`step_index_per_token`). Parsing never raises on malformed output: it returns ``ok=False`` and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import torch

from genrec.grammar import (
    BLOCK,
    BLOCKS_FIRST,
    COARSE,
    DIRECT,
    INTERLEAVED,
    LAYOUTS,
    SID,
    block_levels,
    check_layout,
    layout_plan,
)
from sid_tokenizer.sidmap import SID_TOKEN_RE, LEVEL_LETTERS, SIDMap, parse_sid_token, sid_token

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
__all__ = ["BLOCKS_FIRST", "COARSE", "DIRECT", "INTERLEAVED", "LAYOUTS", "check_layout"]  # re-exported from genrec.grammar


# ----------------------------------------------------------------------------------------------------------
# Rendering (text form, for SFT completions)
# ----------------------------------------------------------------------------------------------------------


def render_block(text: str) -> str:
    """One thinking block: ``<think> text</think>`` (``<think></think>`` when empty).

    The single space after ``<think>`` makes the first word tokenize like a word inside a sentence (byte-level
    BPE gives ``Ġword``); no space before ``</think>`` so no lone-space token is learnt before the tag.
    """
    text = " ".join(text.split())
    return f"{THINK_OPEN} {text}{THINK_CLOSE}" if text else f"{THINK_OPEN}{THINK_CLOSE}"


def render_response(blocks: Sequence[str] | None, sid_tokens: Sequence[str], layout: str = INTERLEAVED) -> str:
    """Text of a response (no EOS: the SFT code appends the tokenizer's EOS).

    `blocks[k]` argues for `sid_tokens[k]`; both lists have one entry per SID level. For ``direct``,
    `blocks` must be None or empty. Raises ValueError when a block contains a tag or a SID token (it would
    break the structure) or when the SID tokens are not levels 0..K-1 in order.
    """
    check_layout(layout)
    sid_tokens = list(sid_tokens)
    if not sid_tokens:
        raise ValueError("render_response: no SID tokens given")
    for k, tok in enumerate(sid_tokens):
        parsed = parse_sid_token(tok)
        if parsed is None:
            raise ValueError(f"render_response: sid_tokens[{k}] = {tok!r} is not a SID token like '<a_12>'")
        if parsed[0] != k:
            raise ValueError(
                f"render_response: sid_tokens[{k}] = {tok!r} has level '{LEVEL_LETTERS[parsed[0]]}', "
                f"expected level '{LEVEL_LETTERS[k]}' (tokens must be in level order)"
            )
    if layout == DIRECT:
        if blocks and any(b.strip() for b in blocks):
            raise ValueError("render_response: layout 'direct' has no thinking blocks, but non-empty blocks were given")
        return "".join(sid_tokens)
    blocks = list(blocks or [])
    if len(blocks) != len(sid_tokens):
        raise ValueError(
            f"render_response: {len(blocks)} thinking blocks for {len(sid_tokens)} SID tokens; need one block per level"
        )
    for k, b in enumerate(blocks):
        if not isinstance(b, str):
            raise ValueError(f"render_response: blocks[{k}] is {type(b).__name__}, expected str")
        for tag in (THINK_OPEN, THINK_CLOSE):
            if tag in b:
                raise ValueError(f"render_response: blocks[{k}] contains the tag {tag!r}")
        m = SID_TOKEN_RE.search(b)
        if m:
            raise ValueError(f"render_response: blocks[{k}] contains the SID token {m.group(0)!r}")
    with_block = block_levels(layout, len(sid_tokens))
    for k, b in enumerate(blocks):
        if k not in with_block and b.strip():
            raise ValueError(f"render_response: layout {layout!r} has no thinking block for level {k}, but blocks[{k}] "
                             f"is not empty (use genrec.grammar.block_levels to blank it)")
    parts = []
    for slot in layout_plan(layout, len(sid_tokens))[:-1]:
        parts.append(render_block(blocks[slot.level]) if slot.kind == BLOCK else sid_tokens[slot.level])
    return "".join(parts)


# ----------------------------------------------------------------------------------------------------------
# Token ids
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ResponseSpec:
    """Token ids of the response format for one tokenizer and SID map.

    `token_level[v]` / `token_code[v]` give the SID level and code of vocab id v, or -1 when v is not a SID
    token of the map. `level_token_ids[k][c]` is the id of SID token (k, c). `text_allowed[v]` says whether
    v may appear as free text inside a thinking block (everything except the tags, SID tokens, SID-like
    tokens of other levels, EOS, pad and the tokenizer's other special tokens).
    """

    think_open_id: int
    think_close_id: int
    eos_id: int
    pad_id: int
    token_level: torch.Tensor
    token_code: torch.Tensor
    level_token_ids: tuple[tuple[int, ...], ...]
    text_allowed: torch.Tensor
    layout: str = INTERLEAVED
    id_to_token: tuple[str, ...] | None = None
    _sid_lookup: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_layout(self.layout)
        if not self._sid_lookup:
            lookup = {tid: (k, c) for k, ids in enumerate(self.level_token_ids) for c, tid in enumerate(ids)}
            object.__setattr__(self, "_sid_lookup", lookup)

    # --- basic properties -------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.level_token_ids)

    @property
    def vocab_size(self) -> int:
        return int(self.token_level.shape[0])

    @property
    def codebook_sizes(self) -> list[int]:
        return [len(ids) for ids in self.level_token_ids]

    @property
    def has_blocks(self) -> bool:
        return self.layout != DIRECT

    def with_layout(self, layout: str) -> "ResponseSpec":
        """The same token ids with another layout (e.g. ``direct`` for a stage-1 model)."""
        return replace(self, layout=check_layout(layout))

    def sid_of(self, token_id: int) -> tuple[int, int] | None:
        """(level, code) of a token id, or None when it is not a SID token."""
        return self._sid_lookup.get(int(token_id))

    def max_response_tokens(self, max_block_tokens: int | Sequence[int]) -> int:
        """Longest completion the constrained decoder can produce, EOS included.

        Use it for ``max_new_tokens`` / ``max_completion_length`` so no response is cut before its EOS.
        """
        k = self.num_levels
        if not self.has_blocks:
            return k + 1
        budgets = [int(max_block_tokens)] * k if isinstance(max_block_tokens, int) else [int(b) for b in max_block_tokens]
        return sum(budgets) + 2 * k + k + 1

    def describe(self, token_id: int) -> str:
        """Readable name of a token id for error messages."""
        t = int(token_id)
        if t == self.eos_id:
            return f"EOS (id {t})"
        if t == self.pad_id:
            return f"pad (id {t})"
        name = None
        if self.id_to_token is not None and 0 <= t < len(self.id_to_token):
            name = self.id_to_token[t]
        elif t == self.think_open_id:
            name = THINK_OPEN
        elif t == self.think_close_id:
            name = THINK_CLOSE
        elif t in self._sid_lookup:
            name = sid_token(*self._sid_lookup[t])
        return f"{name!r} (id {t})" if name is not None else f"token id {t}"

    # --- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer: Any, sid_map: SIDMap, layout: str = INTERLEAVED) -> "ResponseSpec":
        """Look up every token of the format in a Hugging Face tokenizer.

        Raises ValueError naming the missing tokens when the tokenizer lacks a SID or think token, when such a
        token is not a single token, or when the tokenizer has no EOS token.
        """
        check_layout(layout)
        vocab: dict[str, int] = tokenizer.get_vocab()
        needed = [THINK_OPEN, THINK_CLOSE] + sid_map.all_tokens()
        missing = [t for t in needed if t not in vocab]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ValueError(
                f"tokenizer lacks {len(missing)} of the {len(needed)} response-format tokens ({shown}); "
                "add the SID and think tokens to the tokenizer (genrec.modeling.add_sid_tokens) and resize the model"
            )
        # The tags and SID tokens must come out of the tokenizer as single tokens, not split into pieces.
        probes = [THINK_OPEN, THINK_CLOSE, sid_map.all_tokens()[0], sid_map.all_tokens()[-1]]
        for tok in probes:
            ids = tokenizer.encode(tok, add_special_tokens=False)
            if list(ids) != [vocab[tok]]:
                raise ValueError(
                    f"tokenizer splits {tok!r} into ids {list(ids)} instead of the single id {vocab[tok]}; "
                    "add it as an added token (tokenizer.add_tokens) so text renders back to one token"
                )
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("tokenizer has no eos_token; set tokenizer.eos_token before building the response spec")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        size = max(len(tokenizer), max(vocab.values()) + 1)
        level = torch.full((size,), -1, dtype=torch.long)
        code = torch.full((size,), -1, dtype=torch.long)
        level_ids = []
        for k, n in enumerate(sid_map.codebook_sizes):
            ids = tuple(vocab[sid_token(k, c)] for c in range(n))
            level_ids.append(ids)
            t = torch.tensor(ids, dtype=torch.long)
            level[t] = k
            code[t] = torch.arange(n)
        text_allowed = torch.ones(size, dtype=torch.bool)
        # SID-like tokens of levels/codes not in the map are never text either.
        for tok, tid in vocab.items():
            if SID_TOKEN_RE.fullmatch(tok):
                text_allowed[tid] = False
        forbidden = {vocab[THINK_OPEN], vocab[THINK_CLOSE], eos, pad}
        forbidden.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None)
        text_allowed[torch.tensor(sorted(forbidden), dtype=torch.long)] = False
        text_allowed[level >= 0] = False
        id_to_token = [""] * size
        for tok, tid in vocab.items():
            id_to_token[tid] = tok
        return cls(
            think_open_id=vocab[THINK_OPEN],
            think_close_id=vocab[THINK_CLOSE],
            eos_id=int(eos),
            pad_id=int(pad),
            token_level=level,
            token_code=code,
            level_token_ids=tuple(level_ids),
            text_allowed=text_allowed,
            layout=layout,
            id_to_token=tuple(id_to_token),
        )

    @classmethod
    def from_ids(
        cls,
        *,
        think_open_id: int,
        think_close_id: int,
        eos_id: int,
        level_token_ids: Sequence[Sequence[int]],
        vocab_size: int,
        pad_id: int | None = None,
        text_forbidden: Iterable[int] = (),
        layout: str = INTERLEAVED,
    ) -> "ResponseSpec":
        """Build a spec from raw ids (no tokenizer), e.g. for tests and synthetic vocabularies."""
        pad = eos_id if pad_id is None else pad_id
        level = torch.full((vocab_size,), -1, dtype=torch.long)
        code = torch.full((vocab_size,), -1, dtype=torch.long)
        level_ids = tuple(tuple(int(t) for t in ids) for ids in level_token_ids)
        for k, ids in enumerate(level_ids):
            for c, t in enumerate(ids):
                if not 0 <= t < vocab_size:
                    raise ValueError(f"SID token ({k}, {c}) has id {t}, outside the vocabulary of size {vocab_size}")
                if level[t] >= 0:
                    raise ValueError(f"token id {t} is used for two SID tokens")
                level[t] = k
                code[t] = c
        text_allowed = level < 0
        for t in {think_open_id, think_close_id, eos_id, pad, *text_forbidden}:
            if not 0 <= int(t) < vocab_size:
                raise ValueError(f"token id {t} outside the vocabulary of size {vocab_size}")
            text_allowed[int(t)] = False
        for t in (think_open_id, think_close_id, eos_id, pad):
            if level[int(t)] >= 0:
                raise ValueError(f"token id {t} is both a SID token and a format token")
        return cls(
            think_open_id=int(think_open_id),
            think_close_id=int(think_close_id),
            eos_id=int(eos_id),
            pad_id=int(pad),
            token_level=level,
            token_code=code,
            level_token_ids=level_ids,
            text_allowed=text_allowed,
            layout=check_layout(layout),
        )


# ----------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One reasoning step: its thinking block ``[block_start, block_end)`` (tags included) and its SID token.

    For the ``direct`` layout the block is empty: ``block_start == block_end == sid_pos``.
    """

    level: int
    block_start: int
    block_end: int
    sid_pos: int


@dataclass(frozen=True)
class ParsedResponse:
    """Result of parsing one completion.

    `codes` and `eos_pos` are set only when `ok`; `steps` holds the steps fully parsed before any error
    (all K when ok), `partial_codes` their codes (useful for diagnostics, never for rewards).
    """

    ok: bool
    error: str = ""
    codes: tuple[int, ...] = ()
    steps: tuple[Step, ...] = ()
    eos_pos: int | None = None
    partial_codes: tuple[int, ...] = ()

    @property
    def length(self) -> int | None:
        """Number of tokens up to and including EOS (None when not ok)."""
        return None if self.eos_pos is None else self.eos_pos + 1


class _ParseError(Exception):
    pass


def _as_int_list(token_ids: Any) -> list[int]:
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() != 1:
            raise ValueError(f"parse_response expects a 1-D sequence of token ids, got shape {tuple(token_ids.shape)}")
        return token_ids.tolist()
    return [int(t) for t in token_ids]


def response_token_ids(spec: ResponseSpec, codes: Sequence[int], blocks: Sequence[Sequence[int]] = ()) -> list[int]:
    """Completion token ids of a response with these SID `codes` and thinking-block text tokens (one list per block,
    tags excluded, in the layout's block order), laid out as `spec.layout` says; `parse_response` reads them back."""
    block_iter, ids = iter(blocks), []
    for slot in layout_plan(spec.layout, spec.num_levels):
        if slot.kind == BLOCK:
            ids += [spec.think_open_id, *next(block_iter), spec.think_close_id]
        elif slot.kind == SID:
            ids.append(spec.level_token_ids[slot.level][codes[slot.level]])
        else:
            ids.append(spec.eos_id)
    return ids


def parse_response(token_ids: Sequence[int] | torch.Tensor, spec: ResponseSpec) -> ParsedResponse:
    """Parse completion token ids (no prompt; trailing pads after EOS allowed) into K steps.

    Never raises on malformed output; returns ``ok=False`` with the first problem found.
    """
    ids = _as_int_list(token_ids)
    steps: list[Step] = []
    codes: list[int] = []
    try:
        eos_pos = _parse_into(ids, spec, steps, codes)
    except _ParseError as e:
        return ParsedResponse(ok=False, error=str(e), steps=tuple(steps), partial_codes=tuple(codes))
    return ParsedResponse(ok=True, codes=tuple(codes), steps=tuple(steps), eos_pos=eos_pos, partial_codes=tuple(codes))


def _parse_into(ids: list[int], spec: ResponseSpec, steps: list[Step], codes: list[int]) -> int:
    k_levels = spec.num_levels
    n = len(ids)
    open_id, close_id, eos_id, pad_id = spec.think_open_id, spec.think_close_id, spec.eos_id, spec.pad_id
    sid_of = spec._sid_lookup.get
    d = spec.describe

    def read_block(pos: int, k: int) -> int:
        """Parse block k starting at pos; return the position just after its </think>."""
        if pos >= n:
            raise _ParseError(f"completion ends at position {pos} before thinking block {k} (expected {THINK_OPEN})")
        if ids[pos] != open_id:
            what = "SID token" if sid_of(ids[pos]) is not None else "token"
            raise _ParseError(f"position {pos}: expected {THINK_OPEN} to open thinking block {k}, got {what} {d(ids[pos])}")
        p = pos + 1
        while p < n:
            t = ids[p]
            if t == close_id:
                return p + 1
            if t == open_id:
                raise _ParseError(f"position {p}: nested {THINK_OPEN} inside thinking block {k} (opened at {pos})")
            if t == eos_id:
                raise _ParseError(f"position {p}: EOS inside thinking block {k} (opened at {pos}, never closed)")
            if t == pad_id:
                raise _ParseError(f"position {p}: pad token inside thinking block {k} (opened at {pos})")
            if sid_of(t) is not None:
                raise _ParseError(f"position {p}: SID token {d(t)} inside thinking block {k} (opened at {pos})")
            p += 1
        raise _ParseError(f"thinking block {k} opened at position {pos} is never closed (no {THINK_CLOSE})")

    def read_sid(pos: int, k: int, after: str) -> int:
        if pos >= n:
            raise _ParseError(f"completion ends at position {pos}, before SID token {k} ({after})")
        t = ids[pos]
        s = sid_of(t)
        if s is None:
            if t == eos_id:
                raise _ParseError(f"position {pos}: EOS after only {k} of {k_levels} SID tokens")
            if t == open_id:
                raise _ParseError(f"position {pos}: {THINK_OPEN} where SID token {k} was expected ({after})")
            raise _ParseError(f"position {pos}: expected SID token of level {k} ({after}), got {d(t)}")
        if s[0] != k:
            raise _ParseError(f"position {pos}: SID token {d(t)} has level {s[0]}, expected level {k}")
        codes.append(s[1])
        return pos + 1

    # Walk the layout's plan (genrec.grammar.layout_plan); the checks between slots only name the problem.
    pos = 0
    prev = None
    spans: dict[int, tuple[int, int]] = {}
    for slot in layout_plan(spec.layout, k_levels)[:-1]:
        k = slot.level
        if slot.kind == BLOCK:
            if prev is not None and pos < n:
                t = ids[pos]
                after_sid = prev.kind == SID
                if sid_of(t) is not None:
                    if after_sid:
                        raise _ParseError(f"position {pos}: second SID token {d(t)} after step {k - 1}; expected {THINK_OPEN} for block {k}")
                    raise _ParseError(f"position {pos}: SID token {d(t)} after only {k} of {k_levels} thinking blocks")
                if t == eos_id:
                    raise _ParseError(f"position {pos}: EOS after only {k} of {k_levels} {'steps' if after_sid else 'thinking blocks'}")
                if after_sid and t not in (open_id, pad_id):
                    raise _ParseError(f"position {pos}: text {d(t)} between SID token {k - 1} and thinking block {k}")
            end = read_block(pos, k)
            spans[k] = (pos, end)
            pos = end
        else:
            if prev is not None and prev.kind == BLOCK and prev.level != k and pos < n and ids[pos] == open_id:
                raise _ParseError(f"position {pos}: extra thinking block (more than {k_levels})")
            if not spans:
                after = "direct layout: SID tokens only"
            elif prev.kind == BLOCK and prev.level == k:
                after = f"right after {THINK_CLOSE} of block {k}"
            else:
                after = f"SID tokens follow the {k_levels} blocks"
            sid_pos = pos
            pos = read_sid(pos, k, after)
            start, end = spans.get(k, (sid_pos, sid_pos))
            steps.append(Step(k, start, end, sid_pos))
        prev = slot

    if pos >= n:
        raise _ParseError(f"missing EOS: completion ends at position {pos} right after the last SID token")
    t = ids[pos]
    if t != eos_id:
        if sid_of(t) is not None:
            raise _ParseError(f"position {pos}: extra SID token {d(t)} after all {k_levels} levels; expected EOS")
        if t == open_id:
            raise _ParseError(f"position {pos}: extra thinking block after all {k_levels} steps; expected EOS")
        raise _ParseError(f"position {pos}: text {d(t)} after the last SID token; expected EOS")
    eos_pos = pos
    for p in range(pos + 1, n):
        if ids[p] != pad_id and ids[p] != eos_id:
            raise _ParseError(f"position {p}: token {d(ids[p])} after EOS (only pad/EOS may follow)")
    return eos_pos


def step_index_per_token(parsed: ParsedResponse, length: int, blocks: bool = True) -> list[int]:
    """Step index of each of `length` completion tokens: k for the tokens of block k (tags included) and for
    SID token k, -1 for glue (EOS, pads, anything outside a parsed step). `blocks=False` maps SID token k only
    (block tokens count as glue).

    For a failed parse only the steps parsed before the error are mapped; gate on `parsed.ok` for rewards.
    """
    out = [-1] * length
    for s in parsed.steps:
        for p in range(s.block_start, min(s.block_end, length)) if blocks else ():
            out[p] = s.level
        if s.sid_pos < length:
            out[s.sid_pos] = s.level
    return out


def step_index_tensor(parsed: Sequence[ParsedResponse], length: int, device: torch.device | str | None = None,
                      blocks: bool = True) -> torch.Tensor:
    """Batched `step_index_per_token`: a (B, length) long tensor."""
    return torch.tensor([step_index_per_token(p, length, blocks) for p in parsed], dtype=torch.long, device=device).view(
        len(parsed), length
    )
