"""`pq`: product quantization of the rows (Jegou et al. 2011), the other tool users reach for,
with an optional second, residual stage for the most frequent tokens.

Each d-row is cut into m sub-vectors of d/m values; sub-space j has a codebook of 2**bits
centroids (k-means on the rows' j-th sub-vectors) and a row stores, per sub-space, the id of
its nearest centroid: uint8 for bits <= 8, packed two per byte for bits <= 4 (16 centroids or
fewer; m even), int16 past 8 bits. The target is a byte ratio (fp32 table bytes / stored
bytes, so `reached_cr` = `byte_cr`): m is the largest divisor of d whose bytes fit V*d*4 /
target (`subvectors` fixes it instead). Fewer bits buy more, shorter sub-vectors.

Frequency, the lever GroupReduce (Chen et al. 2018) showed matters: a few thousand tokens carry
most of any text.
- `freq_weight`: k-means weighs each row by (count + 1) ** freq_weight (WikiText-2 validation
  counts, rowfit.py's rule), so centroids sit where text goes.
- `residual_share` > 0: that share of the byte budget buys a second pq over the residuals
  (row - stage-1 row) of the most frequent tokens (ties: lower id first), with
  `residual_subvectors` sub-vectors (0: sub-vectors of at least 6 values, or as many as the
  bytes afford where the stage covers every token, at low ratios); stage 1 takes the
  largest m that fits the rest, and whatever its m leaves over goes to stage 2 too: the
  number of residual tokens K is what the bytes afford, so the byte ratio lands on the target
  (a plain pq can only step between divisors of d). The K token ids are stored (int32, sorted:
  a lookup is a searchsorted), so the tier membership is counted in the bytes like the codes
  and the codebooks of both stages (fp32; fp16 with `codebook_dtype = "float16"`; `"int8"`
  or `"int4"` with one fp16 scale per dimension and stage).
- `residual_tiers` > 1: the residual bytes buy that many stages, each a pq over the
  residuals the stages before it left, of the most frequent tokens its share affords (the
  bytes left split evenly over the tiers left: at equal m every tier covers the same tokens,
  fewer than one tier would). Tier t's ids, codes and codebooks are stored as
  `residual{t}_*` (tier 1: `residual_*`) and counted. Measured worse than one tier at 20-80x.
- `counts`: `wikitext` (validation counts) or `token_order` (frequency.py, no corpus needed).
- `dim_weight`: `fisher` weighs each embedding dimension by the model's loss sensitivity to
  it (the squared input gradient on validation text): k-means runs on the table scaled by
  sqrt(Fisher), the codebooks are scaled back; `none` treats dimensions alike; `auto`
  (default) is `fisher` up to 40x and `none` beyond.
Defaults, chosen on held-out text (docs/methods.md, RESULTS.md): `freq_weight` 1.0,
`residual_share` auto (0.25 up to about 28x, 0.5 up to about 57x, 0.65 beyond), `bits` 0
(auto: 256 centroids unless the codebooks take too much), `codebook_dtype` auto (float16;
int8 where fp16 codebooks would take 9% of the bytes or more, int4 from 30%: SmolLM2 from
about 17x and 58x, Gemma 3 from 92x), `dim_weight` auto.

k-means is faiss's (`faiss.Kmeans`, one per sub-space, k-means++ seeding, on every row: its
uniform sample would drop frequent rows and their weight; `kmeans_rows` caps the rows with a
sample that keeps them, threshold_sample); codes are each sub-vector's nearest centroid.
Random seeding is faster but misses well-separated clusters (tests/test_quantized.py). The
sub-spaces are fitted in parallel, one per thread (a k-means of a few dimensions gains little
from more threads; the centroids are the same on any number). faiss runs on the CPU whatever
the harness's device: plain pq at 20x on SmolLM2 fits in 19 s (run
20261206-103243-heldout-sweep), where the torch k-means it replaced took 308 s at 10x (run
20261206-062626-smoke). faiss's other quantizers are not offered, for their bytes: OPQ's
learned rotation is d x d stored numbers (12% of the bytes at 20x on SmolLM2 in fp16, 23% at
40x), and residual or additive quantizers (RQ, LSQ) use full-width codebooks (2**bits x d
numbers per stage), whose cost a 49k-262k row table cannot amortize at 20-80x; the residual
tiers above are a product residual quantizer confined to the frequent tokens.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import faiss
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from see.methods.base import (
    KEYED_WHEN_SET,
    CompressedEmbedding,
    FitContext,
    UnreachableCR,
    check_table,
    check_target_cr,
)
from see.methods.dimweight import check_dim_weight, dimension_scale
from see.methods.frequency import check_counts_source, frequency_order, token_counts
from see.methods.quantized import pack_int4, unpack_int4
from see.methods.registry import register
from see.methods.rowfit import RowFit, check_counts, row_probs

ID_BYTES = 4  # a residual tier's token ids are stored as int32
# `bits = 0`: codebooks may take this share of the bytes. On SmolLM2 (heldout-sweep runs
# 20261206-095522 and 20261206-100826) 256 centroids won at 20x and 40x (codebooks 21% and 42%
# of the bytes); at 80x they would take 83%, and 128 or 64 centroids (42%, 21%) tied in domain.
CODEBOOK_SHARE = 0.45
# `residual_share = "auto"`: (up to this byte ratio, share). The best share grows with the
# ratio; on SmolLM2's held-out text (WikiText / MRPC / SST-2; heldout-sweep runs
# 20261207-143952 and 20261207-141458): at 10x 0.25 beat 0.35 and 0.5 on all three, at 20x
# 0.25 and 0.35 beat 0.5 on all three (tied with each other), 0.5 won at 40x out of domain,
# 0.65 won at 80x on all three. On Gemma 3 (run 20261207-144343) the divisors of d = 640 make
# shares coincide: 0.35 = 0.5 at 20x (0.65 worse), 0.5 = 0.65 at 80x (0.35 worse); at 40x
# 0.35 beat 0.5 on all three texts where on SmolLM2 0.5 won out of domain, so 40x keeps 0.5,
# the old default. The bounds are the geometric midpoints of the ratios measured. At 80x
# 0.75 and 0.85 tie or lose on both models (runs 20261207-174934, 20261207-175205); on Gemma 3
# at 10x 0.5 beats 0.25 on all three texts by about 1% at the same bytes (run 20261207-175935).
AUTO_RESIDUAL_SHARE = ((28.3, 0.25), (56.6, 0.5), (float("inf"), 0.65))
# `kmeans_rows` below this many rows per centroid is refused: too few to place the centroids
MIN_POINTS_PER_CENTROID = 4


def packs(bits: int) -> bool:
    """Codes of 16 centroids or fewer are stored two per byte."""
    return bits <= 4


# bytes per stored codebook number; integer codebooks also store one fp16 scale per dimension
# (int4: two values per byte)
CODEBOOK_DTYPES = {"float32": 4, "float16": 2, "int8": 1, "int4": 0.5}
INTEGER_LEVELS = {"int8": 127, "int4": 7}  # symmetric: values in [-levels, levels]
SCALE_BYTES = 2
# `codebook_dtype = "auto"`: (the fp16 codebooks of every stage would take at least this share
# of the byte budget, the dtype stored). Integer codebooks free bytes for codes where the
# codebooks are a large share (a small vocabulary at a high ratio) and cost more by their
# rounding than they free where the share is small. Held-out text (WikiText / MRPC / SST-2),
# SmolLM2 (runs 20261207-195939-heldout-sweep, 20261207-202138-heldout-sweep): at 20x (fp16
# codebooks 10% of the bytes) int8 beat fp16 and int4 on all three texts; at 40x (21%) int8
# and int4 beat fp16 by 6-13% and tie with each other; at 80x (42%) int4 beat int8 and int8
# fp16 on all three. Gemma 3 (run 20261207-200616-heldout-sweep; 2%, 4%, 8% at 20x, 40x,
# 80x): int8 lost at 20x on all three texts and was mixed at 40x and 80x. The bounds are the
# geometric midpoints of the shares measured.
AUTO_CODEBOOK_DTYPE = ((0.30, "int4"), (0.09, "int8"), (0.0, "float16"))


def codebook_bytes(dim: int, bits: int, dtype: str = "float32") -> int:
    """One stage's codebooks: 2**bits centroids of d numbers (integers: plus d fp16 scales)."""
    scales = dim * SCALE_BYTES if dtype in INTEGER_LEVELS else 0
    return int((2**bits) * dim * CODEBOOK_DTYPES[dtype]) + scales


def codebook_dtype(dtype: str, dim: int, budget: float, stages: int) -> str:
    """`codebook_dtype = "auto"`: by the share of the budget 256-centroid fp16 codebooks of
    every stage would take (AUTO_CODEBOOK_DTYPE); a dtype is itself."""
    if dtype != "auto":
        return dtype
    share = stages * codebook_bytes(dim, 8, "float16") / budget
    return next(chosen for at_least, chosen in AUTO_CODEBOOK_DTYPE if share >= at_least)


def pq_bytes(rows: int, dim: int, m: int, bits: int, dtype: str = "float32") -> int:
    codes = rows * m // 2 if packs(bits) else rows * m * (1 if bits <= 8 else 2)
    return codes + codebook_bytes(dim, bits, dtype)


def allowed_subvectors(dim: int, bits: int) -> list[int]:
    """The m that divide d (and are even where codes are packed two per byte)."""
    return [m for m in range(1, dim + 1) if dim % m == 0 and not (packs(bits) and m % 2)]


def choose_subvectors(
    rows: int, dim: int, budget: float, bits: int, what: str, dtype: str = "float32"
) -> int:
    """The largest allowed m whose stored bytes fit `budget` bytes."""
    allowed = allowed_subvectors(dim, bits)
    fits = [m for m in allowed if pq_bytes(rows, dim, m, bits, dtype) <= budget]
    if not fits:
        raise UnreachableCR(
            f"pq with {2**bits} centroids: {what} ({rows} x {dim}) needs at least "
            f"{pq_bytes(rows, dim, allowed[0], bits, dtype):,} bytes (m = {allowed[0]}) "
            f"but has {budget:,.0f}; the byte ratio is out of reach"
        )
    return max(fits)


def threshold_sample(
    weights: np.ndarray | None, rows: int, size: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """At most about `size` of `rows` rows for k-means, and their weights (threshold sampling,
    Duffield et al. 2005): a row of weight w >= t is kept with its own weight, a lighter one
    with probability w / t and then weighs t, so every row's expected weight is its own and
    the frequent rows are never dropped (faiss's own sample is uniform: it would drop them).
    t is set so that the expected number kept is `size`. Unweighted rows: a uniform sample.
    No sample (size 0, or room for every row): (None, weights), kmeans's "every row"."""
    if size <= 0 or rows <= size:
        return None, weights
    rng = np.random.default_rng(seed)
    if weights is None:
        return np.sort(rng.choice(rows, size, replace=False)), None
    w = weights.astype(np.float64)
    low, high = 0.0, float(w.max()) * rows / size  # expected kept: >= size at low, <= at high
    for _ in range(100):
        t = (low + high) / 2
        low, high = (t, high) if np.minimum(1.0, w / t).sum() > size else (low, t)
    keep = np.flatnonzero(rng.random(rows) < np.minimum(1.0, w / high))
    return keep, np.maximum(w[keep], high).astype(np.float32)


def kmeans(
    points: np.ndarray,
    k: int,
    iters: int,
    weights: np.ndarray | None,
    seed: int,
    train: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means of points (N, s) -> (centroids (k, s), each point's centroid id (N,)),
    trained on the rows `train` (default: all) with `weights` (one per trained row)."""
    fitted = points if train is None else points[train]
    km = faiss.Kmeans(
        points.shape[1],
        k,
        niter=iters,
        seed=seed,
        max_points_per_centroid=-(-len(fitted) // k),
        min_points_per_centroid=1,  # a small residual tier is fine: no warning per sub-space
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    )
    km.train(np.ascontiguousarray(fitted), weights=weights)
    return km.centroids, km.index.search(points, 1)[1][:, 0]


def product_quantize(
    rows: torch.Tensor,
    m: int,
    bits: int,
    iters: int,
    weights: torch.Tensor | None,
    seed: int,
    kmeans_rows: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rows (N, d) -> (codes (N, m) long, codebooks (m, 2**bits, d/m)); k-means trains on at
    most about `kmeans_rows` rows (0: all; threshold_sample), every row gets its code."""
    n, dim = rows.shape
    if n < 2**bits:
        raise ValueError(f"pq needs at least {2**bits} rows for {2**bits} centroids, got {n}")
    points = rows.float().reshape(n, m, dim // m).transpose(0, 1).contiguous().numpy()
    w = None if weights is None else weights.float().numpy()
    train, w = threshold_sample(w, n, kmeans_rows, seed)

    def subspace(j: int) -> tuple[np.ndarray, np.ndarray]:
        # one sub-space per thread, each k-means on one core: a k-means of a few dimensions
        # gains little from a second thread, and faiss gives the same centroids either way
        faiss.omp_set_num_threads(1)
        return kmeans(points[j], 2**bits, iters, w, seed + j, train)

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        fitted = list(
            tqdm(
                pool.map(subspace, range(m)),
                total=m,
                desc=f"pq k-means ({n} rows, m={m})",
                mininterval=2,
            )
        )
    codebooks = [torch.from_numpy(centroids) for centroids, _ in fitted]
    codes = [torch.from_numpy(assign.astype(np.int64)) for _, assign in fitted]
    return torch.stack(codes, dim=1), torch.stack(codebooks)


def store_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes as stored: two per byte (bits <= 4), uint8 (<= 8), int16 past 8 bits."""
    if packs(bits):
        return pack_int4((codes - 8).to(torch.int8))
    return codes.to(torch.uint8 if bits <= 8 else torch.int16)


def decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Stored codes (..., m or m/2) -> rows (..., d)."""
    if codebooks.shape[1] <= 16:
        codes = unpack_int4(codes) + 8
    slots = torch.arange(codebooks.shape[0], device=codes.device)
    return codebooks[slots, codes.long()].flatten(-2)


def frequent_tokens(counts: torch.Tensor, k: int) -> torch.Tensor:
    """The k most frequent token ids, sorted by id (ties in count: the lower id)."""
    return frequency_order(counts)[:k].sort().values.to(torch.int32)


@dataclass(frozen=True)
class PQOptions:
    """Bits per code (2**bits centroids per sub-space), m (0: from the byte target), k-means
    iterations, the row weights of the other fitted methods (rowfit.py), and the residual tier:
    `residual_share` of the bytes for a second pq of the most frequent tokens' residuals, with
    `residual_subvectors` sub-vectors (0: auto); share 0 is plain pq. `counts`: where token
    frequencies come from (frequency.py: `wikitext` validation counts, or `token_order`, the
    data-free proxy)."""

    bits: int = 0
    subvectors: int = 0
    iters: int = 25
    sampling: str = "freq"
    freq_weight: float = 1.0
    # `auto`: by the byte ratio (AUTO_RESIDUAL_SHARE); a number in [0, 1) fixes it
    residual_share: float | str = "auto"
    # more tiers (the same frequent tokens, more stages) lost at 20x, 40x and 80x in domain
    # and out of it (heldout-sweep run 20261206-162503): the residual tier's reach, not its
    # depth, keeps quality
    residual_tiers: int = field(default=1, metadata={KEYED_WHEN_SET: True})
    # `fisher`: k-means in a space where each dimension is scaled by the square root of its
    # Fisher (the model's loss sensitivity, see.compress.input_fisher), so the quantization
    # error lands where the model minds it least; the codebooks are scaled back, nothing more
    # is stored. `auto`: fisher up to FISHER_UP_TO, none beyond (heldout-sweep run
    # 20261206-171154: fisher won at 20x and 40x in domain and out; at 80x it won in domain
    # and lost out of domain)
    dim_weight: str = "auto"
    # 0: sub-vectors of at least 6 values (SmolLM2: 96). Coarser ones reach more tokens and
    # lost at 20x, 40x and 80x; finer ones (144, 192) tied in domain and lost out of it at 20x
    # (heldout-sweep runs 20261207-181123, 20261207-182640)
    residual_subvectors: int = 0
    counts: str = "wikitext"
    # the codebooks' stored dtype: float16 halves their bytes (fp32 ones take 21-42% of the
    # bytes of 256-centroid pq at 20-40x on SmolLM2) and the bytes go to codes; the model
    # always computes with the stored (rounded) values. float16 won over float32 at 20x, 40x
    # and 80x in domain and out of it (heldout-sweep run 20261206-132558); `auto` picks
    # float16, int8 or int4 by the codebooks' share of the bytes (AUTO_CODEBOOK_DTYPE)
    codebook_dtype: str = "auto"
    # k-means trains on at most about this many rows, the frequent ones always among them
    # (threshold_sample); 0: every row. Every row is still encoded.
    kmeans_rows: int = field(default=0, metadata={KEYED_WHEN_SET: True})

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 0 <= self.bits <= 12:
            raise ValueError(f"pq bits={self.bits!r}; allowed: an int from 1 to 12, or 0 (auto)")
        if not isinstance(self.residual_tiers, int) or not 1 <= self.residual_tiers <= 8:
            raise ValueError(
                f"pq residual_tiers={self.residual_tiers!r}; allowed: an int from 1 to 8"
            )
        zero_means = {"subvectors": "auto", "residual_subvectors": "auto", "kmeans_rows": "all"}
        for name, zero in zero_means.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"pq {name}={value!r}; allowed: an int >= 0 (0: {zero})")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"pq iters={self.iters!r}; allowed: an int >= 1")
        share = self.residual_share
        if share != "auto" and not (isinstance(share, (int, float)) and 0 <= share < 1):
            raise ValueError(
                f"pq residual_share={share!r}; allowed: 0 <= x < 1 (0: no residual stage) "
                "or 'auto' (by the byte ratio)"
            )
        check_counts_source("pq", self.counts)
        check_dim_weight("pq", self.dim_weight)
        if self.codebook_dtype not in (*CODEBOOK_DTYPES, "auto"):
            raise ValueError(
                f"pq codebook_dtype={self.codebook_dtype!r}; allowed: "
                f"{(*CODEBOOK_DTYPES, 'auto')} (auto: by the codebooks' share of the bytes)"
            )
        self.levers()

    def levers(self) -> RowFit:
        return RowFit(sampling=self.sampling, freq_weight=self.freq_weight)


def residual_share(share: float | str, target_cr: float) -> float:
    """`residual_share = "auto"`: the share measured best at the nearest measured byte ratio
    (AUTO_RESIDUAL_SHARE); a number is itself."""
    if share != "auto":
        return float(share)
    return next(s for up_to, s in AUTO_RESIDUAL_SHARE if target_cr <= up_to)


def auto_bits(dim: int, budget: float, stages: int, dtype: str = "float32") -> int:
    """`bits = 0`: the widest code (8 down to 4 bits) whose codebooks, `stages` of them, take
    at most CODEBOOK_SHARE of the byte budget."""
    fits = [
        b
        for b in range(8, 3, -1)
        if stages * codebook_bytes(dim, b, dtype) <= CODEBOOK_SHARE * budget
    ]
    return fits[0] if fits else 4


def residual_subvectors(dim: int, bits: int) -> int:
    """The residual stage's default m: the largest allowed m with sub-vectors of >= 6 values."""
    return max([m for m in allowed_subvectors(dim, bits) if dim // m >= 6] or [1])


def residual_tokens(remainder: float, dim: int, m: int, bits: int, dtype: str = "float32") -> int:
    """How many tokens a residual stage of m sub-vectors affords in `remainder` bytes."""
    per_token = pq_bytes(1, dim, m, bits) - pq_bytes(0, dim, m, bits) + ID_BYTES
    return int((remainder - codebook_bytes(dim, bits, dtype)) // per_token)


def scaled_back(codebooks: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Codebooks (m, k, d/m) fitted on table * scale, as codebooks of the table itself."""
    m, _, sub = codebooks.shape
    return codebooks / scale.view(m, 1, sub)


def as_integers(codebooks: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codebooks (m, k, d/m) as stored: (int8 values in [-levels, levels], fp16 scales
    (m, 1, d/m): one per dimension, its largest centroid value mapped to `levels`)."""
    levels = INTEGER_LEVELS[dtype]
    amax = codebooks.detach().abs().amax(dim=1, keepdim=True)
    scale = (amax / levels).clamp_min(torch.finfo(torch.float16).tiny).half()
    values = (codebooks.detach() / scale.to(codebooks.dtype)).round().clamp(-levels, levels)
    return values.to(torch.int8), scale


def as_stored(codebooks: torch.Tensor, codebook_dtype: str) -> torch.Tensor:
    """The codebook values the model computes with: rounded to the stored dtype (the
    rounding passes gradients through, so healing trains the fp32 values beneath)."""
    if codebook_dtype == "float32":
        return codebooks
    if codebook_dtype == "float16":
        return codebooks.half().to(codebooks.dtype)
    values, scale = as_integers(codebooks, codebook_dtype)
    stored = values.to(codebooks.dtype) * scale.to(codebooks.dtype)
    return codebooks + (stored - codebooks).detach()


def codebooks_as_stored(module, state_dict, prefix, local_metadata) -> None:
    """State-dict hook: codebooks saved in the dtype they are counted and used in (integers:
    with their scales, as `<name>_scale`; int4 packed two per byte)."""
    dtype = module.codebook_dtype
    for name in [n for n in state_dict if n.startswith(prefix) and n.endswith("codebooks")]:
        if dtype == "float16":
            state_dict[name] = state_dict[name].half()
            continue
        values, state_dict[name + "_scale"] = as_integers(state_dict[name], dtype)
        state_dict[name] = pack_int4(values.reshape(1, -1)) if dtype == "int4" else values


def integer_codebooks_loaded(module, state_dict, prefix, *args) -> None:
    """Load hook: integer codebooks and their scales back into the fp32 parameters."""
    for name in [n for n in state_dict if n.startswith(prefix) and n.endswith("codebooks_scale")]:
        scale = state_dict.pop(name).float()
        values = name.removesuffix("_scale")
        stored = state_dict[values]
        if module.codebook_dtype == "int4":
            stored = unpack_int4(stored).reshape(scale.shape[0], -1, scale.shape[2])
        state_dict[values] = stored.float() * scale


def tier_names(tier: int) -> tuple[str, str, str]:
    """The stored names of residual tier `tier` (1, 2, ...): its token ids, codes, codebooks
    (tier 1 keeps the names models were saved with before there were several)."""
    prefix = "residual_" if tier == 1 else f"residual{tier}_"
    return prefix + "ids", prefix + "codes", prefix + "codebooks"


@register("pq")
class PQEmbedding(CompressedEmbedding):
    # a shared head decodes chunks of rows per call: a cached fp32 table would undo the saving
    caches_head = False

    def __init__(
        self,
        codes: torch.Tensor,
        codebooks: torch.Tensor,
        codebook_dtype: str = "float32",
        **tiers: torch.Tensor,
    ):
        """`tiers`: per residual tier t = 1, 2, ... its sorted token ids, codes and codebooks
        under `tier_names(t)`."""
        m, k, sub = codebooks.shape
        super().__init__(codes.shape[0], m * sub)
        if codes.shape[1] != (m // 2 if k <= 16 else m):
            raise ValueError(f"pq codes {tuple(codes.shape)} do not match {m} sub-spaces of {k}")
        # V x m uint8 (V x m/2, two per byte, for 16 centroids or fewer; int16 past 256)
        self.register_buffer("codes", codes)
        self.codebook_dtype = codebook_dtype
        self.codebooks = nn.Parameter(codebooks.float())  # m x 2**bits x d/m
        self.tiers = 0
        while tier_names(self.tiers + 1)[0] in tiers:  # the K frequent tokens' ids (sorted)
            self.tiers += 1
            ids, tier_codes, tier_codebooks = tier_names(self.tiers)
            self.register_buffer(ids, tiers.pop(ids))
            self.register_buffer(tier_codes, tiers.pop(tier_codes))
            setattr(self, tier_codebooks, nn.Parameter(tiers.pop(tier_codebooks).float()))
        if tiers:
            raise TypeError(f"pq: unexpected arguments {sorted(tiers)}")
        if codebook_dtype != "float32":  # saved (and counted) in the dtype they are used in
            self.register_state_dict_post_hook(codebooks_as_stored)
        if codebook_dtype in INTEGER_LEVELS:  # integers and scales back into fp32 on load
            self.register_load_state_dict_pre_hook(integer_codebooks_loaded)

    def stored(self, codebooks: nn.Parameter) -> torch.Tensor:
        return as_stored(codebooks, self.codebook_dtype)

    Options = PQOptions

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: PQOptions, ctx: FitContext
    ) -> PQEmbedding:
        original = check_table(table).float()
        vocab, dim = original.shape
        check_target_cr(target_cr)
        budget = vocab * dim * 4 / target_cr
        subvectors, share = options.subvectors, residual_share(options.residual_share, target_cr)
        stages = options.residual_tiers if share else 0
        dtype = codebook_dtype(options.codebook_dtype, dim, budget, 1 + stages)
        bits = options.bits or auto_bits(dim, budget, 1 + stages, dtype)
        if 0 < options.kmeans_rows < MIN_POINTS_PER_CENTROID * 2**bits:
            raise ValueError(
                f"pq kmeans_rows={options.kmeans_rows}; allowed: 0 (every row) or at least "
                f"{MIN_POINTS_PER_CENTROID * 2**bits} ({MIN_POINTS_PER_CENTROID} per centroid of "
                f"the {2**bits} this fit has)"
            )
        # fitted where an error costs what the model minds (None: every dimension alike)
        scale = dimension_scale(options.dim_weight, ctx, dim, target_cr, "pq")
        table = original if scale is None else original * scale
        m2 = options.residual_subvectors or residual_subvectors(dim, bits)
        for name, m in (("subvectors", subvectors), ("residual_subvectors", m2)):
            if m and m not in allowed_subvectors(dim, bits):
                packed = (
                    " and be even (bits <= 4: codes packed two per byte)" if packs(bits) else ""
                )
                raise ValueError(f"pq {name}={m} must divide d={dim}{packed}")
        levers = options.levers()
        counts = token_counts(ctx, options.counts, vocab) if levers.needs_counts or share else None
        weights = row_probs(levers, counts if levers.needs_counts else None, vocab)
        m = subvectors or choose_subvectors(
            vocab, dim, (1 - share) * budget, bits, "the table", dtype
        )
        codes, codebooks = product_quantize(
            table, m, bits, options.iters, weights, ctx.seed, options.kmeans_rows
        )
        rebuilt = decode(store_codes(codes, bits), as_stored(codebooks, dtype))
        remainder = budget - pq_bytes(vocab, dim, m, bits, dtype)
        tiers, report = {}, {"pq_bits": bits, "pq_subvectors": m, "pq_residual_share": share}
        report["pq_codebook_dtype"] = dtype
        for tier in range(1, stages + 1):
            # the bytes left split evenly over the tiers left: what one leaves goes to the next
            part = remainder / (stages - tier + 1)
            tokens, m_tier = residual_tokens(part, dim, m2, bits, dtype), m2
            if tokens >= vocab and stages == 1 and not options.residual_subvectors:
                m_tier = choose_subvectors(  # every token fits: finer sub-vectors instead
                    vocab, dim, part - vocab * ID_BYTES, bits, "stage 2", dtype
                )
            if tokens < 2**bits:
                raise UnreachableCR(
                    f"pq residual_share={share}: residual tier {tier} (m = {m2}) affords "
                    f"{max(tokens, 0)} tokens at byte ratio {target_cr:g}, fewer than its "
                    f"{2**bits} centroids; lower the share, the tiers or the ratio"
                )
            tokens = min(tokens, vocab)
            ids = frequent_tokens(check_counts(counts, vocab, "residual_share"), tokens)
            rows = ids.long()
            residual = table[rows] - rebuilt[rows]
            tier_weights = None if weights is None else weights[rows]
            seed = ctx.seed + 1000 * (tier - 1)  # tier 1 as fitted before there were more
            tier_codes, tier_codebooks = product_quantize(
                residual, m_tier, bits, options.iters, tier_weights, seed, options.kmeans_rows
            )
            tier_codes = store_codes(tier_codes, bits)
            rebuilt[rows] += decode(tier_codes, as_stored(tier_codebooks, dtype))
            remainder -= pq_bytes(tokens, dim, m_tier, bits, dtype) + tokens * ID_BYTES
            tiers |= dict(zip(tier_names(tier), (ids, tier_codes, tier_codebooks), strict=True))
            suffix = "" if tier == 1 else str(tier)
            report |= {f"pq_residual{suffix}_subvectors": m_tier}
            report |= {f"pq_residual{suffix}_tokens": tokens}
        if scale is not None:  # the codebooks back in the table's own space
            codebooks = scaled_back(codebooks, scale)
            tiers = {
                n: scaled_back(t, scale) if n.endswith("codebooks") else t for n, t in tiers.items()
            }
        module = cls(store_codes(codes, bits), codebooks, dtype, **tiers)
        if module.byte_cr < target_cr - 1e-9:
            raise UnreachableCR(
                f"pq with m={m}: byte ratio {module.byte_cr:.3g} < target {target_cr:g}"
            )
        module.fit_report = {**module.reconstruction_report(original), **report}
        return module

    def init_kwargs(self) -> dict:
        kwargs = {
            "codes": self.codes,
            "codebooks": self.codebooks,
            "codebook_dtype": self.codebook_dtype,
        }
        for tier in range(1, self.tiers + 1):
            kwargs |= {name: getattr(self, name) for name in tier_names(tier)}
        return kwargs

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = decode(self.codes[ids], self.stored(self.codebooks))
        for tier in range(1, self.tiers + 1):
            tier_ids, codes, codebooks = (getattr(self, n) for n in tier_names(tier))
            members = tier_ids.to(ids.dtype)
            slot = torch.searchsorted(members, ids).clamp_max(len(members) - 1)
            hit = members[slot] == ids
            extra = decode(codes[slot[hit]], self.stored(codebooks))
            rows = rows.index_put(hit.nonzero(as_tuple=True), extra.to(rows.dtype), accumulate=True)
        return rows

    @property
    def reached_cr(self) -> float:
        return self.byte_cr
