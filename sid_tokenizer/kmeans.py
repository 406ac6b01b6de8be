"""Seeded k-means and balanced (Sinkhorn) assignment in torch, shared by RQ-KMeans and the RQ-VAE initialisation.

Balanced assignment is expressed as a per-code bias: code(x) = argmin_j (||x - c_j||^2 - bias_j). Sinkhorn finds
the bias that spreads items evenly over codes; storing it with the codebook lets cold-start items be assigned
exactly the way the catalog was, with no refit.
"""

from __future__ import annotations

import torch

CHUNK = 32768
BALANCED_ROUNDS = 4  # final Lloyd rounds of a balanced k-means that use the Sinkhorn bias


def sq_dists(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances (n, k), clamped at 0 (one matmul, like torch.cdist's mm path)."""
    if c_sq is None:
        c_sq = (c * c).sum(-1)
    d = torch.addmm(c_sq.unsqueeze(0), x, c.T, alpha=-2.0)
    d += (x * x).sum(-1, keepdim=True)
    return d.clamp_min_(0.0)


def assign(x: torch.Tensor, c: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(code, squared distance) of each row of x: nearest code after subtracting `bias`, chunked for memory.

    The argmin only needs ||c||^2 - 2 x.c (- bias); ||x||^2 is added back for the chosen code alone.
    """
    c_sq = (c * c).sum(-1)
    if bias is not None:
        c_sq = c_sq - bias
    codes = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], CHUNK):
        xs = x[s : s + CHUNK]
        score = torch.addmm(c_sq.unsqueeze(0), xs, c.T, alpha=-2.0)
        best, idx = score.min(dim=1)
        codes[s : s + CHUNK] = idx
        if bias is not None:
            best = best + bias[idx]
        dist[s : s + CHUNK] = (best + (xs * xs).sum(-1)).clamp_min_(0.0)
    return codes, dist


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling) with a seeded generator; distances via one matvec per new center."""
    n = x.shape[0]
    x_sq = (x * x).sum(-1)
    idx = int(torch.randint(n, (1,), generator=generator))
    chosen = [idx]
    closest = (x_sq - 2.0 * (x @ x[idx]) + x_sq[idx]).clamp_min_(0.0)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct points than k: pick uniformly among the rest
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial((closest / total).cpu(), 1, generator=generator))
        chosen.append(idx)
        torch.minimum(closest, (x_sq - 2.0 * (x @ x[idx]) + x_sq[idx]).clamp_min_(0.0), out=closest)
    return x[torch.tensor(chosen)].clone()


def _update(x: torch.Tensor, codes: torch.Tensor, dist: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Centroid step; empty codes take the points farthest from their centroid (deterministic)."""
    k = c.shape[0]
    sums = torch.zeros_like(c).index_add_(0, codes, x)
    counts = torch.bincount(codes, minlength=k).to(x.dtype)
    new = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), c)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        far = torch.topk(dist, min(empty.numel(), x.shape[0])).indices
        new[empty[: far.numel()]] = x[far]
    return new


def sinkhorn_bias(
    x: torch.Tensor,
    c: torch.Tensor,
    iters: int = 30,
    epsilon: float = 0.05,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-code bias that makes argmin(dist - bias) close to an even split of x over the k codes."""
    return sinkhorn_bias_from_dists(sq_dists(x, c), iters, epsilon, init)


def sinkhorn_bias_from_dists(
    d: torch.Tensor, iters: int = 30, epsilon: float = 0.05, init: torch.Tensor | None = None
) -> torch.Tensor:
    """Sinkhorn on squared distances d (n, k): entropic transport from n points (mass 1 each) to k codes
    (mass n/k each). The code scaling v gives the bias temp * log(v); `epsilon` is the temperature relative to
    the mean distance, and `init` (a previous bias) warm-starts it.

    Runs with matrix-vector products on one exponentiated kernel (each row shifted by its minimum, exponent
    floored at -80 so float32 never underflows to an all-zero column) instead of a logsumexp per iteration.
    """
    n, k = d.shape
    temp = float(d.mean()) * epsilon + 1e-12
    kernel = torch.exp((-(d - d.min(dim=1, keepdim=True).values) / temp).clamp_min_(-80.0))
    log_v = torch.zeros(k, dtype=d.dtype, device=d.device) if init is None else init / temp
    log_v = log_v - log_v.max()
    v = torch.exp(log_v.clamp_min(-80.0))
    target = n / k
    for _ in range(iters):
        u = 1.0 / (kernel @ v).clamp_min_(1e-30)  # each point's mass is 1
        v = target / (kernel.T @ u).clamp_min_(1e-30)  # each code receives n/k
        v = v / v.max()
    log_v = torch.log(v.clamp_min(1e-30))
    return (log_v - log_v.mean()) * temp


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int,
    generator: torch.Generator,
    balanced: bool = False,
    sinkhorn_iters: int = 30,
    sinkhorn_epsilon: float = 0.05,
    init_sample: int = 16384,
    max_points_per_code: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids (k, d), bias (k,)) of seeded Lloyd k-means; `balanced` ends with Sinkhorn-balanced rounds.

    Centroids are fitted on a seeded subsample of at most `max_points_per_code * k` rows (faiss's rule; more
    points barely move centroids but cost time); k-means++ seeding uses at most `init_sample` of those. The
    bias returned is solved on all of x, so it balances the whole set.
    """
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: {n} points cannot fill {k} codes")
    train = x
    if max_points_per_code and n > max_points_per_code * k:
        train = x[torch.randperm(n, generator=generator)[: max_points_per_code * k]]
    seed_rows = train
    if train.shape[0] > init_sample:
        seed_rows = train[torch.randperm(train.shape[0], generator=generator)[:init_sample]]
    c = kmeans_plus_plus(seed_rows, k, generator)
    bias = torch.zeros(k, dtype=x.dtype, device=x.device)
    plain = iters if not balanced else max(1, iters - BALANCED_ROUNDS)
    previous = None
    for _ in range(plain):
        codes, dist = assign(train, c)
        if previous is not None and torch.equal(codes, previous):
            break  # converged
        c = _update(train, codes, dist, c)
        previous = codes
    if balanced:
        for r in range(iters - plain):
            # Warm-started after the first round, so a third of the iterations suffices.
            its = sinkhorn_iters if r == 0 else max(3, sinkhorn_iters // 3)
            bias = sinkhorn_bias(train, c, its, sinkhorn_epsilon, init=bias)
            codes, dist = assign(train, c, bias)
            c = _update(train, codes, dist, c)
        bias = sinkhorn_bias(x, c, sinkhorn_iters, sinkhorn_epsilon, init=bias)
    return c, bias
