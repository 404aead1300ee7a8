"""`noise`: a control, not a compression: the full table with each row moved by random noise.

When a compressed model scores *better* than its baseline on some task, the first question is
whether any perturbation of the same size does the same (then the task's score is fragile to
the table, and compression tells nothing). Each row gets a random direction (Gaussian, the
draw `draw`) scaled to `relative_error` times the row's norm, so the table's relative
Frobenius error is `relative_error`, the measure rows report for every method as
`fit_rel_error`: set it to a compressed cell's error to match it. The table stays dense and
fp32 (byte ratio 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from see.methods.base import FitContext, check_table
from see.methods.baseline import DenseEmbedding
from see.methods.registry import register


@dataclass(frozen=True)
class NoiseOptions:
    """Each row's noise norm over the row's norm, and which random draw (the seed)."""

    relative_error: float = 0.1
    draw: int = 0

    def __post_init__(self):
        if not 0 < self.relative_error <= 10:
            raise ValueError(f"relative_error={self.relative_error!r}; allowed: (0, 10]")
        if self.draw < 0:
            raise ValueError(f"draw={self.draw!r}; allowed: an int >= 0")


@register("noise")
class NoisyEmbedding(DenseEmbedding):
    Options = NoiseOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: NoiseOptions, ctx: FitContext
    ) -> NoisyEmbedding:
        if target_cr != 1:
            raise ValueError(f"noise keeps the full table (byte ratio 1); got target {target_cr}")
        table = check_table(table)
        exact = table.double()
        generator = torch.Generator().manual_seed(options.draw)
        noise = torch.randn(table.shape, generator=generator, dtype=torch.float64)
        scale = options.relative_error * torch.linalg.norm(exact, dim=1, keepdim=True)
        noise *= scale / torch.linalg.norm(noise, dim=1, keepdim=True)
        module = cls((exact + noise).to(table.dtype))
        module.fit_report = module.reconstruction_report(table)
        return module

    @classmethod
    def fixed_ratio(cls, options: NoiseOptions) -> float:
        return 1.0
