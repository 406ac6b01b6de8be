"""`SIDTokenizer`: item texts -> embeddings -> residual codes -> collision-free semantic IDs (an `SIDMap`).

    tok = SIDTokenizer(TokenizerConfig(encoder="tfidf", method="rqkmeans"))
    sid_map = tok.fit(texts, item_ids, log_dir="out/tb")   # tok.report holds the quality numbers
    tok.save("out"); tok = SIDTokenizer.load("out")
    prefixes = tok.encode(["Registered Nurse at ..."])      # cold start, no refit
    sid_map = tok.add_items(["new-1"], ["Registered Nurse at ..."], sid_map)

Every SID has `levels` semantic codes plus one dedup code. A text identical to a fitted item's text always gets
that item's prefix (the tokenizer keeps a hash table of fitted texts); other texts go through the encoder and
the quantizer.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sid_tokenizer.config import TokenizerConfig
from sid_tokenizer.dedup import (dedup_codes, dedup_size, free_dedup_code, nearest_free_dedup_code,
                                 residual_dedup_codes)
from sid_tokenizer.collab import collaborative_vectors, coview_identity_vectors, impute_from_text, unit_rows
from sid_tokenizer.embed import (FIELD_SEP, FIELD_TFIDF_NAMES, FieldTfidfEncoder, HFEncoder, NoTextEncoder,
                                 NpyEncoder, TfidfSvdEncoder, embed_catalog, make_encoder, readable_fields)
from sid_tokenizer.kmeans import kmeans, sq_dists
from sid_tokenizer.labels import prefix_labels
from sid_tokenizer.metrics import collision_stats, level_usage
from sid_tokenizer.rqkmeans import RQKMeans
from sid_tokenizer.rqvae import RQVAE, train_rqvae
from sid_tokenizer.sidmap import SIDMap, atomic_write_text, catalog_fingerprint
from sid_tokenizer.spread import spread_last_level, unit_keys_of

WEIGHTS_NAME = "tokenizer.safetensors"
CONFIG_NAME = "tokenizer_config.json"
FORMAT_VERSION = 1


def text_hash(text: str) -> int:
    """Stable signed 64-bit hash of a text (for the table of fitted texts)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def adapted_codebook_size(num_items: int, cfg: TokenizerConfig) -> int:
    """Codebook size for this catalog: at most num_items / min_items_per_code, warning when it shrinks."""
    size = min(cfg.codebook_size, max(2, int(num_items / cfg.min_items_per_code)))
    if size < cfg.codebook_size:
        warnings.warn(
            f"catalog of {num_items} items is small for codebook_size={cfg.codebook_size}: using {size} codes per "
            f"level (about {cfg.min_items_per_code:g} items per code; set min_items_per_code to change this)",
            UserWarning,
            stacklevel=3,
        )
    return size


class SIDTokenizer:
    """Fits and applies the item -> SID mapping; see the module docstring for the workflow."""

    def __init__(self, cfg: TokenizerConfig | None = None) -> None:
        self.cfg = (cfg or TokenizerConfig()).validate()
        self.encoder: TfidfSvdEncoder | FieldTfidfEncoder | HFEncoder | NpyEncoder | NoTextEncoder | None = None
        self.field_names: list[str] | None = None  # catalog fields in FIELD_SEP order (encoder 'tfidf-fields')
        self.quantizer: RQVAE | RQKMeans | None = None
        self.codebook_sizes: list[int] = []  # semantic levels + dedup level
        self.dedup_centroids: torch.Tensor | None = None  # (dedup size, dim) with dedup_order 'residual'
        self.embedding_dim = 0
        self.collab_dim = 0  # trailing dimensions of the item vectors that hold the collaborative part (collab.py)
        self.report: dict[str, Any] = {}
        self._known_hash = np.zeros(0, dtype=np.int64)
        self._known_codes = np.zeros((0, self.cfg.levels), dtype=np.int64)

    @property
    def levels(self) -> int:
        return self.cfg.levels

    # ------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        texts: list[str] | None,
        item_ids: list[str],
        embeddings: np.ndarray | None = None,
        log_dir: str | Path | None = None,
        sequences: list[list[str]] | None = None,
    ) -> SIDMap:
        """Fit on the catalog and return its collision-free SIDMap (with prefix labels when texts are given).

        Give texts (embedded with `cfg.encoder`) or precomputed `embeddings` (one row per item), or both (the
        texts then only feed labels and the fitted-text table). `sequences` (item ids in time order, one list
        per user, training interactions only) add the collaborative part when `cfg.collab_dim` > 0 and order
        the dedup codes when `cfg.dedup_order` is 'popularity'; without them the SIDs come from the text alone
        and 'popularity' falls back to item-id order (the rule used is recorded in the report).
        """
        if not self.cfg.threads:
            return self._fit(texts, item_ids, embeddings, log_dir, sequences)
        from threadpoolctl import threadpool_limits

        previous = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            with threadpool_limits(self.cfg.threads):  # BLAS inside the TF-IDF SVD
                return self._fit(texts, item_ids, embeddings, log_dir, sequences)
        finally:
            torch.set_num_threads(previous)

    def _fit(self, texts, item_ids, embeddings, log_dir, sequences=None) -> SIDMap:
        cfg = self.cfg
        item_ids = [str(i) for i in item_ids]
        n = len(item_ids)
        if texts is not None and len(texts) != n:
            raise ValueError(f"fit: {len(texts)} texts for {n} item ids (expected one text per item)")
        if len(set(item_ids)) != n:
            dup = next(i for i in item_ids if item_ids.count(i) > 1)
            raise ValueError(f"fit: item id {dup!r} appears more than once")
        if n < 2:
            raise ValueError(f"fit: need at least 2 items, got {n}")

        # 1. embeddings
        if embeddings is not None:
            emb = np.asarray(embeddings, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"fit: embeddings of shape {emb.shape}, expected ({n}, dim): one row per item")
            if not np.isfinite(emb).all():
                raise ValueError("fit: embeddings contain NaN or infinite values")
            # Whatever produced them, new items must come as embeddings too (encode_embeddings).
            self.encoder = NpyEncoder("<in-memory embeddings>")
            embed_info = {"seconds": 0.0, "cached": False, "dim": int(emb.shape[1])}
        else:
            if texts is None:
                raise ValueError("fit: give item texts or precomputed embeddings")
            self.encoder = make_encoder(
                cfg.encoder, tfidf_dim=cfg.tfidf_dim, tfidf_max_features=cfg.tfidf_max_features, seed=cfg.seed,
                max_seq_length=cfg.max_seq_length, batch_size=cfg.embed_batch_size, device=cfg.device,
                tfidf_field_dim=cfg.tfidf_field_dim, tfidf_whole_share=cfg.tfidf_whole_share,
                field_names=self.field_names,
            )
            emb, embed_info = embed_catalog(self.encoder, list(texts), cfg.cache_dir)
        if sequences is not None:
            sequences = [list(seq) for seq in sequences]  # read twice below (collaborative part, dedup order)
        collab_info = None
        self.collab_dim = 0
        if cfg.collab_dim and sequences is None:
            warnings.warn("SIDTokenizer.fit: collab_dim > 0 but no interaction sequences given; the SIDs come from "
                          "the item text alone", stacklevel=3)
        elif cfg.collab_dim:
            index = {item: i for i, item in enumerate(item_ids)}
            # without text (encoder 'none') every item needs a vector of its own: see coview_identity_vectors
            vectors = coview_identity_vectors if isinstance(self.encoder, NoTextEncoder) else collaborative_vectors
            cf, collab_info = vectors(
                ([index[it] for it in seq if it in index] for seq in sequences), n, cfg.collab_dim,
                cfg.collab_window, cfg.seed)
            self.collab_dim = cfg.collab_dim
            text = unit_rows(emb)
            cf = impute_from_text(cf, text)  # items nobody viewed in train borrow their text neighbours' vectors
            emb = np.concatenate([text, cfg.collab_weight * cf], axis=1).astype(np.float32)
        self.embedding_dim = int(emb.shape[1])
        if texts is not None:
            # Identical texts must share a SID prefix whatever produced the vectors (cache, batching, .npy).
            first: dict[str, int] = {}
            rep_row = np.array([first.setdefault(t, i) for i, t in enumerate(texts)], dtype=np.int64)
            if (rep_row != np.arange(n)).any():
                emb = emb[rep_row]
        x = torch.from_numpy(np.ascontiguousarray(emb)).to(cfg.device)

        # 2. quantizer
        k = adapted_codebook_size(n, cfg)
        writer = _writer(log_dir)
        log = (lambda tag, value, step: writer.add_scalar(tag, value, step)) if writer else None
        gen = torch.Generator().manual_seed(cfg.seed)  # CPU generator: same draws on any device
        t0 = time.perf_counter()
        if cfg.method == "rqkmeans":
            quant = RQKMeans(self.embedding_dim, cfg.levels, k)

            def level_log(level: int, codes: torch.Tensor) -> None:
                if log is not None:
                    u, p = level_usage(codes.cpu().numpy()[:, None], [k])
                    log("fit/utilization", u[0], level + 1)
                    log("fit/perplexity", p[0], level + 1)

            prefix = quant.fit(x, iters=cfg.kmeans_iters, generator=gen, balanced=cfg.balanced,
                               sinkhorn_iters=cfg.sinkhorn_iters, sinkhorn_epsilon=cfg.sinkhorn_epsilon, log=level_log)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                quant = RQVAE(self.embedding_dim, list(cfg.hidden_dims), cfg.latent_dim, cfg.levels, k).to(cfg.device)
            prefix, _ = train_rqvae(
                quant, x, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, commitment=cfg.commitment,
                kmeans_iters=cfg.kmeans_iters, balanced=cfg.balanced, sinkhorn_iters=cfg.sinkhorn_iters,
                sinkhorn_epsilon=cfg.sinkhorn_epsilon, dead_code_every=cfg.dead_code_every, generator=gen, log=log,
                warmup=cfg.warmup,
            )
        self.quantizer = quant
        prefix_np = prefix.cpu().numpy().astype(np.int64)
        plain = collision_stats(prefix_np)
        moved = 0
        if cfg.spread_last_level:
            residual, codebook, bias = quant.last_level_inputs(x, prefix)
            last, moved = spread_last_level(prefix_np[:, :-1], prefix_np[:, -1], residual, codebook, bias,
                                            unit_keys_of(emb))
            prefix_np[:, -1] = last
            prefix = torch.from_numpy(prefix_np).to(cfg.device)
        fit_seconds = time.perf_counter() - t0
        with torch.no_grad():
            x_hat = quant.reconstruct(prefix)
            err = ((x_hat - x) ** 2).sum().item()
            var = ((x - x.mean(0)) ** 2).sum().item()

        # 3. dedup level
        before = collision_stats(prefix_np)
        counts = None
        if cfg.dedup_order == "popularity" and sequences is None:
            warnings.warn("SIDTokenizer.fit: dedup_order 'popularity' but no interaction sequences given; the dedup "
                          "codes follow item ids", stacklevel=3)
        elif cfg.dedup_order == "popularity":
            index = {item: i for i, item in enumerate(item_ids)}
            counts = np.bincount([index[it] for seq in sequences for it in seq if it in index], minlength=n)
        self.dedup_centroids = None
        if cfg.dedup_order == "residual":
            d_size = dedup_size(int(before["max_items_per_sid"]), cfg.dedup_min_size)
            with torch.no_grad():
                residual = x - quant.reconstruct(prefix)
            # One centroid per dedup code; a catalog smaller than the level gets one per item (no group is larger).
            centroids, _ = kmeans(residual, min(d_size, n), cfg.kmeans_iters,
                                  torch.Generator().manual_seed(cfg.seed + 1))
            self.dedup_centroids = centroids.cpu().contiguous()
            dedup = residual_dedup_codes(prefix_np, item_ids, sq_dists(residual, centroids).cpu().numpy(), d_size)
        else:
            dedup = dedup_codes(prefix_np, item_ids, counts)
            d_size = dedup_size(int(dedup.max()) + 1, cfg.dedup_min_size)
        self.codebook_sizes = [k] * cfg.levels + [d_size]
        full = np.concatenate([prefix_np, dedup[:, None]], axis=1)

        # 4. labels and the fitted-text table
        t1 = time.perf_counter()
        label_texts = readable_fields(texts) if texts is not None else None
        named = texts is not None and not isinstance(self.encoder, NoTextEncoder)  # ids are no area names
        labels = prefix_labels(prefix_np, label_texts, cfg.levels, cfg.label_words) if named else {}
        label_seconds = time.perf_counter() - t1
        if texts is not None:
            self._set_known(list(texts), prefix_np)
        sid_map = SIDMap({i: tuple(row) for i, row in zip(item_ids, full.tolist())}, list(self.codebook_sizes),
                         labels)

        util, ppl = level_usage(full, self.codebook_sizes)
        after = collision_stats(full)
        self.report = {
            "num_items": n,
            "levels": len(self.codebook_sizes),
            "semantic_levels": cfg.levels,
            "codebook_sizes": list(self.codebook_sizes),
            "method": cfg.method,
            "encoder": cfg.encoder if embeddings is None else "<precomputed embeddings>",
            "embedding_dim": self.embedding_dim,
            "encoder_fields": self.encoder.kept if isinstance(self.encoder, FieldTfidfEncoder) else None,
            "balanced": cfg.balanced,
            "seed": cfg.seed,
            "collision_rate_before_dedup": before["collision_rate"],
            "items_in_collisions_before_dedup": before["items_in_collisions"],
            "max_items_per_sid_before_dedup": before["max_items_per_sid"],
            "collision_rate": after["collision_rate"],
            "collision_rate_nearest_rule": plain["collision_rate"],
            "spread_moved_items": moved,
            "dedup_order": ("residual" if self.dedup_centroids is not None
                            else "id" if counts is None else "popularity"),
            "utilization": util,
            "perplexity": ppl,
            "recon_mse": err / (n * self.embedding_dim),
            "recon_rel": err / max(var, 1e-12),
            "num_labels": len(labels),
            "embed_seconds": embed_info["seconds"],
            "embeddings_cached": embed_info["cached"],
            "collab": collab_info,
            "fit_seconds": fit_seconds,
            "label_seconds": label_seconds,
        }
        if writer is not None:
            for level, (u, p) in enumerate(zip(util, ppl)):
                writer.add_scalar(f"final/utilization_l{level + 1}", u, 0)
                writer.add_scalar(f"final/perplexity_l{level + 1}", p, 0)
            writer.add_scalar("final/collision_rate_before_dedup", before["collision_rate"], 0)
            writer.add_scalar("final/recon_mse", self.report["recon_mse"], 0)
            writer.close()
        return sid_map

    def fit_catalog(self, catalog, log_dir: str | Path | None = None, source: str = "",
                    sequences: list[list[str]] | None = None) -> SIDMap:
        """Fit on a `genrec.data.schema.Catalog`, rendering item texts with `cfg.template`; the SID map records
        the catalog's fingerprint (`source`: where it came from), checked by the stages that read both.
        `sequences`: the train interactions' item ids per user, for the collaborative part (see `fit`)."""
        sid_map = self.fit(self.catalog_texts(catalog), list(catalog.item_ids), log_dir=log_dir,
                           sequences=sequences)
        sid_map.catalog = catalog_fingerprint(list(catalog.item_ids), catalog.fields, source)
        return sid_map

    def catalog_texts(self, catalog) -> list[str]:
        """The texts this tokenizer embeds for a catalog's items: `cfg.template` renderings, or with encoder
        'tfidf-fields' every field's value joined with FIELD_SEP (the field order is kept for new items)."""
        if self.cfg.encoder.strip().lower() not in FIELD_TFIDF_NAMES:
            return catalog.texts(self.cfg.template)
        names = list(catalog.fields)
        if self.field_names is not None and self.field_names != names:
            raise ValueError(f"catalog fields {names} differ from the fields this tokenizer was fitted on "
                             f"{self.field_names} (encoder 'tfidf-fields')")
        self.field_names = names
        columns = [catalog.fields[name] for name in names]
        return [FIELD_SEP.join(" ".join(str(col[i] or "").split(FIELD_SEP)) for col in columns)
                for i in range(len(catalog.item_ids))]

    # ------------------------------------------------------------------------------------ cold start
    def _check_fitted(self) -> None:
        if self.quantizer is None:
            raise ValueError("SIDTokenizer is not fitted: call fit() or SIDTokenizer.load(dir) first")

    def _set_known(self, texts: list[str], prefix: np.ndarray) -> None:
        hashes = np.array([text_hash(t) for t in texts], dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        self._known_hash, self._known_codes = hashes[order], prefix[order]

    def encode_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Semantic-prefix codes (m, levels) of new embeddings (same encoder as the fit), no refit.

        With a collaborative part, text embeddings (its width) are accepted: a new item has no co-views yet,
        so its collaborative part is zero and its text places it."""
        self._check_fitted()
        emb = self._with_collab_part(embeddings)
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise ValueError(f"encode: embeddings of shape {emb.shape}, expected (m, {self.embedding_dim})")
        if not np.isfinite(emb).all():
            raise ValueError("encode: embeddings contain NaN or infinite values")
        if len(emb) == 0:
            return np.zeros((0, self.levels), dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(emb)).to(self.cfg.device)
        return self.quantizer.codes(x).cpu().numpy().astype(np.int64)

    def _with_collab_part(self, embeddings: np.ndarray) -> np.ndarray:
        """Text-width embeddings of new items widened with a zero collaborative part (they have no co-views yet)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if self.collab_dim and emb.ndim == 2 and emb.shape[1] == self.embedding_dim - self.collab_dim:
            emb = np.concatenate([unit_rows(emb), np.zeros((len(emb), self.collab_dim), np.float32)], axis=1)
        return emb

    def _residual_dists(self, embeddings: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
        """Squared distances (m, dedup size) of new items' residuals to the dedup centroids ('residual' rule)."""
        x = torch.from_numpy(np.ascontiguousarray(self._with_collab_part(embeddings))).to(self.cfg.device)
        with torch.no_grad():
            residual = x - self.quantizer.reconstruct(torch.from_numpy(prefixes).to(self.cfg.device))
        centroids = self.dedup_centroids.to(self.cfg.device)
        if self.collab_dim:  # a new item has no co-views: compare the text part only
            text_dim = self.embedding_dim - self.collab_dim
            residual, centroids = residual[:, :text_dim].contiguous(), centroids[:, :text_dim].contiguous()
        return sq_dists(residual, centroids).cpu().numpy()

    def encode(self, texts: list[str], use_known: bool = True, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Semantic-prefix codes (m, levels) of new item texts, no refit.

        A text identical to a fitted item's text gets exactly that item's prefix (`use_known=False` skips
        this table and always runs the encoder and quantizer). `embeddings`: the texts' vectors when the caller
        has them already (one row per text), so they are not embedded twice.
        """
        self._check_fitted()
        texts = list(texts)
        out = np.zeros((len(texts), self.levels), dtype=np.int64)
        todo = list(range(len(texts)))
        if use_known and len(self._known_hash):
            hashes = np.array([text_hash(t) for t in texts], dtype=np.int64)
            pos = np.clip(np.searchsorted(self._known_hash, hashes), 0, len(self._known_hash) - 1)
            hit = self._known_hash[pos] == hashes
            out[hit] = self._known_codes[pos[hit]]
            todo = np.flatnonzero(~hit).tolist()
        if todo:
            emb = self.encoder.embed([texts[i] for i in todo]) if embeddings is None else embeddings[todo]
            out[todo] = self.encode_embeddings(emb)
        return out

    def add_items(
        self,
        item_ids: list[str],
        texts: list[str] | None,
        sid_map: SIDMap,
        embeddings: np.ndarray | None = None,
    ) -> SIDMap:
        """A new SIDMap with the new items added (existing SIDs unchanged); each gets a free dedup slot.

        Raises ValueError when an id already exists, when the SID map does not belong to this tokenizer, or
        when a prefix has no free dedup code left.
        """
        self._check_fitted()
        item_ids = [str(i) for i in item_ids]
        if list(sid_map.codebook_sizes[:-1]) != self.codebook_sizes[:-1]:
            raise ValueError(
                f"add_items: SID map codebook sizes {sid_map.codebook_sizes} do not match this tokenizer's "
                f"{self.codebook_sizes}"
            )
        seen: set[str] = set()
        for i in item_ids:
            if i in sid_map or i in seen:
                raise ValueError(f"add_items: item id {i!r} is already in the SID map (ids must be new and unique)")
            seen.add(i)
        if embeddings is None and texts is None:
            raise ValueError("add_items: give the new items' texts or embeddings")
        if not item_ids and not len(texts if embeddings is None else embeddings):
            return SIDMap(dict(sid_map.item_to_codes), list(sid_map.codebook_sizes), dict(sid_map.labels))
        size = sid_map.codebook_sizes[-1]
        residual = self.dedup_centroids is not None
        if residual and len(self.dedup_centroids) > size:
            raise ValueError(f"add_items: the SID map's dedup level has {size} codes but this tokenizer has "
                             f"{len(self.dedup_centroids)} dedup centroids: the map was not written by this tokenizer")
        if residual and embeddings is None and isinstance(self.encoder, NpyEncoder):
            warnings.warn("add_items: this tokenizer was fitted on precomputed embeddings, so new items given as "
                          "texts get the smallest free dedup code (give embeddings for the residual rule)",
                          stacklevel=2)
            residual = False
        if embeddings is None and residual:
            embeddings = self.encoder.embed(list(texts))  # once: for the prefix and the residual
            prefixes = self.encode(texts, embeddings=embeddings)
        elif embeddings is None:
            prefixes = self.encode(texts)
        else:
            prefixes = self.encode_embeddings(embeddings)
        if len(prefixes) != len(item_ids):
            raise ValueError(f"add_items: {len(prefixes)} texts/embeddings for {len(item_ids)} item ids")
        dists = self._residual_dists(embeddings, prefixes) if residual else None
        taken: dict[tuple[int, ...], set[int]] = {}
        for codes in sid_map.item_to_codes.values():
            taken.setdefault(tuple(codes[:-1]), set()).add(codes[-1])
        items = dict(sid_map.item_to_codes)
        rows = list(range(len(item_ids)))
        if dists is not None:  # as in the fit: the item nearest to a centroid chooses first, ties by id
            rows.sort(key=lambda r: (float(dists[r].min()), item_ids[r]))
        new: dict[int, tuple[int, ...]] = {}
        for row in rows:
            key = tuple(prefixes[row].tolist())
            slots = taken.setdefault(key, set())
            code = (free_dedup_code(slots, size, key) if dists is None
                    else nearest_free_dedup_code(slots, dists[row], key, size))
            slots.add(code)
            new[row] = key + (code,)
        items.update((item_ids[row], new[row]) for row in range(len(item_ids)))  # in the order given
        return SIDMap(items, list(sid_map.codebook_sizes), dict(sid_map.labels))

    # -------------------------------------------------------------------------------------- save/load
    def save(self, out_dir: str | Path) -> None:
        """`tokenizer.safetensors` (codebooks, weights, encoder state, fitted-text table) + `tokenizer_config.json`."""
        from safetensors.torch import save_file

        self._check_fitted()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"quantizer.{k}": v.detach().cpu().contiguous() for k, v in self.quantizer.state_dict().items()}
        encoder_meta: dict[str, Any] = {"kind": self.encoder.kind, "name": self.cfg.encoder}
        if isinstance(self.encoder, (TfidfSvdEncoder, FieldTfidfEncoder)):
            meta, enc_tensors = self.encoder.state()
            encoder_meta.update(meta)
            tensors.update({f"encoder.{k}": v.contiguous() for k, v in enc_tensors.items()})
        if self.dedup_centroids is not None:
            tensors["dedup.centroids"] = self.dedup_centroids.contiguous()
        tensors["known.hash"] = torch.from_numpy(self._known_hash.copy())
        tensors["known.codes"] = torch.from_numpy(self._known_codes.copy())
        payload = {
            "format_version": FORMAT_VERSION,
            "method": self.cfg.method,
            "template": self.cfg.template,
            "encoder": encoder_meta,
            "embedding_dim": self.embedding_dim,
            "collab_dim": self.collab_dim,
            "codebook_sizes": self.codebook_sizes,
            "config": self.cfg.to_dict(),
            "report": self.report,
        }
        tmp = out / f".{WEIGHTS_NAME}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt", "genrec": "sid_tokenizer"})
        tmp.replace(out / WEIGHTS_NAME)
        atomic_write_text(out / CONFIG_NAME, json.dumps(payload, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "SIDTokenizer":
        """Load a tokenizer saved by `save` (the folder written by `genrec fit-tokenizer`)."""
        from safetensors.torch import load_file

        from genrec.stage_output import check_complete

        path = Path(path)
        check_complete(path)  # half-written by an interrupted `genrec fit-tokenizer`: refused in one line
        cfg_path, w_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: not found (is {path} a folder written by `genrec fit-tokenizer`?)")
        try:
            payload = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
        for key in ("method", "encoder", "embedding_dim", "codebook_sizes", "config"):
            if key not in payload:
                raise ValueError(f"{cfg_path}: missing key '{key}'")
        if payload.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: format_version {payload['format_version']} is newer than this code")
        tensors = load_file(str(w_path))
        config = dict(payload["config"])
        config.setdefault("dedup_order", "id")  # saved before the option existed: codes were in item-id order
        cfg = TokenizerConfig.from_dict(config)
        tok = cls(cfg)
        tok.embedding_dim = int(payload["embedding_dim"])
        tok.collab_dim = int(payload.get("collab_dim", 0))
        tok.codebook_sizes = [int(s) for s in payload["codebook_sizes"]]
        tok.report = payload.get("report", {})
        k = tok.codebook_sizes[0]
        qstate = {key[len("quantizer."):]: v for key, v in tensors.items() if key.startswith("quantizer.")}
        if payload["method"] == "rqkmeans":
            quant = RQKMeans(tok.embedding_dim, cfg.levels, k)
            quant.load_state_dict(qstate)
        else:
            quant = RQVAE(tok.embedding_dim, list(cfg.hidden_dims), cfg.latent_dim, cfg.levels, k)
            quant.load_state_dict(qstate)
            quant.eval()
        tok.quantizer = quant
        enc = payload["encoder"]
        etensors = {key[len("encoder."):]: v for key, v in tensors.items() if key.startswith("encoder.")}
        if enc.get("kind") == "tfidf":
            tok.encoder = TfidfSvdEncoder.from_state(enc, etensors)
        elif enc.get("kind") in FIELD_TFIDF_NAMES:
            tok.encoder = FieldTfidfEncoder.from_state(enc, etensors)
            tok.field_names = tok.encoder.field_names or None
        elif enc.get("kind") == "npy":
            tok.encoder = NpyEncoder(enc.get("name", "<precomputed>"))
        elif enc.get("kind") == NoTextEncoder.kind:
            tok.encoder = NoTextEncoder()
        else:
            tok.encoder = make_encoder(enc["name"], max_seq_length=cfg.max_seq_length,
                                       batch_size=cfg.embed_batch_size, device=cfg.device)
        tok.dedup_centroids = tensors.get("dedup.centroids")
        tok._known_hash = tensors["known.hash"].numpy().astype(np.int64)
        tok._known_codes = tensors["known.codes"].numpy().astype(np.int64)
        return tok


def _writer(log_dir: str | Path | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
