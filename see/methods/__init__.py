"""Embedding replacements. Importing this package registers every method."""

from see.methods import (  # noqa: F401
    autoencoder,
    baseline,
    groupreduce,
    noise,
    pq,
    quantized,
    see,
    svd,
    word2ket,
)
from see.methods.base import CompressedEmbedding
from see.methods.registry import METHODS, get_method, register

__all__ = ["METHODS", "CompressedEmbedding", "get_method", "register"]
