"""Direction-loss autoencoder (Balazy, Banaei, Lebret, Tabor, Aberer 2021, arXiv 2106.08181).

The rows of the embedding table are the training set. Encoder Linear(d, k) and decoder
Linear(k, d), both with bias; `nonlinear="elu"` puts an ELU on the encoder output (the decoder
stays linear, so the deployed form and the shared head stay exact). Deployed: the codes
C = enc(E) (V x k) and the decoder (k*d + d); the encoder is discarded. So
P = V*k + k*d + d and k = floor((V*d/CR - d) / (V + d)).

Loss presets (`loss=`):
- `direction` (the authors' code): 0.1995 * mean(1 - cos) + 0.0025 * mean((|x_hat - x| + 1e-10)
  ** alpha), alpha annealed linearly 1.0 -> 0.1 over 20 epochs (the paper's; a fit of fewer
  epochs stops part-way, a longer one anneals over all of its epochs);
- `revisited` (EACL 2023 follow-up): 0.9091 * mean(1 - cos) + 0.0909 * mean((x_hat - x) ** 2);
- `mse` (ablation): mean((x_hat - x) ** 2), so that "direction matters" can be measured.

Training: Adam lr 1e-3, StepLR(4 epochs, gamma 0.5), batch 32 rows, 20 epochs; with
`sampling` freq or mixed an epoch draws V rows from the common row fit's distribution
(rowfit.py: (count + 1) ** freq_weight, or its mixture with uniform), `id_weight` > 0 adds
its token-identification term, and `dim_weight` `fisher` computes the loss on rows whose
dimensions are scaled by sqrt(Fisher) (dimweight.py): the same levers SEE gets. The state after
each epoch is a candidate; the chosen one is the lowest `checkpoint_score(candidate)` (the
harness passes "initial perplexity" on a WikiText validation slice, as the paper does), or,
without a scorer, the highest mean cosine (the logged proxy). A tied head can reuse the codes:
logits = (h @ W_dec) @ C^T + h @ b_dec, exact for the reconstructed table.

`codes_dtype = "int8"` stores the chosen checkpoint's codes as int8 with a per-row fp16 scale
(quantized.py `Int8Rows`); the target is then a byte ratio (k from V*k + 2*V + 4*(k*d + d)
<= V*d*4 / CR) and `reached_cr` is `byte_cr`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from see.methods.base import (
    KEYED_WHEN_SET,
    CompressedEmbedding,
    FitContext,
    UnreachableCR,
    check_table,
    check_target_cr,
)
from see.methods.dimweight import dimension_scale
from see.methods.quantized import Int8Rows, check_codes_dtype, factor_rows
from see.methods.registry import register
from see.methods.rowfit import RowFit, identification_loss, row_probs

LOSSES = ("direction", "revisited", "mse")
NONLINEAR = ("none", "elu")


def ae_code_size(vocab: int, dim: int, target_cr: float, codes_dtype: str = "float32") -> int:
    """Largest k whose codes and decoder (with bias) store at most V*d/CR numbers (int8
    codes: V*d*4/CR bytes)."""
    check_target_cr(target_cr)
    if codes_dtype == "int8":
        budget = 4 * vocab * dim / target_cr - 2 * vocab - 4 * dim
        k = math.floor(budget / (vocab + 4 * dim) + 1e-9)
        best = 4 * vocab * dim / (3 * vocab + 8 * dim)
    else:
        k = math.floor((vocab * dim / target_cr - dim) / (vocab + dim) + 1e-9)
        best = vocab * dim / (vocab + 2 * dim)
    if k < 1:
        raise UnreachableCR(
            f"target CR {target_cr} is too high for a {vocab} x {dim} table: the autoencoder "
            f"code size would be {k} < 1 (largest reachable CR with {codes_dtype} codes: "
            f"{best:.1f})"
        )
    return k


# The paper anneals alpha over its 20 epochs. A shorter fit follows the same schedule and stops
# early: compressing the whole anneal into 2 epochs jumped alpha from 1.0 to 0.1, where
# (|e| + 1e-10) ** 0.1 has huge gradients at tiny errors; that epoch worsened the fit and
# diverged between an Intel and an AMD CPU (issue 38).
ANNEAL_EPOCHS = 20


def alpha_at(epoch: int, epochs: int, start: float = 1.0, end: float = 0.1) -> float:
    """Exponent of the annealed L_alpha term at `epoch` (0-based): linear from start to end
    over max(epochs, ANNEAL_EPOCHS) epochs, so a short fit only begins the anneal."""
    span = max(epochs, ANNEAL_EPOCHS)
    return start + (end - start) * epoch / (span - 1)


def ae_loss(x_hat: torch.Tensor, x: torch.Tensor, loss: str, alpha: float = 1.0) -> torch.Tensor:
    """The loss presets of the module docstring on a batch of rows."""
    if loss == "mse":
        return ((x_hat - x) ** 2).mean()
    cos_term = (1 - nn.functional.cosine_similarity(x_hat, x, dim=1)).mean()
    if loss == "direction":
        return 0.1995 * cos_term + 0.0025 * ((x_hat - x).abs() + 1e-10).pow(alpha).mean()
    if loss == "revisited":
        return 0.9091 * cos_term + 0.0909 * ((x_hat - x) ** 2).mean()
    raise ValueError(f"unknown autoencoder loss preset {loss!r}; allowed: {LOSSES}")


class _AutoEncoder(nn.Module):
    def __init__(self, dim: int, k: int, nonlinear: str):
        super().__init__()
        self.encoder = nn.Linear(dim, k)
        self.decoder = nn.Linear(k, dim)
        self.act = nn.ELU() if nonlinear == "elu" else nn.Identity()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


@dataclass(frozen=True)
class AutoencoderOptions:
    """The paper's training (loss preset, epochs, batch, step schedule) and the row-fit levers
    SEE gets (rowfit.py): row sampling and the identification term."""

    loss: str = "direction"
    nonlinear: str = "none"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    step_epochs: int = 4
    gamma: float = 0.5
    sampling: str = "freq"
    freq_weight: float = 0.0  # 0: uniform rows (`freq_weight = 1` alone: by frequency)
    id_weight: float = 0.0
    id_temperature: float = 2.0
    id_negatives: int = 1024
    codes_dtype: str = "float32"
    # the loss on rows with Fisher-weighted dimensions (dimweight.py)
    dim_weight: str = field(default="none", metadata={KEYED_WHEN_SET: True})

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown autoencoder loss preset {self.loss!r}; allowed: {LOSSES}")
        if self.nonlinear not in NONLINEAR:
            raise ValueError(f"unknown nonlinear option {self.nonlinear!r}; allowed: {NONLINEAR}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}"
            )
        if not (self.lr > 0 and self.step_epochs >= 1 and 0 < self.gamma <= 1):
            raise ValueError(
                f"lr must be > 0, step_epochs >= 1, 0 < gamma <= 1; got {self.lr}, "
                f"{self.step_epochs}, {self.gamma}"
            )
        check_codes_dtype("autoencoder", self.codes_dtype)
        self.levers()  # validates the sampling and identification options

    def levers(self) -> RowFit:
        return RowFit(
            sampling=self.sampling,
            freq_weight=self.freq_weight,
            id_weight=self.id_weight,
            id_temperature=self.id_temperature,
            id_negatives=self.id_negatives,
            dim_weight=self.dim_weight,
        )


@register("autoencoder")
class AutoencoderEmbedding(CompressedEmbedding):
    trained = True

    def __init__(
        self,
        codes: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        code_scale_bits: torch.Tensor | None = None,
    ):
        super().__init__(codes.shape[0], weight.shape[0])
        # V x k: fp32, or int8 with per-row scales (codes_dtype "int8")
        self.codes = (
            nn.Parameter(codes) if code_scale_bits is None else Int8Rows(codes, code_scale_bits)
        )
        self.weight = nn.Parameter(weight)  # d x k (nn.Linear layout of the decoder)
        self.bias = nn.Parameter(bias)  # d

    def init_kwargs(self) -> dict:
        tensors = {"weight": self.weight, "bias": self.bias}
        if isinstance(self.codes, Int8Rows):
            return {"codes": self.codes.codes, "code_scale_bits": self.codes.scale_bits, **tensors}
        return {"codes": self.codes, **tensors}

    @property
    def reached_cr(self) -> float:
        return self.byte_cr if isinstance(self.codes, Int8Rows) else super().reached_cr

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(factor_rows(self.codes, ids), self.weight, self.bias)

    def materialize(self, chunk_size: int = 8192) -> torch.Tensor:
        return nn.functional.linear(factor_rows(self.codes), self.weight, self.bias)

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        codes = factor_rows(self.codes)
        return (hidden @ self.weight) @ codes.T + (hidden @ self.bias)[..., None]

    Options = AutoencoderOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: AutoencoderOptions, ctx: FitContext
    ) -> AutoencoderEmbedding:
        o = options
        loss, lr, codes_dtype, seed, id_weight = o.loss, o.lr, o.codes_dtype, ctx.seed, o.id_weight
        checkpoint_score = ctx.checkpoint_score
        table = check_table(table).float()
        k = ae_code_size(*table.shape, target_cr, codes_dtype)
        levers = o.levers()
        counts = ctx.token_counts if levers.needs_counts else None
        weights = row_probs(levers, counts, len(table))
        dim_scale = dimension_scale(o.dim_weight, ctx, table.shape[1], target_cr, "autoencoder")
        device = ctx.device or ("cuda" if torch.cuda.is_available() else "cpu")
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        ae = _AutoEncoder(table.shape[1], k, o.nonlinear).to(device)
        rows = table.to(device)
        scale = 1.0 if dim_scale is None else dim_scale.to(device)  # x * 1.0 is exact
        opt = torch.optim.Adam(ae.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_epochs, gamma=o.gamma)
        history, best, best_score = [], None, math.inf
        epochs = o.epochs
        for epoch in range(epochs):
            alpha = alpha_at(epoch, epochs)
            if weights is None:
                order = torch.randperm(len(rows), generator=generator).to(device)
            else:  # an epoch of V rows drawn in proportion to their weights
                order = torch.multinomial(weights, len(rows), True, generator=generator).to(device)
            desc = f"autoencoder k={k} epoch {epoch + 1}/{epochs}"
            bar = tqdm(order.split(o.batch_size), desc=desc, leave=False, mininterval=2)
            for step, batch_ids in enumerate(bar):
                x = rows[batch_ids]
                x_hat = ae(x)
                value = ae_loss(x_hat * scale, x * scale, loss, alpha)
                if id_weight > 0:
                    value = value + id_weight * identification_loss(
                        x_hat, batch_ids, rows, levers, generator
                    )
                if not torch.isfinite(value):
                    raise FloatingPointError(
                        f"autoencoder loss is {value.item()} at epoch {epoch + 1}, step {step}"
                        f" (loss={loss}, lr={lr}, k={k})"
                    )
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
            sched.step()
            candidate = cls._deploy(ae, rows)
            report = candidate.reconstruction_report(rows)
            entry = {"epoch": epoch + 1, "alpha": alpha, "last_loss": value.item(), **report}
            if checkpoint_score is not None:
                entry["score"] = checkpoint_score(candidate)
            score = entry.get("score", -report["fit_mean_cos"])
            history.append(entry)
            bar.close()
            tqdm.write(
                f"[autoencoder] k={k} "
                + " ".join(f"{key}={val:.4g}" for key, val in entry.items() if key != "epoch")
                + f" epoch={epoch + 1}"
            )
            if score < best_score:
                best, best_score = copy.deepcopy(candidate), score
        best.fit_report = {
            **best.reconstruction_report(rows),
            "fit_epoch": min(history, key=lambda h: h.get("score", -h["fit_mean_cos"]))["epoch"],
            "fit_checkpoint_by": "score" if checkpoint_score is not None else "mean_cos",
        }
        if codes_dtype == "int8":  # the chosen checkpoint, quantized
            report = best.fit_report
            codes = Int8Rows.quantize(best.codes.detach())
            best = cls(codes.codes, best.weight.detach(), best.bias.detach(), codes.scale_bits)
            best.fit_report = {**report, **best.reconstruction_report(rows)}
        best.history = history
        return best.cpu()

    @classmethod
    @torch.no_grad()
    def _deploy(cls, ae: _AutoEncoder, rows: torch.Tensor) -> AutoencoderEmbedding:
        codes = torch.cat([ae.encode(chunk) for chunk in rows.split(8192)])
        dec = ae.decoder
        return cls(codes.clone(), dec.weight.detach().clone(), dec.bias.detach().clone())
