"""Swap a model's input embedding for a compressed one, apply the head policy, count bytes.

Head policies (column `head_policy`):
- `dense`: the head keeps its own dense V x d matrix. For a tied model the head keeps the
  original table, so nothing is saved and the compressed module's parameters are added.
- `shared`: the head reuses the compressed module (`head_logits`), so no dense V x d matrix
  is stored. Exact for the factorised table for SVD: logits = (h @ B^T) @ A^T.
lm-eval's HFLM calls `model.tie_weights()`; we set `config.tie_word_embeddings = False` so
that it neither re-ties the head to the new module nor raises.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from see.config import HEAD_POLICIES
from see.methods import CompressedEmbedding


class EmbeddingAdapter(nn.Module):
    """The model-facing input embedding: a compressed module plus the family's embed scale."""

    def __init__(self, compressed: CompressedEmbedding, embed_scale: torch.Tensor | None = None):
        super().__init__()
        self.compressed = compressed
        self.num_embeddings = compressed.num_embeddings
        self.embedding_dim = compressed.embedding_dim
        if embed_scale is not None:
            self.register_buffer("embed_scale", embed_scale.clone(), persistent=False)
        else:
            self.embed_scale = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.compressed(ids)
        if self.embed_scale is not None:  # Gemma multiplies looked-up rows by sqrt(hidden)
            out = out * self.embed_scale.to(out.dtype)
        return out


class SharedHead(nn.Module):
    """An LM head computing logits from the compressed module instead of a dense matrix."""

    def __init__(self, compressed: CompressedEmbedding, bias: torch.Tensor | None = None):
        super().__init__()
        self.compressed = compressed
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.compressed.head_logits(hidden)
        return logits if self.bias is None else logits + self.bias


@contextmanager
def swapped_modules(model, input_module: nn.Module, output_module: nn.Module):
    """Run `model` with other input-embedding and head modules, restoring them afterwards."""
    old_in, old_out = model.get_input_embeddings(), model.get_output_embeddings()
    model.set_input_embeddings(input_module)
    model.set_output_embeddings(output_module)
    try:
        yield model
    finally:
        model.set_input_embeddings(old_in)
        model.set_output_embeddings(old_out)


def swapped_embedding(model, compressed: CompressedEmbedding, head_policy: str = "dense"):
    """Temporarily run `model` with `compressed` as input embedding (and head, if `shared`)."""
    old_in, old_out = model.get_input_embeddings(), model.get_output_embeddings()
    new_in = EmbeddingAdapter(compressed, getattr(old_in, "embed_scale", None))
    shared = head_policy == "shared"
    new_out = SharedHead(compressed, getattr(old_out, "bias", None)) if shared else old_out
    return swapped_modules(model, new_in, new_out)


def input_table(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def compress_model(model, compressed: CompressedEmbedding | None, head_policy: str = "dense"):
    """Install `compressed` as the input embedding (None = baseline, left untouched)."""
    if head_policy not in HEAD_POLICIES:
        raise ValueError(f"unknown head_policy {head_policy!r}; allowed: {HEAD_POLICIES}")
    if compressed is None:
        return model
    old = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if head_policy == "shared" and head is None:
        raise ValueError("head_policy 'shared' needs a model with an LM head")
    tied = head is not None and head.weight is old.weight
    if tied and head_policy == "dense":
        head.weight = nn.Parameter(old.weight.detach())  # the head keeps the dense table
    model.set_input_embeddings(EmbeddingAdapter(compressed, getattr(old, "embed_scale", None)))
    # an untied head is a matrix of its own, not the input table: rebuilding it from the
    # compressed input table would replace the model's head, so it stays dense (`head_in_use`
    # says so in every row)
    if head_policy == "shared" and tied:
        model.set_output_embeddings(SharedHead(compressed, getattr(head, "bias", None)))
    # HFLM calls model.tie_weights(): it must not re-tie the head to the new module
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    return model


def head_in_use(model, head_policy: str) -> str:
    """What serves as the LM head: "shared" (the compressed table), "dense", or "dense
    (untied)" where a shared head was asked for but the model's head is its own matrix."""
    if isinstance(model.get_output_embeddings(), SharedHead):
        return "shared"
    return "dense (untied)" if head_policy == "shared" else "dense"


def _unique_tensors(module: nn.Module) -> list[torch.Tensor]:
    seen, tensors = set(), []
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            tensors.append(t)
    return tensors


def tensor_bytes(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in _unique_tensors(module))


def count_bytes(model) -> dict[str, int]:
    """Parameter counts and bytes per module, tied tensors counted once.

    A shared head's reused compressed module is counted with the embedding, not again here.
    """
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    emb_ids = {id(t) for t in _unique_tensors(emb)}
    head_tensors = [t for t in _unique_tensors(head) if id(t) not in emb_ids] if head else []
    emb_tensors = _unique_tensors(emb)
    return {
        "embedding_params": sum(t.numel() for t in emb_tensors),
        "embedding_bytes": sum(t.numel() * t.element_size() for t in emb_tensors),
        "head_bytes": sum(t.numel() * t.element_size() for t in head_tensors),
        "model_param_bytes": tensor_bytes(model),
    }
