"""One compression service: (model, tokenizer, method, target CR, options) -> installed module.

The grid, the benchmark (through the grid's build_model) and the `see` lm-eval model type all
compress through `compress`, so the same spec and seed give the same table everywhere. The
harness provides what a method's from_table asks for: the seed, the tokenizer, the data
directory, WikiText-2 *validation* token counts (frequency sampling) and, for methods that
pick a checkpoint, a scorer (token perplexity on `selection_tokens` validation tokens).
"""

from __future__ import annotations

import copy
import inspect

import torch

from see.methods.base import CompressedEmbedding


def checkpoint_scorer(
    model,
    tok,
    head_policy: str,
    selection_tokens: int,
    max_length: int,
    data_dir: str | None,
    dtype: torch.dtype,
):
    """candidate -> token perplexity of `model` with it installed, on the validation slice."""
    from see.evaluation.validation import token_perplexity, validation_ids
    from see.models.surgery import swapped_embedding

    ids = validation_ids(tok, selection_tokens, data_dir)

    def score(candidate) -> float:
        with swapped_embedding(model, copy.deepcopy(candidate).to(dtype), head_policy):
            return token_perplexity(model, ids, window=min(max_length, 1024))

    return score


def validation_token_counts(tok, vocab: int, data_dir: str | None) -> torch.Tensor:
    """How often each token id occurs in WikiText-2 validation (never the test text)."""
    from see.evaluation.validation import validation_ids

    return torch.bincount(validation_ids(tok, None, data_dir), minlength=vocab)[:vocab]


def resolved_options(method: str, options: dict) -> dict:
    """Every option the method will use: its from_table defaults and (fitted methods) its row
    fit's, overridden by `options`. Rows key cells on this, so a changed default is a new cell,
    never a resumed old one."""
    import dataclasses

    from see.config import HARNESS_OPTIONS
    from see.methods import get_method
    from see.methods.rowfit import FIT_FIELDS, row_fit

    cls = get_method(method)
    params = inspect.signature(cls.from_table).parameters.values()
    resolved = {
        p.name: p.default
        for p in params
        if p.kind == p.KEYWORD_ONLY and p.name not in HARNESS_OPTIONS
    }
    if hasattr(cls, "fit_defaults"):
        fit_part = {k: v for k, v in options.items() if k in FIT_FIELDS}
        resolved |= dataclasses.asdict(row_fit(cls.fit_defaults, fit_part))
    return resolved | options


def compress(
    model,
    tok,
    method: str,
    target_cr: float,
    options: dict,
    *,
    seed: int = 0,
    head_policy: str = "dense",
    data_dir: str | None = None,
    selection_tokens: int = 2048,
    max_length: int = 2048,
    dtype: torch.dtype = torch.float32,
) -> CompressedEmbedding:
    """Fit `method` to the model's input table (nothing is installed: see compress_model)."""
    from see.methods import get_method
    from see.models.surgery import input_table

    cls = get_method(method)
    table = input_table(model).float()
    params = inspect.signature(cls.from_table).parameters
    provided = {
        "seed": lambda: seed,
        "tokenizer": lambda: tok,
        "data_dir": lambda: data_dir,
        "token_counts": lambda: validation_token_counts(tok, len(table), data_dir),
        "checkpoint_score": lambda: checkpoint_scorer(
            model, tok, head_policy, selection_tokens, max_length, data_dir, dtype
        ),
    }
    clash = sorted(set(options) & set(provided))
    if clash:
        raise ValueError(f"options {clash} are provided by the harness, not by a config")
    extra = {name: make() for name, make in provided.items() if name in params}
    torch.manual_seed(seed)
    return cls.from_table(table, float(target_cr), **options, **extra).to(dtype)
