"""Step-wise constrained beam search over SIDs, for all three response layouts.

Why our own loop and not `generate(num_beams=...)`: in the interleaved layout a beam is a SID prefix
*with its reasoning*; HF beam search would let free-text tokens compete with SID tokens for the beam
slots, so beams would differ only in wording instead of in the item they lead to. Here only SID
choices branch:

- ``interleaved``: every beam writes its thinking block greedily (no branching), then every beam is
  expanded over its trie children; per user the `num_beams` best (beam, child) pairs survive, ranked
  by cumulative SID log-probability (thinking tokens do not count). Repeat for each level.
- ``blocks_first``: one greedy pass writes all K blocks, then a trie beam search over the K SID tokens.
- ``direct`` (no reasoning, stage-1 models): a trie beam search over the K SID tokens.

At the last level the `k` best leaves (not just `num_beams`) are kept, so `k` may exceed
`num_beams`: the list is then completed by the best-scoring children of the surviving beams, the
same items a wider final beam would add. Excluded items (the `new` protocol) are masked at the last
level only, so `search_variants` decodes once for several exclusion variants (the `all` and `new`
protocols) and runs only the last expansion per variant. Beams always carry distinct SID prefixes
(children of distinct prefixes are distinct), so the returned items are distinct; they are catalog
items by construction (trie leaves).

Scores are raw log-probabilities (log-softmax over the whole vocabulary, as HF beam search uses), with
no temperature, top-k/top-p or repetition penalty: nothing from a model's generation_config applies.
Optional `level_weights` rank by sum_l w_l log p(level l) instead ("auto" = 0.5 on the last two levels, the CLI's
default; docs/evaluation.md); the returned score stays the plain log-probability.
Greedy blocks never repeat a token n-gram of `block_no_repeat_ngram` (6) tokens within one block (transformers'
`no_repeat_ngram_size` rule on the block's own tokens) nor hold more than `block_max_run` (3) identical tokens in a
row: a cut on a looping block, not a penalty on the text (the teachers' traces almost never do either).
The loop keeps one KV cache for all rows; rows that finished their block wait on masked pad tokens
(attention mask 0, positions from the mask's cumulative sum), and beam selection reorders the cache.
By default (`cache="auto"`) the prompt's keys/values are kept once per user and only the response's per beam row
(`eval/shared_prefix.py`): a user's beams share the prompt, and reading it once per beam at every step was 46% of
a reasoning model's search time on CPU. Models whose attention does not go through transformers' AttentionInterface
get `cache="static"`: a `StaticCache` sized to the longest possible response (prompt + K blocks at their budget +
tags + SIDs). A `DynamicCache` re-concatenates every layer's keys at each token, which took 60% of the interleaved
run time on CPU (`cache="dynamic"` keeps it for comparison). All three return the same lists (tested).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from transformers import DynamicCache, StaticCache

from genrec.grammar import BLOCK, BLOCK_TEMPLATES, INTERLEAVED, ResponseGrammar, check_layout
from genrec.response import ResponseSpec
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS
from genrec.trie import SIDTrie
from eval.shared_prefix import SharedPrefixCache, supports_shared_prefix, use_shared_prefix_attention
from sid_tokenizer.sidmap import SIDMap

NEG_INF = float("-inf")
CACHE_IMPLS = ("auto", "shared", "static", "dynamic")  # auto = shared when the model supports it, else static
# Repetition guard of greedy blocks (0 = off): no token n-gram of BLOCK_NO_REPEAT_NGRAM tokens twice in one block, no
# token more than BLOCK_MAX_RUN times in a row. A small model copying a long title from its prompt can fall into a loop
# ("ppppppresentative", "SNSNSNSN"). jobs-kaggle / amazon reasoning models: 4.1% / 6.2% of blocks repeat a 6-gram
# (their teachers' traces 0.05% / 0.65%), 3.8% / 4.2% hold a run of 3+ identical tokens (teachers 0.02% / 0.18%) and
# 3.5% / 1.8% a run of 4+ (teachers 0%) (docs/bench/learning.md, session 30).
BLOCK_NO_REPEAT_NGRAM = 6
BLOCK_MAX_RUN = 3


def repeated_ngram_bans(hist: torch.Tensor, length: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, tokens) that would repeat an n-gram of a row's block: `hist` (R, L) holds each row's block tokens,
    `length` (R,) how many. A token is banned after row r's last n - 1 tokens when that (n - 1)-gram occurred
    earlier in the block followed by it (HF's `no_repeat_ngram_size` rule, on the block's own tokens only)."""
    cap = hist.shape[1]
    empty = torch.zeros(0, dtype=torch.long, device=hist.device)
    if n < 1 or cap < n or not bool((length >= n).any()):
        return empty, empty
    if n == 1:  # any token already in the block
        starts = torch.arange(cap, device=hist.device)
        rows, cols = (starts[None, :] < length[:, None]).nonzero(as_tuple=True)
        return rows, hist[rows, cols]
    windows = hist.unfold(1, n - 1, 1)[:, : cap - n + 1]  # (R, W, n-1): the (n-1)-gram starting at j, j + n - 1 < L
    idx = (length[:, None] - n + 1).clamp(min=0) + torch.arange(n - 1, device=hist.device)[None, :]
    last = hist.gather(1, idx.clamp(max=cap - 1))  # (R, n-1): each row's last n - 1 tokens
    starts = torch.arange(windows.shape[1], device=hist.device)
    hit = (windows == last[:, None, :]).all(-1) & (starts[None, :] < (length[:, None] - n + 1))
    rows, cols = hit.nonzero(as_tuple=True)
    return rows, hist[rows, cols + n - 1]


def long_run_bans(hist: torch.Tensor, length: torch.Tensor, run: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, tokens) that would make a row's block end in more than `run` identical tokens (same layout as
    `repeated_ngram_bans`)."""
    if run < 1 or not bool((length >= run).any()):
        empty = torch.zeros(0, dtype=torch.long, device=hist.device)
        return empty, empty
    idx = (length[:, None] - run).clamp(min=0) + torch.arange(run, device=hist.device)[None, :]
    last = hist.gather(1, idx.clamp(max=hist.shape[1] - 1))  # (R, run): each row's last `run` tokens
    rows = ((length >= run) & (last == last[:, :1]).all(1)).nonzero(as_tuple=True)[0]
    return rows, last[rows, 0]


def _positive_weights(weights: Sequence[float]) -> list[float]:
    weights = [float(w) for w in weights]
    if not all(w > 0 for w in weights):  # NaN fails too
        raise ValueError(f"level_weights must all be > 0, got {weights}")
    return weights


AUTO_LEVEL_WEIGHTS = "auto"
FINE_LEVEL_WEIGHT = 0.5  # the last two levels' weight under "auto"
LevelWeights = Sequence[float] | str | None  # weights, "auto" or None (plain log-probability)


def auto_level_weights(levels: int) -> list[float]:
    """The "auto" weights: 0.5 on the last two SID levels (the finest code and the dedup code), 1 on the coarser.

    Why: the summed log-probability lets the fine levels, where look-alike items split, decide too much of the
    order; halving them gave +0.004 to +0.010 NDCG@10 on the demo market and amazon and +0.002 on jobs-kaggle
    (docs/bench/learning.md, sessions 17-18). With 1 or 2 levels scaling every level is the plain ranking."""
    if levels <= 2:
        return [1.0] * levels
    return [1.0] * (levels - 2) + [FINE_LEVEL_WEIGHT] * 2


def check_level_weights(weights: LevelWeights, levels: int) -> list[float] | None:
    """None, or one positive weight per SID level (all 1 is the same as None: plain log-probability); "auto" is
    `auto_level_weights(levels)`."""
    if isinstance(weights, str):
        weights = parse_level_weights(weights)
        if weights == AUTO_LEVEL_WEIGHTS:
            weights = auto_level_weights(levels)
    if weights is None or len(weights) == 0:
        return None
    weights = _positive_weights(weights)
    if len(weights) != levels:
        raise ValueError(f"level_weights: {len(weights)} weights for {levels} SID levels (one per level expected)")
    return None if all(w == 1.0 for w in weights) else weights


def parse_level_weights(text: str) -> list[float] | str | None:
    """The --level_weights flag: "auto", numbers ("1,1,0.5,0.5"), or "" / "none" (None: the plain log-probability).
    The beam search checks the count against the SID map and resolves "auto" there (it knows the levels)."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return None
    if text.lower() == AUTO_LEVEL_WEIGHTS:
        return AUTO_LEVEL_WEIGHTS
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--level_weights: expected 'auto', 'none' or comma-separated numbers, got {text!r}") from None
    return _positive_weights(weights)


@dataclass
class Beam:
    """One returned item with its cumulative SID log-probability and the reasoning that led to it."""

    item_id: str
    score: float
    codes: tuple[int, ...]
    blocks: tuple[str, ...] = ()
    step_logprobs: tuple[float, ...] = ()
    block_token_ids: tuple[tuple[int, ...], ...] = ()
    filled: bool = False


@dataclass
class _Rows:
    """Decoding state of all rows (users x beams); `n` beams per user, rows grouped by user."""

    n: int
    score: torch.Tensor
    node: torch.Tensor
    codes: torch.Tensor
    step_lp: torch.Tensor
    blocks: list[list[list[int]]] = field(default_factory=list)

    def select(self, src: torch.Tensor) -> None:
        self.score = self.score[src]
        self.node = self.node[src]
        self.codes = self.codes[src]
        self.step_lp = self.step_lp[src]
        idx = src.tolist()
        self.blocks = [[list(b) for b in self.blocks[i]] for i in idx]


class _KV:
    """KV cache plus the (rows, max_len) attention mask written so far (`cur` columns; the first `prompt_len` are the
    prompt's)."""

    def __init__(self, cache, rows: int, max_len: int, device: torch.device, static: bool) -> None:
        self.cache = cache
        self.static = static
        self.shared = isinstance(cache, SharedPrefixCache)
        self.mask = torch.zeros((rows, max_len if static else 0), dtype=torch.long, device=device)
        self.cur = 0
        self.prompt_len = 0

    def reorder(self, src: torch.Tensor) -> None:
        self.cache.reorder_cache(src)
        self.mask = self.mask[src]


class SIDBeamSearch:
    """Constrained SID beam search for one model, tokenizer and SID map (see module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        sid_map: SIDMap,
        layout: str = INTERLEAVED,
        *,
        num_beams: int = 20,
        max_block_tokens: int | Sequence[int] = DEFAULT_MAX_BLOCK_TOKENS,
        min_block_tokens: int | Sequence[int] = 0,
        cache: str = "auto",
        level_weights: LevelWeights = None,
        block_no_repeat_ngram: int = BLOCK_NO_REPEAT_NGRAM,
        block_max_run: int = BLOCK_MAX_RUN,
    ) -> None:
        check_layout(layout)
        for name, value in (("block_no_repeat_ngram", block_no_repeat_ngram), ("block_max_run", block_max_run)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {value}")
        self.block_no_repeat_ngram, self.block_max_run = int(block_no_repeat_ngram), int(block_max_run)
        if cache not in CACHE_IMPLS:
            raise ValueError(f"cache must be one of {', '.join(CACHE_IMPLS)}, got {cache!r}")
        if cache == "auto":
            cache = "shared" if supports_shared_prefix(model) else "static"
        elif cache == "shared" and not supports_shared_prefix(model):
            raise ValueError(f"cache 'shared' needs plain causal attention through transformers' AttentionInterface "
                             f"(no sliding window, soft-capping or sinks); {type(model).__name__} with this config "
                             "does not have it (use 'static')")
        self.cache_impl = cache
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        self.model = model
        self.tokenizer = tokenizer
        self.sid_map = sid_map
        self.layout = layout
        self.num_beams = int(num_beams)
        self.level_weights = check_level_weights(level_weights, sid_map.num_levels)
        self.spec = ResponseSpec.from_tokenizer(tokenizer, sid_map, layout)
        self.grammar = ResponseGrammar(self.spec, SIDTrie.from_spec(sid_map, self.spec), max_block_tokens, min_block_tokens)
        self.trie = self.grammar.trie
        self.max_block, self.min_block = self.grammar.max_block, self.grammar.min_block
        self.vocab = int(model.get_output_embeddings().weight.shape[0])
        # Additive 0 / -inf rows of the grammar's block templates, by budget status: 0 under min_block_tokens (text
        # only), 1 between (text or </think>), 2 at max_block_tokens (</think> only). Adding a bias row is faster than
        # building a bool mask and `masked_fill` on CPU (scripts/bench_beam_mask.py) and gives the same argmax.
        bias = self.grammar.tables("cpu", self.vocab)["bias"]
        self._block_bias_rows = {torch.device("cpu"): bias[list(BLOCK_TEMPLATES)].clone()}
        self.pad_id = self.spec.pad_id
        self.forward_calls = 0
        # only the last position's logits are used: skip the LM head over the prompt when the model allows it
        params = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        # transformers >= 5.x names the KV cache `cache` (`past_key_values` is deprecated, removed in 5.40)
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, kv: _KV, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Feed (R, t) tokens with their (R, t) attention-mask values; returns the last position's logits."""
        t = tokens.shape[1]
        start = kv.cur
        if kv.static:
            if start + t > kv.mask.shape[1]:
                raise RuntimeError(f"static KV cache of {kv.mask.shape[1]} positions is too short (internal error)")
            kv.mask[:, start:start + t] = mask
        else:
            kv.mask = torch.cat([kv.mask, mask], dim=1)
        kv.cur = start + t
        pos = (kv.mask[:, :kv.cur].cumsum(1) - 1).clamp_(min=0)[:, start:]
        extra = {"logits_to_keep": 1} if self._keeps_logits else {}
        if kv.shared:
            if start == 0:  # the prompt
                kv.prompt_len = t
                kv.cache.prompt_mask = mask.bool()
            kv.cache.response_mask = kv.mask[:, kv.prompt_len:kv.cur].bool()
            extra["shared_prefix_cache"] = kv.cache
        out = self.model(
            input_ids=tokens, attention_mask=kv.mask, position_ids=pos, use_cache=True,
            cache_position=torch.arange(start, start + t, device=tokens.device), **{self._cache_kwarg: kv.cache},
            **extra,
        )
        self.forward_calls += 1
        return out.logits[:, -1, :].float()

    def _block_bias(self, blen: torch.Tensor, level: int) -> torch.Tensor:
        """(R, V) additive 0 / -inf bias of the tokens allowed after `blen` (R,) text tokens of block `level`."""
        rows = self._block_bias_rows.get(blen.device)
        if rows is None:
            rows = self._block_bias_rows[blen.device] = self._block_bias_rows[torch.device("cpu")].to(blen.device)
        status = (blen >= self.min_block[level]).long() + (blen >= self.max_block[level]).long()  # min <= max
        return rows.index_select(0, status)

    def _block(self, kv: _KV, logits, rows: _Rows, level: int, live: torch.Tensor):
        """Greedy thinking block `level` for every row (the `<think>` is already fed).

        Returns the logits right after each row's `</think>`.
        """
        r = logits.shape[0]
        dev = logits.device
        close = self.spec.think_close_id
        blen = torch.zeros(r, dtype=torch.long, device=dev)
        done = ~live.clone()
        after = logits.clone()
        n, run = self.block_no_repeat_ngram, self.block_max_run
        guard = bool(n or run)
        hist = torch.full((r, int(self.max_block[level]) + 1), -1, dtype=torch.long, device=dev) if guard else None
        for b in rows.blocks:
            b.append([])
        while not bool(done.all()):
            scores = logits + self._block_bias(blen, level)
            if guard:
                for rows_t, toks in (repeated_ngram_bans(hist, blen, n), long_run_bans(hist, blen, run)):
                    if rows_t.numel():
                        scores = scores.index_put((rows_t, toks), torch.tensor(NEG_INF, device=dev))
            choice = scores.argmax(dim=1)
            choice = torch.where(done, torch.full_like(choice, self.pad_id), choice)
            feed_mask = (~done).long()[:, None]
            logits = self._forward(kv, choice[:, None], feed_mask)
            closing = (~done) & (choice == close)
            writing = (~done) & (choice != close)
            if bool(closing.any()):
                after[closing] = logits[closing]
            wrote = torch.nonzero(writing).flatten()
            for i in wrote.tolist():
                rows.blocks[i][-1].append(int(choice[i]))
            if guard:  # a writing row is under its budget, so its next column exists
                hist[wrote, blen[wrote]] = choice[wrote]
            blen += writing.long()
            done |= closing
        return after

    def _expand(self, logits, rows: _Rows, level: int, width: int, users: int, exclude_leaf):
        """Expand every beam over its trie children and keep the `width` best (beam, child) per user.

        Returns (src row per new row, chosen token per new row); updates `rows` in place.
        """
        dev = logits.device
        logp = torch.log_softmax(logits, dim=-1)
        # additive 0 / -inf bias of each beam's trie children (faster than a bool mask + torch.where on CPU)
        bias = torch.full_like(logp, NEG_INF)
        live = torch.nonzero(rows.node >= 0).flatten()
        self.trie.fill_allowed(bias, live, rows.node[live], 0.0)
        if exclude_leaf is not None:
            bias.masked_fill_(exclude_leaf, NEG_INF)
        # the beam score weights each level's log-probability (`level_weights`); step_lp keeps the model's own
        cand = (logp if self.level_weights is None else logp * self.level_weights[level]) + bias + rows.score[:, None]
        n = rows.n
        flat = cand.view(users, n * self.vocab)
        width = min(width, flat.shape[1])
        vals, idx = flat.topk(width, dim=1)
        src_beam = idx // self.vocab
        token = idx % self.vocab
        src = (torch.arange(users, device=dev)[:, None] * n + src_beam).flatten()
        token = token.flatten()
        step_lp = logp[src, token]
        rows.select(src)
        rows.n = width
        rows.score = vals.flatten()
        rows.node = self.trie.step(rows.node, token)
        rows.codes = torch.cat([rows.codes, self.spec.token_code.to(dev)[token.clamp(max=len(self.spec.token_code) - 1)][:, None]], 1)
        rows.step_lp = torch.cat([rows.step_lp, step_lp[:, None]], 1)
        return src, token

    def _exclusion_mask(self, rows: _Rows, level: int, exclude: Sequence[set[str]] | None) -> torch.Tensor | None:
        """(R, V) mask of leaf tokens that would complete an excluded item, for the last level."""
        if not exclude or not any(exclude):
            return None
        r = rows.node.shape[0]
        mask = torch.zeros(r, self.vocab, dtype=torch.bool)
        codes = rows.codes.tolist()
        tok_ids = self.spec.level_token_ids[level]
        for i in range(r):
            ex = exclude[i // rows.n]
            for item in ex:
                c = self.sid_map.item_to_codes.get(item)
                if c is not None and list(c[:level]) == codes[i]:
                    mask[i, tok_ids[c[level]]] = True
        return mask.to(rows.node.device)

    # ------------------------------------------------------------------------------------------------
    def search(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], k: int, exclude: Sequence[set[str]] | None = None
    ) -> list[list[Beam]]:
        """Top-`k` items per prompt (best first; fewer only when the catalog, minus exclusions, is smaller)."""
        return self.search_variants(prompts, k, [exclude])[0]

    @torch.no_grad()
    def search_variants(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], k: int,
        excludes: Sequence[Sequence[set[str]] | None],
    ) -> list[list[list[Beam]]]:
        """`search` once per exclusion variant (e.g. `[None, history sets]` for the `all` and `new` protocols).

        Exclusions act at the last level only, so every variant shares the decoding up to it (prompt, blocks,
        coarse levels): the shared part runs once and only the last expansion runs per variant. Each variant's
        result equals `search(prompts, k, variant)`.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not excludes:
            raise ValueError("search_variants needs at least one exclusion variant (None = no exclusion)")
        for exclude in excludes:
            if exclude is not None and len(exclude) != len(prompts):
                raise ValueError(f"{len(exclude)} exclusion sets for {len(prompts)} prompts")
        if not prompts:
            return [[] for _ in excludes]
        self.model.eval()
        dev = self.device
        users = len(prompts)
        levels = self.sid_map.num_levels
        spec = self.spec
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
               for p in prompts]  # prompt texts, or their token ids (RL beam rollouts)
        plan = self.grammar.plan
        # Tokens the grammar forces before the first choice (the first block's <think>) go with the prompt; later
        # ones go with the SID token chosen before them, so each forward feeds 1 or 2 tokens per row.
        if plan[0].kind == BLOCK:
            ids = [x + [spec.think_open_id] for x in ids]
        width_max = max(len(x) for x in ids)
        tokens = torch.full((users, width_max), self.pad_id, dtype=torch.long)
        mask = torch.zeros((users, width_max), dtype=torch.long)
        for i, x in enumerate(ids):
            if not x:
                raise ValueError(f"prompt {i} tokenizes to nothing")
            tokens[i, width_max - len(x):] = torch.tensor(x)
            mask[i, width_max - len(x):] = 1
        tokens, mask = tokens.to(dev), mask.to(dev)
        n_blocks = sum(slot.kind == BLOCK for slot in plan)
        max_len = width_max + sum(self.max_block) * (n_blocks > 0) + 3 * levels + 2
        if self.cache_impl == "shared":
            cache = SharedPrefixCache(self.model.config.num_hidden_layers, max_len - width_max)
            with use_shared_prefix_attention(self.model):
                return self._decode(cache, tokens, mask, max_len, k, excludes)
        if self.cache_impl == "static":
            cache = StaticCache(config=self.model.config, max_cache_len=max_len)
        else:
            cache = DynamicCache(config=self.model.config)
        return self._decode(cache, tokens, mask, max_len, k, excludes)

    def _decode(self, cache, tokens: torch.Tensor, mask: torch.Tensor, max_len: int, k: int,
                excludes: Sequence[Sequence[set[str]] | None]) -> list[list[list[Beam]]]:
        """The search proper, from the padded prompts (see `search_variants`)."""
        dev, spec, plan = tokens.device, self.spec, self.grammar.plan
        users, levels = tokens.shape[0], self.sid_map.num_levels
        kv = _KV(cache, users, max_len, dev, self.cache_impl != "dynamic")
        logits = self._forward(kv, tokens, mask)
        rows = _Rows(
            n=1,
            score=torch.zeros(users, device=dev),
            node=torch.zeros(users, dtype=torch.long, device=dev),
            codes=torch.zeros((users, 0), dtype=torch.long, device=dev),
            step_lp=torch.zeros((users, 0), device=dev),
            blocks=[[] for _ in range(users)],
        )
        pending: list[torch.Tensor] = []  # tokens chosen or forced since the last forward, (R,) each
        for i, slot in enumerate(plan[:-1]):  # the last slot is EOS: nothing to choose
            if pending:
                feed = torch.stack(pending, 1)
                logits = self._forward(kv, feed, torch.ones_like(feed))
                pending = []
            if slot.kind == BLOCK:
                logits = self._block(kv, logits, rows, slot.level, torch.isfinite(rows.score))
                if plan[i + 1].kind == BLOCK:
                    pending.append(torch.full_like(rows.node, spec.think_open_id))
                continue
            if slot.level == levels - 1:  # the last choice: once per variant, from the same state
                results = []
                for exclude in excludes:
                    final = replace(rows)  # `_expand` rebinds the fields it changes, so a shallow copy is enough
                    excl = self._exclusion_mask(final, slot.level, exclude)
                    self._expand(logits, final, slot.level, max(k, self.num_beams), users, excl)
                    results.append(self._collect(final, users, k))
                return results
            src, token = self._expand(logits, rows, slot.level, self.num_beams, users, None)
            kv.reorder(src)
            pending.append(token)
            if plan[i + 1].kind == BLOCK:
                pending.append(torch.full_like(token, spec.think_open_id))
        raise RuntimeError("response plan has no last SID level (internal error)")

    def _collect(self, rows: _Rows, users: int, k: int) -> list[list[Beam]]:
        out: list[list[Beam]] = []
        scores = rows.score.tolist()
        nodes = rows.node.tolist()
        codes = rows.codes.tolist()
        step_lp = rows.step_lp.tolist()
        for u in range(users):
            beams: list[Beam] = []
            for j in range(u * rows.n, (u + 1) * rows.n):
                if len(beams) >= k or scores[j] == NEG_INF:
                    continue
                item = self.trie.item_for_node(nodes[j])
                if item is None:  # cannot happen for a finite score; never return a non-item
                    continue
                blocks = tuple(self.tokenizer.decode(b, skip_special_tokens=False).strip() for b in rows.blocks[j])
                ids = tuple(tuple(b) for b in rows.blocks[j])
                # with level weights the order is the weighted score's, the score stays the log-probability (the
                # repeat prior mixes it as one)
                score = scores[j] if self.level_weights is None else float(sum(step_lp[j]))
                beams.append(Beam(item, score, tuple(codes[j]), blocks, tuple(step_lp[j]), ids))
            out.append(beams)
        return out
