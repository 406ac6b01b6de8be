"""Constrained decoding: a transformers `LogitsProcessor` that forces the response format and the SID trie.

A thin adapter over `genrec.grammar.ResponseGrammar` (the one description of the format, shared with the vLLM
processor, the RL masking and the beam search). Every row's state is derived from the row's own generated tokens
(``input_ids[:, prompt_len:]``) with a fixed number of batched tensor ops: one gather of per-token features and
one sum over the completion give the counts of each structural token and the SID prefix key; the grammar's tables
map them to a row template of allowed tokens; rows at a SID take their trie children. Nothing is remembered per
row between calls (beyond a cache of sums checked with one `torch.equal`), so beam search may reorder rows
freely. The newest token of every row is re-checked against the state before it, so a row that left the grammar
is caught instead of silently decoding unconstrained. See docs/decoding.md for the state machine.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor

from genrec.grammar import (
    F_IS_OPEN,
    PHASE_NAMES,
    T_EOS,
    T_INVALID,
    T_SID,
    GrammarError,
    ResponseGrammar,
    greedy_in_blocks,
)
from genrec.response import ResponseSpec
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS
from genrec.trie import SIDTrie


class ConstrainedDecodingError(GrammarError):
    """A row has no allowed token, or its generated prefix left the response grammar."""


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
        greedy_text: inside a thinking block keep only the most likely allowed token, so a sampling `generate`
            writes each block as greedy decoding (and the evaluation's beam search) would, and samples only the
            SID tokens (RL rollouts with `block_decoding='greedy'`).
    """

    def __init__(
        self,
        spec: ResponseSpec,
        trie: SIDTrie,
        max_block_tokens: int | Sequence[int] = DEFAULT_MAX_BLOCK_TOKENS,
        min_block_tokens: int | Sequence[int] = 0,
        *,
        on_invalid: str = "raise",
        prompt_len: int | None = None,
        greedy_text: bool = False,
    ) -> None:
        if on_invalid not in ("raise", "eos"):
            raise ValueError(f"on_invalid must be 'raise' or 'eos', got {on_invalid!r}")
        self.grammar = g = ResponseGrammar(spec, trie, max_block_tokens, min_block_tokens)
        self.spec, self.trie, self.layout = g.spec, g.trie, g.layout  # read by callers (RL, eval, tests)
        self.on_invalid = on_invalid
        self.fixed_prompt_len = prompt_len
        self.greedy_text = greedy_text
        self.num_invalid_rows = 0
        self._cache: tuple | None = None
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
        return self.grammar.max_response_tokens

    def _tables(self, device: torch.device, vocab: int) -> dict[str, torch.Tensor]:
        try:
            return self.grammar.tables(device, vocab)
        except GrammarError as e:
            raise ConstrainedDecodingError(str(e)) from None

    def _sums(self, gen: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row feature sums and 1-based position of the last <think> (0 if none) over the completion.

        When the rows extend the previous call's rows unchanged (greedy, sampling: no reordering), update the
        previous sums with the new token (checked with one `torch.equal`); otherwise recompute over (B, T).
        """
        b, n = gen.shape
        cache = self._cache
        if n and cache is not None and cache[0] is t and cache[1].shape == (b, n - 1) and torch.equal(gen[:, :-1], cache[1]):
            f_last = t["feat"][self.grammar.token_index(gen[:, -1], t)]
            sums = cache[2] + f_last
            last_open = torch.where(f_last[:, F_IS_OPEN] > 0, n, cache[3])
        else:
            sums, last_open = self.grammar.feature_sums(gen, t)
        self._cache = (t, gen.clone(), sums, last_open)  # a private copy: callers may reuse their buffer
        return sums, last_open

    @staticmethod
    def _check_ids(ids: torch.Tensor, vocab: int) -> None:
        if ids.numel() and (int(ids.max()) >= vocab or int(ids.min()) < 0):
            raise ConstrainedDecodingError(f"completion contains token ids outside [0, {vocab})")

    def _templates(self, gen: torch.Tensor, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Template id and trie node of every row; invalid rows raise or become EOS-only."""
        sums, last_open = self._sums(gen, t)
        n = gen.shape[1]
        tpl, phase, node, _ = self.grammar.analyse(gen[:, -1] if n else None, n, sums, last_open, t)
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

    def _bias(self, gen: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive bias, 0 for allowed tokens and -inf otherwise (float add is the fastest masking op), and each
        row's template.

        (B, V), or (1, V) when every row has the same template and none needs trie children.
        """
        t = self._tables(gen.device, vocab)
        tpl, node = self._templates(gen, t)
        lo, hi = torch.aminmax(tpl)
        lo, hi = int(lo), int(hi)
        if lo == hi and lo != T_SID:
            return t["bias"][lo : lo + 1], tpl
        return self.grammar.fill(t["bias"].index_select(0, tpl), tpl, node, 0.0), tpl

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
        vocab = int(vocab_size or self.grammar.default_vocab)
        gen = input_ids[:, prompt_len:]
        self._check_ids(gen, vocab)
        t = self._tables(gen.device, vocab)
        return self.grammar.mask(*self._templates(gen, t), t)

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
        bias, tpl = self._bias(input_ids[:, prompt_len:], scores.shape[-1])
        out = scores + bias.to(scores.dtype)
        if self.greedy_text:
            out = greedy_in_blocks(out, tpl)
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
