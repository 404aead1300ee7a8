"""Embedding replacements. Importing this package registers every method."""

from see.methods import autoencoder, baseline, pq, quantized, see, svd, word2ket  # noqa: F401
from see.methods.base import CompressedEmbedding
from see.methods.registry import METHODS, get_method, register

__all__ = ["METHODS", "CompressedEmbedding", "get_method", "register"]
