"""One compression service: (model, tokenizer, method, target CR, options) -> installed module.

The grid, the benchmark (through the grid's build_model) and the `see` lm-eval model type all
compress through `compress`, so the same spec and seed give the same table everywhere. Options
become the method's options dataclass (validated); the harness gives the fit a FitContext: the
seed, the tokenizer, the data directory, WikiText-2 *validation* token counts and the
embedding dimensions' Fisher on validation text (each computed only if the fit asks) and,
for trained methods, a checkpoint scorer (token perplexity on `selection_tokens` validation
tokens).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch

from see.methods.base import KEYED_WHEN_SET, CompressedEmbedding, FitContext


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


# validation tokens whose gradients weigh the dimensions: d numbers settle on a few thousand
# tokens, and each token costs a forward and a backward of the whole model
FISHER_TOKENS = 2048


def input_fisher(model, ids: torch.Tensor, window: int = 512) -> torch.Tensor:
    """Per embedding dimension, the summed squared gradient of the LM loss with respect to the
    input embeddings over `ids` (non-overlapping windows): the diagonal Fisher of the input,
    how much an error in that dimension costs the model. float64, length d."""
    embed = model.get_input_embeddings()
    device = embed.weight.device
    fisher = torch.zeros(embed.weight.shape[1], dtype=torch.float64)
    for chunk in ids.split(window):
        if len(chunk) < 2:
            continue
        chunk = chunk[None].to(device)
        with torch.enable_grad():  # a caller's no_grad must not silence the gradients
            inputs = embed(chunk).detach().requires_grad_(True)
            loss = model(inputs_embeds=inputs, labels=chunk).loss.float()
            (grad,) = torch.autograd.grad(loss * (chunk.shape[1] - 1), inputs)
        fisher += grad[0].double().pow(2).sum(0).cpu()
    return fisher


def validation_fisher(model, tok, data_dir: str | None) -> torch.Tensor:
    from see.evaluation.validation import validation_ids

    return input_fisher(model, validation_ids(tok, FISHER_TOKENS, data_dir))


def resolved_options(method: str, options: dict) -> dict:
    """Every option the method will use (its options dataclass, defaults resolved). Rows key
    cells on this, so a changed default is a new cell, never a resumed old one. An option
    added later with a default that fits exactly as before (field metadata `KEYED_WHEN_SET`)
    is left out at that default, so the cells published before it keep their keys."""
    import dataclasses

    from see.methods import get_method

    typed = get_method(method).make_options(options)
    resolved = dataclasses.asdict(typed)
    for field in dataclasses.fields(typed):
        if field.metadata.get(KEYED_WHEN_SET) and resolved[field.name] == field.default:
            del resolved[field.name]
    return resolved


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
    input_fisher: Callable[[], torch.Tensor] | None = None,
) -> CompressedEmbedding:
    """Fit `method` to the model's input table (nothing is installed: see compress_model).
    `input_fisher` gives the model's input Fisher when a fit asks for it (default: computed
    here, validation_fisher); a caller that loads the same model again passes a cached one."""
    from see.methods import get_method
    from see.models.surgery import input_table

    cls = get_method(method)
    typed = cls.make_options(options)  # bad names and values fail before any work
    table = input_table(model).float()
    # built on the first checkpoint only (it tokenizes validation text)
    scorer = functools.cache(
        lambda: checkpoint_scorer(
            model, tok, head_policy, selection_tokens, max_length, data_dir, dtype
        )
    )

    def score(candidate) -> float:
        return scorer()(candidate)

    ctx = FitContext(
        seed=seed,
        tokenizer=tok,
        data_dir=data_dir,
        checkpoint_score=score,
        count_tokens=lambda: validation_token_counts(tok, len(table), data_dir),
        input_fisher=input_fisher or (lambda: validation_fisher(model, tok, data_dir)),
    )
    return cls.compress_table(table, float(target_cr), typed, ctx).to(dtype)
