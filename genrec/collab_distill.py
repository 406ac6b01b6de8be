"""Stage 1 taught by a collaborative model: SASRec's next-item distribution, folded onto each SID level, as part of
every SID token's target (knowledge distillation).

Why: on the demo market the stage-1 model's first guess beats SASRec's at every SID level, yet its top 10 is
narrower (1.75 distinct first codes against SASRec's 2.77) and it loses where the next job is in another area or has
no look-alike (docs/bench/learning.md, session 17): facts about single items that SASRec learns from its per-item
embeddings and that 4 shared codes carry poorly. Fusing the two models' scores at decoding lifted the demo's stage 1
above SASRec (session 24), so each knows something the other does not. Distillation moves SASRec's knowledge into the
generative model at training time only: the saved model is a plain LM, decoded as before.

The teacher reads the same lines the student reads: for the SID tokens of history line k, SASRec's distribution
after lines 1..k-1 of the same row. Level l's target is that distribution summed over the items under the line's true
codes 1..l-1 (teacher forcing, as the student's own loss), grouped by their level-l code.
"""

from __future__ import annotations

import logging
import zlib

import torch

from sid_tokenizer.sidmap import SIDMap, parse_sid_token

log = logging.getLogger(__name__)


def user_fold(user_id: str, folds: int) -> int:
    """A user's fold for cross-fitted teachers (stable across runs and processes)."""
    return zlib.crc32(user_id.encode("utf-8")) % folds


class SASRecDistiller:
    """Teacher probabilities at the SID targets of a batch, in `SIDDistiller.targets`' form: (rows, cols, probs) =
    the batch row, the logit position before each SID target, and the (N, V) target distribution over the vocabulary.

    Rows are read by their SID tokens: every run of one token per level, in level order, is one item's line. Line k is
    taught from SASRec's state after the (at most `max_len`) known lines before it in its row; a line with no known line
    before it (nothing for SASRec to read) or whose codes name no item gets no soft target.

    `sasrec` is one fitted SASRec, or a list of cross-fitted ones with `row_teacher`: hash(token ids of a training row)
    -> the index of the teacher that did not train on that row's user; then every row must be listed.
    `vocab_size`: the model's logit width (the tokenizer's length when not given).
    """

    def __init__(self, sasrec, tokenizer, sid_map: SIDMap, temperature: float = 1.0,
                 row_teacher: dict[int, int] | None = None, vocab_size: int | None = None) -> None:
        teachers = list(sasrec) if isinstance(sasrec, (list, tuple)) else [sasrec]
        if any(t.model is None for t in teachers):
            raise ValueError("SASRecDistiller needs a fitted SASRec")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if len(teachers) > 1 and not row_teacher:
            raise ValueError("cross-fitted SASRec teachers need row_teacher (which teacher teaches each row)")
        sasrec = teachers[0]
        if any(t.item_ids != sasrec.item_ids for t in teachers):
            raise ValueError("cross-fitted SASRec teachers must share one catalog")
        self.models = [t.model.eval() for t in teachers]
        for m in self.models:
            for p in m.parameters():
                p.requires_grad_(False)
        self.row_teacher = row_teacher or {}
        self.max_len = min(m.pos_emb.num_embeddings for m in self.models)
        self.temperature = temperature
        self.levels = sid_map.num_levels
        self.vocab_size = vocab_size or len(tokenizer)
        self.token_code: dict[int, tuple[int, int]] = {}  # token id -> (level, code)
        for tok in sid_map.all_tokens():
            parsed = parse_sid_token(tok)
            if parsed is not None:
                self.token_code[tokenizer.convert_tokens_to_ids(tok)] = parsed
        if max(self.token_code) >= self.vocab_size:
            raise ValueError(f"SID token id {max(self.token_code)} is outside the model's {self.vocab_size} logits")
        width = max(code for _, code in self.token_code.values()) + 1
        self.level_token = torch.full((self.levels, width), -1, dtype=torch.long)  # (level, code) -> token id
        for tid, (level, code) in self.token_code.items():
            self.level_token[level, code] = tid
        self.column = {}  # codes -> SASRec column
        codes = torch.full((len(sasrec.item_ids) + 1, self.levels), -1, dtype=torch.long)  # column -> codes
        for item, col in sasrec.index.items():
            if item in sid_map:
                c = sid_map.codes(item)
                codes[col] = torch.tensor(c)
                self.column[tuple(c)] = col
        # prefix_id[l, column]: which distinct prefix of l codes the item has (level 0: the empty prefix, all 0)
        self.prefix_id = torch.zeros(self.levels, len(codes), dtype=torch.long)
        for level in range(1, self.levels):
            _, self.prefix_id[level] = torch.unique(codes[:, :level], dim=0, return_inverse=True)
        # fold[l]: sparse (width, items + 1) one-hot of each item's level-l code, so folding is one sparse product
        self.fold = []
        for level in range(self.levels):
            cols = torch.nonzero(codes[:, level] >= 0).flatten()
            index = torch.stack([codes[cols, level], cols])
            self.fold.append(torch.sparse_coo_tensor(index, torch.ones(len(cols)), (width, len(codes))).coalesce())
        self.codes = codes

    def lines(self, ids: list[int]) -> list[tuple[int, int]]:
        """(start position, SASRec column; 0 = no item) of every item line of one row, in order."""
        out, t = [], 0
        while t + self.levels <= len(ids):
            first = self.token_code.get(ids[t])
            if first is None or first[0] != 0:
                t += 1
                continue
            run = [self.token_code.get(i) for i in ids[t:t + self.levels]]
            if all(r is not None and r[0] == lvl for lvl, r in enumerate(run)):
                out.append((t, self.column.get(tuple(r[1] for r in run), 0)))
                t += self.levels
            else:
                t += 1
        return out

    def teacher_of(self, ids: list[int]) -> int:
        if len(self.models) == 1:
            return 0
        teacher = self.row_teacher.get(hash(tuple(ids)))
        if teacher is None:
            raise ValueError("a training row matches no cross-fitted SASRec teacher: rows must reach the trainer as "
                             "built (no packing, no truncation by --max_length) and be `sequence` rows")
        return teacher

    @torch.no_grad()
    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor):
        dev = input_ids.device
        lengths = (attention_mask.sum(1) if attention_mask is not None else
                   torch.full((input_ids.shape[0],), input_ids.shape[1])).tolist()
        has_label = (labels != -100).tolist()
        seqs, teacher_idx, rows, cols, line_of, item_of, level_of = [], [], [], [], [], [], []
        for b, (ids, n) in enumerate(zip(input_ids.tolist(), lengths)):
            found = self.lines(ids[:n])
            if len(found) < 2:
                continue
            teacher = self.teacher_of(ids[:n])
            for k in range(1, len(found)):
                start, col = found[k]
                context = [c for _, c in found[:k]]
                if 0 in context:  # an unknown line: SASRec reads only the lines after it
                    context = context[len(context) - context[::-1].index(0):]
                context = context[-self.max_len:]
                targets = [start + lvl for lvl in range(self.levels) if start + lvl > 0 and has_label[b][start + lvl]]
                if col == 0 or not context or not targets:
                    continue
                for t in targets:
                    rows.append(b)
                    cols.append(t - 1)
                    line_of.append(len(seqs))
                    item_of.append(col)
                    level_of.append(t - start)
                seqs.append([0] * (self.max_len - len(context)) + context)
                teacher_idx.append(teacher)
        if not rows:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return empty, empty, torch.zeros(0, self.vocab_size, device=dev)
        seqs_t, teacher_t = torch.tensor(seqs, dtype=torch.long), torch.tensor(teacher_idx)
        p = torch.zeros(len(seqs), self.codes.shape[0])  # (lines, items + 1): one softmax per taught line
        for k, model in enumerate(self.models):
            pick = torch.nonzero(teacher_t == k).flatten()
            if len(pick):
                p[pick] = torch.softmax(model.scores(seqs_t[pick]).float() / self.temperature, dim=-1)
        line_t, item_t, level_t = (torch.tensor(x, dtype=torch.long) for x in (line_of, item_of, level_of))
        probs = torch.zeros(len(rows), self.vocab_size)
        for level in range(self.levels):
            pick = torch.nonzero(level_t == level).flatten()
            if not len(pick):
                continue
            prefix = self.prefix_id[level]
            same = prefix[None, :] == prefix[item_t[pick]][:, None]  # items under the line's true codes 1..l-1
            folded = torch.sparse.mm(self.fold[level], (p[line_t[pick]] * same).T).T  # (targets, width)
            true_code = self.codes[item_t[pick], level]
            total = folded.sum(1, keepdim=True)
            hard = torch.zeros_like(folded).scatter_(1, true_code[:, None], 1.0)  # all mass underflowed: the label
            folded = torch.where(total > 0, folded / total.clamp(min=1e-30), hard)
            tok = self.level_token[level]
            probs[pick[:, None], tok.clamp(min=0)[None, :]] = folded * (tok >= 0)
        return (torch.tensor(rows, dtype=torch.long, device=dev), torch.tensor(cols, dtype=torch.long, device=dev),
                probs.to(dev))


def fit_sasrec_teacher(train, catalog, valid, seed: int, max_epochs: int = 200):
    """SASRec trained as `genrec evaluate --baselines sasrec` trains it (same defaults, same seed)."""
    from eval.baselines.sasrec import SASRec, SASRecConfig  # the evaluation's baseline, reused as the teacher

    log.info("stage 1: training the SASRec teacher (seed %d)", seed)
    return SASRec(SASRecConfig(max_epochs=max_epochs, seed=seed, progress=True)).fit(train, catalog, valid)


def fit_cross_teachers(train, catalog, valid, seed: int, folds: int, max_epochs: int = 200) -> list:
    """`folds` SASRecs, teacher k trained (and early-stopped) on the users outside fold k, so the distribution it
    gives a fold-k user's row is a prediction for an unseen user, as at test time, not a recall of that user's
    own training targets."""
    teachers = []
    for k in range(folds):
        keep = [ex for ex in train if user_fold(ex.user_id, folds) != k]
        held = [ex for ex in (valid or []) if user_fold(ex.user_id, folds) != k] or None
        log.info("stage 1: SASRec teacher %d of %d on %d of %d training examples", k + 1, folds, len(keep), len(train))
        teachers.append(fit_sasrec_teacher(keep, catalog, held, seed))
    return teachers
