"""Truncated SVD: E ~ A @ B with A = U_k S_k (V x k) and B = V_k^T (k x d).

Rank from the target CR: k = floor(V*d / (CR * (V + d))). Deterministic. With `freq_weight`
w > 0 the rows are weighted by (count + 1) ** w in the least squares (weighted SVD). A tied head can
reuse the factors exactly for the factorised table: logits = (h @ B^T) @ A^T.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from see.methods.base import (
    CompressedEmbedding,
    UnreachableCR,
    check_table,
    check_target_cr,
    row_weights,
)
from see.methods.registry import register


def svd_rank(vocab: int, dim: int, target_cr: float) -> int:
    """Largest rank whose factors store at most V*d/CR numbers."""
    check_target_cr(target_cr)
    # small epsilon so that exact products (e.g. CR chosen from a rank) do not round down
    rank = math.floor(vocab * dim / (target_cr * (vocab + dim)) + 1e-9)
    if rank < 1:
        raise UnreachableCR(
            f"target CR {target_cr} is too high for a {vocab} x {dim} table: SVD rank would be "
            f"{rank} < 1 (the largest reachable CR is {vocab * dim / (vocab + dim):.1f})"
        )
    return rank


@register("svd")
class SVDEmbedding(CompressedEmbedding):
    def __init__(self, left: torch.Tensor, right: torch.Tensor):
        super().__init__(left.shape[0], right.shape[1])
        self.left = nn.Parameter(left)  # V x k
        self.right = nn.Parameter(right)  # k x d

    @classmethod
    def from_table(cls, table: torch.Tensor, target_cr: float, *, freq_weight: float = 0.0,
                   token_counts: torch.Tensor | None = None) -> SVDEmbedding:  # fmt: skip
        """`freq_weight` > 0: weighted SVD (FWSVD-style), rows weighted by frequency ** w."""
        table = check_table(table)
        rank = svd_rank(*table.shape, target_cr)
        weights = row_weights(freq_weight, token_counts, len(table))
        scale = weights.sqrt()[:, None] if weights is not None else 1.0
        u, s, vh = torch.linalg.svd(table.double() * scale, full_matrices=False)
        left = (u[:, :rank] * s[:rank] / scale).to(table.dtype).contiguous()
        module = cls(left, vh[:rank].to(table.dtype).contiguous())
        module.fit_report = module.reconstruction_report(table)
        return module

    def init_kwargs(self) -> dict:
        return {"left": self.left, "right": self.right}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.left) @ self.right

    def materialize(self, chunk_size: int = 8192) -> torch.Tensor:
        return self.left @ self.right

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden @ self.right.T) @ self.left.T
