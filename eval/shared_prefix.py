"""Shared-prefix attention for the SID beam search: each user's prompt keys/values are stored once, not once per beam.

Why: after the first SID level every user has `num_beams` rows that share the same prompt (a few hundred tokens) and
differ only in the short response written since. A per-row KV cache copies the prompt `num_beams` times at the first
expansion and makes every decoding step read it `num_beams` times: on the demo's reasoning model that attention was
46% of the beam search's time on CPU (scripts/bench_beam_cache.py). Here a step's attention is computed in two parts
with one softmax over both: the queries of a user's beams against that user's prompt keys (one batched matmul per
user), and each row's queries against its own response keys. The result equals ordinary attention over the
concatenated keys (up to float rounding).

It plugs into transformers through its public extension points: `SharedPrefixCache` is what the model's attention
layers call `update` on, and `shared_prefix_attention` is registered in `AttentionInterface` and selected only for the
duration of a search (`use_shared_prefix_attention`). Models that do not route attention through `AttentionInterface`,
or whose attention is not plain full causal attention (sliding windows, soft-capping, sinks: `supports_shared_prefix`),
keep the per-row static cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface

ATTN_NAME = "genrec_shared_prefix"


class SharedPrefixCache:
    """Prompt keys/values per user (written by the first forward) and response keys/values per row.

    Rows are grouped by user, `rows // users` per user, in user order (the beam search's layout). Before each forward
    the beam search sets the attention-mask columns: `prompt_mask` (users, P), once, and `response_mask` (rows, S) over
    the response positions written so far, including this forward's tokens.
    """

    def __init__(self, num_layers: int, max_response: int) -> None:
        self.num_layers = num_layers
        self.max_response = max_response
        self.prefix_k: list[torch.Tensor | None] = [None] * num_layers
        self.prefix_v: list[torch.Tensor | None] = [None] * num_layers
        self.resp_k: list[torch.Tensor | None] = [None] * num_layers
        self.resp_v: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers  # response positions written per layer (the same for every row: finished
        # rows write masked pads)
        self.prompt_mask: torch.Tensor | None = None  # (users, P) bool
        self.response_mask: torch.Tensor | None = None  # (rows, S) bool, S = response positions incl. this forward's

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Store this forward's keys/values: the prompt (first forward) or the next response positions."""
        if self.prefix_k[layer_idx] is None:
            # contiguous once, so the per-step matmuls read it in place instead of copying it each time
            self.prefix_k[layer_idx], self.prefix_v[layer_idx] = key.contiguous(), value.contiguous()
            return self.prefix_k[layer_idx], self.prefix_v[layer_idx]
        if self.resp_k[layer_idx] is None:
            rows, heads, _, dim = key.shape
            shape = (rows, heads, self.max_response, dim)
            self.resp_k[layer_idx] = key.new_zeros(shape)
            self.resp_v[layer_idx] = value.new_zeros(shape)
        start, t = self.lengths[layer_idx], key.shape[2]
        if start + t > self.max_response:
            raise RuntimeError(f"shared-prefix cache of {self.max_response} response positions is too short "
                               "(internal error)")
        self.resp_k[layer_idx][:, :, start:start + t] = key
        self.resp_v[layer_idx][:, :, start:start + t] = value
        self.lengths[layer_idx] = start + t
        return key, value

    def reorder_cache(self, src: torch.Tensor) -> None:
        """Rows become `src`'s rows (each new row copies a row of the same user); prompts stay per user. (The name
        and meaning of transformers' `Cache.reorder_cache`, so the beam search reorders every cache alike.)"""
        for i in range(self.num_layers):
            if self.resp_k[i] is not None:
                self.resp_k[i] = self.resp_k[i].index_select(0, src)
                self.resp_v[i] = self.resp_v[i].index_select(0, src)

    def attend(self, layer_idx: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        """(rows, heads, t, d) queries of response tokens -> (rows, t, heads, d) attention output."""
        pk, pv = self.prefix_k[layer_idx], self.prefix_v[layer_idx]
        rows, heads, t, dim = query.shape
        users, kv_heads, p_len, _ = pk.shape
        n, group = rows // users, heads // kv_heads
        s_len = self.lengths[layer_idx]
        rk, rv = self.resp_k[layer_idx][:, :, :s_len], self.resp_v[layer_idx][:, :, :s_len]
        # prompt part: a user's beams (and query heads sharing a key head) as one batch of queries
        qu = query.reshape(users, n, kv_heads, group, t, dim).permute(0, 2, 1, 3, 4, 5)
        qu = qu.reshape(users, kv_heads, -1, dim)
        s_prompt = torch.matmul(qu, pk.transpose(-1, -2)) * scaling  # (users, kv_heads, n*group*t, P)
        s_prompt = s_prompt.masked_fill(~self.prompt_mask[:, None, None, :], float("-inf"))
        # response part: each row against its own keys
        qr = query.reshape(rows, kv_heads, group * t, dim)
        s_resp = torch.matmul(qr, rk.transpose(-1, -2)) * scaling  # (rows, kv_heads, group*t, S)
        allowed = self.response_mask[:, None, None, :s_len].expand(rows, 1, t, s_len)
        causal = torch.ones(t, s_len, dtype=torch.bool, device=query.device).tril(s_len - t)
        allowed = (allowed & causal).view(rows, 1, 1, t, s_len).expand(rows, 1, group, t, s_len)
        s_resp = s_resp.masked_fill(~allowed.reshape(rows, 1, group * t, s_len), float("-inf"))
        # one softmax over both parts
        s_prompt_rows = s_prompt.view(users, kv_heads, n, group * t, p_len).transpose(1, 2).reshape(
            rows, kv_heads, group * t, p_len)
        weights = torch.softmax(torch.cat([s_prompt_rows, s_resp], dim=-1), dim=-1, dtype=torch.float32)
        weights = weights.to(query.dtype)
        w_prompt = weights[..., :p_len].reshape(users, n, kv_heads, group * t, p_len).transpose(1, 2).reshape(
            users, kv_heads, n * group * t, p_len)
        out = torch.matmul(w_prompt, pv).view(users, kv_heads, n, group * t, dim).transpose(1, 2).reshape(
            rows, kv_heads, group * t, dim)
        out = out + torch.matmul(weights[..., p_len:], rv)
        return out.view(rows, heads, t, dim).transpose(1, 2).contiguous()


def _prompt_attention(query, key, value, prompt_mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """Causal attention of the (left-padded) prompts; a pad query attends to itself so no row is all -inf."""
    users, heads, p_len, dim = query.shape
    group = heads // key.shape[1]
    if group > 1:
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    causal = torch.ones(p_len, p_len, dtype=torch.bool, device=query.device).tril()
    allowed = causal[None] & prompt_mask[:, None, :]
    allowed = allowed | torch.eye(p_len, dtype=torch.bool, device=query.device)[None]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed[:, None], scale=scaling)
    return out.transpose(1, 2).contiguous()


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prefix_cache: SharedPrefixCache | None = None, **kwargs):
    """`AttentionInterface` function: reads the cache passed as the forward's `shared_prefix_cache` argument."""
    cache = shared_prefix_cache
    if cache is None:
        raise RuntimeError(f"attention '{ATTN_NAME}' needs the forward's shared_prefix_cache argument")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if cache.prefix_k[module.layer_idx] is key:  # the prompt forward: this layer's keys were just stored as prefix
        return _prompt_attention(query, key, value, cache.prompt_mask, scale), None
    return cache.attend(module.layer_idx, query, scale), None


AttentionInterface.register(ATTN_NAME, shared_prefix_attention)


def supports_shared_prefix(model) -> bool:
    """Whether `shared_prefix_attention` computes this model's attention exactly: attention routed through transformers'
    `AttentionInterface` (so it can be switched), and plain full causal attention in every layer. Sliding windows,
    logit soft-capping and attention sinks change the softmax this function computes, so those models keep the
    per-row cache."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "attn_logit_softcapping", None):
        return False
    if any(kind != "full_attention" for kind in (getattr(cfg, "layer_types", None) or [])):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    if any(hasattr(m, "sinks") for m in model.modules()):
        return False
    can = getattr(model, "_can_set_attn_implementation", None)
    try:
        return bool(can()) if callable(can) else False
    except Exception:  # noqa: BLE001 - a model that cannot answer cannot be switched
        return False


@contextmanager
def use_shared_prefix_attention(model) -> Iterator[None]:
    """Select `shared_prefix_attention` for the duration of a search, then restore the model's own."""
    before = model.config._attn_implementation
    model.set_attn_implementation(ATTN_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
