"""The untouched embedding: a dense lookup of the model's own table (CR 1)."""

from __future__ import annotations

import torch
from torch import nn

from see.methods.base import CompressedEmbedding, FitContext, NoOptions, check_table
from see.methods.registry import register


@register("baseline")
class DenseEmbedding(CompressedEmbedding):
    def __init__(self, table: torch.Tensor):
        super().__init__(*table.shape)
        self.weight = nn.Parameter(table)

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: NoOptions, ctx: FitContext
    ) -> DenseEmbedding:
        if target_cr != 1:
            raise ValueError(f"baseline stores the full table (CR 1); got target CR {target_cr}")
        return cls(check_table(table))

    def init_kwargs(self) -> dict:
        return {"table": self.weight}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight)

    def materialize(self, chunk_size: int = 8192) -> torch.Tensor:
        return self.weight

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden, self.weight)
