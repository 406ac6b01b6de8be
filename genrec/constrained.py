"""Constrained decoding: a transformers `LogitsProcessor` that forces the response format and the SID trie.

Every row's state is derived from the row's own generated tokens (``input_ids[:, prompt_len:]``) with a
fixed number of batched tensor ops: one gather of per-token features and one sum over the completion give
the counts of each structural token and the SID prefix key (a sum of per-token keys, see `genrec.trie`);
the position of the last ``<think>`` gives the block length; small tables map the counts to a phase and a
row template of allowed tokens; rows at a SID take their trie children. Nothing is remembered per row
between calls, so beam search may reorder rows freely. The newest token of every row is re-checked against
the state before it, so a row that left the grammar is caught instead of silently decoding unconstrained.
See docs/decoding.md for the state machine.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from genrec.response import BLOCKS_FIRST, DIRECT, INTERLEAVED, ResponseSpec
from genrec.trie import SIDTrie

# token categories
C_TEXT, C_OPEN, C_CLOSE, C_SID, C_EOS, C_PAD, C_OTHER = range(7)
N_CAT = 7
# row phases
P_OPEN, P_BLOCK, P_SID, P_EOS, P_DONE, P_INVALID, P_SID_ROOT = range(7)
# mask templates (rows of allowed tokens); T_SID rows are filled from the trie, T_SID_ROOT holds the root's children
T_TEXT_CLOSE, T_TEXT, T_CLOSE, T_OPEN, T_SID, T_SID_ROOT, T_EOS, T_DONE, T_INVALID = range(9)
N_TPL = 9
# per-token features
F_KEY, F_OPEN, F_CLOSE, F_SID, F_EOS, F_BAD, F_IS_OPEN = range(7)
N_FEAT = 7
PHASE_NAMES = (
    "expect <think>", "inside a thinking block", "expect a SID token", "expect EOS", "finished", "invalid",
    "expect the first SID token",
)


class ConstrainedDecodingError(ValueError):
    """A row has no allowed token, or its generated prefix left the response grammar."""


def _budget(value: int | Sequence[int], k: int, name: str) -> list[int]:
    vals = [int(value)] * k if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    if len(vals) != k:
        raise ValueError(f"{name}: {len(vals)} per-level values for {k} levels")
    if any(v < 0 for v in vals):
        raise ValueError(f"{name} must be >= 0, got {vals}")
    return vals


class SIDLogitsProcessor(LogitsProcessor):
    """Force ``spec.layout`` and restrict SID tokens to catalog prefixes (greedy, sampling and beam search).

    Args:
        spec: token ids and layout (``interleaved``, ``blocks_first`` or ``direct`` = no reasoning).
        trie: prefix trie of the catalog SIDs, with the same SID token ids as `spec`.
        max_block_tokens: free-text budget per thinking block (an int, or one value per level); when a block
            reaches it, ``</think>`` is forced.
        min_block_tokens: ``</think>`` is forbidden until the block has this many text tokens.
        on_invalid: what to do with a row whose newest token broke the grammar (impossible with greedy,
            sampling or greedy beam search through this processor; beam sampling does it): ``"raise"``
            (default) or ``"eos"`` (force EOS; counted in `num_invalid_rows`).
        prompt_len: fixed prompt length; by default it is the input length at the first call of each
            `generate` run (detected when the batch, length or prompt tokens do not continue the last call).
    """

    def __init__(
        self,
        spec: ResponseSpec,
        trie: SIDTrie,
        max_block_tokens: int | Sequence[int] = 64,
        min_block_tokens: int | Sequence[int] = 0,
        *,
        on_invalid: str = "raise",
        prompt_len: int | None = None,
    ) -> None:
        if on_invalid not in ("raise", "eos"):
            raise ValueError(f"on_invalid must be 'raise' or 'eos', got {on_invalid!r}")
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
        self.max_block = _budget(max_block_tokens, k, "max_block_tokens")
        self.min_block = _budget(min_block_tokens, k, "min_block_tokens")
        for lvl, (lo, hi) in enumerate(zip(self.min_block, self.max_block)):
            if lo > hi:
                raise ValueError(f"level {lvl}: min_block_tokens {lo} > max_block_tokens {hi}")
        self.on_invalid = on_invalid
        self.fixed_prompt_len = prompt_len
        self.num_invalid_rows = 0
        self._cache: tuple | None = None
        self._tables: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        self.reset()

    # ------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the tracked prompt (the next call starts a new generation)."""
        self._prompt_len: int | None = None
        self._cache = None
        self._prompt: torch.Tensor | None = None
        self._last_len = -1

    @property
    def max_response_tokens(self) -> int:
        """Longest completion this processor allows, EOS included (use it for max_new_tokens)."""
        return self.spec.max_response_tokens(self.max_block)

    def _tables_for(self, device: torch.device, vocab: int) -> dict[str, torch.Tensor]:
        key = (str(device), int(vocab))
        t = self._tables.get(key)
        if t is not None:
            return t
        spec = self.spec
        structural = {"<think>": spec.think_open_id, "</think>": spec.think_close_id, "EOS": spec.eos_id, "pad": spec.pad_id}
        if self.layout == DIRECT:
            structural = {"EOS": spec.eos_id, "pad": spec.pad_id}
        for name, tid in structural.items():
            if tid >= vocab:
                raise ConstrainedDecodingError(
                    f"{name} token id {tid} does not fit the model's vocabulary of {vocab} logits; "
                    "resize the model's embeddings to the tokenizer"
                )
        n = min(vocab, spec.vocab_size)
        text = torch.zeros(vocab, dtype=torch.bool)
        text[:n] = spec.text_allowed[:n]
        cat = torch.full((vocab,), C_OTHER, dtype=torch.long)
        cat[text] = C_TEXT
        level = torch.full((vocab,), -1, dtype=torch.long)
        level[:n] = spec.token_level[:n]
        cat[level >= 0] = C_SID
        if self.layout != DIRECT:
            cat[spec.think_open_id] = C_OPEN
            cat[spec.think_close_id] = C_CLOSE
        cat[spec.pad_id] = C_PAD
        cat[spec.eos_id] = C_EOS  # pad == eos counts as EOS
        if self.layout != DIRECT and max(self.max_block) > 0 and not bool(text.any()):
            raise ConstrainedDecodingError("no token may appear as thinking text (text_allowed is empty within the vocabulary)")
        k = self.num_levels
        # Per-token features, summed over a row's tokens: [prefix key, #<think>, #</think>, #SID, #EOS, #bad, is_open]
        feat = torch.zeros(vocab, N_FEAT, dtype=torch.long)
        feat[:, F_KEY] = torch.as_tensor(self.trie.token_key_table(vocab))
        feat[:, F_OPEN] = (cat == C_OPEN).long()
        feat[:, F_CLOSE] = (cat == C_CLOSE).long()
        feat[:, F_SID] = (cat == C_SID).long()
        feat[:, F_EOS] = (cat == C_EOS).long()
        feat[:, F_BAD] = ((cat == C_PAD) | (cat == C_OTHER)).long()
        feat[:, F_IS_OPEN] = feat[:, F_OPEN]
        # Phase of every (capped) count combination, then the mask template of (phase, budget status).
        cap = torch.tensor([k + 1, k + 1, k + 1, 1, 1], dtype=torch.long)
        radix = cap + 1
        weights = torch.ones(5, dtype=torch.long)
        for i in range(3, -1, -1):
            weights[i] = weights[i + 1] * radix[i + 1]
        grid = torch.cartesian_prod(*[torch.arange(int(r)) for r in radix])  # rows in weight order
        counts = torch.zeros(grid.shape[0], N_CAT, dtype=torch.long)
        counts[:, C_OPEN], counts[:, C_CLOSE], counts[:, C_SID] = grid[:, 0], grid[:, 1], grid[:, 2]
        counts[:, C_EOS], counts[:, C_PAD] = grid[:, 3], grid[:, 4]
        phase_table = self._phases(counts)
        # template of (phase, budget status): status 0 = below min, 1 = between, 2 = at max
        tpl_table = torch.tensor(
            [
                [T_OPEN] * 3,
                [T_TEXT, T_TEXT_CLOSE, T_CLOSE],
                [T_SID] * 3,
                [T_EOS] * 3,
                [T_DONE] * 3,
                [T_INVALID] * 3,
                [T_SID_ROOT] * 3,
            ],
            dtype=torch.long,
        ).flatten()
        # legal[template before, category of the new token]
        legal = torch.zeros(N_TPL, N_CAT, dtype=torch.bool)
        legal[T_TEXT_CLOSE, C_TEXT] = legal[T_TEXT_CLOSE, C_CLOSE] = True
        legal[T_TEXT, C_TEXT] = True
        legal[T_CLOSE, C_CLOSE] = True
        legal[T_OPEN, C_OPEN] = True
        legal[T_SID, C_SID] = legal[T_SID_ROOT, C_SID] = True  # plus the level / trie check
        sid_tpl = torch.zeros(N_TPL, dtype=torch.bool)
        sid_tpl[T_SID] = sid_tpl[T_SID_ROOT] = True
        legal[T_EOS, C_EOS] = True
        legal[T_DONE, :] = True  # after EOS, generate fills rows with its own pad id: anything is fine
        # the rows of allowed tokens of each template (SID rows are filled from the trie)
        templates = torch.zeros(N_TPL, vocab, dtype=torch.bool)
        templates[T_TEXT_CLOSE] = text
        templates[T_TEXT] = text
        if self.layout != DIRECT:
            templates[T_TEXT_CLOSE, spec.think_close_id] = True
            templates[T_CLOSE, spec.think_close_id] = True
            templates[T_OPEN, spec.think_open_id] = True
        templates[T_SID_ROOT, torch.as_tensor(self.trie.allowed_tokens(self.trie.root), dtype=torch.long)] = True
        templates[T_EOS, spec.eos_id] = True
        templates[T_DONE, spec.eos_id] = templates[T_DONE, spec.pad_id] = True
        t = {
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
            "tok_level": level,
            "budgets": torch.stack([torch.tensor(self.min_block), torch.tensor(self.max_block)], 1).long(),
            "pos": torch.arange(1, 4097, dtype=torch.long),
        }
        t = {name: v.to(device) for name, v in t.items()}
        self._tables[key] = t
        return t

    # ------------------------------------------------------------------------------------------------------
    def _phases(self, counts: torch.Tensor) -> torch.Tensor:
        """Phase of each row from its category counts (B, N_CAT) (used to build the phase table)."""
        k = self.num_levels
        o, c, s = counts[:, C_OPEN], counts[:, C_CLOSE], counts[:, C_SID]
        e, bad = counts[:, C_EOS], counts[:, C_PAD] + counts[:, C_OTHER]
        if self.layout == INTERLEAVED:
            p_open = (o == c) & (c == s) & (s < k)
            p_block = (o == c + 1) & (c == s) & (o <= k)
            p_sid = (o == c) & (s == c - 1)
            p_eos = (o == k) & (c == k) & (s == k)
        elif self.layout == BLOCKS_FIRST:
            p_open = (o == c) & (c < k) & (s == 0)
            p_block = (o == c + 1) & (o <= k) & (s == 0)
            p_sid = (o == k) & (c == k) & (s < k)
            p_eos = (o == k) & (c == k) & (s == k)
        else:
            zero = o != o
            p_open, p_block = zero, zero
            p_sid = (o == 0) & (c == 0) & (s < k)
            p_eos = (o == 0) & (c == 0) & (s == k)
        phase = torch.full_like(o, P_INVALID)
        in_range = (o <= k) & (c <= k) & (s <= k)  # the phase table caps counts at k + 1 ("more than k")
        p_open, p_block, p_sid, p_eos = (p & in_range for p in (p_open, p_block, p_sid, p_eos))
        phase = torch.where(p_eos, P_EOS, phase)
        phase = torch.where(p_sid, P_SID, phase)
        phase = torch.where(p_block, P_BLOCK, phase)
        phase = torch.where(p_open, P_OPEN, phase)
        phase = torch.where((phase == P_SID) & (s == 0), P_SID_ROOT, phase)
        phase = torch.where(bad > 0, P_INVALID, phase)
        return torch.where(e > 0, P_DONE, phase)

    def _analyse(self, gen: torch.Tensor, t: dict[str, torch.Tensor]):
        """Template id, phase, trie node, block length/index and legality of the newest token, per row.

        A few batched ops whatever the batch: one gather of per-token features and one sum over the
        completion, table lookups for the phase and template, a trie lookup only when a row is at a SID.
        """
        b, n = gen.shape
        dev = gen.device
        if n:
            last = gen[:, -1]
            f_last = t["feat"].index_select(0, last)
            sums, last_open = self._sums(gen, t, f_last)
            lc = t["cat"].index_select(0, last)
            prev = sums - f_last
            both = torch.cat([sums, prev], 0)  # (2B, F): state now, and before the newest token
            blen = n - last_open
            blen2 = torch.cat([blen, blen - 1], 0)
        else:
            both = torch.zeros(b, N_FEAT, dtype=torch.long, device=dev)
            blen2 = torch.zeros(b, dtype=torch.long, device=dev)
        counts = both[:, F_OPEN : F_BAD + 1]
        phase = t["phase_table"].index_select(0, (torch.minimum(counts, t["cap"]) * t["weights"]).sum(1))
        blk = both[:, F_CLOSE].clamp(max=self.num_levels - 1)
        status = (blen2[:, None] >= t["budgets"].index_select(0, blk)).sum(1)  # 0: < min, 1: in [min, max), 2: >= max
        tpl = t["tpl_table"].index_select(0, phase * 3 + status)
        if n:
            tpl_now, tpl_prev = tpl[:b], tpl[b:]
            legal = t["legal"].index_select(0, tpl_prev * N_CAT + lc)
            sid_last = (lc == C_SID) & t["sid_tpl"].index_select(0, tpl_prev)  # a SID where one was expected
            need_trie = (tpl_now == T_SID) | sid_last
        else:
            tpl_now, legal = tpl, None
            need_trie = tpl_now == T_SID
        node = None
        if bool(need_trie.any()):
            node = torch.where(need_trie, self.trie.nodes_for_keys(both[:b, F_KEY]), -1)
            tpl_now = torch.where((tpl_now == T_SID) & (node < 0), T_INVALID, tpl_now)
            if n:
                level_ok = t["tok_level"].index_select(0, last) == both[b:, F_SID]
                legal = legal & (~sid_last | (level_ok & (node >= 0)))
        if legal is not None:
            tpl_now = torch.where(legal, tpl_now, T_INVALID)
        return tpl_now, phase[:b], node, blen2[:b], blk[:b], legal

    def _sums(self, gen: torch.Tensor, t: dict[str, torch.Tensor], f_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row feature sums and 1-based position of the last <think> (0 if none) over the completion.

        When the rows extend the previous call's rows unchanged (greedy, sampling: no reordering), update the
        previous sums with the new token (checked with one `torch.equal`); otherwise recompute over (B, T).
        """
        b, n = gen.shape
        cache = self._cache
        if (
            cache is not None
            and cache[0] is t
            and cache[1].shape == (b, n - 1)
            and torch.equal(gen[:, :-1], cache[1])
        ):
            sums = cache[2] + f_last
            last_open = torch.where(f_last[:, F_IS_OPEN] > 0, n, cache[3])
        else:
            f = t["feat"].index_select(0, gen.reshape(-1)).view(b, n, N_FEAT)
            sums = f.sum(1)
            pos = t["pos"][:n] if n <= t["pos"].shape[0] else torch.arange(1, n + 1, device=gen.device)
            last_open = (f[:, :, F_IS_OPEN] * pos).amax(1)
        self._cache = (t, gen.clone(), sums, last_open)  # a private copy: callers may reuse their buffer
        return sums, last_open

    def row_states(self, completion_ids: torch.Tensor, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
        """State of each row after its completion tokens (B, T), for inspection and tests.

        phase (see PHASE_NAMES; P_INVALID when the newest token was not allowed), template, trie node (-1 when
        not at a SID), block_len (tokens since the last <think>), block_index, legal (newest token allowed).
        """
        vocab = int(vocab_size or max(self.spec.vocab_size, self.trie.max_token_id + 1))
        t = self._tables_for(completion_ids.device, vocab)
        self._check_ids(completion_ids, vocab)
        tpl, phase, node, blen, blk, legal = self._analyse(completion_ids, t)
        b = completion_ids.shape[0]
        if legal is None:
            legal = torch.ones(b, dtype=torch.bool, device=completion_ids.device)
        if node is None:
            node = torch.full((b,), -1, dtype=torch.long, device=completion_ids.device)
        return {
            "phase": torch.where(legal, phase, P_INVALID),
            "template": tpl,
            "node": node,
            "block_len": blen,
            "block_index": blk,
            "legal": legal,
        }

    @staticmethod
    def _check_ids(ids: torch.Tensor, vocab: int) -> None:
        if ids.numel() and (int(ids.max()) >= vocab or int(ids.min()) < 0):
            raise ConstrainedDecodingError(f"completion contains token ids outside [0, {vocab})")

    def _templates(self, gen: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Template id and trie node of every row; invalid rows raise or become EOS-only."""
        tpl, phase, node, _, _, _ = self._analyse(gen, t)
        invalid = tpl == T_INVALID
        if bool(invalid.any()):
            bad = torch.nonzero(invalid).flatten()
            if self.on_invalid == "raise":
                r = int(bad[0])
                raise ConstrainedDecodingError(
                    f"{len(bad)} row(s) left the {self.layout} response grammar (first: row {r}, "
                    f"{PHASE_NAMES[int(phase[r])]} before its newest token); the newest token was not allowed by this "
                    "processor, or the prompt length is wrong. Beam sampling (do_sample=True with num_beams > 1) does "
                    "this: transformers then draws zero-probability candidates; pass on_invalid='eos' to end such rows "
                    "with EOS (their score is -inf, so they are never returned)."
                )
            self.num_invalid_rows += len(bad)
            tpl = torch.where(invalid, T_EOS, tpl)
        return tpl, node

    def _fill(self, out: torch.Tensor, tpl: torch.Tensor, node: torch.Tensor | None, value: bool | float) -> torch.Tensor:
        if node is not None:
            sid_rows = torch.nonzero(tpl == T_SID).flatten()
            if sid_rows.numel():
                self.trie.fill_allowed(out, sid_rows, node[sid_rows], value)
        return out

    def _mask(self, gen: torch.Tensor, vocab: int) -> torch.Tensor:
        t = self._tables_for(gen.device, vocab)
        tpl, node = self._templates(gen, t)
        return self._fill(t["templates"].index_select(0, tpl), tpl, node, True)

    def _bias(self, gen: torch.Tensor, vocab: int) -> torch.Tensor:
        """Additive bias, 0 for allowed tokens and -inf otherwise (float add is the fastest masking op).

        (B, V), or (1, V) when every row has the same template and none needs trie children.
        """
        t = self._tables_for(gen.device, vocab)
        tpl, node = self._templates(gen, t)
        lo, hi = torch.aminmax(tpl)
        lo, hi = int(lo), int(hi)
        if lo == hi and lo != T_SID:
            return t["bias"][lo : lo + 1]
        return self._fill(t["bias"].index_select(0, tpl), tpl, node, 0.0)

    def allowed_mask(self, input_ids: torch.Tensor, prompt_len: int | None = None, vocab_size: int | None = None) -> torch.Tensor:
        """(B, V) bool mask of allowed next tokens for each row of prompt + completion `input_ids`.

        `prompt_len` defaults to the fixed one, else to the one tracked during the current `generate`.
        Only the newest token of each row is re-checked (earlier ones were checked when they were generated);
        use `genrec.response.parse_response` to validate whole completions.
        """
        if prompt_len is None:
            prompt_len = self.fixed_prompt_len if self.fixed_prompt_len is not None else self._prompt_len
        if prompt_len is None:
            raise ValueError("allowed_mask: pass prompt_len (no generation is being tracked)")
        vocab = int(vocab_size or max(self.spec.vocab_size, self.trie.max_token_id + 1))
        gen = input_ids[:, prompt_len:]
        self._check_ids(gen, vocab)
        return self._mask(gen, vocab)

    # ------------------------------------------------------------------------------------------------------
    def _track_prompt(self, input_ids: torch.Tensor) -> int:
        if self.fixed_prompt_len is not None:
            return self.fixed_prompt_len
        b, n = input_ids.shape
        p = self._prompt_len
        continues = (
            p is not None
            and self._prompt is not None
            and self._prompt.shape[0] == b
            and n == self._last_len + 1
            and torch.equal(input_ids[:, :p], self._prompt)
        )
        if not continues:
            self._prompt_len = p = n
            self._prompt = input_ids.detach().clone()
        self._last_len = n
        return p  # type: ignore[return-value]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        prompt_len = self._track_prompt(input_ids)
        bias = self._bias(input_ids[:, prompt_len:], scores.shape[-1])
        out = scores + bias.to(scores.dtype)
        best = out.amax(dim=1)
        if bool(best.min() == float("-inf")):
            r = int(torch.nonzero(best == float("-inf"))[0])
            n_allowed = int((bias[min(r, bias.shape[0] - 1)] == 0).sum())
            if n_allowed == 0:
                raise ConstrainedDecodingError(f"row {r} has no allowed token")
            raise ConstrainedDecodingError(
                f"row {r}: all {n_allowed} allowed tokens already had score -inf before this processor "
                "(another logits processor, e.g. min_new_tokens, bad_words_ids or suppress_tokens, removed them)"
            )
        return out
