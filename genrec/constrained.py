"""Constrained decoding: a transformers `LogitsProcessor` that forces the response format and the SID trie.

Every row's state is derived from the row's own generated tokens (``input_ids[:, prompt_len:]``) with a few
batched tensor ops: per-row counts of each token category (one `bincount`), the position of the last
``<think>``, and the SID prefix key (sum of per-token keys, see `genrec.trie`). Nothing is remembered per row
between calls, so beam search may reorder rows freely. The newest token of every row is re-checked against
the state before it, so a row that somehow left the grammar is caught instead of silently decoding
unconstrained. See docs/decoding.md for the state machine.
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
P_OPEN, P_BLOCK, P_SID, P_EOS, P_DONE, P_INVALID = range(6)
PHASE_NAMES = ("expect <think>", "inside a thinking block", "expect a SID token", "expect EOS", "finished", "invalid")


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
        on_invalid: what to do with a row whose newest token broke the grammar (impossible when every step
            went through this processor): ``"raise"`` (default) or ``"eos"`` (force EOS; counted in
            `num_invalid_rows`).
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
        self._tables: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        self.reset()

    # ------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the tracked prompt (the next call starts a new generation)."""
        self._prompt_len: int | None = None
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
        t = {
            "cat": cat,
            "text": text,
            "tok_key": torch.as_tensor(self.trie.token_key_table(vocab)),
            "tok_level": level,
            "max_block": torch.tensor(self.max_block, dtype=torch.long),
            "min_block": torch.tensor(self.min_block, dtype=torch.long),
        }
        t = {name: v.to(device) for name, v in t.items()}
        self._tables[key] = t
        return t

    # ------------------------------------------------------------------------------------------------------
    def _phases(self, counts: torch.Tensor) -> torch.Tensor:
        """Phase of each row from its category counts (B, N_CAT)."""
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
        phase = torch.where(p_eos, P_EOS, phase)
        phase = torch.where(p_sid, P_SID, phase)
        phase = torch.where(p_block, P_BLOCK, phase)
        phase = torch.where(p_open, P_OPEN, phase)
        phase = torch.where(bad > 0, P_INVALID, phase)
        return torch.where(e > 0, P_DONE, phase)

    def row_states(
        self, completion_ids: torch.Tensor, vocab_size: int | None = None, check_ids: bool = True
    ) -> dict[str, torch.Tensor]:
        """State of each row after its completion tokens (B, T): phase, trie node, block length and index.

        Also `legal`: whether the newest token was allowed in the state before it (True when T == 0).
        """
        gen = completion_ids
        vocab = int(vocab_size or max(self.spec.vocab_size, self.trie.max_token_id + 1))
        t = self._tables_for(gen.device, vocab)
        b, n = gen.shape
        dev = gen.device
        if check_ids and n and (int(gen.max()) >= vocab or int(gen.min()) < 0):
            raise ConstrainedDecodingError(f"completion contains token ids outside [0, {vocab})")
        cat = t["cat"][gen]
        rows = torch.arange(b, device=dev)
        counts = torch.bincount((cat + rows[:, None] * N_CAT).flatten(), minlength=b * N_CAT).view(b, N_CAT)
        phase = self._phases(counts)
        closed = counts[:, C_CLOSE]
        blk_idx = closed.clamp(max=self.num_levels - 1)
        if n:
            pos1 = torch.arange(1, n + 1, device=dev)
            last_open = torch.where(cat == C_OPEN, pos1, 0).amax(1)  # 1-based, 0 when none
            key = t["tok_key"][gen].sum(1)
        else:
            last_open = torch.zeros(b, dtype=torch.long, device=dev)
            key = torch.zeros(b, dtype=torch.long, device=dev)
        blen = n - last_open  # text tokens since the last <think>
        node = torch.full((b,), -1, dtype=torch.long, device=dev)
        need_node = phase == P_SID
        if n:
            need_node = need_node | (cat[:, -1] == C_SID)
        if bool(need_node.any()):
            node = torch.where(need_node, self.trie.nodes_for_keys(key), node)
        if n == 0:
            legal = torch.ones(b, dtype=torch.bool, device=dev)
        else:
            last = gen[:, -1]
            lc = cat[:, -1]
            prev_counts = counts - torch.nn.functional.one_hot(lc, N_CAT)
            prev = self._phases(prev_counts)
            prev_blen = blen - 1
            prev_idx = prev_counts[:, C_CLOSE].clamp(max=self.num_levels - 1)
            prev_sid = prev_counts[:, C_SID]
            legal = (
                ((prev == P_OPEN) & (lc == C_OPEN))
                | (
                    (prev == P_BLOCK)
                    & (
                        ((lc == C_TEXT) & (prev_blen < t["max_block"][prev_idx]))
                        | ((lc == C_CLOSE) & (prev_blen >= t["min_block"][prev_idx]))
                    )
                )
                | ((prev == P_SID) & (lc == C_SID) & (t["tok_level"][last] == prev_sid) & (node >= 0))
                | ((prev == P_EOS) & (lc == C_EOS))
                | ((prev == P_DONE) & ((lc == C_EOS) | (lc == C_PAD)))
            )
            phase = torch.where(legal, phase, P_INVALID)
        return {"phase": phase, "node": node, "block_len": blen, "block_index": blk_idx, "legal": legal, "counts": counts}

    def mask_from_states(self, states: dict[str, torch.Tensor], vocab_size: int) -> torch.Tensor:
        """(B, V) bool mask of the allowed next tokens for given row states (see `row_states`)."""
        phase = states["phase"]
        dev = phase.device
        t = self._tables_for(dev, vocab_size)
        spec = self.spec
        in_block = phase == P_BLOCK
        blen, idx = states["block_len"], states["block_index"]
        text_ok = in_block & (blen < t["max_block"][idx])
        mask = text_ok[:, None] & t["text"][None, :]
        if self.layout != DIRECT:
            mask[:, spec.think_close_id] = in_block & (blen >= t["min_block"][idx])
            mask[:, spec.think_open_id] = phase == P_OPEN
        done = phase == P_DONE
        mask[:, spec.eos_id] |= (phase == P_EOS) | done
        mask[:, spec.pad_id] |= done
        sid_rows = phase == P_SID
        if bool(sid_rows.any()):
            rows = torch.nonzero(sid_rows).flatten()
            nodes = states["node"][rows]
            if bool((nodes < 0).any()):
                r = int(rows[nodes < 0][0])
                raise ConstrainedDecodingError(f"row {r}: SID prefix is not a catalog prefix (internal error)")
            self.trie.fill_allowed(mask, rows, nodes)
        invalid = phase == P_INVALID
        if bool(invalid.any()):
            bad = torch.nonzero(invalid).flatten()
            if self.on_invalid == "raise":
                r = int(bad[0])
                raise ConstrainedDecodingError(
                    f"{len(bad)} row(s) left the {self.layout} response grammar (first: row {r}); "
                    "their newest token was not allowed by this processor, or the prompt length is wrong. "
                    "Use on_invalid='eos' to end such rows with EOS instead."
                )
            self.num_invalid_rows += len(bad)
            mask[bad] = False
            mask[bad, spec.eos_id] = True
        return mask

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
        states = self.row_states(input_ids[:, prompt_len:], vocab)
        return self.mask_from_states(states, vocab)

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
        vocab = scores.shape[-1]
        states = self.row_states(input_ids[:, prompt_len:], vocab, check_ids=False)
        mask = self.mask_from_states(states, vocab)
        out = scores.masked_fill(~mask, float("-inf"))
        dead = out.amax(dim=1) == float("-inf")
        if bool(dead.any()):
            r = int(torch.nonzero(dead)[0])
            n_allowed = int(mask[r].sum())
            phase = PHASE_NAMES[int(states["phase"][r])]
            if n_allowed == 0:
                raise ConstrainedDecodingError(f"row {r} ({phase}) has no allowed token")
            raise ConstrainedDecodingError(
                f"row {r} ({phase}): all {n_allowed} allowed tokens already had score -inf before this processor "
                "(another logits processor, e.g. min_new_tokens, bad_words_ids or suppress_tokens, removed them)"
            )
        return out
