"""Where the SID tokens of a completion are, which tokens the constrained sampler allowed there, and the masked
log-probs at those positions.

Why: constrained rollouts draw each SID token from the model's distribution restricted to the children of the SID
prefix generated so far. Training on the unmasked log-probs would compute ratios and KL for a different policy than
the one that sampled (they differ by several nats at SID positions). The allowed set depends only on the SID tokens
generated before in the same completion (the prefix trie is reset at each response), so it is recovered here from the
token ids alone, in either layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sid_tokenizer.sidmap import SIDMap


@dataclass
class SIDTable:
    """Token id <-> (level, code) lookup and the catalog prefix tree as allowed-token lists."""

    token_level: torch.Tensor  # (V,) level of each token id, -1 for non-SID tokens
    token_code: torch.Tensor  # (V,) code of each token id, -1 for non-SID tokens
    children: dict[tuple[int, ...], list[int]]  # SID prefix (codes) -> token ids allowed next
    num_levels: int

    @classmethod
    def build(cls, sid_map: SIDMap, spec) -> "SIDTable":
        """From the SID map (catalog prefixes) and a `genrec.response.ResponseSpec` (token ids)."""
        if spec.codebook_sizes != list(sid_map.codebook_sizes):
            raise ValueError(
                f"response spec has codebook sizes {spec.codebook_sizes}, the SID map {list(sid_map.codebook_sizes)}"
            )
        ids = spec.level_token_ids
        children: dict[tuple[int, ...], set[int]] = {}
        for codes in sid_map.item_to_codes.values():
            for level in range(len(codes)):
                children.setdefault(tuple(codes[:level]), set()).add(ids[level][codes[level]])
        return cls(
            spec.token_level.clone(), spec.token_code.clone(), {k: sorted(v) for k, v in children.items()},
            sid_map.num_levels,
        )

    def sid_positions(
        self, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> tuple[list[int], list[int], list[list[int]]]:
        """(rows, cols, allowed ids) for each SID token that the constrained sampler chose from a trie node.

        The j-th SID token of a row must be of level j and extend a catalog prefix; anything else (only possible
        with unconstrained sampling) is skipped, i.e. keeps its unmasked log-prob.
        """
        vocab = len(self.token_level)
        safe = completion_ids.clamp(min=0, max=vocab - 1)
        levels = self.token_level.to(completion_ids.device)[safe]
        codes = self.token_code.to(completion_ids.device)[safe]
        is_sid = (levels >= 0) & completion_mask.bool() & (completion_ids < vocab)
        out_rows: list[int] = []
        out_cols: list[int] = []
        allowed: list[list[int]] = []
        prefix: list[int] = []
        current_row, row_ok = -1, True
        for r, c in is_sid.nonzero().tolist():  # row-major: each row's SID tokens in order
            if r != current_row:
                current_row, prefix, row_ok = r, [], True
            if not row_ok:
                continue
            node = self.children.get(tuple(prefix))
            tid = int(completion_ids[r, c])
            if int(levels[r, c]) != len(prefix) or node is None or tid not in node:
                row_ok = False  # off the trie: only possible without constraints; keep unmasked log-probs
                continue
            out_rows.append(r)
            out_cols.append(c)
            allowed.append(node)
            prefix.append(int(codes[r, c]))
            if len(prefix) == self.num_levels:  # a complete SID; a further SID token would start a new walk
                prefix = []
        return out_rows, out_cols, allowed


def masked_token_logps(
    logits: torch.Tensor, tokens: torch.Tensor, allowed: list[list[int]]
) -> torch.Tensor:
    """log softmax of `logits` (M, V) restricted to each row's allowed ids, at `tokens` (M,)."""
    mask = torch.zeros_like(logits, dtype=torch.bool)
    row_idx = torch.tensor([i for i, ids in enumerate(allowed) for _ in ids], dtype=torch.long, device=logits.device)
    col_idx = torch.tensor([t for ids in allowed for t in ids], dtype=torch.long, device=logits.device)
    mask[row_idx, col_idx] = True
    logits = logits.float()
    log_z = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return logits.gather(1, tokens.view(-1, 1)).squeeze(1) - log_z


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
