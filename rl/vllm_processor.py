"""The SID constraint for vLLM rollouts: a per-request state machine plus a vLLM V1 logits processor.

Same grammar as `genrec.constrained.SIDLogitsProcessor` (the transformers path; tested equal in
tests/test_rl_vllm.py): each block opens with `<think>`, free text until `</think>` or `max_block_tokens` text
tokens (then `</think>` is forced), then (interleaved) one SID token restricted to the children of the SID prefix
generated so far, ...; EOS after the K-th SID token. The direct layout (no reasoning) has no blocks: K SID tokens,
then EOS. A token outside the grammar (impossible when every step went
through the processor) ends the request with EOS.

vLLM sees the constraint through a JSON file (catalog SIDs and token ids) named by the environment variable
`GENREC_SID_CONSTRAINT`, because its logits processors are constructed by the engine from a class, possibly in
another process:
- colocate mode: `SAPOTrainer` writes the file and builds TRL's `VLLMGeneration` with
  `LLM(..., logits_processors=[SIDVLLMLogitsProcessor])` (`constrained_vllm_generation_class`);
- server mode: start the server yourself with the file and the processor:
  `GENREC_SID_CONSTRAINT=<output_dir>/sid_constraint.json VLLM_SERVER_DEV_MODE=1 vllm serve <model>
  --logits-processors rl.vllm_processor:SIDVLLMLogitsProcessor --logprobs-mode processed_logprobs ...`
  (`trl vllm-serve <args> --logits-processors ...` forwards the extra flag too).

vLLM is imported only inside `vllm_processor_class()`; the state machine below is pure Python + torch.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

CONSTRAINT_ENV = "GENREC_SID_CONSTRAINT"
CONSTRAINT_FILE = "sid_constraint.json"

OPEN, BLOCK, SID, EOS, DONE, INVALID = range(6)


@dataclass
class ConstraintTables:
    """Everything the state machine needs: token ids, the text mask and the catalog prefix tree."""

    layout: str
    think_open_id: int
    think_close_id: int
    eos_id: int
    pad_id: int
    num_levels: int
    max_block_tokens: list[int]
    text_allowed: torch.Tensor  # (V,) bool
    token_level: dict[int, int]
    token_code: dict[int, int]
    children: dict[tuple[int, ...], list[int]]

    @classmethod
    def from_payload(cls, p: dict) -> "ConstraintTables":
        vocab = int(p["vocab_size"])
        text = torch.ones(vocab, dtype=torch.bool)
        text[torch.tensor(p["text_forbidden"], dtype=torch.long)] = False
        level_ids = p["level_token_ids"]
        token_level = {tid: k for k, ids in enumerate(level_ids) for tid in ids}
        token_code = {tid: c for ids in level_ids for c, tid in enumerate(ids)}
        children: dict[tuple[int, ...], set[int]] = {}
        for codes in p["items"]:
            for k in range(len(codes)):
                children.setdefault(tuple(codes[:k]), set()).add(level_ids[k][codes[k]])
        budget = p["max_block_tokens"]
        k_levels = len(level_ids)
        return cls(
            layout=p["layout"], think_open_id=p["think_open_id"], think_close_id=p["think_close_id"],
            eos_id=p["eos_id"], pad_id=p["pad_id"], num_levels=k_levels,
            max_block_tokens=[int(budget)] * k_levels if isinstance(budget, int) else [int(b) for b in budget],
            text_allowed=text, token_level=token_level, token_code=token_code,
            children={k: sorted(v) for k, v in children.items()},
        )

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


def constraint_payload(sid_map, tokenizer, layout: str, max_block_tokens) -> dict:
    from genrec.response import ResponseSpec

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
    }


def write_constraint_file(output_dir, sid_map, tokenizer, layout: str, max_block_tokens) -> Path:
    """Write <output_dir>/sid_constraint.json and point $GENREC_SID_CONSTRAINT at it; returns the path."""
    from sid_tokenizer.sidmap import atomic_write_text

    path = Path(output_dir) / CONSTRAINT_FILE
    atomic_write_text(path, json.dumps(constraint_payload(sid_map, tokenizer, layout, max_block_tokens)))
    os.environ[CONSTRAINT_ENV] = str(path.resolve())
    return path


class RequestConstraint:
    """Incremental grammar state of one request; `__call__(output_ids, logits)` is vLLM's per-request processor."""

    def __init__(self, tables: ConstraintTables) -> None:
        self.t = tables
        self.phase = SID if tables.layout == "direct" else OPEN
        self.block_len = 0
        self.closed = 0
        self.prefix: list[int] = []
        self.consumed = 0
        self._device_cache: dict[tuple, torch.Tensor] = {}

    # --- grammar -------------------------------------------------------------------------------------
    def advance(self, token: int) -> None:
        t, token = self.t, int(token)
        if self.phase == OPEN:
            self._go(BLOCK if token == t.think_open_id else INVALID)
            self.block_len = 0
        elif self.phase == BLOCK:
            if token == t.think_close_id:
                self.closed += 1
                if t.layout == "interleaved" or self.closed == t.num_levels:
                    self._go(SID)
                else:
                    self._go(OPEN)
            elif self.block_len < t.max_block_tokens[self.closed] and self._is_text(token):
                self.block_len += 1
            else:
                self._go(INVALID)
        elif self.phase == SID:
            if token in self.t.children.get(tuple(self.prefix), ()):
                self.prefix.append(t.token_code[token])
                if len(self.prefix) == t.num_levels:
                    self._go(EOS)
                elif t.layout == "interleaved":
                    self._go(OPEN)
            else:
                self._go(INVALID)
        elif self.phase == EOS:
            self._go(DONE if token == t.eos_id else INVALID)
        elif self.phase == DONE:
            if token not in (t.eos_id, t.pad_id):
                self._go(INVALID)

    def _go(self, phase: int) -> None:
        self.phase = phase

    def _is_text(self, token: int) -> bool:
        return 0 <= token < len(self.t.text_allowed) and bool(self.t.text_allowed[token])

    def allowed(self) -> tuple[str, list[int]]:
        """("text", [</think>]) = every text token plus those ids; ("ids", ids) = exactly those ids."""
        t = self.t
        if self.phase == OPEN:
            return "ids", [t.think_open_id]
        if self.phase == BLOCK:
            if self.block_len < t.max_block_tokens[self.closed]:
                return "text", [t.think_close_id]
            return "ids", [t.think_close_id]
        if self.phase == SID:
            return "ids", list(t.children.get(tuple(self.prefix), ()))
        if self.phase == DONE:
            return "ids", sorted({t.eos_id, t.pad_id})
        return "ids", [t.eos_id]  # EOS, or INVALID: end the request

    def allowed_mask(self, vocab_size: int) -> torch.Tensor:
        kind, ids = self.allowed()
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        if kind == "text":
            n = min(vocab_size, len(self.t.text_allowed))
            mask[:n] = self.t.text_allowed[:n]
        mask[torch.tensor(ids, dtype=torch.long)] = True
        return mask

    # --- vLLM per-request processor ------------------------------------------------------------------
    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        for tok in output_ids[self.consumed :]:
            self.advance(tok)
        self.consumed = len(output_ids)
        kind, ids = self.allowed()
        vocab = logits.shape[-1]
        if kind == "text":
            key = ("text", logits.device, vocab)
            text = self._device_cache.get(key)
            if text is None:
                text = self.allowed_mask(vocab).to(logits.device)  # text + </think>
                self._device_cache[key] = text
            return logits.masked_fill(~text, float("-inf"))
        idx = torch.tensor(ids, dtype=torch.long, device=logits.device)
        out = torch.full_like(logits, float("-inf"))
        out[idx] = logits[idx]
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
