"""Token frequency without a corpus: the data-free proxy for WikiText-2 validation counts.

A BPE vocabulary is built merge by merge, the most frequent pair first, and its ids follow
that order (SmolLM2, Qwen2.5); SentencePiece vocabularies (Gemma 3) are ordered by piece score.
So a token's id is a rank, and Zipf's law turns a rank into a count: count = V / (r + 1),
r = the token's place in id order among the ordinary tokens. Special tokens (BOS, EOS, chat
markers) count 0: text rarely holds them. Deterministic from the tokenizer alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from see.methods.base import FitContext

COUNT_SOURCES = ("wikitext", "token_order")


def check_counts_source(method: str, source: str) -> None:
    if source not in COUNT_SOURCES:
        raise ValueError(f"{method} counts={source!r}; allowed: {COUNT_SOURCES}")


def frequency_order(counts: torch.Tensor) -> torch.Tensor:
    """Token ids from the most frequent down (ties: the lower id first)."""
    return torch.argsort(counts.double(), descending=True, stable=True)


def token_counts(ctx: FitContext, source: str, vocab: int) -> torch.Tensor | None:
    """Token counts from `source`: the harness's WikiText-2 validation counts (`wikitext`) or
    the tokenizer's id order (`token_order`, needs the tokenizer in the fit context)."""
    if source == "wikitext":
        return ctx.token_counts
    if ctx.tokenizer is None:
        raise ValueError("counts='token_order' needs the tokenizer (FitContext.tokenizer)")
    return token_order_counts(ctx.tokenizer, vocab)


def token_order_counts(tokenizer, vocab: int) -> torch.Tensor:
    """Zipf counts by id order (float64, length `vocab`); special and unused ids count 0."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i in getattr(tokenizer, "added_tokens_decoder", {}) or {}}
    ordinary = [i for i in range(min(vocab, len(tokenizer))) if i not in special]
    counts = torch.zeros(vocab, dtype=torch.float64)
    ranks = torch.arange(len(ordinary), dtype=torch.float64)
    counts[torch.tensor(ordinary, dtype=torch.long)] = vocab / (ranks + 1)
    return counts
