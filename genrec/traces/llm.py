"""LLM teacher: any HF causal LM writes a rationale that has seen the target; we split it into K blocks.

Why: the paper distils reasoning from a larger LLM. Generation is the expensive part, so every output
is cached on disk (JSONL keyed by a hash of model + prompt + generation settings) and a rerun only
generates what is missing. vLLM is used on a GPU when installed; HF `generate` otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from genrec.data.schema import Catalog, Example
from genrec.traces.grounded import GroundedConfig, clean_text, grounded_blocks
from genrec.wording import fill
from sid_tokenizer.sidmap import SIDMap

TEACHER_INSTRUCTION = (  # {seeker}, {nouns}: genrec/wording.py
    "A {seeker} viewed the {nouns} below (oldest first). They then chose the target {noun}. In 3 to 5 short "
    "sentences, explain why the target fits them, citing specific past {nouns} and the profile. Do not "
    "mention ID codes."
)


@dataclass
class LLMTeacherConfig:
    """Settings of the LLM teacher."""

    model: str = ""
    """Model folder, hub name (when online), .gguf file, or 'smollm2-135m-gguf'."""
    max_new_tokens: int = 160
    temperature: float = 0.0
    """0 = greedy (deterministic)."""
    batch_size: int = 8
    cache_file: str = ""
    """JSONL cache; empty = <traces out>/teacher_cache.jsonl."""
    backend: str = "auto"
    """'auto' (vLLM when installed and a GPU is present, else HF), 'hf' or 'vllm'."""
    fallback_grounded: bool = True
    """When a generation is empty after cleaning, use the grounded teacher's blocks for that example."""
    seed: int = 0


def teacher_prompt(example: Example, catalog: Catalog, sid_map: SIDMap, title_field: str = "", noun: str = "") -> str:
    """What the teacher sees: history texts, profile, target text and the target's SID labels (not the codes).
    `title_field`: the field quoted for each item ('' = `Catalog.title_field`, else every field); `noun`: what an item
    is called ('' = `Catalog.noun`)."""
    noun = noun or catalog.noun
    title_field = title_field or catalog.title_field or ""

    def text(item: str) -> str:
        if item not in catalog:
            return item
        rec = catalog.record(item)
        return clean_text(rec.get(title_field) or catalog.render(item))

    lines = [fill(TEACHER_INSTRUCTION, noun), "", fill("Past {nouns}:", noun)]
    lines += [f"- {text(h)}" for h in example.history] or ["- (none)"]
    if example.profile:
        lines.append(f"Profile: {clean_text(example.profile)}")
    lines.append(fill("Target {noun}: ", noun) + text(example.target))
    codes = sid_map.codes(example.target)
    labels = [clean_text(sid_map.label(codes[: k + 1])) for k in range(len(codes) - 1)]
    labels = [lab for lab in labels if lab]
    if labels:
        lines.append("Target categories, broad to narrow: " + " > ".join(labels))
    return "\n".join(lines)


_SENT_RE = re.compile(r"(?<=[.!?])\s+")


def split_into_blocks(text: str, k: int) -> list[str]:
    """Split a rationale into k contiguous segments of similar length (by characters).

    Sentences are kept whole when there are at least k of them; otherwise words are split. Segments can
    be empty only when the text has fewer than k words.
    """
    text = clean_text(text)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    units = [s for s in _SENT_RE.split(text) if s]
    if len(units) < k:
        units = text.split()
    if not units:
        return [""] * k
    # Greedy cut points nearest to the ideal cumulative lengths j * total / k.
    lengths = [len(u) + 1 for u in units]
    total = sum(lengths)
    cuts, acc, j = [], 0, 1
    for i, n in enumerate(lengths[:-1]):
        acc += n
        remaining_units = len(units) - (i + 1)
        remaining_cuts = k - 1 - len(cuts)
        if remaining_cuts == 0:
            break
        if acc >= j * total / k or remaining_units == remaining_cuts:
            cuts.append(i + 1)
            j += 1
    bounds = [0] + cuts + [len(units)]
    blocks = [" ".join(units[a:b]) for a, b in zip(bounds, bounds[1:])]
    return blocks + [""] * (k - len(blocks))


class TeacherCache:
    """Append-only JSONL: one {"key", "text"} per line; a torn last line (crash) is ignored on load."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.data: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.data[rec["key"]] = rec["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> str:
        return self.data[key]

    def put_many(self, items: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for key, text in items.items():
                f.write(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.data.update(items)


def _vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


class LLMTeacher:
    """Callable teacher: examples -> K blocks each. Loads the model lazily (only when the cache misses)."""

    def __init__(self, cfg: LLMTeacherConfig, catalog: Catalog, sid_map: SIDMap, cache_path: str | os.PathLike,
                 grounded_cfg: GroundedConfig | None = None) -> None:
        if not cfg.model:
            raise ValueError("the LLM teacher needs a model (set teacher_model)")
        self.cfg, self.catalog, self.sid_map = cfg, catalog, sid_map
        self.cache = TeacherCache(cache_path)
        self.grounded_cfg = grounded_cfg or GroundedConfig()
        self._gen = None
        self.generated = 0
        self.cache_hits = 0
        self.fallbacks = 0

    def _key(self, prompt: str) -> str:
        c = self.cfg
        raw = json.dumps([c.model, prompt, c.max_new_tokens, c.temperature, c.seed])
        return hashlib.sha256(raw.encode()).hexdigest()

    def _generator(self):
        if self._gen is None:
            backend = self.cfg.backend
            if backend == "auto":
                backend = "vllm" if _vllm_available() else "hf"
            self._gen = _VLLMGenerator(self.cfg) if backend == "vllm" else _HFGenerator(self.cfg)
        return self._gen

    def rationales(self, examples: Sequence[Example]) -> list[str]:
        prompts = [teacher_prompt(ex, self.catalog, self.sid_map, noun=self.grounded_cfg.noun) for ex in examples]
        keys = [self._key(p) for p in prompts]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        self.cache_hits += len(prompts) - len(todo)
        for start in range(0, len(todo), self.cfg.batch_size):
            idx = todo[start : start + self.cfg.batch_size]
            texts = self._generator().generate([prompts[i] for i in idx])
            self.cache.put_many({keys[i]: t for i, t in zip(idx, texts)})
            self.generated += len(idx)
        return [self.cache.get(k) for k in keys]

    def __call__(self, examples: Sequence[Example]) -> list[list[str]]:
        out = []
        for ex, text in zip(examples, self.rationales(examples)):
            blocks = split_into_blocks(text, self.sid_map.num_levels)
            if self.cfg.fallback_grounded and not any(blocks):
                blocks = grounded_blocks(ex, self.catalog, self.sid_map, self.grounded_cfg)
                self.fallbacks += 1
            out.append(blocks)
        return out

    def stats(self) -> dict[str, int]:
        return {"generated": self.generated, "cache_hits": self.cache_hits, "fallbacks": self.fallbacks}


def _chat(tokenizer, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\nExplanation:"


class _HFGenerator:
    def __init__(self, cfg: LLMTeacherConfig) -> None:
        import torch

        from genrec.modeling import load_model_and_tokenizer

        self.cfg = cfg
        self.model, self.tok = load_model_and_tokenizer(cfg.model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.tok.padding_side = "left"

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        texts = [_chat(self.tok, p) for p in prompts]
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = dict(max_new_tokens=self.cfg.max_new_tokens, pad_token_id=self.tok.pad_token_id,
                      repetition_penalty=1.0)
        if self.cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.cfg.temperature, top_k=None, top_p=None)
            torch.manual_seed(self.cfg.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return [self.tok.decode(row, skip_special_tokens=True).strip() for row in new]


class _VLLMGenerator:  # pragma: no cover - needs a GPU and vLLM
    def __init__(self, cfg: LLMTeacherConfig) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        self.cfg = cfg
        self.tok = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=False)
        self.llm = LLM(model=cfg.model, trust_remote_code=False, seed=cfg.seed)

    def generate(self, prompts: list[str]) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                                seed=self.cfg.seed)
        outs = self.llm.generate([_chat(self.tok, p) for p in prompts], params)
        return [o.outputs[0].text.strip() for o in outs]
