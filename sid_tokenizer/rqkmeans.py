"""RQ-KMeans: residual k-means on the embeddings themselves (no training).

Level 1 clusters the embeddings, level 2 clusters what level 1 left over (x - c1), and so on. With `balanced`,
each level ends with Sinkhorn-balanced rounds and keeps a per-code bias, so codes are spread evenly and
cold-start items are assigned by the same rule as the catalog.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sid_tokenizer.kmeans import assign, kmeans


class RQKMeans:
    """Residual k-means quantizer: `levels` codebooks of `codebook_size` vectors in the embedding space."""

    def __init__(self, dim: int, levels: int, codebook_size: int) -> None:
        self.dim = dim
        self.levels = levels
        self.codebook_size = codebook_size
        self.codebooks = torch.zeros(levels, codebook_size, dim)
        self.biases = torch.zeros(levels, codebook_size)

    def fit(
        self,
        x: torch.Tensor,
        *,
        iters: int,
        generator: torch.Generator,
        balanced: bool,
        sinkhorn_iters: int,
        sinkhorn_epsilon: float,
        log=None,
    ) -> torch.Tensor:
        """Fit level by level; returns the (n, levels) codes of x. `log(level, codes)` sees each level's codes."""
        residual = x.clone()
        all_codes = []
        for level in tqdm(range(self.levels), desc="rq-kmeans", unit="level", disable=x.shape[0] < 20000):
            c, bias = kmeans(residual, self.codebook_size, iters, generator, balanced, sinkhorn_iters,
                             sinkhorn_epsilon)
            codes, _ = assign(residual, c, bias if balanced else None)
            self.codebooks[level] = c
            self.biases[level] = bias if balanced else 0.0
            residual = residual - c[codes]
            all_codes.append(codes)
            if log is not None:
                log(level, codes)
        return torch.stack(all_codes, dim=1)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(n, levels) codes of new embeddings, by the same nearest-minus-bias rule as the fit."""
        residual = x.clone()
        out = []
        for level in range(self.levels):
            codes, _ = assign(residual, self.codebooks[level], self.biases[level])
            residual = residual - self.codebooks[level][codes]
            out.append(codes)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def last_level_inputs(self, x: torch.Tensor, codes: torch.Tensor):
        """(residual the last level quantizes, its codebook, its bias) for given codes of x."""
        residual = x.clone()
        for level in range(self.levels - 1):
            residual -= self.codebooks[level][codes[:, level]]
        return residual, self.codebooks[-1], self.biases[-1]

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(self.codebooks[level][codes[:, level]] for level in range(self.levels))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rq.codebooks": self.codebooks.contiguous(), "rq.biases": self.biases.contiguous()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.codebooks = state["rq.codebooks"].float()
        self.biases = state["rq.biases"].float()
