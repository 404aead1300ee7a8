"""Fisher-weighted embedding dimensions: an objective lever every fitted method is offered.

The model does not mind every embedding dimension alike: the diagonal Fisher of its input (the
squared gradient of the LM loss with respect to the input embeddings, summed over validation
text: see.compress.input_fisher) varies by orders of magnitude across dimensions. A fit that
measures its error in a space where dimension j is scaled by sqrt(F_j / mean F) puts the error
where the model minds it least, and stores nothing more:
- pq runs k-means on the scaled table and scales its codebooks back;
- SVD and GroupReduce factor the scaled table and scale their right factor (basis) back;
- the row fit (rowfit.py: SEE, see_morph, word2ketXS, SVD's fine-tuning) and the autoencoder
  compute their loss on scaled rows.

`dim_weight`: `fisher`, `none` (dimensions alike), or `auto`: `fisher` up to FISHER_UP_TO and
`none` beyond (measured for pq: heldout-sweep run 20261206-171154, where Fisher won at 20x and
40x and lost out of domain at 80x). Each method's default is its measured best.
"""

from __future__ import annotations

import torch

from see.methods.base import FitContext

DIM_WEIGHTS = ("auto", "none", "fisher")
FISHER_UP_TO = 40.0  # `dim_weight = "auto"`: Fisher-weighted dimensions up to this byte ratio


def check_dim_weight(method: str, dim_weight: str) -> None:
    if dim_weight not in DIM_WEIGHTS:
        raise ValueError(f"{method} dim_weight={dim_weight!r}; allowed: {DIM_WEIGHTS}")


def dimension_scale(
    dim_weight: str, ctx: FitContext, dim: int, target_cr: float, method: str
) -> torch.Tensor | None:
    """sqrt(Fisher / its mean) per dimension, or None where dimensions are weighed alike."""
    if dim_weight == "auto":
        dim_weight = "fisher" if target_cr <= FISHER_UP_TO else "none"
    if dim_weight == "none":
        return None
    fisher = ctx.dim_fisher
    if fisher is None or fisher.shape != (dim,):
        raise ValueError(
            f"{method} dim_weight='fisher' needs the input Fisher of the model's {dim} "
            f"dimensions (FitContext.input_fisher), got "
            f"{None if fisher is None else tuple(fisher.shape)}; a fit without a model "
            "(from_table) takes dim_weight='none' or a dim_fisher"
        )
    return (fisher / fisher.mean()).clamp_min(1e-12).sqrt().float()
