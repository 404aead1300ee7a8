"""WikiText-2 validation text: checkpoint selection and training text, never the test split.

`wikitext-2/valid.txt` is the tokenized release (`<unk>`, ` @-@ `): it is detokenized with
lm-eval's own `wikitext_detokenizer` and `<unk>` is dropped (CONTRACTS.md). Token perplexity
here is a quick selection signal (non-overlapping windows of the joined text), not the
reported lm-eval word perplexity.
"""

from __future__ import annotations

import math
from functools import cache

import torch

from see.data import data_dir, data_file

VALID_FILE = "wikitext-2/valid.txt"


@cache
def validation_text(root: str | None = None) -> str:
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    raw = data_file(VALID_FILE, data_dir(root)).read_text(encoding="utf-8")
    return wikitext_detokenizer({"page": raw.replace(" <unk>", "").replace("<unk>", "")})


def validation_ids(tokenizer, max_tokens: int | None, root: str | None = None) -> torch.Tensor:
    """The first `max_tokens` token ids of the validation text (1-D); None = all of it."""
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    text = validation_text(root)
    if max_tokens is not None:  # tokenise a prefix only: ~4 characters per token, 2x margin
        text = text[: max_tokens * 8]
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    return ids[:max_tokens]


@torch.no_grad()
def token_perplexity(model, ids: torch.Tensor, window: int = 1024) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `ids`."""
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for chunk in ids.split(window):
        if len(chunk) < 2:
            continue
        chunk = chunk[None].to(device)
        loss = model(input_ids=chunk, labels=chunk).loss.float().item()
        total_nll += loss * (chunk.shape[1] - 1)
        total_tokens += chunk.shape[1] - 1
    return math.exp(total_nll / total_tokens)
