"""`int8` and `int4`: symmetric per-group scalar quantization of the rows (what users pick first).

Each row is cut into groups of `group_size` values (default 32); a group stores one scale
s = max|x| / qmax (qmax = 127 for int8, 7 for int4) as fp16 and its values as round(x / s),
clamped to [-qmax, qmax]. int4 values are packed two per byte (low nibble = even column), or
the bytes would not drop: bytes = V*d*bits/8 + 2*V*d/group_size. The ratio of these methods is
a byte ratio: `reached_cr` = `byte_cr` = fp32 table bytes / stored bytes, a fixed number per
(bits, group size); a target above it is unreachable (a row says so), a target below it is met.

Why not torchao: on this project's CPU, torchao 0.18.0's `IntxWeightOnlyConfig(int4,
PerGroup(32))` keeps one byte per int4 value (`IntxUnpackedToInt8Tensor`: 32.7 MB for a
49,152 x 576 table, 3.5x), and a tensor subclass does not go through `save_compressed`'s plain
safetensors. Packing by hand is a few lines that run alike on CPU and GPU. The fp16 scales are
kept as their int16 bit pattern, so that `module.to(float32)` (the harness's dtype) does not
widen them: what is counted is what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from see.methods.base import (
    CompressedEmbedding,
    FitContext,
    UnreachableCR,
    check_table,
    check_target_cr,
)
from see.methods.registry import register

CODES_DTYPES = ("float32", "int8")  # storage of SVD's / the autoencoder's V x k factor


def quantize_groups(table: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, ...]:
    """(codes int8 V x d, fp16 scales V x d/group) of the symmetric per-group quantizer."""
    vocab, dim = table.shape
    qmax = 2 ** (bits - 1) - 1
    groups = table.float().reshape(vocab, dim // group, group)
    scales = (groups.abs().amax(-1) / qmax).half()
    safe = torch.where(scales == 0, torch.ones_like(scales), scales).float()  # all-zero groups
    codes = (groups / safe[..., None]).round().clamp(-qmax, qmax).to(torch.int8)
    return codes.reshape(vocab, dim), scales


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7] (V x d, d even) -> uint8 V x d/2, two values per byte."""
    nibbles = (codes.to(torch.int16) + 8).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).flatten(-2)


class Int8Rows(nn.Module):
    """A V x k factor stored as int8 with one fp16 scale per row (symmetric, qmax 127).

    The `codes_dtype = "int8"` storage of SVD's left factor and the autoencoder's codes: a
    factorisation and a quantization combined. Per-row rather than per-group scales, because k
    can be smaller than any group (k = 7 at CR 80): bytes = V*k + 2*V, relative row error
    <= 1/254 of the row's largest value per entry.
    """

    def __init__(self, codes: torch.Tensor, scale_bits: torch.Tensor):
        super().__init__()
        self.register_buffer("codes", codes)  # int8 V x k
        self.register_buffer("scale_bits", scale_bits)  # fp16 scales (V) as int16 bits

    @classmethod
    def quantize(cls, matrix: torch.Tensor) -> Int8Rows:
        codes, scales = quantize_groups(matrix, 8, matrix.shape[1])
        return cls(codes, scales.view(torch.int16).flatten())

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Dequantized rows `ids` (all rows when None), float32."""
        codes, bits = (
            (self.codes, self.scale_bits)
            if ids is None
            else (self.codes[ids], self.scale_bits[ids])
        )
        return codes.float() * bits.view(torch.float16).float()[..., None]


def check_codes_dtype(method: str, codes_dtype: str) -> str:
    if codes_dtype not in CODES_DTYPES:
        raise ValueError(f"{method} codes_dtype={codes_dtype!r}; allowed: {CODES_DTYPES}")
    return codes_dtype


def factor_rows(factor: nn.Parameter | Int8Rows, ids: torch.Tensor | None = None) -> torch.Tensor:
    """Rows `ids` (all when None) of a V x k factor stored in fp32 or as Int8Rows."""
    if isinstance(factor, Int8Rows):
        return factor(ids)
    return factor if ids is None else nn.functional.embedding(ids, factor)


@dataclass(frozen=True)
class QuantizedOptions:
    """Values per fp16 scale (each group of `group_size` values shares one)."""

    group_size: int = 32

    def __post_init__(self):
        if not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(f"group_size={self.group_size!r}; allowed: an int >= 2 dividing d")


class QuantizedEmbedding(CompressedEmbedding):
    bits: ClassVar[int]
    # a shared head dequantizes chunks of rows per call: a cached fp32 table would undo the
    # byte saving, and dequantizing costs little next to the matmul
    caches_head = False

    def __init__(self, codes: torch.Tensor, scale_bits: torch.Tensor, dim: int, group_size: int):
        super().__init__(codes.shape[0], dim)
        self.group_size = group_size
        self.register_buffer("codes", codes)  # int8 V x d, or uint8 V x d/2 packed (int4)
        self.register_buffer("scale_bits", scale_bits)  # fp16 scales as int16 bits

    Options = QuantizedOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: QuantizedOptions, ctx: FitContext
    ) -> QuantizedEmbedding:
        table = check_table(table)
        vocab, dim = table.shape
        group_size = options.group_size
        if dim % group_size:
            allowed = [g for g in range(2, dim + 1) if dim % g == 0][:12]
            raise ValueError(
                f"{cls.name} group_size={group_size!r} must divide d={dim}; allowed e.g. {allowed}"
            )
        reachable = cls.fixed_ratio(options)
        if check_target_cr(target_cr) > reachable + 1e-9:
            raise UnreachableCR(
                f"{cls.name} with group_size {group_size} stores {reachable:.3g}x fewer bytes "
                f"than fp32; byte ratio {target_cr:g} is out of its reach"
            )
        codes, scales = quantize_groups(table, cls.bits, group_size)
        stored = pack_int4(codes) if cls.bits == 4 else codes
        module = cls(stored, scales.view(torch.int16), dim, group_size)
        module.fit_report = module.reconstruction_report(table.float())
        return module

    @classmethod
    def fixed_ratio(cls, options: QuantizedOptions) -> float:
        return 32 / (cls.bits + 16 / options.group_size)

    def init_kwargs(self) -> dict:
        return {
            "codes": self.codes,
            "scale_bits": self.scale_bits,
            "dim": self.embedding_dim,
            "group_size": self.group_size,
        }

    def dequantize(self, codes: torch.Tensor, scale_bits: torch.Tensor) -> torch.Tensor:
        values = unpack_int4(codes) if self.bits == 4 else codes
        scales = scale_bits.view(torch.float16).float()
        groups = values.float().unflatten(-1, (-1, self.group_size))
        return groups.mul_(scales[..., None]).flatten(-2)  # in place: one fp32 chunk, not two

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dequantize(self.codes[ids], self.scale_bits[ids])

    @property
    def reached_cr(self) -> float:
        return self.byte_cr


@register("int8")
class Int8Embedding(QuantizedEmbedding):
    bits = 8


@register("int4")
class Int4Embedding(QuantizedEmbedding):
    bits = 4
