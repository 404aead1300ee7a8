"""Truncated SVD: E ~ A @ B with A = U_k S_k (V x k) and B = V_k^T (k x d).

Rank from the target CR: k = floor(V*d / (CR * (V + d))). Deterministic. With `sampling`
`freq` (or `mixed`) the rows are weighted by (count + 1) ** freq_weight (or its mixture with
uniform) in the least squares (weighted SVD); with `dim_weight` `fisher` the columns are
scaled by sqrt(Fisher) before the SVD and the right factor is scaled back (dimweight.py);
`finetune = true` then fits the factors with the common row fit (rowfit.py), the same levers
SEE gets. A tied head can reuse the factors exactly for the factorised table:
logits = (h @ B^T) @ A^T.

`codes_dtype = "int8"` stores A as int8 with a per-row fp16 scale (quantized.py `Int8Rows`)
after the fit, and the target becomes a byte ratio: k is the largest rank whose bytes
V*k + 2*V + 4*k*d fit V*d*4 / CR, and `reached_cr` is `byte_cr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from see.methods.base import (
    CompressedEmbedding,
    FitContext,
    UnreachableCR,
    check_table,
    check_target_cr,
)
from see.methods.dimweight import dimension_scale
from see.methods.quantized import Int8Rows, check_codes_dtype, factor_rows
from see.methods.registry import register
from see.methods.rowfit import RowFit, fit_rows, row_probs


def svd_rank(vocab: int, dim: int, target_cr: float, codes_dtype: str = "float32") -> int:
    """Largest rank whose factors store at most V*d/CR numbers (int8 codes: V*d*4/CR bytes)."""
    check_target_cr(target_cr)
    # small epsilon so that exact products (e.g. CR chosen from a rank) do not round down
    if codes_dtype == "int8":
        rank = math.floor((4 * vocab * dim / target_cr - 2 * vocab) / (vocab + 4 * dim) + 1e-9)
        best = 4 * vocab * dim / (3 * vocab + 4 * dim)
    else:
        rank = math.floor(vocab * dim / (target_cr * (vocab + dim)) + 1e-9)
        best = vocab * dim / (vocab + dim)
    if rank < 1:
        raise UnreachableCR(
            f"target CR {target_cr} is too high for a {vocab} x {dim} table: SVD rank would be "
            f"{rank} < 1 (the largest reachable CR with {codes_dtype} codes is {best:.1f})"
        )
    return rank


@dataclass(frozen=True)
class SVDOptions(RowFit):
    """Plain truncated SVD unless options say otherwise (freq_weight 0: uniform rows; with
    `freq_weight = 1` a frequency-weighted SVD); `finetune` runs the common row fit on the
    factors with these RowFit levers."""

    finetune: bool = False
    codes_dtype: str = "float32"  # or "int8": A as int8 codes + per-row fp16 scales
    steps: int = 600
    lr: float = 1e-3
    sampling: str = "freq"
    freq_weight: float = 0.0
    # Fisher-weighted dimensions up to 40x (dimweight.py): better at 10x, 20x and 40x in domain
    # and out of it on SmolLM2 (heldout-sweep run 20261206-190920: WikiText / MRPC / SST-2 at
    # 20x 477 / 452 / 215 times the baseline against 741 / 780 / 450). Frequency rows
    # (`freq_weight = 1`) won at 10x and lost at 40x (run 20261206-192108), so rows stay uniform
    dim_weight: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        check_codes_dtype("svd", self.codes_dtype)


@register("svd")
class SVDEmbedding(CompressedEmbedding):
    def __init__(
        self, left: torch.Tensor, right: torch.Tensor, left_scale_bits: torch.Tensor | None = None
    ):
        super().__init__(left.shape[0], right.shape[1])
        # V x k: fp32, or int8 codes with per-row scales (codes_dtype "int8")
        self.left = (
            nn.Parameter(left) if left_scale_bits is None else Int8Rows(left, left_scale_bits)
        )
        self.right = nn.Parameter(right)  # k x d

    Options = SVDOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: SVDOptions, ctx: FitContext
    ) -> SVDEmbedding:
        """Rows weighted by the fit's sampling distribution (`sampling` freq or mixed: a
        weighted SVD, FWSVD-style); `finetune`: then the row fit (rowfit.py) on the factors."""
        table = check_table(table)
        codes_dtype = options.codes_dtype
        rank = svd_rank(*table.shape, target_cr, codes_dtype)
        counts = ctx.token_counts if options.needs_counts else None
        weights = row_probs(options, counts, len(table))
        row_scale = weights.sqrt()[:, None] if weights is not None else 1.0
        dim_scale = dimension_scale(options.dim_weight, ctx, table.shape[1], target_cr, "svd")
        col_scale = 1.0 if dim_scale is None else dim_scale.double()
        u, s, vh = torch.linalg.svd(table.double() * row_scale * col_scale, full_matrices=False)
        left = (u[:, :rank] * s[:rank] / row_scale).to(table.dtype).contiguous()
        module = cls(left, (vh[:rank] / col_scale).to(table.dtype).contiguous())
        if options.finetune:
            torch.manual_seed(ctx.seed)
            name = f"fit svd k={rank}"
            module = fit_rows(module, table, options, ctx, name=name, dim_scale=dim_scale)
        if codes_dtype == "int8":  # quantized after the fit (and after finetuning)
            codes = Int8Rows.quantize(module.left.detach())
            fitted, module = module, cls(codes.codes, module.right.detach(), codes.scale_bits)
            module.history = getattr(fitted, "history", None)
            module.fit_report = {**fitted.fit_report, **module.reconstruction_report(table)}
        elif not options.finetune:  # fit_rows reports the chosen checkpoint's reconstruction itself
            module.fit_report = module.reconstruction_report(table)
        return module

    def init_kwargs(self) -> dict:
        if isinstance(self.left, Int8Rows):
            return {
                "left": self.left.codes,
                "right": self.right,
                "left_scale_bits": self.left.scale_bits,
            }
        return {"left": self.left, "right": self.right}

    @property
    def reached_cr(self) -> float:
        return self.byte_cr if isinstance(self.left, Int8Rows) else super().reached_cr

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return factor_rows(self.left, ids) @ self.right

    def materialize(self, chunk_size: int = 8192) -> torch.Tensor:
        return factor_rows(self.left) @ self.right

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden @ self.right.T) @ factor_rows(self.left).T
