"""Stage 2 anchored to stage 1: the starting model's SID distributions as soft targets (knowledge distillation).

Why: stage 2 starts from the stage-1 model and ends below it (demo market -0.033 NDCG@10, amazon -0.084;
docs/bench/learning.md). Stage 2 sees one gold SID per level per row, and the thinking block between two SID
tokens breaks the coarse-to-fine adjacency the stage-1 model learnt (session 6: level-2 accuracy 0.34 vs 0.65). The
frozen stage-1 model knows the whole ranking at each level (which codes are plausible, the catalog's prior of c
given a and b); Learning without Forgetting (Li & Hoiem, 2016) keeps such a skill by training the new model towards
the old model's outputs on the new data.

The teacher reads each training row as stage 1 learnt to read it: the same prompt with the direct instruction
instead of the reasoning one, and the completion without its thinking blocks, i.e. the SID tokens only. Its
next-token distribution before every SID token of the row becomes part of that token's target (`sid_weighted_loss`).
Replayed stage-1 rows (the direct instruction already, no blocks) are read unchanged.

The teacher is frozen, so its targets for a row never change: they are computed the first time the row is seen and
kept (in float16, under a memory cap). Stage 2 makes about two passes over its rows, and a trace row and its
replayed stage-1 row share one teacher row, so about half of the teacher's forward passes were repeats (19% of a demo
stage-2 step went to the teacher; docs/bench/learning.md, session 34).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from genrec.modeling import accepts_logits_to_keep
from genrec.prompts import DIRECT_INSTRUCTION, REASON_INSTRUCTION
from genrec.response import THINK_CLOSE, THINK_OPEN
from genrec.wording import DEFAULT_NOUN, fill

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 512 * 2**20  # teacher targets kept between batches: 2 bytes x vocabulary per SID target


class SIDDistiller:
    """Teacher next-token probabilities at the SID targets of a stage-2 batch.

    `targets(input_ids, attention_mask, labels)` returns (rows, cols, probs): the batch row and the logit position
    (the position *before* the SID token, where the student predicts it) of every SID target, and the teacher's (N, V)
    probabilities there. Each teacher row's targets are kept (in float16: a relative error under 1e-3) after its first
    forward pass while they fit in `cache_bytes` (0: no cache), so a row seen again costs no teacher pass.
    """

    def __init__(self, teacher, tokenizer, sid_token_ids: list[int], noun: str = DEFAULT_NOUN,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.sid_ids = torch.tensor(sorted(set(sid_token_ids)), dtype=torch.long)
        self.think_open = tokenizer.convert_tokens_to_ids(THINK_OPEN)
        self.think_close = tokenizer.convert_tokens_to_ids(THINK_CLOSE)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # the prompts' instructions for items called `noun` (the catalog's): the reasoning one is swapped for the
        # direct one in the teacher's row
        self.reason_ids = tokenizer(fill(REASON_INSTRUCTION, noun), add_special_tokens=False)["input_ids"]
        self.direct_ids = tokenizer(fill(DIRECT_INSTRUCTION, noun), add_special_tokens=False)["input_ids"]
        self.rows_without_instruction = 0
        self.keep_logits = accepts_logits_to_keep(teacher)
        self.vocab_size = teacher.get_output_embeddings().weight.shape[0]  # the logits' width
        self.cache_bytes = cache_bytes
        self.cache: dict[bytes, dict[int, torch.Tensor]] = {}  # teacher row digest -> position -> float16 probs
        self.cached_bytes = 0
        self.teacher_rows_run = 0  # rows the teacher read (cache misses)
        self.targets_from_cache = 0  # SID targets served without a teacher pass

    def teacher_row(self, ids: list[int], completion: list[bool]) -> tuple[list[int], list[int]]:
        """The teacher's tokens for one unpadded row and, for every kept token, its index in the teacher row (-1 if
        dropped). Dropped: the completion's thinking blocks (tags included); swapped: the reasoning instruction."""
        keep = [True] * len(ids)
        depth = 0
        for t, (tok, comp) in enumerate(zip(ids, completion)):
            if not comp:
                continue
            if tok == self.think_open:
                depth += 1
            if depth > 0:
                keep[t] = False
            if tok == self.think_close and depth > 0:
                depth -= 1
        start = _find(ids, self.reason_ids)
        if start < 0:
            self.rows_without_instruction += 1
        out: list[int] = []
        index = [-1] * len(ids)
        t = 0
        while t < len(ids):
            if t == start:
                out.extend(self.direct_ids)
                t += len(self.reason_ids)
                continue
            if keep[t]:
                index[t] = len(out)
                out.append(ids[t])
            t += 1
        return out, index

    @torch.no_grad()
    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor):
        dev = input_ids.device
        sid = torch.isin(labels, self.sid_ids.to(labels.device))
        ids_rows = input_ids.tolist()
        lengths = (attention_mask.sum(1) if attention_mask is not None else
                   torch.full((input_ids.shape[0],), input_ids.shape[1])).tolist()
        comp_rows = (labels != -100).tolist()
        student_pos, batch_rows, found = [], [], []  # found[i]: (row key, teacher position) of target i
        rows_by_key: dict[bytes, list[int]] = {}
        wanted: dict[bytes, set[int]] = {}
        for b, (ids, n) in enumerate(zip(ids_rows, lengths)):
            ids, comp = ids[:n], comp_rows[b][:n]
            row, index = self.teacher_row(ids, comp)
            key = hashlib.blake2b(np.asarray(row, dtype=np.int64).tobytes(), digest_size=16).digest()
            for t in torch.nonzero(sid[b, :n]).flatten().tolist():
                if t == 0 or index[t] <= 0:
                    continue
                batch_rows.append(b)
                student_pos.append(t - 1)
                found.append((key, index[t] - 1))
                wanted.setdefault(key, set()).add(index[t] - 1)
            rows_by_key.setdefault(key, row)
        missing = [k for k, pos in wanted.items() if not pos <= self.cache.get(k, {}).keys()]
        fresh = self._run_teacher([rows_by_key[k] for k in missing], [sorted(wanted[k]) for k in missing], dev)
        fresh = dict(zip(missing, fresh))
        for k, got in fresh.items():
            kept = self.cache.get(k, {})
            new = {p: v for p, v in got.items() if p not in kept}
            size = sum(v.numel() * v.element_size() for v in new.values())
            if self.cached_bytes + size <= self.cache_bytes:
                self.cache.setdefault(k, {}).update(new)
                self.cached_bytes += size
        self.targets_from_cache += sum(k not in fresh for k, _ in found)
        if found:
            probs = torch.stack([(fresh[k] if k in fresh else self.cache[k])[p] for k, p in found])
            probs = probs.to(dev, torch.float32)
        else:
            probs = torch.zeros((0, self.vocab_size), device=dev)
        return (torch.tensor(batch_rows, dtype=torch.long, device=dev),
                torch.tensor(student_pos, dtype=torch.long, device=dev), probs)

    def cache_summary(self) -> str:
        used, cap = self.cached_bytes / 2**20, self.cache_bytes / 2**20
        return (f"stage-2 teacher: {self.teacher_rows_run:,} rows read, {self.targets_from_cache:,} SID targets from "
                f"its cache ({len(self.cache):,} rows, {used:.0f} of {cap:.0f} MB)")

    def _run_teacher(self, rows: list[list[int]], positions: list[list[int]], dev) -> list[dict[int, torch.Tensor]]:
        """One teacher pass over the unpadded teacher `rows`: at each of a row's `positions`, its next-token
        probabilities (float16, on the CPU)."""
        if not rows:
            return []
        if next(self.teacher.parameters()).device != dev:
            self.teacher.to(dev)
        self.teacher_rows_run += len(rows)
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for b, row in enumerate(rows):
            tokens[b, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, :len(row)] = 1
        first = min((p for pos in positions for p in pos), default=0)
        start = first if self.keep_logits else 0  # the LM head only where targets are read
        keep = {"logits_to_keep": width - start} if start else {}
        logits = self.teacher(input_ids=tokens.to(dev), attention_mask=mask.to(dev), use_cache=False, **keep).logits
        b_idx = torch.tensor([b for b, pos in enumerate(positions) for _ in pos], dtype=torch.long, device=dev)
        cols = torch.tensor([p for pos in positions for p in pos], dtype=torch.long, device=dev) - start
        probs = torch.softmax(logits[b_idx, cols].float(), dim=-1).to("cpu", torch.float16)
        out: list[dict[int, torch.Tensor]] = []
        i = 0
        for pos in positions:
            out.append({p: probs[i + j].clone() for j, p in enumerate(pos)})
            i += len(pos)
        return out


def _find(seq: list[int], sub: list[int]) -> int:
    """Start of the first occurrence of `sub` in `seq`, or -1."""
    if not sub:
        return -1
    first = sub[0]
    for i in range(len(seq) - len(sub) + 1):
        if seq[i] == first and seq[i:i + len(sub)] == sub:
            return i
    return -1


def load_distiller(path, tokenizer, sid_map, sid_token_ids: list[int], args, noun: str = DEFAULT_NOUN,
                   cache_bytes: int = DEFAULT_CACHE_BYTES) -> SIDDistiller:
    """The frozen teacher at `path` (by default the model stage 2 starts from), checked against the student's
    tokenizer: the soft targets are indexed by vocabulary id, so both must share one vocabulary."""
    from genrec.modeling import check_model_tokens, load_model_and_tokenizer, weights_dtype

    if getattr(args, "padding_free", False):
        raise ValueError("--distill_weight needs padded batches: set --padding_free false")
    teacher, teacher_tok = load_model_and_tokenizer(path, dtype=weights_dtype(args))
    check_model_tokens(teacher_tok, sid_map, teacher, where=str(path))
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"--distill_model {path}: its tokenizer differs from the trained model's; the teacher must "
                         "share the student's vocabulary (use the stage-1 model stage 2 starts from)")
    log.info("stage 2 distils the SID tokens from %s", path)
    return SIDDistiller(teacher, tokenizer, sid_token_ids, noun, cache_bytes)
