"""The response grammar, written once: "thinking block (budget) -> SID token under the trie -> ... -> EOS".

Every consumer reads the format from here:

- `layout_plan` is the order of the slots of each layout (blocks, SID tokens, EOS); the parser
  (`genrec.response.parse_response`) and the beam search (`eval.beam`) walk it;
- `ResponseGrammar` turns the plan, a `ResponseSpec` (token ids), a `SIDTrie` (catalog prefixes) and the block
  budgets into tables: the phase of every count of structural tokens, the allowed tokens of each phase (row
  templates; SID rows come from the trie), which token may follow which template. The transformers processor
  (`genrec.constrained.SIDLogitsProcessor`), the vLLM processor (`rl.vllm_processor`), the RL masking
  (`rl.sid_mask`, via `positions`) and the beam search's block masks read those same tables, so they agree by
  construction.

A state is derived from the tokens alone: the sums of per-token features (counts of ``<think>``, ``</think>``,
SID tokens, EOS, bad tokens, and the SID prefix key, see `genrec.trie`) and the length of the current block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch

from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS

if TYPE_CHECKING:  # genrec.response imports this module
    from genrec.response import ResponseSpec
    from genrec.trie import SIDTrie

INTERLEAVED = "interleaved"
COARSE = "coarse"
BLOCKS_FIRST = "blocks_first"
DIRECT = "direct"
LAYOUTS = (INTERLEAVED, COARSE, BLOCKS_FIRST, DIRECT)

# slots of a layout
BLOCK, SID, EOS = "block", "sid", "eos"
# token categories
C_TEXT, C_OPEN, C_CLOSE, C_SID, C_EOS, C_PAD, C_OTHER = range(7)
N_CAT = 7
# row phases
P_OPEN, P_BLOCK, P_SID, P_EOS, P_DONE, P_INVALID, P_SID_ROOT = range(7)
PHASE_NAMES = (
    "expect <think>", "inside a thinking block", "expect a SID token", "expect EOS", "finished", "invalid",
    "expect the first SID token",
)
# mask templates (rows of allowed tokens); T_SID rows are filled from the trie, T_SID_ROOT holds the root's children
T_TEXT_CLOSE, T_TEXT, T_CLOSE, T_OPEN, T_SID, T_SID_ROOT, T_EOS, T_DONE, T_INVALID = range(9)
N_TPL = 9
# the block templates by budget status: 0 under min_block_tokens, 1 between, 2 at max_block_tokens
BLOCK_TEMPLATES = (T_TEXT, T_TEXT_CLOSE, T_CLOSE)
FORCED_TEMPLATES = (T_OPEN, T_CLOSE, T_EOS)  # a single allowed token
# per-token features
F_KEY, F_OPEN, F_CLOSE, F_SID, F_EOS, F_BAD, F_IS_OPEN = range(7)
N_FEAT = 7


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown response layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return layout


class Slot(NamedTuple):
    kind: str  # BLOCK, SID or EOS
    level: int  # SID level (block k argues for SID token k); -1 for EOS


def coarse_levels(num_levels: int) -> int:
    """Levels that carry a thinking block in the `coarse` layout: all but the last two (at least one).

    Why: the last two levels of a SID (the finest semantic level and the dedup level) are mostly catalog facts given
    the prefix, which the tiny model learns from adjacent SID tokens in stage 1 and does not relearn across a block
    (teacher-forced accuracy of the third level 0.31 interleaved vs 0.69 adjacent; docs/bench/learning.md, session 10).
    """
    return max(1, num_levels - 2)


def block_levels(layout: str, num_levels: int) -> list[int]:
    """The SID levels that a thinking block argues for, in a response of `layout`."""
    return sorted({slot.level for slot in layout_plan(layout, num_levels) if slot.kind == BLOCK})


def layout_plan(layout: str, num_levels: int) -> tuple[Slot, ...]:
    """The slots of a response in order: interleaved B0 S0 B1 S1 ..., coarse B0 S0 ... B(L-1) S(L-1) S(L) ... with L =
    `coarse_levels`, blocks_first B0 B1 ... S0 S1 ..., direct S0 S1 ..., then EOS. The one place that says what a
    layout is."""
    check_layout(layout)
    levels = range(num_levels)
    if layout == INTERLEAVED:
        slots = [Slot(kind, k) for k in levels for kind in (BLOCK, SID)]
    elif layout == COARSE:
        slots = [Slot(kind, k) for k in levels for kind in (BLOCK, SID) if kind == SID or k < coarse_levels(num_levels)]
    elif layout == BLOCKS_FIRST:
        slots = [Slot(BLOCK, k) for k in levels] + [Slot(SID, k) for k in levels]
    else:
        slots = [Slot(SID, k) for k in levels]
    return tuple(slots) + (Slot(EOS, -1),)


def per_level(value: int | Sequence[int], k: int, name: str) -> list[int]:
    """One non-negative value per SID level from an int or a sequence."""
    vals = [int(value)] * k if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    if len(vals) != k:
        raise ValueError(f"{name}: {len(vals)} per-level values for {k} levels")
    if any(v < 0 for v in vals):
        raise ValueError(f"{name} must be >= 0, got {vals}")
    return vals


def is_block_text(template: torch.Tensor) -> torch.Tensor:
    """Where `template` is free text inside a thinking block (any text token or a free ``</think>``)."""
    return (template == T_TEXT) | (template == T_TEXT_CLOSE)


def greedy_in_blocks(scores: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """`scores` (B, V) with every entry but the largest set to -inf in the rows whose `template` (B,) is free block
    text: those rows then decode their block greedily under any sampler (RL rollouts with
    `block_decoding='greedy'`, transformers and vLLM processors alike). Ties: the first, as argmax."""
    rows = is_block_text(template)
    if not bool(rows.any()):
        return scores
    best = scores.argmax(dim=1, keepdim=True)
    only_best = torch.full_like(scores, float("-inf")).scatter(1, best, scores.gather(1, best))
    return torch.where(rows[:, None], only_best, scores)


class GrammarError(ValueError):
    """The grammar cannot be applied to this vocabulary (a token id beyond the logits, no text token)."""


@dataclass
class Positions:
    """State before each completion token (see `ResponseGrammar.positions`).

    `template` (B, T): the template the token was chosen under, T_INVALID for padding and for every token from the
    first one the grammar did not allow. `node` (B, T): the trie node of SID positions, -1 elsewhere. `n_allowed`
    (B, T): how many tokens the template allowed (0 for text templates, whose count is the text vocabulary).
    """

    template: torch.Tensor
    node: torch.Tensor
    n_allowed: torch.Tensor

    @property
    def forced(self) -> torch.Tensor:
        """(B, T) bool: tokens that were the only allowed one (log-prob 0 under the sampler)."""
        return self.n_allowed == 1

    @property
    def text(self) -> torch.Tensor:
        """(B, T) bool: free positions inside a thinking block (any text token or a free ``</think>``)."""
        return is_block_text(self.template)

    def sid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, trie nodes) of the SID tokens; the allowed tokens there are the node's children."""
        rows, cols = (self.node >= 0).nonzero(as_tuple=True)
        return rows, cols, self.node[rows, cols]


class ResponseGrammar:
    """The response grammar of one layout over one trie, with its block budgets (see module docstring).

    Args:
        spec: token ids and layout.
        trie: prefix trie of the catalog SIDs, with the same SID token ids as `spec`.
        max_block_tokens: free-text budget per thinking block (an int, or one value per level); at the budget only
            ``</think>`` is allowed.
        min_block_tokens: ``</think>`` is not allowed before the block has this many text tokens.
    """

    def __init__(
        self,
        spec: "ResponseSpec",
        trie: "SIDTrie",
        max_block_tokens: int | Sequence[int] = DEFAULT_MAX_BLOCK_TOKENS,
        min_block_tokens: int | Sequence[int] = 0,
    ) -> None:
        k = spec.num_levels
        if trie.num_levels != k:
            raise ValueError(f"trie has {trie.num_levels} levels but the response spec has {k}")
        for lvl in range(k):
            if not np.array_equal(np.asarray(spec.level_token_ids[lvl]), trie.level_token_ids[lvl]):
                raise ValueError(
                    f"trie and response spec disagree on the token ids of SID level {lvl}; build both from the same tokenizer"
                )
        self.spec = spec
        self.trie = trie
        self.layout = spec.layout
        self.num_levels = k
        self.plan = layout_plan(spec.layout, k)
        self.max_block = per_level(max_block_tokens, k, "max_block_tokens")
        self.min_block = per_level(min_block_tokens, k, "min_block_tokens")
        for lvl, (lo, hi) in enumerate(zip(self.min_block, self.max_block)):
            if lo > hi:
                raise ValueError(f"level {lvl}: min_block_tokens {lo} > max_block_tokens {hi}")
        self.default_vocab = int(max(spec.vocab_size, trie.max_token_id + 1))
        self._tables: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    @property
    def max_response_tokens(self) -> int:
        """Longest completion the grammar allows, EOS included (use it for max_new_tokens)."""
        return self.spec.max_response_tokens(self.max_block)

    # ------------------------------------------------------------------------------------------------------
    def phase_of_counts(self) -> dict[tuple[int, int, int], int]:
        """Phase of every (#<think>, #</think>, #SID) reachable by walking the plan (any other count is invalid)."""
        out: dict[tuple[int, int, int], int] = {}
        o = s = 0
        for slot in self.plan:
            if slot.kind == BLOCK:
                out[(o, o, s)] = P_OPEN
                out[(o + 1, o, s)] = P_BLOCK
                o += 1
            elif slot.kind == SID:
                out[(o, o, s)] = P_SID_ROOT if s == 0 else P_SID
                s += 1
            else:
                out[(o, o, s)] = P_EOS
        return out

    def tables(self, device: torch.device | str, vocab: int | None = None) -> dict[str, torch.Tensor]:
        """The grammar's tables on `device` for a vocabulary of `vocab` logits (cached)."""
        vocab = int(vocab or self.default_vocab)
        key = (str(device), vocab)
        t = self._tables.get(key)
        if t is None:
            t = {name: v.to(device) for name, v in self._build_tables(vocab).items()}
            self._tables[key] = t
        return t

    def _build_tables(self, vocab: int) -> dict[str, torch.Tensor]:
        spec, k, has_blocks = self.spec, self.num_levels, self.layout != DIRECT
        structural = {"EOS": spec.eos_id, "pad": spec.pad_id}
        if has_blocks:
            structural = {"<think>": spec.think_open_id, "</think>": spec.think_close_id, **structural}
        for name, tid in structural.items():
            if tid >= vocab:
                raise GrammarError(
                    f"{name} token id {tid} does not fit the model's vocabulary of {vocab} logits; "
                    "resize the model's embeddings to the tokenizer"
                )
        self.trie._check_vocab(vocab)
        n = min(vocab, spec.vocab_size)
        text = torch.zeros(vocab, dtype=torch.bool)
        text[:n] = spec.text_allowed[:n]
        if has_blocks and max(self.max_block) > 0 and not bool(text.any()):
            raise GrammarError("no token may appear as thinking text (text_allowed is empty within the vocabulary)")
        cat = torch.full((vocab,), C_OTHER, dtype=torch.long)
        cat[text] = C_TEXT
        level = torch.full((vocab,), -1, dtype=torch.long)
        level[:n] = spec.token_level[:n]
        cat[level >= 0] = C_SID
        if has_blocks:
            cat[spec.think_open_id] = C_OPEN
            cat[spec.think_close_id] = C_CLOSE
        cat[spec.pad_id] = C_PAD
        cat[spec.eos_id] = C_EOS  # pad == eos counts as EOS
        # Per-token features, summed over a row's tokens: [prefix key, #<think>, #</think>, #SID, #EOS, #bad, is_open]
        feat = torch.zeros(vocab + 1, N_FEAT, dtype=torch.long)  # last row: a token outside the vocabulary
        feat[:vocab, F_KEY] = torch.as_tensor(self.trie.token_key_table(vocab))
        feat[:vocab, F_OPEN] = (cat == C_OPEN).long()
        feat[:vocab, F_CLOSE] = (cat == C_CLOSE).long()
        feat[:vocab, F_SID] = (cat == C_SID).long()
        feat[:vocab, F_EOS] = (cat == C_EOS).long()
        feat[:vocab, F_BAD] = ((cat == C_PAD) | (cat == C_OTHER)).long()
        feat[vocab, F_BAD] = 1
        feat[:, F_IS_OPEN] = feat[:, F_OPEN]
        cat = torch.cat([cat, torch.tensor([C_OTHER])])
        level = torch.cat([level, torch.tensor([-1])])
        # Phase of every (capped) count combination [#open, #close, #SID, #EOS, #bad], read off the plan.
        cap = torch.tensor([k + 1, k + 1, k + 1, 1, 1], dtype=torch.long)
        radix = cap + 1
        weights = torch.ones(5, dtype=torch.long)
        for i in range(3, -1, -1):
            weights[i] = weights[i + 1] * radix[i + 1]
        grid = torch.cartesian_prod(*[torch.arange(int(r)) for r in radix])  # rows in weight order
        by_counts = self.phase_of_counts()
        phase_table = torch.tensor(
            [P_DONE if e else P_INVALID if bad else by_counts.get((o, c, s), P_INVALID) for o, c, s, e, bad in grid.tolist()],
            dtype=torch.long,
        )
        tpl_table = torch.tensor(  # template of (phase, budget status)
            [[T_OPEN] * 3, list(BLOCK_TEMPLATES), [T_SID] * 3, [T_EOS] * 3, [T_DONE] * 3, [T_INVALID] * 3,
             [T_SID_ROOT] * 3],
            dtype=torch.long,
        ).flatten()
        # legal[template before, category of the new token] (SID tokens also need the level / trie check)
        legal = torch.zeros(N_TPL, N_CAT, dtype=torch.bool)
        legal[T_TEXT_CLOSE, C_TEXT] = legal[T_TEXT_CLOSE, C_CLOSE] = True
        legal[T_TEXT, C_TEXT] = True
        legal[T_CLOSE, C_CLOSE] = True
        legal[T_OPEN, C_OPEN] = True
        legal[T_SID, C_SID] = legal[T_SID_ROOT, C_SID] = True
        legal[T_EOS, C_EOS] = True
        legal[T_DONE, :] = True  # after EOS, generate fills rows with its own pad id: anything is fine
        sid_tpl = torch.zeros(N_TPL, dtype=torch.bool)
        sid_tpl[T_SID] = sid_tpl[T_SID_ROOT] = True
        # the rows of allowed tokens of each template (T_SID rows are filled from the trie)
        templates = torch.zeros(N_TPL, vocab, dtype=torch.bool)
        templates[T_TEXT_CLOSE] = text
        templates[T_TEXT] = text
        if has_blocks:
            templates[T_TEXT_CLOSE, spec.think_close_id] = True
            templates[T_CLOSE, spec.think_close_id] = True
            templates[T_OPEN, spec.think_open_id] = True
        root_children = self.trie.children(self.trie.root)[0]
        templates[T_SID_ROOT, torch.as_tensor(root_children, dtype=torch.long)] = True
        templates[T_EOS, spec.eos_id] = True
        templates[T_DONE, spec.eos_id] = templates[T_DONE, spec.pad_id] = True
        n_allowed = templates.sum(1)
        n_allowed[T_TEXT] = n_allowed[T_TEXT_CLOSE] = 0  # "many": never forced
        return {
            "bias": torch.where(templates, 0.0, float("-inf")).float(),
            "cat": cat,
            "feat": feat,
            "cap": cap,
            "weights": weights,
            "phase_table": phase_table,
            "tpl_table": tpl_table,
            "legal": legal.flatten(),
            "sid_tpl": sid_tpl,
            "templates": templates,
            "n_allowed": n_allowed,
            "tok_level": level,
            "budgets": torch.stack([torch.tensor(self.min_block), torch.tensor(self.max_block)], 1).long(),
            "pos": torch.arange(1, 4097, dtype=torch.long),
        }

    # ------------------------------------------------------------------------------------------------------
    @staticmethod
    def token_index(ids: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """Row of each token in the per-token tables (ids outside the vocabulary map to the 'bad token' row)."""
        vocab = t["feat"].shape[0] - 1
        return torch.where((ids >= 0) & (ids < vocab), ids, torch.full_like(ids, vocab))

    def _template(self, sums: torch.Tensor, blen: torch.Tensor, t: dict[str, torch.Tensor]):
        """(phase, template before the trie check, block index) of states given by feature sums (..., F)."""
        counts = sums[..., F_OPEN : F_BAD + 1]
        phase = t["phase_table"][(torch.minimum(counts, t["cap"]) * t["weights"]).sum(-1)]
        blk = sums[..., F_CLOSE].clamp(max=self.num_levels - 1)
        status = (blen[..., None] >= t["budgets"][blk]).sum(-1)  # 0: < min, 1: in [min, max), 2: >= max
        return phase, t["tpl_table"][phase * 3 + status], blk

    def _legal(self, tpl_prev, sums_prev, sums_now, idx, t):
        """Whether each token (table rows `idx`) was allowed after the state (tpl_prev, sums_prev)."""
        cat = t["cat"][idx]
        legal = t["legal"][tpl_prev * N_CAT + cat]
        sid_tok = (cat == C_SID) & t["sid_tpl"][tpl_prev]
        if bool(sid_tok.any()):
            child = self.trie.nodes_for_keys(sums_now[..., F_KEY].reshape(-1)).view(sid_tok.shape)
            level_ok = t["tok_level"][idx] == sums_prev[..., F_SID]
            legal = legal & (~sid_tok | (level_ok & (child >= 0)))
        return legal

    def feature_sums(self, gen: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row feature sums (B, F) over completions `gen` (B, n), and the 1-based position of the last <think>."""
        b, n = gen.shape
        f = t["feat"][self.token_index(gen, t)]
        pos = t["pos"][:n] if n <= t["pos"].shape[0] else torch.arange(1, n + 1, device=gen.device)
        return f.sum(1), (f[:, :, F_IS_OPEN] * pos).amax(1) if n else torch.zeros(b, dtype=torch.long, device=gen.device)

    def analyse(self, last: torch.Tensor | None, n: int, sums: torch.Tensor, last_open: torch.Tensor, t):
        """State after each row's `n` tokens, given their feature sums (B, F), the position of the last <think>
        and the newest token `last` (B,) (None when n = 0).

        Returns (template, phase, trie node or None, legal or None): the template after the newest token
        (T_INVALID when the newest token was not allowed or the SID prefix left the trie), the phase before the
        newest token, the node of rows at a SID (-1 elsewhere), and whether the newest token was allowed.
        """
        b = sums.shape[0]
        blen = n - last_open
        if last is not None:
            idx = self.token_index(last, t)
            prev = sums - t["feat"][idx]
            phase, tpl, _ = self._template(torch.cat([sums, prev]), torch.cat([blen, blen - 1]), t)
            tpl_now, tpl_prev, phase_prev = tpl[:b], tpl[b:], phase[b:]
            legal = self._legal(tpl_prev, prev, sums, idx, t)
            tpl_now = torch.where(legal, tpl_now, T_INVALID)
        else:
            phase_prev, tpl_now, _ = self._template(sums, blen, t)
            legal = None
        node = None
        at_sid = tpl_now == T_SID
        if bool(at_sid.any()):
            node = torch.where(at_sid, self.trie.nodes_for_keys(sums[:, F_KEY]), -1)
            tpl_now = torch.where(at_sid & (node < 0), T_INVALID, tpl_now)
        return tpl_now, phase_prev, node, legal

    def fill(self, out: torch.Tensor, tpl: torch.Tensor, node: torch.Tensor | None, value: bool | float) -> torch.Tensor:
        """Write the trie children of rows at a SID (template T_SID) into `out` (a bool mask or a float bias)."""
        if node is not None:
            sid_rows = torch.nonzero(tpl == T_SID).flatten()
            if sid_rows.numel():
                self.trie.fill_allowed(out, sid_rows, node[sid_rows], value)
        return out

    def mask(self, tpl: torch.Tensor, node: torch.Tensor | None, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, V) bool mask of the allowed tokens of each row's template (and trie node)."""
        return self.fill(t["templates"][tpl], tpl, node, True)

    # ------------------------------------------------------------------------------------------------------
    def positions(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor | None = None, vocab: int | None = None) -> Positions:
        """The state before every token of right-padded completions (B, T), in a fixed number of batched ops.

        Tokens are read up to the first one the grammar did not allow (or the end of `completion_mask`); that token
        and every later one get T_INVALID (no mask applies to them: only unconstrained sampling produces them).
        """
        ids = completion_ids.long()
        b, n = ids.shape
        dev = ids.device
        t = self.tables(dev, vocab)
        valid = torch.ones_like(ids, dtype=torch.bool) if completion_mask is None else completion_mask.bool()
        idx = self.token_index(ids, t)
        f = t["feat"][idx] * valid[..., None]
        now = f.cumsum(1)
        prev = now - f
        pos = torch.arange(1, n + 1, device=dev)
        last_open = torch.cummax(f[..., F_IS_OPEN] * pos, 1).values
        last_open_prev = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=dev), last_open[:, :-1]], 1)
        _, tpl, _ = self._template(prev, (pos - 1) - last_open_prev, t)
        node = torch.full_like(tpl, -1)
        at_sid = tpl == T_SID
        if bool(at_sid.any()):
            node = torch.where(at_sid, self.trie.nodes_for_keys(prev[..., F_KEY].reshape(-1)).view(b, n), node)
            tpl = torch.where(at_sid & (node < 0), T_INVALID, tpl)
        node = torch.where(tpl == T_SID_ROOT, self.trie.root, node)
        legal = self._legal(tpl, prev, now, idx, t) & valid
        ok = (~legal).long().cumsum(1) == 0  # every token up to and including this one was allowed
        tpl = torch.where(ok, tpl, T_INVALID)
        node = torch.where(ok, node, -1)
        n_allowed = t["n_allowed"][tpl]
        sid_rows = node >= 0
        if bool(sid_rows.any()):
            ptr = self.trie.tensors(dev)["child_ptr"]
            safe = node.clamp(min=0)
            n_allowed = torch.where(sid_rows, ptr[safe + 1] - ptr[safe], n_allowed)
        return Positions(tpl, node, n_allowed)


class GrammarState:
    """Incremental state of one sequence (the vLLM per-request processor): feature sums updated token by token."""

    def __init__(self, grammar: ResponseGrammar, device: torch.device | str = "cpu") -> None:
        self.g = grammar
        self.t = grammar.tables(device)
        self.n = 0
        self.sums = torch.zeros(1, N_FEAT, dtype=torch.long, device=device)
        self.last_open = torch.zeros(1, dtype=torch.long, device=device)
        self.template, self.phase, self.node, _ = grammar.analyse(None, 0, self.sums, self.last_open, self.t)

    def advance(self, token: int) -> None:
        last = torch.tensor([int(token)], device=self.sums.device)
        f = self.t["feat"][self.g.token_index(last, self.t)]
        self.n += 1
        self.sums = self.sums + f
        if bool(f[0, F_IS_OPEN]):
            self.last_open = torch.full_like(self.last_open, self.n)
        tpl, _, self.node, legal = self.g.analyse(last, self.n, self.sums, self.last_open, self.t)
        if int(self.template[0]) == T_INVALID:  # once off the grammar, always off (only EOS is offered)
            tpl = torch.full_like(tpl, T_INVALID)
        self.template = tpl

    def allowed_mask(self, vocab: int | None = None) -> torch.Tensor:
        """(V,) bool mask of the allowed next tokens; off the grammar only EOS (the request ends)."""
        tpl = torch.where(self.template == T_INVALID, T_EOS, self.template)
        mask = self.g.mask(tpl, self.node, self.t)[0]
        if vocab is None or vocab == mask.shape[0]:
            return mask
        out = torch.zeros(vocab, dtype=torch.bool, device=mask.device)
        m = min(vocab, mask.shape[0])
        out[:m] = mask[:m]
        return out

    @property
    def finished(self) -> bool:
        return int(self.template[0]) == T_DONE
