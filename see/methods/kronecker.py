"""Shared machinery of SEE and word2ketXS: embeddings as sums of Kronecker products of units.

Token t has n unit ids u_1(t)..u_n(t); every unit has R vectors of size q = ceil(d ** (1/n));
e(t) = LayerNorm( sum_r v_{u_1}^r (x) ... (x) v_{u_n}^r [:d] ). Decision (documented): the
truncation to d comes before the LayerNorm, so the norm has 2*d parameters (not 2*q**n).
The forward gathers only the batch's unit vectors and builds the products with broadcasting
and one batched matmul: memory tokens x R x q**(n-1), never the V x d table.

Output normalisation (`norm`): `layernorm` (the paper's), `affine` (a learned per-dimension
scale and bias, 2d numbers, no normalisation: the rows keep their own norms, which a tied head
reads as token frequency), or `none`.

Fitting (before any LM training, so "initial perplexity" is comparable with SVD/AE): the common
row fit of rowfit.py (sampling, objective, schedule and checkpoint choice shared with every
fitted method).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from see.methods.base import CompressedEmbedding, FitContext, UnreachableCR
from see.methods.dimweight import dimension_scale
from see.methods.rowfit import RowFit, fit_rows

NORMS = ("layernorm", "affine", "none")


def unit_dim(dim: int, n: int) -> int:
    """q = ceil(d ** (1/n)), the smallest q with q**n >= d (exact in integers)."""
    q = max(1, round(dim ** (1 / n)))
    while q**n < dim:
        q += 1
    while q > 1 and (q - 1) ** n >= dim:
        q -= 1
    return q


def kron_rows(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., n, R, q) unit vectors -> (..., dim): sum_r kron over the n units, truncated."""
    *lead, n, rank, q = vectors.shape
    flat = vectors.reshape(-1, n, rank, q)
    out = flat[:, 0]  # (T, R, q)
    for j in range(1, n - 1):
        out = (out[..., :, None] * flat[:, j, :, None, :]).flatten(-2)  # (T, R, q**(j+1))
    # the last factor and the sum over r in one batched matmul: (T, q**(n-1), R) @ (T, R, q)
    out = torch.bmm(out.transpose(1, 2), flat[:, n - 1]).flatten(1)
    return out[:, :dim].reshape(*lead, dim)


def rank_for_budget(budget: float, fixed: int, per_rank: int, what: str) -> int:
    """Largest R with fixed + R * per_rank <= budget, or a clear error."""
    rank = math.floor((budget - fixed) / per_rank + 1e-9)
    if rank < 1:
        raise UnreachableCR(
            f"target CR not reachable for {what}: R would be {rank} < 1 (R = 1 needs "
            f"{fixed + per_rank} stored numbers, the budget is {budget:.0f})"
        )
    return rank


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; allowed: {list(NORMS)}")
    return norm


def norm_params(norm: str, dim: int) -> int:
    return 2 * dim if norm in ("layernorm", "affine") else 0


class Affine(nn.Module):
    """y = weight * x + bias per dimension (2d numbers): scale and offset, no normalisation."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight)


class KroneckerEmbedding(CompressedEmbedding):
    """Unit vectors (|U| x R x q), a V x n token -> unit map (or computed units), LayerNorm."""

    trained = True

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        n: int,
        rank: int,
        num_units: int,
        norm: str = "layernorm",
    ):
        super().__init__(num_embeddings, dim)
        if n < 2:
            raise ValueError(f"order n must be >= 2, got {n}")
        if rank < 1:
            raise ValueError(f"rank R must be >= 1, got {rank}")
        check_norm(norm)
        self.n, self.rank, self.q = n, rank, unit_dim(dim, n)
        self.norm_kind = norm
        # init so that a sum of R products of n N(0, s) entries has unit variance
        scale = rank ** (-1 / (2 * n))
        self.vectors = nn.Parameter(torch.randn(num_units, rank, self.q) * scale)
        norms = {"layernorm": nn.LayerNorm, "affine": Affine}
        self.norm = norms[norm](dim) if norm in norms else nn.Identity()

    def unit_ids(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        # bound the tokens x R x q**(n-1) intermediate to ~2**25 numbers per chunk
        chunk = max(1, 2**25 // (self.rank * self.q ** (self.n - 1)))
        parts = [
            kron_rows(self.vectors[self.unit_ids(part).long()], self.embedding_dim)
            for part in flat.split(chunk)
        ]
        return self.norm(torch.cat(parts).reshape(*ids.shape, self.embedding_dim))

    @torch.no_grad()
    def match_scale(self, rows: torch.Tensor) -> None:
        """Start at the teacher's scale: LayerNorm bias = the mean row, weight = the average
        std of the centred rows (the norm makes every row unit-variance); without a norm, the
        unit vectors are scaled so that the rebuilt rows have the rows' std."""
        if isinstance(self.norm, nn.LayerNorm):
            centred = rows - rows.mean(0)
            self.norm.weight.fill_(centred.std(dim=1).mean().item())
            self.norm.bias.copy_(rows.mean(0))
        elif isinstance(self.norm, Affine):  # products start at unit variance per entry
            self.norm.weight.copy_(rows.std(dim=0))
            self.norm.bias.copy_(rows.mean(0))
        else:
            sample = self(torch.arange(min(len(rows), 4096), device=rows.device))
            self.vectors.mul_((rows.std() / sample.std()) ** (1 / self.n))

    def fit_to(
        self, table: torch.Tensor, fit: RowFit, ctx: FitContext, target_cr: float
    ) -> KroneckerEmbedding:
        """Start at the teacher's scale, then the common row fit (rowfit.py)."""
        self.match_scale(table.float())
        scale = dimension_scale(fit.dim_weight, ctx, table.shape[1], target_cr, self.name)
        name = f"fit {self.name} R={self.rank}"
        return fit_rows(self, table, fit, ctx, name=name, dim_scale=scale)
