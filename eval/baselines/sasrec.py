"""A compact SASRec (Kang & McAuley 2018) in plain torch: the learned sequential baseline.

Why not RecBole: it pins old torch/numpy and drags in a large stack. This follows RecBole's SASRec
defaults (2 blocks, 2 heads, hidden 64, inner 256, GELU, dropout 0.5, full-softmax cross-entropy with
item embeddings shared between input and output, Adam lr 1e-3, early stopping on validation
NDCG@10 with patience 10) so its numbers are comparable with RecBole runs.

Two training objectives (`SASRecConfig.train_mode`):
- "sequence" (default, as in the SASRec paper): each user's train sequence is rebuilt from the
  train examples (`reconstruct_sequences`), cut into windows of max_len + 1 items (`sequence_windows`),
  and trained once per epoch with the causal transformer and full-softmax cross-entropy at EVERY
  target position. Same supervision as "example" (every train example's target, each once per epoch),
  but one forward pass serves up to max_len targets, so an epoch is several times cheaper.
- "example": each training example (history -> target) is one row with the loss on its last
  position, as RecBole does after its prefix augmentation (the loader emits one example per prefix).
Inference is the same in both: the state at the last position of the (left-padded) history.
Padding keys are masked out of attention (each position still sees itself, so an empty history gets a
learned "no history" state at its last, padding, position instead of NaN).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from eval.baselines.base import Recommender
from eval.metrics import per_user_ndcg
from genrec.data.schema import Catalog, Example
from genrec.data.sequences import reconstruct_sequences, sequence_windows

SASREC_JSON = "sasrec.json"
SASREC_FORMAT = "genrec-sasrec/1"


@dataclass
class SASRecConfig:
    """SASRec hyper-parameters (defaults follow RecBole's SASRec)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    max_len: int = 50
    """Longest history used; the model uses min(max_len, longest history in train/valid), so short
    histories (the default loader keeps 10) cost no padding."""
    positions: str = "auto"
    """Position ids: 'from_start' (oldest history item = 0, as RecBole) or 'from_end' (newest = last);
    'auto' = from_start in sequence mode (the only choice where a training position and the inference
    state of the same prefix get the same position ids), from_end in example mode."""
    train_mode: str = "sequence"
    """'sequence': each user's sequence once per epoch, loss at every target position (fast, default);
    'example': one row per (history, target) example, loss at the last position (the old objective)."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    """Examples per step in example mode."""
    seq_batch_size: int = 64
    """Windows per step in sequence mode (a window holds up to max_len targets; 64 windows gave the same
    NDCG as 256 with about half the epochs on the benchmark sets, docs/bench/eval.md)."""
    max_epochs: int = 200
    patience: int = 10
    eval_batch_size: int = 1024
    seed: int = 42
    progress: bool = False


class SASRecModel(nn.Module):
    """Item + position embeddings -> causal pre-norm transformer -> last position state."""

    def __init__(self, num_items: int, cfg: SASRecConfig, max_len: int | None = None, positions: str | None = None) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(num_items + 1, cfg.hidden_size, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len or cfg.max_len, cfg.hidden_size)
        self.emb_norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.hidden_size,
            nhead=cfg.num_heads,
            dim_feedforward=cfg.inner_size,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=False,
            layer_norm_eps=1e-12,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.num_heads = cfg.num_heads
        self.positions = positions or resolve_positions(cfg)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def states(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, L) left-padded item indices (0 = pad) -> (B, L, H) causal states at every position."""
        length = seq.shape[1]
        pos = torch.arange(length, device=seq.device).expand_as(seq)
        if self.positions == "from_start":  # RecBole: the oldest item is position 0
            pos = (pos - (seq == 0).sum(1, keepdim=True)).clamp(min=0)
        x = self.dropout(self.emb_norm(self.item_emb(seq) + self.pos_emb(pos)))
        return self.encoder(x, mask=self.attention_mask(seq, self.num_heads))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, L) left-padded item indices (0 = pad) -> (B, H) state at the last position."""
        return self.states(seq)[:, -1]

    @staticmethod
    def attention_mask(seq: torch.Tensor, num_heads: int) -> torch.Tensor:
        """(B * heads, L, L) bool mask, True = blocked: causal, padding keys blocked, but every query may see
        itself, so no row is fully blocked (a fully blocked pad query gives NaN, which 0-weight attention
        would then spread to real positions)."""
        length = seq.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        pad_key = (seq == 0)[:, None, :]
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        blocked = (causal[None] | pad_key) & ~eye[None]
        return blocked.repeat_interleave(num_heads, dim=0)

    def scores(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, num_items + 1) scores over the catalog; column 0 (pad) is -inf."""
        return self.item_scores(self.forward(seq))

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        """(N, H) states -> (N, num_items + 1) scores; column 0 (pad) is -inf."""
        logits = h @ self.item_emb.weight.T
        logits[:, 0] = float("-inf")
        return logits

    def sequence_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Mean full-softmax cross-entropy over every position whose target is not 0 (pad = no loss).

        inputs, targets: (B, L) left-padded windows, targets[b, j] = the item after inputs[b, j].
        Returns (loss, number of target positions)."""
        mask = targets != 0
        h = self.states(inputs)[mask]
        return nn.functional.cross_entropy(self.item_scores(h), targets[mask]), int(mask.sum())


TRAIN_MODES = ("sequence", "example")
POSITIONS = ("auto", "from_start", "from_end")


def resolve_positions(cfg: SASRecConfig) -> str:
    """The position scheme a config means ('auto' -> from_start for sequence training, from_end for example)."""
    if cfg.positions not in POSITIONS:
        raise ValueError(f"SASRecConfig.positions must be one of {POSITIONS}, got {cfg.positions!r}")
    if cfg.train_mode not in TRAIN_MODES:
        raise ValueError(f"SASRecConfig.train_mode must be one of {TRAIN_MODES}, got {cfg.train_mode!r}")
    if cfg.positions == "auto":
        return "from_start" if cfg.train_mode == "sequence" else "from_end"
    if cfg.positions == "from_end" and cfg.train_mode == "sequence":
        raise ValueError("SASRec: positions='from_end' cannot train in sequence mode (each position of a window "
                         "would get other position ids than at inference); use 'from_start' or 'auto'")
    return cfg.positions


class SASRec(Recommender):
    """Trains a SASRecModel on train examples, early-stopped on valid NDCG@10 (full ranking)."""

    name = "sasrec"

    def __init__(self, cfg: SASRecConfig | None = None) -> None:
        self.cfg = cfg or SASRecConfig()
        self.model: SASRecModel | None = None
        self.history: list[dict[str, float]] = []

    # -- encoding -------------------------------------------------------------------------------
    def _encode(self, examples: Sequence[Example], where: str) -> torch.Tensor:
        length = self.max_len
        out = np.zeros((len(examples), length), dtype=np.int64)
        for i, ex in enumerate(examples):
            hist = ex.history[-length:]
            try:
                idx = [self.index[it] for it in hist]
            except KeyError as e:
                raise ValueError(
                    f"SASRec: {where} example {i} (user {ex.user_id!r}) has history item {e.args[0]!r} "
                    "that is not in the catalog"
                ) from None
            if idx:
                out[i, length - len(idx):] = idx
        return torch.from_numpy(out)

    def _targets(self, examples: Sequence[Example], where: str) -> torch.Tensor:
        try:
            return torch.tensor([self.index[ex.target] for ex in examples], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"SASRec: a {where} target {e.args[0]!r} is not in the catalog") from None

    def _windows(self, train: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence-mode training rows: (N, L) left-padded inputs and (N, L) targets, 0 = no loss there."""
        length = self.max_len
        rows_in, rows_tg = [], []
        for items, first in reconstruct_sequences(train):
            try:
                idx = [self.index[it] for it in items]
            except KeyError as e:
                raise ValueError(f"SASRec: a train item {e.args[0]!r} is not in the catalog") from None
            for offset, lo, hi in sequence_windows(len(idx), first, length):
                inp = np.zeros(length, dtype=np.int64)
                tgt = np.zeros(length, dtype=np.int64)
                if offset < 0:  # empty history: padding in, the first item out at the last position
                    tgt[-1] = idx[0]
                else:
                    seg = idx[offset:hi]  # inputs; position j predicts idx[offset + j + 1]
                    inp[length - len(seg):] = seg
                    for t in range(lo, hi + 1):
                        tgt[length - len(seg) + (t - offset - 1)] = idx[t]
                rows_in.append(inp)
                rows_tg.append(tgt)
        return torch.from_numpy(np.stack(rows_in)), torch.from_numpy(np.stack(rows_tg))

    # -- training -------------------------------------------------------------------------------
    def fit(self, train: Sequence[Example], catalog: Catalog, valid: Sequence[Example] | None = None) -> "SASRec":
        if not train:
            raise ValueError("SASRec.fit: no training examples")
        cfg = self.cfg
        positions = resolve_positions(cfg)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.item_ids = list(catalog.item_ids)
        self.index = {it: i + 1 for i, it in enumerate(self.item_ids)}
        longest = max(len(ex.history) for ex in [*train, *(valid or [])])
        self.max_len = max(1, min(cfg.max_len, longest))
        if cfg.train_mode == "sequence":
            seqs, targets = self._windows(train)
        else:
            seqs, targets = self._encode(train, "train"), self._targets(train, "train")
        self.train_rows, self.train_targets = len(seqs), int((targets != 0).sum())
        valid = list(valid or [])
        v_seqs = self._encode(valid, "valid") if valid else None
        v_targets = self._targets(valid, "valid") if valid else None

        model = SASRecModel(len(self.item_ids), cfg, self.max_len, positions)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, bad_epochs = -math.inf, None, 0
        self.history = []
        bar = tqdm(range(cfg.max_epochs), desc=f"sasrec[{cfg.train_mode}]", disable=not cfg.progress)
        for epoch in bar:
            model.train()
            perm = torch.randperm(len(seqs), generator=gen)
            total, count = 0.0, 0
            step = cfg.seq_batch_size if cfg.train_mode == "sequence" else cfg.batch_size
            for start in range(0, len(perm), step):
                b = perm[start:start + step]
                if cfg.train_mode == "sequence":
                    loss, n = model.sequence_loss(seqs[b], targets[b])
                else:
                    loss, n = nn.functional.cross_entropy(model.scores(seqs[b]), targets[b]), len(b)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * n
                count += n
            record = {"epoch": epoch, "loss": total / max(count, 1)}
            if v_seqs is not None:
                record["valid_ndcg@10"] = self._valid_ndcg(model, v_seqs, v_targets)
                bar.set_postfix(loss=f"{record['loss']:.3f}", ndcg=f"{record['valid_ndcg@10']:.4f}")
                if record["valid_ndcg@10"] > best:
                    best, best_state, bad_epochs = record["valid_ndcg@10"], copy.deepcopy(model.state_dict()), 0
                else:
                    bad_epochs += 1
            self.history.append(record)
            if v_seqs is not None and bad_epochs >= cfg.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self.model = model
        self.best_valid_ndcg10 = best if best_state is not None else float("nan")
        return self

    @torch.no_grad()
    def _valid_ndcg(self, model: SASRecModel, seqs: torch.Tensor, targets: torch.Tensor) -> float:
        model.eval()
        ranks = []
        for start in range(0, len(seqs), self.cfg.eval_batch_size):
            s = model.scores(seqs[start:start + self.cfg.eval_batch_size])
            t = targets[start:start + self.cfg.eval_batch_size]
            target_score = s.gather(1, t[:, None])
            ranks.append((s > target_score).sum(1) + 1)
        return float(per_user_ndcg(torch.cat(ranks).numpy(), 10).mean())

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, examples: Sequence[Example], k: int, exclude_history: bool = False) -> list[list[str]]:
        if self.model is None:
            raise ValueError("SASRec.recommend called before fit")
        if k > len(self.item_ids):
            raise ValueError(f"SASRec: k={k} is larger than the catalog ({len(self.item_ids)} items)")
        seqs = self._encode(examples, "evaluation")
        out: list[list[str]] = []
        for start in range(0, len(examples), self.cfg.eval_batch_size):
            batch = seqs[start:start + self.cfg.eval_batch_size]
            s = self.model.scores(batch)
            if exclude_history:
                rows, cols = [], []
                for r, ex in enumerate(examples[start:start + self.cfg.eval_batch_size]):
                    hist = {self.index[it] for it in ex.history}
                    rows.extend([r] * len(hist))
                    cols.extend(hist)
                s[rows, cols] = float("-inf")
            vals, idx = s.topk(k, dim=1)
            for row_v, row_i in zip(vals.tolist(), idx.tolist()):
                out.append([self.item_ids[i - 1] for v, i in zip(row_v, row_i) if v != float("-inf")])
        return out

    @torch.no_grad()
    def candidate_log_probs(self, examples: Sequence[Example], model_items: Sequence[Sequence[str]], top_n: int,
                            exclude_history: bool = False) -> list[dict[str, float]]:
        """Per example: SASRec's log-softmax over the catalog at its top `top_n` items and at `model_items` (the
        generative model's list), for the fusion at decoding (eval/collab_prior.py). Excluded history items and
        items outside the catalog are left out."""
        if self.model is None:
            raise ValueError("SASRec.candidate_log_probs called before fit")
        seqs = self._encode(examples, "evaluation")
        out: list[dict[str, float]] = []
        size = self.cfg.eval_batch_size
        n = min(top_n, len(self.item_ids))
        for start in range(0, len(examples), size):
            logp = torch.log_softmax(self.model.scores(seqs[start:start + size]), dim=1)
            logp[:, 0] = float("-inf")  # the padding id is not an item
            for r, ex in enumerate(examples[start:start + size]):
                row = logp[r]
                if exclude_history:
                    row[[self.index[it] for it in ex.history if it in self.index]] = float("-inf")
                idx = row.topk(n).indices.tolist()
                idx += [self.index[it] for it in model_items[start + r] if it in self.index]
                out.append({self.item_ids[i - 1]: float(row[i]) for i in idx if i > 0 and row[i] != float("-inf")})
        return out

    # -- saving ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write model.safetensors + sasrec.json (config, item order, max_len, positions) into `folder`."""
        from safetensors.torch import save_file

        from sid_tokenizer.sidmap import atomic_write_text

        if self.model is None:
            raise ValueError("SASRec.save called before fit")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        tmp.replace(folder / "model.safetensors")
        meta = {"format": SASREC_FORMAT, "config": asdict(self.cfg), "item_ids": self.item_ids,
                "max_len": self.max_len, "positions": self.model.positions,
                "best_valid_ndcg10": getattr(self, "best_valid_ndcg10", None)}
        atomic_write_text(folder / SASREC_JSON, json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "SASRec":
        """A SASRec written by `save` (weights read with safetensors: no pickle)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path = folder / SASREC_JSON
        if not meta_path.is_file() or not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"{folder} is not a saved SASRec: expected {SASREC_JSON} and model.safetensors "
                                    "(written by `genrec evaluate` into <output_dir>/sasrec)")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != SASREC_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {SASREC_FORMAT!r}")
            cfg = SASRecConfig(**meta["config"])
            item_ids = [str(i) for i in meta["item_ids"]]
            max_len, positions = int(meta["max_len"]), str(meta["positions"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta_path}: not a readable SASRec description ({e})") from None
        self = cls(cfg)
        self.item_ids, self.max_len = item_ids, max_len
        self.index = {it: i + 1 for i, it in enumerate(item_ids)}
        model = SASRecModel(len(item_ids), cfg, max_len, positions)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        model.eval()
        self.model = model
        self.best_valid_ndcg10 = meta.get("best_valid_ndcg10")
        return self
