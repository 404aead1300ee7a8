"""`pq`: product quantization of the rows (Jegou et al. 2011), the other tool users reach for.

Each d-row is cut into m sub-vectors of d/m values; sub-space j has a codebook of 2**bits
centroids (k-means on the rows' j-th sub-vectors) and a row stores, per sub-space, the id of
its nearest centroid: uint8 for bits <= 8, packed two per byte for bits <= 4 (16 centroids or
fewer; m even), int16 past 8 bits. Bytes = V*m*bytes-per-code + m * 2**bits * (d/m) * 4 (fp32
codebooks), so `reached_cr` = `byte_cr` = fp32 table bytes / stored bytes. The target is a
byte ratio: m is the largest divisor of d whose bytes fit V*d*4 / target (`subvectors` fixes
it instead). Fewer bits buy more, shorter sub-vectors at the same bytes (4 bits: twice the m).

k-means: a torch implementation (k-means++ seeding, then `iters` (25) Lloyd iterations),
batched over the m sub-spaces, rather than faiss-cpu: it is a few lines, runs
on the GPU as it is, needs no extra dependency, and takes the row weights that the other
fitted methods get: `sampling` / `freq_weight` as in rowfit.py (weighted centroid updates;
default uniform rows, `freq_weight = 0`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from see.methods.base import (
    CompressedEmbedding,
    FitContext,
    UnreachableCR,
    check_table,
    check_target_cr,
)
from see.methods.quantized import pack_int4, unpack_int4
from see.methods.registry import register
from see.methods.rowfit import RowFit, row_probs


def packs(bits: int) -> bool:
    """Codes of 16 centroids or fewer are stored two per byte."""
    return bits <= 4


def pq_bytes(vocab: int, dim: int, m: int, bits: int) -> int:
    codes = vocab * m // 2 if packs(bits) else vocab * m * (1 if bits <= 8 else 2)
    return codes + (2**bits) * dim * 4


def allowed_subvectors(dim: int, bits: int) -> list[int]:
    """The m that divide d (and are even where codes are packed two per byte)."""
    return [m for m in range(1, dim + 1) if dim % m == 0 and not (packs(bits) and m % 2)]


def choose_subvectors(vocab: int, dim: int, target: float, bits: int) -> int:
    """The largest allowed m whose stored bytes reach the target byte ratio."""
    budget = vocab * dim * 4 / target
    allowed = allowed_subvectors(dim, bits)
    fits = [m for m in allowed if pq_bytes(vocab, dim, m, bits) <= budget]
    if not fits:
        best = vocab * dim * 4 / pq_bytes(vocab, dim, allowed[0], bits)
        raise UnreachableCR(
            f"pq with {2**bits} centroids reaches at most byte ratio {best:.3g} (m = "
            f"{allowed[0]}) on a {vocab} x {dim} table; {target:g} is out of reach"
        )
    return max(fits)


def kmeans(
    points: torch.Tensor,
    k: int,
    iters: int,
    weights: torch.Tensor | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd k-means: points (m, N, s) -> (centroids (m, k, s), assignment (m, N))."""
    m, n, _ = points.shape
    w = torch.ones(n, device=points.device) if weights is None else weights.to(points)
    centroids = kmeans_plus_plus(points, k, w, generator)
    for _ in tqdm(range(iters), desc=f"pq k-means (m={m}, k={k})", mininterval=2):
        assign = nearest(points, centroids)
        sums = torch.zeros_like(centroids).scatter_add_(
            1, assign[..., None].expand_as(points), points * w[None, :, None]
        )
        mass = torch.zeros(m, k, device=points.device).scatter_add_(
            1, assign, w.expand(m, n).contiguous()
        )
        centroids = torch.where(
            mass[..., None] > 0, sums / mass.clamp_min(1e-12)[..., None], centroids
        )  # empty clusters keep their centroid
    return centroids, nearest(points, centroids)


def kmeans_plus_plus(
    points: torch.Tensor, k: int, w: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Seeding by D**2 sampling (Arthur & Vassilvitskii 2007), per sub-space: (m, k, s).

    Draws by inverse CDF (cumsum + searchsorted), about 10x faster than torch.multinomial
    over m x V probabilities at each of the k steps."""
    m, n, _ = points.shape
    slots = torch.arange(m, device=points.device)
    first = torch.multinomial(w.cpu().double(), 1, generator=generator).to(points.device)
    chosen = [points[:, first[0]]]
    dist = (points - chosen[0][:, None]).pow(2).sum(-1)  # (m, N) to the nearest seed so far
    for _ in tqdm(range(1, k), desc=f"pq k-means++ seeds (m={m})", mininterval=2):
        cdf = (dist * w).double().cumsum(1)
        u = torch.rand(m, 1, generator=generator, dtype=torch.float64).to(cdf) * cdf[:, -1:]
        # right=True never picks a zero-mass point; all covered (total 0): the last point
        pick = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(n - 1)
        chosen.append(points[slots, pick])
        dist = torch.minimum(dist, (points - chosen[-1][:, None]).pow(2).sum(-1))
    return torch.stack(chosen, dim=1)


def nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(m, N) id of each point's nearest centroid, in chunks of rows (m x chunk x k floats):
    argmin of |c|^2 - 2 x.c (|x|^2 is the same for every centroid)."""
    c_sq = centroids.pow(2).sum(-1)[:, None, :]
    return torch.cat(
        [
            torch.baddbmm(c_sq, part, centroids.transpose(1, 2), alpha=-2).argmin(-1)
            for part in points.split(chunk, dim=1)
        ],
        dim=1,
    )


@dataclass(frozen=True)
class PQOptions:
    """Bits per code (2**bits centroids per sub-space), m (0: from the byte target), Lloyd
    iterations, and the row weights of the other fitted methods (rowfit.py)."""

    bits: int = 8
    subvectors: int = 0
    iters: int = 25
    sampling: str = "freq"
    freq_weight: float = 0.0

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 12:
            raise ValueError(f"pq bits={self.bits!r}; allowed: an int from 1 to 12")
        if not isinstance(self.subvectors, int) or self.subvectors < 0:
            raise ValueError(f"pq subvectors={self.subvectors!r}; allowed: an int >= 0 (0 auto)")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"pq iters={self.iters!r}; allowed: an int >= 1")
        self.levers()

    def levers(self) -> RowFit:
        return RowFit(sampling=self.sampling, freq_weight=self.freq_weight)


@register("pq")
class PQEmbedding(CompressedEmbedding):
    # a shared head decodes chunks of rows per call: a cached fp32 table would undo the saving
    caches_head = False

    def __init__(self, codes: torch.Tensor, codebooks: torch.Tensor):
        m, k, sub = codebooks.shape
        super().__init__(codes.shape[0], m * sub)
        self.packed = k <= 16
        if codes.shape[1] != (m // 2 if self.packed else m):
            raise ValueError(f"pq codes {tuple(codes.shape)} do not match {m} sub-spaces of {k}")
        # V x m uint8 (V x m/2, two per byte, for 16 centroids or fewer; int16 past 256)
        self.register_buffer("codes", codes)
        self.codebooks = nn.Parameter(codebooks)  # m x 2**bits x d/m

    Options = PQOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: PQOptions, ctx: FitContext
    ) -> PQEmbedding:
        table = check_table(table).float()
        vocab, dim = table.shape
        check_target_cr(target_cr)
        bits, subvectors = options.bits, options.subvectors
        if subvectors and subvectors not in allowed_subvectors(dim, bits):
            packed = " and be even (bits <= 4: codes packed two per byte)" if packs(bits) else ""
            raise ValueError(f"pq subvectors={subvectors} must divide d={dim}{packed}")
        m = subvectors or choose_subvectors(vocab, dim, target_cr, bits)
        levers = options.levers()
        weights = row_probs(levers, ctx.token_counts if levers.needs_counts else None, vocab)
        points = table.reshape(vocab, m, dim // m).transpose(0, 1).contiguous()
        generator = torch.Generator().manual_seed(ctx.seed)
        centroids, assign = kmeans(points, 2**bits, options.iters, weights, generator)
        codes = assign.T.contiguous()
        if packs(bits):
            codes = pack_int4((codes - 8).to(torch.int8))
        module = cls(codes.to(torch.uint8 if bits <= 8 else torch.int16), centroids)
        if module.byte_cr < target_cr - 1e-9:
            raise UnreachableCR(
                f"pq with m={m}: byte ratio {module.byte_cr:.3g} < target {target_cr:g}"
            )
        module.fit_report = {**module.reconstruction_report(table), "pq_subvectors": m}
        return module

    def init_kwargs(self) -> dict:
        return {"codes": self.codes, "codebooks": self.codebooks}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        codes = self.codes[ids]
        codes = (unpack_int4(codes) + 8 if self.packed else codes).long()  # (..., m)
        slots = torch.arange(self.codebooks.shape[0], device=codes.device)
        return self.codebooks[slots, codes].flatten(-2)

    @property
    def reached_cr(self) -> float:
        return self.byte_cr
