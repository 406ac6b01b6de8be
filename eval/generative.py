"""The generative recommender behind the common `Recommender` interface: prompts -> SID beam search -> items.

Loading a model folder (written and read through genrec/model_folder.py: weights, tokenizer, sid_map.json,
prompt_config.json, genrec_model.json, which also give its response layout and block budget) lives here, so
`genrec evaluate` and `genrec recommend` behave identically.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eval.baselines.base import Recommender, train_popularity
from eval.beam import Beam, LevelWeights, SIDBeamSearch
from genrec.data.schema import Catalog, Example
from genrec.model_folder import AUTO, resolve_layout, resolve_sid_map  # noqa: F401 - re-exported
from genrec.response import BLOCKS_FIRST, DIRECT, INTERLEAVED
from genrec.traces.budget import DEFAULT_MAX_BLOCK_TOKENS
from sid_tokenizer.sidmap import SIDMap


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def restrict_to_catalog(sid_map: SIDMap, catalog: Catalog) -> SIDMap:
    """The SID map of the catalog's items only, so the beam never spends a slot on an item outside it."""
    if all(item in catalog for item in sid_map.item_to_codes):
        return sid_map
    kept = {item: codes for item, codes in sid_map.item_to_codes.items() if item in catalog}
    if not kept:
        raise ValueError("no item of the SID map is in the catalog (SID map built for another data set?)")
    return SIDMap(kept, list(sid_map.codebook_sizes), dict(sid_map.labels))


class GenerativeRecommender(Recommender):
    """Top-k items per example from an SLM via `SIDBeamSearch`, with popularity fill when short.

    The beam search runs over the catalog items that have a SID and always yields `k` distinct ones
    when at least `k` remain after the exclusions; anything short (e.g. catalog items without a SID)
    is filled with training-popular items, and the number of filled slots is reported as
    `stats["filled"]` (and per item as `Beam.filled`).
    """

    name = "genrec"

    def __init__(
        self,
        model,
        tokenizer,
        sid_map: SIDMap,
        catalog: Catalog,
        prompt_cfg=None,
        *,
        layout: str = INTERLEAVED,
        num_beams: int = 20,
        max_block_tokens: int | Sequence[int] = DEFAULT_MAX_BLOCK_TOKENS,
        min_block_tokens: int | Sequence[int] = 0,
        batch_size: int = 8,
        progress: bool = False,
        level_weights: LevelWeights = None,
        beam_cache: str = "auto",
        processes: int = 1,
    ) -> None:
        from genrec.prompts import PromptConfig

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.catalog = catalog
        self.sid_map = sid_map
        self.tokenizer = tokenizer
        self.prompt_cfg = prompt_cfg or PromptConfig()
        self.layout = layout
        self.max_block_tokens = max_block_tokens
        self.batch_size = batch_size
        self.progress = progress
        self.search = SIDBeamSearch(
            model, tokenizer, restrict_to_catalog(sid_map, catalog), layout, num_beams=num_beams,
            max_block_tokens=max_block_tokens, min_block_tokens=min_block_tokens, level_weights=level_weights,
            cache=beam_cache,
        )
        self.popularity: list[str] = [i for i in catalog.item_ids if i in sid_map]
        self.processes = self._usable_processes(processes)
        self.stats = {"filled": 0, "users": 0, "forward_calls": 0}

    def fit(self, train: Sequence[Example], catalog: Catalog, valid: Sequence[Example] | None = None):
        """Only the fill order is learnt here: training popularity."""
        self.popularity = train_popularity(train, catalog)
        return self

    def prompt(self, example: Example) -> str:
        from genrec.prompts import build_prompt

        return build_prompt(example, self.catalog, self.sid_map, self.tokenizer, self.prompt_cfg)

    def recommend_beams(self, examples: Sequence[Example], k: int, exclude_history: bool = False) -> list[list[Beam]]:
        """Top-k `Beam`s (item, score, reasoning) per example, in input order."""
        return self.recommend_beams_variants(examples, k, [exclude_history])[0]

    def recommend_beams_variants(
        self, examples: Sequence[Example], k: int, exclude_history: Sequence[bool]
    ) -> list[list[list[Beam]]]:
        """`recommend_beams` once per value of `exclude_history`, sharing one beam search (see
        `SIDBeamSearch.search_variants`): the `all` and `new` protocols cost one decoding instead of two."""
        prompts = [self.prompt(ex) for ex in examples]
        # Sort by prompt length so each batch pads little; restore the order afterwards.
        order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        histories = [set(ex.history) for ex in examples]

        def search(idx: list[int]) -> tuple[list[list[list[Beam]]], int]:
            calls = self.search.forward_calls
            excluded = [histories[i] for i in idx]
            variants = self.search.search_variants([prompts[i] for i in idx], k,
                                                   [excluded if ex else None for ex in exclude_history])
            return variants, self.search.forward_calls - calls

        out: list[list[list[Beam] | None]] = [[None] * len(examples) for _ in exclude_history]
        bar = tqdm(total=len(examples), desc=f"beam search ({self.layout})", disable=not self.progress, file=sys.stderr)

        def collect(b: int, result: tuple[list[list[list[Beam]]], int]) -> None:
            variants, calls = result
            for v, (ex, results) in enumerate(zip(exclude_history, variants)):
                for i, beams in zip(batches[b], results):
                    out[v][i] = self._fill(beams, k, histories[i] if ex else set())
            self.stats["forward_calls"] += calls
            bar.update(len(batches[b]))

        if self.processes > 1 and len(batches) > 1:  # the same batches, shared out (the same lists)
            from genrec.parallel import forked_map

            forked_map(search, batches, min(self.processes, len(batches)), on_result=collect)
        else:
            for b, idx in enumerate(batches):
                collect(b, search(idx))
        bar.close()
        self.stats["users"] += len(examples)
        return out  # type: ignore[return-value]

    def _usable_processes(self, processes: int) -> int:
        """`processes` beam-search workers (forked 1-thread copies of this process) if they can run here, else an
        error."""
        from genrec.parallel import worker_processes

        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        return worker_processes(processes, self.search.device.type, 1, option="processes")

    def _fill(self, beams: list[Beam], k: int, exclude: set[str]) -> list[Beam]:
        beams = [b for b in beams if b.item_id in self.catalog]
        if len(beams) >= k:
            return beams[:k]
        seen = {b.item_id for b in beams} | exclude
        for item in self.popularity:
            if len(beams) >= k:
                break
            if item not in seen:
                seen.add(item)
                codes = self.sid_map.codes(item) if item in self.sid_map else ()
                beams.append(Beam(item, float("-inf"), codes, filled=True))
                self.stats["filled"] += 1
        return beams

    def history_beam(self, item_id: str, score: float) -> Beam:
        """A beam for a history item the search did not return (the repeat prior brings it in; no reasoning)."""
        return Beam(item_id, score, self.sid_map.codes(item_id) if item_id in self.sid_map else ())

    def recommend(self, examples: Sequence[Example], k: int, exclude_history: bool = False) -> list[list[str]]:
        return [[b.item_id for b in beams] for beams in self.recommend_beams(examples, k, exclude_history)]


def load_generative(
    model_dir: str | Path,
    catalog: Catalog,
    *,
    sid_map_path: str | Path | None = None,
    layout: str = AUTO,
    num_beams: int = 20,
    max_block_tokens: int | Sequence[int] = 0,
    min_block_tokens: int | Sequence[int] = 0,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = False,
    level_weights: LevelWeights = None,
    beam_cache: str = "auto",
    processes: int = 1,
) -> GenerativeRecommender:
    """A `GenerativeRecommender` from a model folder (its sid_map.json and prompt_config.json unless overridden).

    `layout` auto: the folder's; an explicit layout that contradicts the folder is a one-line error.
    `max_block_tokens` 0 (auto): the folder's block budget (its RL rollouts' or its traces'), else the default.
    """
    from genrec.model_folder import load_info, load_prompt_config, resolve_block_budget
    from genrec.modeling import check_model_tokens, load_model_and_tokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model folder not found")
    sid_map = resolve_sid_map(model_dir, sid_map_path)
    prompt_cfg = load_prompt_config(model_dir)
    info = load_info(model_dir)
    chosen = resolve_layout(model_dir, info, layout, prompt_cfg.reasoning)
    if isinstance(max_block_tokens, int):
        max_block_tokens = resolve_block_budget(info, max_block_tokens)
    dev = resolve_device(device)
    model, tokenizer = load_model_and_tokenizer(model_dir, device=dev)
    check_model_tokens(tokenizer, sid_map, model, where=str(model_dir), think=chosen != DIRECT)
    rec = GenerativeRecommender(
        model, tokenizer, sid_map, catalog, prompt_cfg, layout=chosen, num_beams=num_beams,
        max_block_tokens=max_block_tokens, min_block_tokens=min_block_tokens, batch_size=batch_size, progress=progress,
        level_weights=level_weights, beam_cache=beam_cache, processes=processes,
    )
    rec.name = f"genrec-{chosen}"
    return rec


__all__ = ["AUTO", "BLOCKS_FIRST", "DIRECT", "INTERLEAVED", "GenerativeRecommender", "load_generative",
           "resolve_device", "resolve_layout"]
