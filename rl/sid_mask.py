"""Log-probs under the distribution the constrained sampler drew from.

Why: constrained rollouts draw each SID token from the model's distribution restricted to the children of the SID
prefix generated so far, and the grammar forces `<think>`, EOS and `</think>` at the budget. Training on unmasked
log-probs would compute ratios and KL for a different policy than the one that sampled (they differ by several nats
at SID positions). Which tokens were allowed where comes from the one response grammar
(`genrec.grammar.ResponseGrammar.positions`), the same tables the samplers (transformers and vLLM) and the beam
search use; this module only turns those positions into log-probs.

Free text inside thinking blocks keeps the unmasked log-prob in training (the text mask removes only a small,
roughly constant mass). vLLM's processed log-probs do include that mask, so `exclude_text_from_correction` leaves
the text positions out of TRL's vLLM importance-sampling correction: otherwise each rollout's loss would be
multiplied by exp(sum of log allowed mass), which shrinks with block length, not with any sampler mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from genrec.grammar import ResponseGrammar
from genrec.trie import SIDTrie


def masked_logps(trie: SIDTrie, logits: torch.Tensor, tokens: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """log softmax of `logits` (M, V) restricted to the trie children of `nodes` (M,), at `tokens` (M,).

    Only the M x W allowed logits are touched, never an (M, V) mask; padding gets an additive -inf (faster than
    masked_fill with a bool mask on CPU, and differentiable with zero gradient there).
    """
    t = trie.tensors(logits.device, logits.shape[1])
    nodes = nodes.to(logits.device)
    start = t["child_ptr"][nodes]
    counts = t["child_ptr"][nodes + 1] - start
    width = max(int(counts.max()), 1) if counts.numel() else 1
    offset = torch.arange(width, device=logits.device)
    valid = offset[None, :] < counts[:, None]
    edges = torch.where(valid, start[:, None] + offset[None, :], torch.zeros_like(valid, dtype=torch.long))
    logits = logits.float()
    bias = torch.zeros(valid.shape, dtype=logits.dtype, device=logits.device).masked_fill_(~valid, float("-inf"))
    log_z = torch.logsumexp(logits.gather(1, t["child_token"][edges]) + bias, dim=-1)
    return logits.gather(1, tokens.view(-1, 1)).squeeze(1) - log_z


def exclude_text_from_correction(
    grammar: ResponseGrammar, completion_ids: Sequence[Sequence[int]], sampling_logps: Sequence[Sequence[float]]
) -> list[list[float]]:
    """vLLM's per-token sampling log-probs with NaN at the free-text positions of thinking blocks.

    TRL turns a NaN sampling log-prob into a zero log-ratio (importance ratio 1 at that token) and leaves it out of
    the off-policy mask and the logged divergence, so text positions, where vLLM's processed log-prob includes the
    grammar's text mask and the trainer's does not, no longer bias the correction. SID and forced positions keep
    their value: there the trainer masks exactly as the sampler did.
    """
    out = [list(map(float, lp)) for lp in sampling_logps]
    rows = [list(ids) for ids in completion_ids]
    if not rows:
        return out
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    text = grammar.positions(ids, mask).text
    for i, j in text.nonzero().tolist():
        if j < len(out[i]):
            out[i][j] = math.nan
    return out
