"""Prefix trie over every catalog SID, in token-id space, for constrained decoding.

Layout (scales to 100k+ items, no dense node x vocab table):

- Each node is a SID prefix of depth d (root: d = 0, leaves: d = K). Its *key* is a mixed-radix integer
  ``sum_j (code_j + 1) * mult_j`` over the prefix's levels, so a prefix's key is the sum of its tokens'
  per-token keys (`token_key_table`). Nodes are numbered in key order, so ``node = searchsorted(node_key,
  key)`` finds a prefix in one vectorised op, and a child is ``key(parent) + token_key(token)``.
- Children in CSR form: the children of node n are edges ``child_ptr[n]:child_ptr[n+1]`` of the flat arrays
  `child_token` (token ids, ascending) and `child_node`.
- Leaves (depth K) know their item (`node_item`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from sid_tokenizer.sidmap import SIDMap, sid_token

_KEY_LIMIT = 2**62


class SIDTrie:
    """Prefix trie of catalog SIDs over token ids (see module docstring for the layout)."""

    root: int = 0

    def __init__(
        self,
        codes: np.ndarray | Sequence[Sequence[int]],
        level_token_ids: Sequence[Sequence[int]],
        item_ids: Sequence[str] | None = None,
    ) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise ValueError(f"SIDTrie needs a non-empty (items, levels) array of codes, got shape {codes.shape}")
        n_items, k_levels = codes.shape
        if len(level_token_ids) != k_levels:
            raise ValueError(f"codes have {k_levels} levels but {len(level_token_ids)} level token tables were given")
        self.level_token_ids = [np.asarray(t, dtype=np.int64) for t in level_token_ids]
        self.codebook_sizes = [len(t) for t in self.level_token_ids]
        for k in range(k_levels):
            col = codes[:, k]
            bad = np.nonzero((col < 0) | (col >= self.codebook_sizes[k]))[0]
            if len(bad):
                i = int(bad[0])
                raise ValueError(
                    f"item {item_ids[i] if item_ids is not None else i}: code {int(col[i])} at level {k} "
                    f"outside the {self.codebook_sizes[k]} tokens of that level"
                )
        all_tok = np.concatenate(self.level_token_ids)
        if len(np.unique(all_tok)) != len(all_tok):
            raise ValueError("level token tables share token ids; every SID token needs its own id")
        if item_ids is not None and len(item_ids) != n_items:
            raise ValueError(f"{len(item_ids)} item ids for {n_items} SIDs")
        self.item_ids: list[str] = list(item_ids) if item_ids is not None else [str(i) for i in range(n_items)]
        self.num_levels = k_levels

        # Mixed-radix multipliers: level k digit is code_k + 1 in base (size_k + 1); 0 means "level absent".
        radix = [s + 1 for s in self.codebook_sizes]
        total = 1
        for r in radix:
            total *= r
        if total >= _KEY_LIMIT:
            raise ValueError(
                f"SID space too large for 64-bit prefix keys (product of codebook sizes + 1 = {total}); "
                "use fewer levels or smaller codebooks"
            )
        mult = [1] * k_levels
        for k in range(k_levels - 2, -1, -1):
            mult[k] = mult[k + 1] * radix[k + 1]
        self.mult = np.asarray(mult, dtype=np.int64)

        digits = codes + 1
        partial = np.cumsum(digits * self.mult[None, :], axis=1)  # (N, K): key of each item's prefix of depth d+1
        full = partial[:, -1]
        uniq, first = np.unique(full, return_index=True)
        if len(uniq) != n_items:
            dup_key = full[np.setdiff1d(np.arange(n_items), first)[0]]
            dups = np.nonzero(full == dup_key)[0][:2]
            raise ValueError(
                f"items {self.item_ids[dups[0]]!r} and {self.item_ids[dups[1]]!r} share the same SID; SIDs must be unique"
            )
        keys = [np.zeros(1, dtype=np.int64)] + [np.unique(partial[:, d]) for d in range(k_levels)]
        depths = [np.full(len(kk), d, dtype=np.int64) for d, kk in enumerate(keys)]
        all_keys = np.concatenate(keys)
        all_depth = np.concatenate(depths)
        order = np.argsort(all_keys, kind="stable")
        self.node_key = all_keys[order]
        self.node_depth = all_depth[order]
        n_nodes = len(self.node_key)

        # Parent and edge token of every non-root node (nodes are in key order, root first).
        child_ids = np.arange(1, n_nodes)
        d = self.node_depth[child_ids]  # depth of the child = level of its edge token + 1
        lvl = d - 1
        digit = (self.node_key[child_ids] // self.mult[lvl]) % np.asarray(radix, dtype=np.int64)[lvl]
        parent_key = self.node_key[child_ids] - digit * self.mult[lvl]
        parent = np.searchsorted(self.node_key, parent_key)
        tok = np.empty(len(child_ids), dtype=np.int64)
        for k in range(k_levels):
            sel = lvl == k
            tok[sel] = self.level_token_ids[k][digit[sel] - 1]
        e_order = np.lexsort((tok, parent))
        self.child_node = child_ids[e_order]
        self.child_token = tok[e_order]
        counts = np.bincount(parent, minlength=n_nodes)
        self.child_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

        self.node_item = np.full(n_nodes, -1, dtype=np.int64)
        self.node_item[np.searchsorted(self.node_key, full)] = np.arange(n_items)
        self._codes = codes
        self._code_to_item = {tuple(int(c) for c in row): i for i, row in enumerate(codes.tolist())}
        self._torch: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def from_codes(
        cls,
        codes: Sequence[Sequence[int]] | np.ndarray,
        level_token_ids: Sequence[Sequence[int]],
        item_ids: Sequence[str] | None = None,
    ) -> "SIDTrie":
        """Trie from code tuples and, per level, the token id of each code."""
        return cls(codes, level_token_ids, item_ids)

    @classmethod
    def from_sid_map(cls, sid_map: SIDMap, tokenizer: Any) -> "SIDTrie":
        """Trie of every item of `sid_map`, with token ids from a Hugging Face tokenizer."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in sid_map.all_tokens() if t not in vocab]
        if missing:
            raise ValueError(
                f"tokenizer lacks {len(missing)} SID tokens (e.g. {', '.join(missing[:3])}); "
                "add them with genrec.modeling.add_sid_tokens"
            )
        tables = [[vocab[sid_token(k, c)] for c in range(n)] for k, n in enumerate(sid_map.codebook_sizes)]
        items = list(sid_map.item_to_codes)
        codes = np.asarray([sid_map.item_to_codes[i] for i in items], dtype=np.int64).reshape(len(items), sid_map.num_levels)
        return cls(codes, tables, items)

    @classmethod
    def from_spec(cls, sid_map: SIDMap, spec: Any) -> "SIDTrie":
        """Trie of `sid_map` with the token ids of a `genrec.response.ResponseSpec`."""
        if list(spec.codebook_sizes) != list(sid_map.codebook_sizes):
            raise ValueError(f"spec codebook sizes {spec.codebook_sizes} differ from the SID map's {sid_map.codebook_sizes}")
        items = list(sid_map.item_to_codes)
        codes = np.asarray([sid_map.item_to_codes[i] for i in items], dtype=np.int64).reshape(len(items), sid_map.num_levels)
        return cls(codes, spec.level_token_ids, items)

    # --- sizes --------------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_nodes(self) -> int:
        return len(self.node_key)

    @property
    def max_token_id(self) -> int:
        return int(max(t.max() for t in self.level_token_ids))

    # --- per-token tables ---------------------------------------------------------------------------------
    def token_key_table(self, vocab_size: int) -> np.ndarray:
        """key contribution of each vocab id: (code + 1) * mult[level] for SID tokens, 0 otherwise."""
        self._check_vocab(vocab_size)
        out = np.zeros(vocab_size, dtype=np.int64)
        for k, ids in enumerate(self.level_token_ids):
            out[ids] = (np.arange(len(ids)) + 1) * self.mult[k]
        return out

    def token_level_table(self, vocab_size: int) -> np.ndarray:
        """SID level of each vocab id, -1 for non-SID tokens."""
        self._check_vocab(vocab_size)
        out = np.full(vocab_size, -1, dtype=np.int64)
        for k, ids in enumerate(self.level_token_ids):
            out[ids] = k
        return out

    def _check_vocab(self, vocab_size: int) -> None:
        if self.max_token_id >= vocab_size:
            raise ValueError(
                f"SID token id {self.max_token_id} does not fit a vocabulary of size {vocab_size}; "
                "resize the model's embeddings to the tokenizer (model.resize_token_embeddings(len(tokenizer)))"
            )

    def tensors(self, device: torch.device | str, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
        """Torch copies of the arrays on `device` (cached), for vectorised decoding.

        The per-token tables (`token_key`, `token_level`) have `vocab_size` entries (default: the largest
        SID token id + 1).
        """
        dev = torch.device(device)
        nodes = self._torch.get((str(dev), -1))
        if nodes is None:
            nodes = {
                "node_key": torch.as_tensor(self.node_key, device=dev),
                "node_depth": torch.as_tensor(self.node_depth, device=dev),
                "child_ptr": torch.as_tensor(self.child_ptr, device=dev),
                "child_token": torch.as_tensor(self.child_token, device=dev),
                "child_node": torch.as_tensor(self.child_node, device=dev),
            }
            self._torch[(str(dev), -1)] = nodes
        if vocab_size is None:
            vocab_size = self.max_token_id + 1
        key = (str(dev), int(vocab_size))
        t = self._torch.get(key)
        if t is None:
            t = dict(nodes)
            t["token_key"] = torch.as_tensor(self.token_key_table(vocab_size), device=dev)
            t["token_level"] = torch.as_tensor(self.token_level_table(vocab_size), device=dev)
            self._torch[key] = t
        return t

    # --- vectorised operations ----------------------------------------------------------------------------
    def nodes_for_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Node id of each prefix key, -1 when the prefix is not in the trie."""
        t = self.tensors(keys.device)
        nk = t["node_key"]
        idx = torch.searchsorted(nk, keys.contiguous()).clamp_(max=len(nk) - 1)
        return torch.where(nk.index_select(0, idx) == keys, idx, -1)

    def nodes_for_prefixes(self, prefix_tokens: torch.Tensor, pad: int = -1) -> torch.Tensor:
        """Node of each row's SID prefix (B, L) (entries equal to `pad` are ignored), -1 when it is no prefix.

        Row r must hold levels 0..d-1 in order (then pad): any other order, or a non-SID token, gives -1.
        """
        if prefix_tokens.dim() != 2:
            raise ValueError(f"nodes_for_prefixes expects (batch, length) tokens, got shape {tuple(prefix_tokens.shape)}")
        dev = prefix_tokens.device
        t = self.tensors(dev)
        valid = prefix_tokens != pad
        safe = torch.where(valid, prefix_tokens, torch.zeros_like(prefix_tokens))
        in_range = (safe >= 0) & (safe < len(t["token_key"]))
        safe = torch.where(in_range, safe, torch.zeros_like(safe))
        lvl = torch.where(valid, t["token_level"][safe], torch.full_like(safe, -2))
        lvl = torch.where(valid & ~in_range, torch.full_like(lvl, -1), lvl)
        n_valid = valid.sum(1)
        # levels must be exactly 0, 1, ..., n-1 in the first n columns
        pos = torch.arange(prefix_tokens.shape[1], device=dev).expand_as(lvl)
        expect = torch.where(pos < n_valid[:, None], pos, torch.full_like(pos, -2))
        well_formed = (lvl == expect).all(1)
        keys = torch.where(valid, t["token_key"][safe], torch.zeros_like(safe)).sum(1)
        nodes = self.nodes_for_keys(keys)
        return torch.where(well_formed, nodes, torch.full_like(nodes, -1))

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node through each token, -1 when the token is not a child (or the node is -1)."""
        dev = nodes.device
        t = self.tensors(dev)
        ok_node = nodes >= 0
        safe_n = torch.where(ok_node, nodes, torch.zeros_like(nodes))
        ok_tok = (tokens >= 0) & (tokens < len(t["token_key"]))
        safe_t = torch.where(ok_tok, tokens, torch.zeros_like(tokens))
        right_level = t["token_level"][safe_t] == t["node_depth"][safe_n]
        child = self.nodes_for_keys(t["node_key"][safe_n] + t["token_key"][safe_t])
        good = ok_node & ok_tok & right_level & (child >= 0)
        return torch.where(good, child, torch.full_like(child, -1))

    def fill_allowed(self, mask: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor, value: bool | float = True) -> None:
        """Set ``mask[rows[i], child tokens of nodes[i]] = value`` for every i (in place, vectorised).

        `mask` may be a bool mask (value True) or a float additive bias (value 0.0 over a -inf row).
        """
        if rows.numel() == 0:
            return
        t = self.tensors(mask.device, mask.shape[1])
        ptr = t["child_ptr"]
        start = ptr.index_select(0, nodes)
        counts = ptr.index_select(0, nodes + 1) - start
        total = int(counts.sum())
        if total == 0:
            return
        rep_rows = torch.repeat_interleave(rows, counts, output_size=total)
        offsets = torch.cumsum(counts, 0) - counts  # exclusive cumsum
        within = torch.arange(total, device=mask.device) - torch.repeat_interleave(offsets, counts, output_size=total)
        edges = torch.repeat_interleave(start, counts, output_size=total) + within
        mask.index_put_((rep_rows, t["child_token"].index_select(0, edges)), torch.tensor(value, dtype=mask.dtype, device=mask.device))

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(B, V) bool mask of the child tokens of each node; rows with node -1 or a leaf allow nothing."""
        nodes = torch.as_tensor(nodes, dtype=torch.long)
        mask = torch.zeros(nodes.shape[0], vocab_size, dtype=torch.bool, device=nodes.device)
        rows = torch.nonzero(nodes >= 0).flatten()
        self.fill_allowed(mask, rows, nodes[rows])
        return mask

    def allowed_mask_for_prefixes(self, prefix_tokens: torch.Tensor, vocab_size: int, pad: int = -1) -> torch.Tensor:
        """(B, V) bool mask of the next SID tokens after each row's SID prefix (B, L) (see `nodes_for_prefixes`).

        Rows whose prefix is not a catalog prefix, or is already a full SID, allow nothing.
        """
        return self.allowed_mask(self.nodes_for_prefixes(prefix_tokens, pad), vocab_size)

    # --- scalar helpers -----------------------------------------------------------------------------------
    def children(self, node: int) -> tuple[list[int], list[int]]:
        """(child token ids, child node ids) of one node."""
        a, b = int(self.child_ptr[node]), int(self.child_ptr[node + 1])
        return self.child_token[a:b].tolist(), self.child_node[a:b].tolist()

    def allowed_tokens(self, node: int) -> list[int]:
        if node < 0:
            return []
        return self.children(node)[0]

    def node_for_tokens(self, tokens: Sequence[int]) -> int:
        """Node of a SID prefix given as token ids (levels 0..d-1), -1 when it is not a catalog prefix."""
        node = self.root
        for tok in tokens:
            toks, kids = self.children(node)
            i = int(np.searchsorted(toks, int(tok))) if toks else 0
            if i >= len(toks) or toks[i] != int(tok):
                return -1
            node = kids[i]
        return node

    def depth(self, node: int) -> int:
        return int(self.node_depth[node])

    def is_complete(self, node: int) -> bool:
        """True when the node is a full SID (a leaf), i.e. it names a catalog item."""
        return node >= 0 and int(self.node_depth[node]) == self.num_levels

    def item_for_node(self, node: int) -> str | None:
        if node < 0:
            return None
        i = int(self.node_item[node])
        return self.item_ids[i] if i >= 0 else None

    def item_for_codes(self, codes: Sequence[int]) -> str | None:
        i = self._code_to_item.get(tuple(int(c) for c in codes))
        return None if i is None else self.item_ids[i]

    def item_for_tokens(self, tokens: Sequence[int]) -> str | None:
        return self.item_for_node(self.node_for_tokens(tokens))

    def is_prefix(self, codes: Sequence[int]) -> bool:
        """True when `codes` (a code tuple of any depth <= K) starts at least one catalog SID."""
        if len(codes) > self.num_levels:
            return False
        if any(not 0 <= c < self.codebook_sizes[k] for k, c in enumerate(codes)):
            return False
        key = int(sum((int(c) + 1) * int(self.mult[k]) for k, c in enumerate(codes)))
        i = int(np.searchsorted(self.node_key, key))
        return i < len(self.node_key) and int(self.node_key[i]) == key
