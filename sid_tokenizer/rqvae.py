"""RQ-VAE: MLP encoder -> residual vector quantization (L codebooks) -> MLP decoder, trained on CPU in seconds.

What keeps the codebooks healthy (LESSONS.md): k-means initialisation of every level on the initial latents,
straight-through gradients, reconstruction loss summed over dimensions (averaging collapsed codebooks in a
public repo), commitment loss, dead-code reset from the highest-error residuals, and optional balanced
(Sinkhorn) assignment whose per-code bias is kept for the final and cold-start assignment.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from sid_tokenizer.kmeans import assign, kmeans, sinkhorn_bias_from_dists, sq_dists


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Residual-quantized autoencoder. Inputs are standardised with a stored mean and scale."""

    def __init__(self, in_dim: int, hidden_dims: list[int], latent_dim: int, levels: int, codebook_size: int):
        super().__init__()
        self.levels = levels
        self.codebook_size = codebook_size
        self.encoder = mlp([in_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), in_dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, latent_dim))
        self.register_buffer("biases", torch.zeros(levels, codebook_size))
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(()))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_scale

    @torch.no_grad()
    def latents(self, x: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
        return torch.cat([self.encoder(self.normalize(x[s : s + chunk])) for s in range(0, len(x), chunk)])

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(n, levels) codes of raw embeddings: nearest code minus the stored bias, level by level."""
        residual = self.latents(x)
        out = []
        for level in range(self.levels):
            c, _ = assign(residual, self.codebooks[level], self.biases[level])
            residual = residual - self.codebooks[level][c]
            out.append(c)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def last_level_inputs(self, x: torch.Tensor, codes: torch.Tensor):
        """(latent residual the last level quantizes, its codebook, its bias) for given codes of x."""
        residual = self.latents(x)
        for level in range(self.levels - 1):
            residual -= self.codebooks[level][codes[:, level]]
        return residual, self.codebooks[-1].detach(), self.biases[-1]

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoded embeddings (original scale) of (n, levels) codes."""
        picked = self.codebooks[torch.arange(self.levels), codes]  # (n, levels, latent)
        zq = picked.sum(dim=1)
        return self.decoder(zq) * self.in_scale + self.in_mean


def _perplexity(counts: torch.Tensor) -> float:
    p = counts[counts > 0].double() / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def train_rqvae(
    model: RQVAE,
    x: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    commitment: float,
    kmeans_iters: int,
    balanced: bool,
    sinkhorn_iters: int,
    sinkhorn_epsilon: float,
    dead_code_every: int,
    generator: torch.Generator,
    warmup: float = 0.25,
    log: Callable[[str, float, int], None] | None = None,
    log_every: int = 25,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Train in place and return the final (n, levels) codes of x plus a small loss history.

    The first `warmup` fraction of the steps trains the plain autoencoder; the rest trains with quantization.
    """
    n = x.shape[0]
    levels, k = model.levels, model.codebook_size
    with torch.no_grad():
        model.in_mean.copy_(x.mean(0))
        model.in_scale.copy_(((x - model.in_mean) ** 2).mean().sqrt().clamp_min(1e-8))
    xn = model.normalize(x)
    bs = min(batch_size, n)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    # Autoencoder warm-up without quantization, so the k-means initialisation below clusters meaningful
    # latents instead of a random projection.
    warm = int(steps * warmup)
    perm, pos = torch.randperm(n, generator=generator), 0
    for _ in tqdm(range(warm), desc="rq-vae warm-up", unit="step", disable=warm < 50):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        xb = xn[perm[pos : pos + bs]]
        pos += bs
        loss = ((model.decoder(model.encoder(xb)) - xb) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    steps = steps - warm

    # k-means initialisation of every level on the latents (balanced when asked).
    with torch.no_grad():
        residual = model.latents(x)
        for level in range(levels):
            c, bias = kmeans(residual, k, kmeans_iters, generator, balanced, sinkhorn_iters, sinkhorn_epsilon)
            model.codebooks[level].copy_(c)
            model.biases[level].copy_(bias if balanced else torch.zeros_like(bias))
            codes, _ = assign(residual, c, bias if balanced else None)
            residual = residual - c[codes]

    opt = torch.optim.Adam(model.parameters(), lr=lr)  # fresh moments: the codebooks just moved
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    )
    usage = torch.zeros(levels, k, device=x.device)
    history: dict[str, list[float]] = {"loss": [], "recon": []}
    perm = torch.randperm(n, generator=generator)
    pos = 0
    bar = tqdm(range(steps), desc="rq-vae", unit="step", disable=steps < 50)
    for step in bar:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        idx = perm[pos : pos + bs]
        pos += bs
        xb = xn[idx]
        z = model.encoder(xb)
        residual = z
        quantized = torch.zeros_like(z)
        q_loss = z.new_zeros(())
        level_codes, level_err, level_res = [], [], []
        for level in range(levels):
            cb = model.codebooks[level]
            r_det = residual.detach()
            with torch.no_grad():
                d = sq_dists(r_det, cb.detach())
                if balanced:
                    if step % 4 == 0:
                        # Few warm-started iterations every 4th step: the potentials move slowly.
                        model.biases[level] = sinkhorn_bias_from_dists(
                            d, max(3, sinkhorn_iters // 6), sinkhorn_epsilon, init=model.biases[level]
                        )
                    codes = (d - model.biases[level]).argmin(1)
                else:
                    codes = d.argmin(1)
            q = cb[codes]
            # Codebook loss pulls codes to residuals; commitment pulls the encoder to its codes.
            q_loss = q_loss + ((q - r_det) ** 2).sum(-1).mean() + commitment * ((residual - q.detach()) ** 2).sum(-1).mean()
            quantized = quantized + q.detach()
            level_codes.append(codes)
            level_err.append(d.gather(1, codes.unsqueeze(1)).squeeze(1))
            level_res.append(r_det)
            residual = residual - q.detach()
        zq = z + (quantized - z).detach()  # straight-through estimator
        x_hat = model.decoder(zq)
        recon = ((x_hat - xb) ** 2).sum(-1).mean()  # summed over dimensions, averaged over items
        loss = recon + q_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

        codes_b = torch.stack(level_codes, dim=1)
        for level in range(levels):
            usage[level] += torch.bincount(codes_b[:, level], minlength=k).float()
        if dead_code_every and (step + 1) % dead_code_every == 0 and step + 1 < steps:
            _reset_dead_codes(model, usage, level_err, level_res)
            usage.zero_()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history["loss"].append(loss.item())
            history["recon"].append(recon.item())
            bar.set_postfix(loss=f"{loss.item():.3f}", recon=f"{recon.item():.3f}")
            if log is not None:
                log("train/loss", loss.item(), step + 1)
                log("train/recon", recon.item(), step + 1)
                log("train/quant", q_loss.item(), step + 1)
                for level in range(levels):
                    counts = torch.bincount(codes_b[:, level], minlength=k)
                    log(f"train/utilization_l{level + 1}", float((counts > 0).float().mean()), step + 1)
                    log(f"train/perplexity_l{level + 1}", _perplexity(counts), step + 1)

    # Final assignment of the whole catalog (balanced biases re-solved on all items, then stored).
    model.eval()
    with torch.no_grad():
        residual = model.latents(x)
        out = []
        for level in range(levels):
            cb = model.codebooks[level]
            if balanced:
                d = sq_dists(residual, cb)
                model.biases[level] = sinkhorn_bias_from_dists(d, sinkhorn_iters, sinkhorn_epsilon,
                                                               init=model.biases[level])
            codes, _ = assign(residual, cb, model.biases[level])
            residual = residual - cb[codes]
            out.append(codes)
    return torch.stack(out, dim=1), history


@torch.no_grad()
def _reset_dead_codes(model: RQVAE, usage: torch.Tensor, errs: list[torch.Tensor], residuals: list[torch.Tensor]):
    """Move codes unused since the last reset onto the residuals the current codes fit worst."""
    for level in range(model.levels):
        dead = torch.nonzero(usage[level] == 0).flatten()
        if dead.numel() == 0:
            continue
        take = min(dead.numel(), errs[level].numel())
        worst = torch.topk(errs[level], take).indices
        model.codebooks.data[level, dead[:take]] = residuals[level][worst]
        model.biases[level, dead[:take]] = 0.0

