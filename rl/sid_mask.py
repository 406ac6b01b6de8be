"""Where the SID tokens of a completion are, which tokens the constrained sampler allowed there, and the masked
log-probs at those positions.

Why: constrained rollouts draw each SID token from the model's distribution restricted to the children of the SID
prefix generated so far. Training on the unmasked log-probs would compute ratios and KL for a different policy than
the one that sampled (they differ by several nats at SID positions). The allowed set depends only on the SID tokens
generated before in the same completion (the prefix trie is reset at each response), so it is recovered here from the
token ids alone, in either layout.

The allowed sets come from `genrec.trie.SIDTrie`, the same prefix trie the constrained sampler
(`genrec.constrained.SIDLogitsProcessor`) and the beam search use: one source of truth for "which SID tokens may
follow this prefix". The walk over each completion's SID tokens and the masked log-softmax are batched tensor ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genrec.trie import SIDTrie
from sid_tokenizer.sidmap import SIDMap


@dataclass
class SIDTable:
    """Token id <-> (level, code) lookup and the catalog prefix trie (`genrec.trie.SIDTrie`) in token-id space."""

    token_level: torch.Tensor  # (V,) level of each token id, -1 for non-SID tokens
    token_code: torch.Tensor  # (V,) code of each token id, -1 for non-SID tokens
    trie: SIDTrie
    num_levels: int

    @classmethod
    def build(cls, sid_map: SIDMap, spec) -> "SIDTable":
        """From the SID map (catalog prefixes) and a `genrec.response.ResponseSpec` (token ids)."""
        if list(spec.codebook_sizes) != list(sid_map.codebook_sizes):
            raise ValueError(
                f"response spec has codebook sizes {spec.codebook_sizes}, the SID map {list(sid_map.codebook_sizes)}"
            )
        return cls(spec.token_level.clone(), spec.token_code.clone(), SIDTrie.from_spec(sid_map, spec), sid_map.num_levels)

    @property
    def children(self) -> dict[tuple[int, ...], list[int]]:
        """SID prefix (codes) -> token ids allowed next, for every non-leaf trie node (for inspection; O(nodes))."""
        trie = self.trie
        radix = [s + 1 for s in trie.codebook_sizes]
        out: dict[tuple[int, ...], list[int]] = {}
        for node in range(trie.num_nodes):
            depth = trie.depth(node)
            if depth == trie.num_levels:
                continue
            key = int(trie.node_key[node])
            prefix = tuple((key // int(trie.mult[k])) % radix[k] - 1 for k in range(depth))
            out[prefix] = trie.allowed_tokens(node)
        return out

    def sid_nodes(
        self, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, trie nodes) of each SID token that the constrained sampler chose from a trie node.

        The allowed tokens at (rows[i], cols[i]) are the children of `nodes[i]`. The j-th SID token of a row must
        be of level j mod K and extend the catalog prefix of the row's current SID (the walk restarts at the root
        after K tokens); the first token off the trie (only possible with unconstrained sampling) ends the row's
        walk, i.e. it and the row's later SID tokens keep their unmasked log-probs.
        """
        dev = completion_ids.device
        vocab = len(self.token_level)
        safe = completion_ids.clamp(min=0, max=vocab - 1)
        is_sid = (self.token_level.to(dev)[safe] >= 0) & completion_mask.bool() & (completion_ids < vocab)
        r, c = is_sid.nonzero(as_tuple=True)  # row-major: each row's SID tokens in order
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        if r.numel() == 0:
            return empty, empty, empty
        ordinal = is_sid.long().cumsum(1)[r, c] - 1  # index of each SID token among its row's SID tokens
        n_rows, n_steps = completion_ids.shape[0], int(ordinal.max()) + 1
        tokens = torch.full((n_rows, n_steps), -1, dtype=torch.long, device=dev)
        tokens[r, ordinal] = completion_ids[r, c]
        before = torch.full((n_rows, n_steps), -1, dtype=torch.long, device=dev)
        node = torch.full((n_rows,), SIDTrie.root, dtype=torch.long, device=dev)
        ok = torch.ones(n_rows, dtype=torch.bool, device=dev)
        for s in range(n_steps):  # K steps per complete SID; one batched trie step each
            if s % self.num_levels == 0:
                node = torch.where(ok, torch.full_like(node, SIDTrie.root), node)
            child = self.trie.step(node, tokens[:, s])
            ok &= child >= 0  # a token off the trie (or of the wrong level) ends the row's walk
            before[:, s] = torch.where(ok, node, torch.full_like(node, -1))
            node = child
            if not bool(ok.any()):
                break  # every row has left the trie (unconstrained garbage): nothing further is masked
        nodes = before[r, ordinal]
        keep = nodes >= 0
        return r[keep], c[keep], nodes[keep]

    def sid_positions(
        self, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> tuple[list[int], list[int], list[list[int]]]:
        """`sid_nodes` as Python lists, with each position's allowed token ids instead of its trie node."""
        rows, cols, nodes = self.sid_nodes(completion_ids, completion_mask)
        return rows.tolist(), cols.tolist(), self.trie.allowed_token_lists(nodes.cpu())

    def masked_logps(self, logits: torch.Tensor, tokens: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """log softmax of `logits` (M, V) restricted to the children of `nodes` (M,) (from `sid_nodes`), at `tokens`."""
        t = self.trie.tensors(logits.device, logits.shape[1])
        nodes = nodes.to(logits.device)
        start = t["child_ptr"][nodes]
        counts = t["child_ptr"][nodes + 1] - start
        width = max(int(counts.max()), 1) if counts.numel() else 1
        offset = torch.arange(width, device=logits.device)
        valid = offset[None, :] < counts[:, None]
        edges = torch.where(valid, start[:, None] + offset[None, :], torch.zeros_like(valid, dtype=torch.long))
        return _gathered_logps(logits, tokens, t["child_token"][edges], valid)


def _gathered_logps(logits: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logit of `tokens` minus the log-sum-exp of each row's allowed logits (`ids` (M, W), `valid` marks real ones).

    Only the M x W allowed logits are touched, never an (M, V) mask; padding gets an additive -inf (faster than
    masked_fill with a bool mask on CPU, and differentiable with zero gradient there).
    """
    logits = logits.float()
    bias = torch.zeros(valid.shape, dtype=logits.dtype, device=logits.device).masked_fill_(~valid, float("-inf"))
    log_z = torch.logsumexp(logits.gather(1, ids) + bias, dim=-1)
    return logits.gather(1, tokens.view(-1, 1)).squeeze(1) - log_z


def masked_token_logps(
    logits: torch.Tensor, tokens: torch.Tensor, allowed: list[list[int]]
) -> torch.Tensor:
    """log softmax of `logits` (M, V) restricted to each row's allowed ids, at `tokens` (M,)."""
    width = max((len(a) for a in allowed), default=0) or 1
    padded = [list(a) + [-1] * (width - len(a)) for a in allowed]
    ids = torch.tensor(padded, dtype=torch.long, device=logits.device).view(len(allowed), width)
    valid = ids >= 0
    return _gathered_logps(logits, tokens, ids.clamp(min=0), valid)


def forced_positions(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    think_open_id: int,
    think_close_id: int,
    eos_id: int,
    max_block_tokens: list[int],
) -> torch.Tensor:
    """(B, T) bool: tokens the constrained grammar forced (the only allowed token), whose masked log-prob is 0.

    Every `<think>` (a block can only open with it), the first EOS (after the K-th SID token nothing else is
    allowed) and a `</think>` that closes a block at its text budget. (SID tokens with a single catalog child are
    handled by the SID masking, which gives them 0 too.) Valid for both layouts.
    """
    mask = completion_mask.bool()
    forced = (completion_ids == think_open_id) & mask
    is_eos = (completion_ids == eos_id) & mask
    first_eos = is_eos & (is_eos.long().cumsum(dim=1) == 1)
    forced |= first_eos
    closes = (completion_ids == think_close_id) & mask
    if bool(closes.any()):
        opens = (completion_ids == think_open_id) & mask
        for r in torch.nonzero(closes.any(dim=1)).flatten().tolist():
            open_pos = torch.nonzero(opens[r]).flatten().tolist()
            for j, c in enumerate(torch.nonzero(closes[r]).flatten().tolist()):
                if j >= len(open_pos) or j >= len(max_block_tokens):
                    break  # off-grammar row (unconstrained sampling): leave it unmasked
                if c - open_pos[j] - 1 >= max_block_tokens[j]:
                    forced[r, c] = True
    return forced
