"""SEE: Sememe Entanglement Encoding (Zhang et al. 2024, arXiv 2412.12204), and `see_morph`.

Each token gets n units (ranked sememes, morphemes, a form unit, PAD; see
see/sememes/units.py) and e(t) = LayerNorm(sum_r kron(v_u1^r, ..., v_un^r)[:d]) (see
kronecker.py). The paper's code is not public; its open decisions are options here:
`sememe_source` (hownet | wordnet | auto), `n` (order, default 3), `max_sememes` (default n-1),
`max_units` (inventory cap, default 8192), `hash_buckets` (512), `separate` (collision
separation, default true), `norm` (layernorm | none), fit `steps`/`batch_tokens`/`lr`.

Counting: P = R*|U|*q + 2d (LayerNorm) + V*n (the token -> unit map is stored, int32, and
counted as numbers too); R is the largest that fits V*d/CR. `see_morph` is the same module
without sememes (MorphTE-like): morphemes, characters and form units only.
"""

from __future__ import annotations

import torch

from see.methods.base import check_table, check_target_cr, row_weights
from see.methods.kronecker import KroneckerEmbedding, rank_for_budget, unit_dim
from see.methods.registry import register


def token_texts(tokenizer, vocab: int) -> list[str]:
    """Each id's text as its tokenizer decodes it alone ("" for rows past the tokenizer)."""
    n = min(len(tokenizer), vocab)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    texts = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
    return texts + [f"<row {i}>" for i in range(n, vocab)]


@register("see")
class SEEEmbedding(KroneckerEmbedding):
    uses_sememes = True

    def __init__(self, token_units: torch.Tensor, num_units: int, dim: int, rank: int, norm: str):
        super().__init__(token_units.shape[0], dim, token_units.shape[1], rank, num_units, norm)
        self.register_buffer("token_units", token_units.to(torch.int32))
        self.mapping_report: dict = {}

    def init_kwargs(self) -> dict:
        return {"token_units": self.token_units, "num_units": self.vectors.shape[0],
                "dim": self.embedding_dim, "rank": self.rank, "norm": self.norm_kind}  # fmt: skip

    def unit_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_units[ids]

    @classmethod
    def from_table(
        cls,
        table: torch.Tensor,
        target_cr: float,
        *,
        tokenizer=None,
        sememe_source: str = "auto",
        n: int = 3,
        max_sememes: int | None = None,
        max_units: int = 8192,
        hash_buckets: int = 512,
        separate: bool = True,
        norm: str = "layernorm",
        steps: int = 1500,
        batch_tokens: int = 1024,
        lr: float = 3e-2,
        seed: int = 0,
        checkpoint_score=None,
        freq_weight: float = 0.0,
        token_counts: torch.Tensor | None = None,
        data_dir: str | None = None,
        device: str | None = None,
    ) -> SEEEmbedding:
        from see.sememes import get_source
        from see.sememes.units import build_unit_map

        check_target_cr(target_cr)
        table = check_table(table)
        if tokenizer is None:
            raise ValueError(f"{cls.name} needs the model's tokenizer (token texts -> units)")
        vocab, dim = table.shape
        source = get_source(sememe_source, data_dir) if cls.uses_sememes else None
        unit_map = build_unit_map(
            token_texts(tokenizer, vocab), n=n, source=source, max_sememes=max_sememes,
            max_units=max_units, hash_buckets=hash_buckets, separate=separate,
        )  # fmt: skip
        shown = (f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in unit_map.report.items())  # fmt: skip
        print(f"[{cls.name}] unit map: " + ", ".join(shown))
        num_units = len(unit_map.units)
        fixed = vocab * n + (2 * dim if norm == "layernorm" else 0)
        rank = rank_for_budget(vocab * dim / target_cr, fixed, num_units * unit_dim(dim, n),
                               f"{cls.name} with {num_units} units (n={n})")  # fmt: skip
        torch.manual_seed(seed)
        module = cls(unit_map.token_units, num_units, dim, rank, norm)
        module.mapping_report = unit_map.report
        module.unit_names = unit_map.units
        fitted = module.fit(table, steps=steps, batch_tokens=batch_tokens, lr=lr, seed=seed,
                            checkpoint_score=checkpoint_score, device=device,
                            weights=row_weights(freq_weight, token_counts, vocab))  # fmt: skip
        fitted.fit_report.update({"see_rank": rank, "see_units": num_units})
        fitted.fit_report.update({f"map_{k}": v for k, v in unit_map.report.items()})
        return fitted


@register("see_morph")
class SEEMorphEmbedding(SEEEmbedding):
    """SEE without sememes (MorphTE-like): morphemes, characters, form units and PAD."""

    uses_sememes = False
