"""Collaborative item vectors from interaction sequences: PPMI of co-views within a window, reduced by SVD.

Why: a semantic ID is only as useful to the recommender as the similarity its codes encode. Text alone puts the
same job title at two companies in one code and leaves the dedup level to tell them apart by item id, an arbitrary
code the model can only memorise (two thirds of the synthetic market's items had a non-zero dedup code). Items
that users view close together in time are what a sequential recommender must predict from one another, so their
co-view statistics are appended to the text vector before quantisation (the "collaborative" part of LC-Rec /
LETTER-style SIDs). Only training interactions are counted. An item nobody viewed in train borrows the mean
collaborative vector of its nearest text neighbours that were viewed (`impute_from_text`): left at zero, such
items (47% of jobs-kaggle's catalog) would form their own clusters apart from every viewed item. Items added after
the fit get a zero collaborative part and are placed by their text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import svds


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so the text and collaborative parts weigh as configured."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cooccurrence(sequences: Iterable[Sequence[int]], num_items: int, window: int) -> sparse.csr_matrix:
    """Symmetric counts of item pairs viewed within `window` steps of each other (an item with itself not counted)."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        for lag in range(1, min(window, len(s) - 1) + 1):
            a, b = s[lag:], s[:-lag]
            keep = a != b
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
    if not rows:
        return sparse.csr_matrix((num_items, num_items), dtype=np.float64)
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(num_items, num_items), dtype=np.float64)


def ppmi(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """Positive pointwise mutual information of a symmetric count matrix (zero where the count is zero)."""
    total = counts.sum()
    if total == 0:
        return counts.copy()
    marg = np.asarray(counts.sum(axis=1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * total / (marg[coo.row] * marg[coo.col]))
    keep = pmi > 0
    return sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)


def collaborative_vectors(sequences: Iterable[Sequence[int]], num_items: int, dim: int, window: int = 3,
                          seed: int = 0) -> tuple[np.ndarray, dict]:
    """(num_items, dim) unit-length vectors (zero rows for items without co-views) and a small report.

    `sequences` are item indices (0..num_items-1) in time order, one sequence per user.
    """
    m = ppmi(cooccurrence(sequences, num_items, window))
    out, seen = _svd_rows(m, dim, seed)
    return out, {"items_with_coviews": float(seen.mean()) if num_items else 0.0, "pairs": int(m.nnz // 2),
                 "dim": dim, "window": window}


def _svd_rows(m: sparse.csr_matrix, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows U * sqrt(S) of the top-`dim` SVD of a PPMI matrix (zero rows for items without co-views), and which
    items have co-views."""
    num_items = m.shape[0]
    seen = np.asarray((m != 0).sum(axis=1)).ravel() > 0
    k = min(dim, num_items - 1, max(1, int(seen.sum()) - 1))
    out = np.zeros((num_items, dim), dtype=np.float32)
    if m.nnz and k >= 1:
        # ARPACK's top-k singular triplets, converged to tolerance, with a seeded start vector (deterministic). A
        # randomized SVD gave other codes than the exact one (synthetic NDCG@10 0.108 against 0.135; ARPACK's map
        # shares 85% of the exact one's SIDs and was not evaluated end to end)
        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, num_items)
        u, s, _ = svds(m, k=k, v0=v0, random_state=seed)
        out[:, :k] = unit_rows(u * np.sqrt(np.maximum(s, 0.0)))  # U * sqrt(S): symmetric factorisation
    return out, seen


def coview_identity_vectors(sequences: Iterable[Sequence[int]], num_items: int, dim: int, window: int = 3,
                            seed: int = 0) -> tuple[np.ndarray, dict]:
    """(num_items, dim) vectors for a catalog without text: half the SVD co-view vectors of `collaborative_vectors`,
    half a seeded random projection of (unit PPMI rows + identity), each part unit length, scaled by 1/sqrt(2).

    Why both, measured with stage-1 NDCG@10 on ID-only copies of two sets (docs/bench/learning.md, session 31):
    - The SVD alone fits dense co-views: 0.125 on the demo market, where the text model scores 0.154. On sparse ones
      it gives thousands of items the same vector. jobs-kaggle has 5.9 views per user, which left 1,566 distinct
      vectors for 3,756 viewed items; one SID prefix held 3,617 items, and NDCG@10 was 0.069.
    - The projection gives item i the vector R_i + sum_j p_ij R_j, where R is a seeded Gaussian and p_i is i's PPMI
      row. Every item keeps its own direction, and items viewed together share terms. It scores 0.300 on jobs-kaggle
      (text: 0.256) but only 0.067 on the demo.
    - Together they score 0.104 and 0.232: never the best on either set, never far below it."""
    m = ppmi(cooccurrence(sequences, num_items, window))
    svd, seen = _svd_rows(m, dim // 2, seed)
    rp_dim = dim - dim // 2
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    p = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ m  # unit PPMI rows (zero rows stay zero)
    r = np.random.default_rng(seed).standard_normal((num_items, rp_dim)).astype(np.float32) / np.sqrt(rp_dim)
    projected = unit_rows(r + np.asarray(p @ r, dtype=np.float32))
    vectors = (np.concatenate([svd, projected], axis=1) / np.sqrt(2.0)).astype(np.float32)
    return vectors, {"items_with_coviews": float(seen.mean()) if num_items else 0.0, "pairs": int(m.nnz // 2),
                     "dim": dim, "window": window, "method": "svd + random projection of PPMI + identity (no text)"}


def impute_from_text(collab: np.ndarray, text: np.ndarray, neighbours: int = 10, chunk: int = 4096) -> np.ndarray:
    """`collab` with each zero row replaced by the unit mean of the `neighbours` most text-similar non-zero rows.

    `text` rows are unit vectors (cosine = dot product); the scan is chunked so memory stays O(chunk x items)."""
    seen = np.linalg.norm(collab, axis=1) > 0
    todo, have = np.flatnonzero(~seen), np.flatnonzero(seen)
    if not len(todo) or not len(have):
        return collab
    out = collab.copy()
    k = min(neighbours, len(have))
    for s in range(0, len(todo), chunk):
        rows = todo[s:s + chunk]
        sim = text[rows] @ text[have].T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        out[rows] = unit_rows(collab[have[top]].mean(axis=1))
    return out


__all__ = ["collaborative_vectors", "cooccurrence", "impute_from_text", "coview_identity_vectors", "ppmi", "unit_rows"]
