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

    Rows are read by their SID tokens: every run of one token per level, in level order, is one item's line. A line
    without a line before it in its row (nothing for SASRec to read) or whose codes name no item gets no soft target.

    `sasrec` is one fitted SASRec, or a list of cross-fitted ones with `row_teacher`: the token ids of each training
    row -> the index of the teacher that did not train on that row's user (a row not listed uses teacher 0).
    """

    def __init__(self, sasrec, tokenizer, sid_map: SIDMap, temperature: float = 1.0,
                 row_teacher: dict[tuple[int, ...], int] | None = None) -> None:
        teachers = list(sasrec) if isinstance(sasrec, (list, tuple)) else [sasrec]
        if any(t.model is None for t in teachers):
            raise ValueError("SASRecDistiller needs a fitted SASRec")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        sasrec = teachers[0]
        if any(t.item_ids != sasrec.item_ids for t in teachers):
            raise ValueError("cross-fitted SASRec teachers must share one catalog")
        self.models = [t.model.eval() for t in teachers]
        for m in self.models:
            for p in m.parameters():
                p.requires_grad_(False)
        self.model = self.models[0]
        self.row_teacher = row_teacher or {}
        self.unlisted_rows = 0
        self.max_len = self.model.pos_emb.num_embeddings
        self.temperature = temperature
        self.levels = sid_map.num_levels
        self.vocab_size = len(tokenizer)
        self.token_code: dict[int, tuple[int, int]] = {}  # token id -> (level, code)
        for tok in sid_map.all_tokens():
            parsed = parse_sid_token(tok)
            if parsed is not None:
                self.token_code[tokenizer.convert_tokens_to_ids(tok)] = parsed
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
        self.codes = codes
        # prefix_id[l, column]: which distinct prefix of l codes the item has (level 0: the empty prefix, all 0)
        self.prefix_id = torch.zeros(self.levels, len(codes), dtype=torch.long)
        for level in range(1, self.levels):
            _, self.prefix_id[level] = torch.unique(codes[:, :level], dim=0, return_inverse=True)

    def lines(self, ids: list[int]) -> list[tuple[int, int]]:
        """(start position, SASRec column) of every item line of one row, in order."""
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

    @torch.no_grad()
    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor):
        dev = input_ids.device
        lengths = (attention_mask.sum(1) if attention_mask is not None else
                   torch.full((input_ids.shape[0],), input_ids.shape[1])).tolist()
        has_label = (labels != -100).tolist()
        seqs, rows, cols, seq_of, pos_of, item_of, level_of, teacher_of = [], [], [], [], [], [], [], []
        for b, (ids, n) in enumerate(zip(input_ids.tolist(), lengths)):
            teacher = self.row_teacher.get(tuple(ids[:n]))
            if teacher is None:
                self.unlisted_rows += len(self.models) > 1
                teacher = 0
            found = self.lines(ids[:n])
            if len(found) < 2:
                continue
            items = [col for _, col in found][-(self.max_len + 1):]
            found = found[-len(items):]
            seq = items[:-1]  # state after line k-1 predicts line k
            for k in range(1, len(found)):
                start, col = found[k]
                if col == 0 or items[k - 1] == 0:
                    continue
                for level in range(self.levels):
                    t = start + level
                    if t == 0 or not has_label[b][t]:
                        continue
                    rows.append(b)
                    cols.append(t - 1)
                    seq_of.append(len(seqs))
                    pos_of.append(self.max_len - len(seq) + k - 1)
                    item_of.append(col)
                    level_of.append(level)
                    teacher_of.append(teacher)
            seqs.append([0] * (self.max_len - len(seq)) + seq)
        if not rows:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return empty, empty, torch.zeros(0, self.vocab_size, device=dev)
        seqs_t, seq_of_t, pos_of_t, teacher_t = (torch.tensor(x, dtype=torch.long)
                                                 for x in (seqs, seq_of, pos_of, teacher_of))
        p = torch.zeros(len(rows), self.codes.shape[0])  # (N, items + 1)
        for k, model in enumerate(self.models):
            pick = torch.nonzero(teacher_t == k).flatten()
            if len(pick):
                h = model.states(seqs_t)[seq_of_t[pick], pos_of_t[pick]]
                p[pick] = torch.softmax(model.item_scores(h).float() / self.temperature, dim=-1)
        level = torch.tensor(level_of)
        prefixes = self.prefix_id[level]  # (N, items + 1)
        same = prefixes == prefixes.gather(1, torch.tensor(item_of)[:, None])  # under the line's true codes 1..l-1
        mass = p * same
        item_code = self.codes[:, level].T  # (N, items + 1): each item's code at the target's level
        width = self.level_token.shape[1]
        folded = torch.zeros(len(rows), width).scatter_add_(1, item_code.clamp(min=0), mass * (item_code >= 0))
        folded = folded / folded.sum(1, keepdim=True).clamp(min=1e-12)
        probs = torch.zeros(len(rows), self.vocab_size)
        tok = self.level_token[level]  # (N, width)
        probs.scatter_(1, tok.clamp(min=0), folded * (tok >= 0))
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
