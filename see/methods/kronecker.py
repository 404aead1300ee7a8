"""Shared machinery of SEE and word2ketXS: embeddings as sums of Kronecker products of units.

Token t has n unit ids u_1(t)..u_n(t); every unit has R vectors of size q = ceil(d ** (1/n));
e(t) = LayerNorm( sum_r v_{u_1}^r (x) ... (x) v_{u_n}^r [:d] ). Decision (documented): the
truncation to d comes before the LayerNorm, so the norm has 2*d parameters (not 2*q**n).
The forward gathers only the batch's unit vectors and builds the products with broadcasting
and one batched matmul: memory tokens x R x q**(n-1), never the V x d table.

Fitting (before any LM training, so "initial perplexity" is comparable with SVD/AE): Adam on
mean(1 - cos) + MSE / mean(x**2) between e(t) and the teacher's rows, over random batches of
token ids (drawn ~ (count + 1) ** freq_weight when that option is set), cosine-decayed
learning rate; `checkpoint_score` (lower is better) picks the best of
`checkpoints` evenly spaced states.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from see.methods.base import CompressedEmbedding, UnreachableCR


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


class KroneckerEmbedding(CompressedEmbedding):
    """Unit vectors (|U| x R x q), a V x n token -> unit map (or computed units), LayerNorm."""

    trained = True

    def __init__(self, num_embeddings: int, dim: int, n: int, rank: int, num_units: int,
                 norm: str = "layernorm"):  # fmt: skip
        super().__init__(num_embeddings, dim)
        if n < 2:
            raise ValueError(f"order n must be >= 2, got {n}")
        if rank < 1:
            raise ValueError(f"rank R must be >= 1, got {rank}")
        if norm not in ("layernorm", "none"):
            raise ValueError(f"unknown norm {norm!r}; allowed: ['layernorm', 'none']")
        self.n, self.rank, self.q = n, rank, unit_dim(dim, n)
        self.norm_kind = norm
        # init so that a sum of R products of n N(0, s) entries has unit variance
        scale = rank ** (-1 / (2 * n))
        self.vectors = nn.Parameter(torch.randn(num_units, rank, self.q) * scale)
        self.norm = nn.LayerNorm(dim) if norm == "layernorm" else nn.Identity()

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
        else:
            sample = self(torch.arange(min(len(rows), 4096), device=rows.device))
            self.vectors.mul_((rows.std() / sample.std()) ** (1 / self.n))

    def fit(
        self,
        table: torch.Tensor,
        *,
        steps: int,
        batch_tokens: int = 1024,
        lr: float = 3e-2,
        seed: int = 0,
        checkpoint_score: Callable[[CompressedEmbedding], float] | None = None,
        checkpoints: int = 4,
        device: str | None = None,
        weights: torch.Tensor | None = None,
    ) -> KroneckerEmbedding:
        """Fit to the teacher rows; returns the chosen checkpoint (module on CPU)."""
        if steps < 1 or batch_tokens < 1:
            raise ValueError(
                f"fit steps and batch_tokens must be >= 1, got {steps}, {batch_tokens}"
            )
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        module = self.to(device)
        rows = table.float().to(device)
        center = rows.mean(0)
        mean_sq = (rows - center).pow(2).mean()
        module.match_scale(rows)
        generator = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(module.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        save_at = {round(steps * (i + 1) / checkpoints) for i in range(checkpoints)}
        history, best = [], {"score": math.inf, "module": None}

        def consider(step: int, loss: float | None) -> None:
            """Log this state as a checkpoint and keep it if it scores best so far."""
            module.eval()
            entry = {"step": step, "loss": loss, **module.reconstruction_report(rows)}
            if checkpoint_score is not None:
                entry["score"] = checkpoint_score(module)
            history.append(entry)
            shown = " ".join(f"{k}={v:.4g}" for k, v in entry.items() if v is not None)
            tqdm.write(f"[{self.name}] {shown}")
            score = entry.get("score", -entry["fit_mean_cos"])
            if score < best["score"]:
                best.update(score=score, module=copy.deepcopy(module).cpu())
            module.train()

        consider(0, None)  # the start (e.g. word2ketXS's closed form) is a candidate too
        bar = tqdm(range(1, steps + 1), desc=f"fit {self.name} R={self.rank}", mininterval=2)
        for step in bar:
            if weights is None:
                ids = torch.randint(len(rows), (batch_tokens,), generator=generator)
            else:  # rows drawn in proportion to their (frequency) weights
                ids = torch.multinomial(weights, batch_tokens, True, generator=generator)
            ids = ids.to(device)
            out, x = module(ids), rows[ids]
            # measured on rows minus the table's mean row: the shared mean direction alone
            # gives a cosine of ~0.66 on SmolLM2, and a loss on raw rows stalls there
            cos = nn.functional.cosine_similarity(out - center, x - center, dim=1).mean()
            loss = (1 - cos) + (out - x).pow(2).mean() / mean_sq
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name} fit loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", cos=f"{cos.item():.3f}")
            if step in save_at:
                consider(step, loss.item())
        chosen = min(history, key=lambda h: h.get("score", -h["fit_mean_cos"]))
        best = best["module"]
        best.fit_report = {
            **best.reconstruction_report(table.float()),
            "fit_step": chosen["step"],
            "fit_checkpoint_by": "score" if checkpoint_score is not None else "mean_cos",
        }
        best.history = history
        return best.eval()
