"""The SID constraint for vLLM rollouts: a per-request state machine plus a vLLM V1 logits processor.

A thin adapter over `genrec.grammar.ResponseGrammar`, the grammar `genrec.constrained.SIDLogitsProcessor` (the
transformers path) uses too, with the same tables (tested equal in tests/test_rl_vllm.py): each block opens with
`<think>`, free text until `</think>` or `max_block_tokens` text tokens (then `</think>` is forced), then
(interleaved) one SID token restricted to the children of the SID prefix generated so far, ...; EOS after the K-th
SID token. The direct layout (no reasoning) has no blocks: K SID tokens, then EOS. A token outside the grammar
(impossible when every step went through the processor) ends the request with EOS.

vLLM sees the constraint through a JSON file (catalog SIDs and token ids) named by the environment variable
`GENREC_SID_CONSTRAINT`, because its logits processors are constructed by the engine from a class, possibly in
another process:
- colocate mode: `SAPOTrainer` writes the file and builds TRL's `VLLMGeneration` with
  `LLM(..., logits_processors=[SIDVLLMLogitsProcessor])` (`constrained_vllm_generation_class`);
- server mode: start the server yourself with the file and the processor:
  `GENREC_SID_CONSTRAINT=<output_dir>/sid_constraint.json VLLM_SERVER_DEV_MODE=1 vllm serve <model>
  --logits-processors rl.vllm_processor:SIDVLLMLogitsProcessor --logprobs-mode processed_logprobs ...`
  (`trl vllm-serve <args> --logits-processors ...` forwards the extra flag too).

vLLM is imported only inside `vllm_processor_class()`; the grammar state is torch only.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from genrec.grammar import T_SID, GrammarState, ResponseGrammar, greedy_in_blocks, per_level
from genrec.response import ResponseSpec
from genrec.trie import SIDTrie

CONSTRAINT_ENV = "GENREC_SID_CONSTRAINT"
CONSTRAINT_FILE = "sid_constraint.json"

@dataclass
class ConstraintTables:
    """The grammar the engine applies, rebuilt from the constraint file (token ids, text mask, catalog SIDs)."""

    layout: str
    max_block_tokens: list[int]
    grammar: ResponseGrammar
    greedy_text: bool = False  # inside a thinking block only the most likely allowed token (SAPOConfig.block_decoding)

    @property
    def num_levels(self) -> int:
        return self.grammar.num_levels

    @classmethod
    def from_payload(cls, p: dict) -> "ConstraintTables":
        spec = ResponseSpec.from_ids(
            think_open_id=p["think_open_id"], think_close_id=p["think_close_id"], eos_id=p["eos_id"],
            pad_id=p["pad_id"], level_token_ids=p["level_token_ids"], vocab_size=int(p["vocab_size"]),
            text_forbidden=p["text_forbidden"], layout=p["layout"],
        )
        trie = SIDTrie.from_codes(p["items"], spec.level_token_ids)
        budget = per_level(p["max_block_tokens"], spec.num_levels, "max_block_tokens")
        return cls(layout=p["layout"], max_block_tokens=budget, grammar=ResponseGrammar(spec, trie, budget),
                   greedy_text=bool(p.get("greedy_text", False)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConstraintTables":
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: SID constraint file not found (${CONSTRAINT_ENV})") from None
        missing = {"layout", "vocab_size", "level_token_ids", "items", "text_forbidden"} - set(payload)
        if missing:
            raise ValueError(f"{path}: SID constraint file lacks {sorted(missing)}")
        return cls.from_payload(payload)


def constraint_payload(sid_map, tokenizer, layout: str, max_block_tokens, greedy_text: bool = False) -> dict:
    spec = ResponseSpec.from_tokenizer(tokenizer, sid_map, layout)
    return {
        "layout": layout,
        "vocab_size": spec.vocab_size,
        "think_open_id": spec.think_open_id,
        "think_close_id": spec.think_close_id,
        "eos_id": spec.eos_id,
        "pad_id": spec.pad_id,
        "level_token_ids": [list(ids) for ids in spec.level_token_ids],
        "text_forbidden": torch.nonzero(~spec.text_allowed).flatten().tolist(),
        "max_block_tokens": max_block_tokens,
        "items": [list(c) for c in sid_map.item_to_codes.values()],
        "greedy_text": greedy_text,
    }


def write_constraint_file(output_dir, sid_map, tokenizer, layout: str, max_block_tokens, greedy_text: bool = False) -> Path:
    """Write <output_dir>/sid_constraint.json and point $GENREC_SID_CONSTRAINT at it; returns the path."""
    from sid_tokenizer.sidmap import atomic_write_text

    path = Path(output_dir) / CONSTRAINT_FILE
    atomic_write_text(path, json.dumps(constraint_payload(sid_map, tokenizer, layout, max_block_tokens, greedy_text)))
    os.environ[CONSTRAINT_ENV] = str(path.resolve())
    return path


class RequestConstraint(GrammarState):
    """Grammar state of one request; `__call__(output_ids, logits)` is vLLM's per-request processor."""

    def __init__(self, tables: ConstraintTables) -> None:
        super().__init__(tables.grammar)
        self.greedy_text = tables.greedy_text
        self.consumed = 0
        self._device_cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        for tok in output_ids[self.consumed :]:
            self.advance(tok)
        self.consumed = len(output_ids)
        vocab = logits.shape[-1]
        tpl = int(self.template[0])
        key = (tpl, logits.device, vocab)
        mask = self._device_cache.get(key) if tpl != T_SID else None  # only SID rows depend on more than the template
        if mask is None:
            mask = self.allowed_mask(vocab).to(logits.device)
            if tpl != T_SID:
                self._device_cache[key] = mask
        out = logits.masked_fill(~mask, float("-inf"))
        if self.greedy_text:
            out = greedy_in_blocks(out[None], self.template.to(out.device))[0]
        return out


@functools.lru_cache(maxsize=None)
def vllm_processor_class():
    """The vLLM V1 logits processor class (imports vLLM; vLLM 0.22-0.31, the versions TRL 1.16 supports)."""
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class SIDVLLMLogitsProcessor(AdapterLogitsProcessor):
        """Applies the SID grammar to every request (unless its SamplingParams.extra_args say
        {"genrec_sid_constraint": false}), configured by the file named in $GENREC_SID_CONSTRAINT."""

        def __init__(self, vllm_config, device, is_pin_memory):
            super().__init__(vllm_config, device, is_pin_memory)
            path = os.environ.get(CONSTRAINT_ENV)
            if not path:
                raise ValueError(f"SIDVLLMLogitsProcessor needs ${CONSTRAINT_ENV} (path of sid_constraint.json)")
            self.tables = ConstraintTables.load(path)

        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params):
            extra = getattr(params, "extra_args", None) or {}
            if extra.get("genrec_sid_constraint") is False:
                return None
            return RequestConstraint(self.tables)

    # Picklable by reference (vLLM may send the class to its engine process): pickle finds it as
    # rl.vllm_processor.SIDVLLMLogitsProcessor through the module __getattr__ below, which returns this cached class.
    SIDVLLMLogitsProcessor.__module__ = __name__
    SIDVLLMLogitsProcessor.__qualname__ = "SIDVLLMLogitsProcessor"
    return SIDVLLMLogitsProcessor


def __getattr__(name: str):
    # `--logits-processors rl.vllm_processor:SIDVLLMLogitsProcessor` resolves the class lazily.
    if name == "SIDVLLMLogitsProcessor":
        return vllm_processor_class()
    raise AttributeError(name)


def constrained_vllm_generation_class(base: type, constraint_path: str | os.PathLike) -> type:
    """A subclass of TRL's `VLLMGeneration` whose colocated `LLM` gets the SID logits processor.

    Server mode is unchanged (the server must be started with the processor, see the module docstring).
    """

    class ConstrainedVLLMGeneration(base):
        def _init_vllm(self):
            if self.mode != "colocate":
                return super()._init_vllm()
            import trl.generation.vllm_generation as vg

            os.environ[CONSTRAINT_ENV] = str(Path(constraint_path).resolve())
            original = vg.LLM
            vg.LLM = functools.partial(original, logits_processors=[vllm_processor_class()])
            try:
                return super()._init_vllm()
            finally:
                vg.LLM = original

    return ConstrainedVLLMGeneration
