"""Quality numbers of a set of codes: per-level utilisation and perplexity, collisions, group sizes."""

from __future__ import annotations

import numpy as np


def level_usage(codes: np.ndarray, codebook_sizes: list[int]) -> tuple[list[float], list[float]]:
    """(utilisation, perplexity) per level: fraction of codes used, and exp(entropy) of code frequencies."""
    util, ppl = [], []
    for level, size in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=size).astype(np.float64)
        util.append(float((counts > 0).sum() / size))
        p = counts[counts > 0] / counts.sum()
        ppl.append(float(np.exp(-(p * np.log(p)).sum())))
    return util, ppl


def collision_stats(codes: np.ndarray) -> dict[str, float | int]:
    """Collisions of full code tuples: rate = 1 - distinct/num_items (0 when all distinct), the largest group,
    and the fraction of items that share their code tuple with at least one other item."""
    n = codes.shape[0]
    if n == 0:
        return {"collision_rate": 0.0, "max_items_per_sid": 0, "items_in_collisions": 0.0}
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    return {
        "collision_rate": float(1.0 - counts.size / n),
        "max_items_per_sid": int(counts.max()),
        "items_in_collisions": float((counts[inverse] > 1).mean()),
    }


def prefix_share_rate(codes: np.ndarray, pairs: np.ndarray, depth: int) -> float:
    """Fraction of item pairs (rows of index pairs) whose codes agree on the first `depth` levels."""
    if len(pairs) == 0:
        return float("nan")
    a, b = codes[pairs[:, 0], :depth], codes[pairs[:, 1], :depth]
    return float((a == b).all(axis=1).mean())
