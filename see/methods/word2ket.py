"""word2ketXS (Panahi, Saeedi, Arodz, ICLR 2020): the ablation with no linguistic prior.

The whole table is factorised: E ~ sum_r (x)_j F_jr, each F_jr of size v x q with
v = ceil(V ** (1/n)) and q = ceil(d ** (1/n)). Token id i is written in base v as digits
(i_1..i_n); its row is sum_r kron(F_1r[i_1], ..., F_nr[i_n])[:d], with a LayerNorm after it
(as SEE) only when `norm="layernorm"`: the default is no norm, because the norm undoes much of
the closed-form start below. It is SEE's machinery with units = (slot, digit) pairs,
computed from the id, so nothing per token is stored: P = R * n * v * q (+ 2d with the norm).
Default order n = 2 (the paper uses 2 and 4): with n = 3 a CR of 10 needs R in the thousands
and the fit is slow on CPU. For n = 2 the factors start from a truncated SVD of the reshaped
table (`svd_init`), then the common row fit (rowfit.py) fine-tunes them.

`row_order` decides which tokens share a digit, i.e. a factor: `id` (the paper's: the token
id's digits, nothing stored) or `pca` (each token's place on the v**n grid from the table's
principal components: rows sorted by the first component fill the first digit's v blocks,
within a block sorted by the second, and so on; the V places are stored, int32, and counted),
so that tokens sharing a factor have similar rows. On SmolLM2 `pca` gives the worse fitted model
at every CR: 346.5 / 799.1 / 2,110 / 5,168 against 334.5 / 699.3 / 1,752 / 3,915 initial word
perplexity at CR 10 / 20 / 40 / 80 (run `20261201-211822-word2ketxs-row-order`; the places
cost R, 265 -> 261 at CR 10): `id` stays the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from see.methods.base import FitContext, check_table, check_target_cr
from see.methods.kronecker import (
    KroneckerEmbedding,
    check_norm,
    norm_params,
    rank_for_budget,
    unit_dim,
)
from see.methods.registry import register
from see.methods.rowfit import RowFit

ROW_ORDERS = ("id", "pca")


@dataclass(frozen=True)
class Word2KetXSOptions(RowFit):
    """Order n (>= 2) and the output norm; the row fit's levers as SEE's (a fair comparison)."""

    sampling: str = "freq"  # rows by (count + 1): run `word2ketxs-freq` (334.5 vs 492.1 mixed)
    n: int = 2
    norm: str = "none"
    id_weight: float = 1.0
    row_order: str = "id"  # pca lost at every CR (module doc)

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.n, int) and self.n >= 2):
            raise ValueError(f"word2ketxs order n must be an int >= 2, got {self.n!r}")
        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"row_order={self.row_order!r}; allowed: {ROW_ORDERS}")
        check_norm(self.norm)


@torch.no_grad()
def pca_places(table: torch.Tensor, n: int, radix: int) -> torch.Tensor:
    """Each row's place on the radix**n grid (module doc): digit j splits the rows of one
    block of the digit before by their (j+1)-th principal component."""
    rows = table.float() - table.float().mean(0)
    _, _, components = torch.pca_lowrank(rows, q=min(n + 4, *rows.shape), center=False, niter=4)
    scores = rows @ components[:, :n]
    vocab = len(rows)
    order = torch.argsort(scores[:, 0], stable=True)  # order[p]: the row at place p
    for level in range(1, n):
        block = torch.arange(vocab) // radix ** (n - level)
        inner = torch.argsort(scores[order, level], stable=True)
        inner = inner[torch.argsort(block[inner], stable=True)]
        order = order[inner]
    places = torch.empty(vocab, dtype=torch.int32)
    places[order] = torch.arange(vocab, dtype=torch.int32)
    return places


@register("word2ketxs")
class Word2KetXSEmbedding(KroneckerEmbedding):
    def __init__(
        self,
        vocab: int,
        dim: int,
        n: int,
        rank: int,
        norm: str = "layernorm",
        places: torch.Tensor | None = None,
    ):
        self.radix = unit_dim(vocab, n)  # v = ceil(V ** (1/n))
        super().__init__(vocab, dim, n, rank, n * self.radix, norm)
        # row_order="pca": token id -> place on the grid (stored); None: the id is the place
        self.register_buffer("places", None if places is None else places.to(torch.int32))

    def init_kwargs(self) -> dict:
        return {
            "vocab": self.num_embeddings,
            "dim": self.embedding_dim,
            "n": self.n,
            "rank": self.rank,
            "norm": self.norm_kind,
            "places": self.places,
        }

    def unit_ids(self, ids: torch.Tensor) -> torch.Tensor:
        digits = []
        rest = ids if self.places is None else self.places[ids].long()
        for _ in range(self.n):
            digits.append(rest % self.radix)
            rest = rest // self.radix
        slots = torch.arange(self.n, device=ids.device) * self.radix
        return torch.stack(digits[::-1], dim=-1) + slots

    @torch.no_grad()
    def svd_init(self, table: torch.Tensor) -> None:
        """For n = 2 the factors have a closed form: the table reshaped to a (v*q) x (v*q)
        matrix M[(i1, a), (i2, b)] = E[i1*v + i2, a*q + b] is a sum of R rank-one terms, so its
        truncated SVD is the best start (rows centred when a LayerNorm follows)."""
        v, q, vocab, dim = self.radix, self.q, self.num_embeddings, self.embedding_dim
        rows = table.float() - (table.float().mean(0) if self.norm_kind == "layernorm" else 0)
        padded = torch.zeros(v * v, q * q)
        places = torch.arange(vocab) if self.places is None else self.places.long()
        padded[places, :dim] = rows
        matrix = padded.reshape(v, v, q, q).permute(0, 2, 1, 3).reshape(v * q, v * q)
        u, s, vh = torch.svd_lowrank(matrix, q=min(self.rank + 10, v * q), niter=4)
        root = s[: self.rank].sqrt()
        first = (u[:, : self.rank] * root).reshape(v, q, self.rank).permute(0, 2, 1)
        second = (vh[:, : self.rank] * root).reshape(v, q, self.rank).permute(0, 2, 1)
        self.vectors.copy_(torch.cat([first, second]))

    Options = Word2KetXSOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: Word2KetXSOptions, ctx: FitContext
    ) -> Word2KetXSEmbedding:
        check_target_cr(target_cr)
        vocab, dim = check_table(table).shape
        n, norm = options.n, options.norm
        per_rank = n * unit_dim(vocab, n) * unit_dim(dim, n)
        places = None
        if options.row_order == "pca":
            places = pca_places(table, n, unit_dim(vocab, n))
        fixed = norm_params(norm, dim) + (0 if places is None else vocab)
        what = f"word2ketxs (n={n}, row_order={options.row_order})"
        rank = rank_for_budget(vocab * dim / target_cr, fixed, per_rank, what)
        torch.manual_seed(ctx.seed)
        module = cls(vocab, dim, n, rank, norm, places)
        if n == 2:
            module.svd_init(table)
        fitted = module.fit_to(table, options, ctx, target_cr)
        fitted.fit_report["see_rank"] = rank
        return fitted
