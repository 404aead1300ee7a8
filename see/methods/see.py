"""SEE: Sememe Entanglement Encoding (Zhang et al. 2024, arXiv 2412.12204), and `see_morph`.

Each token gets n units and e(t) = norm(sum_r kron(v_u1^r, ..., v_un^r)[:d]) (kronecker.py).
Slots: the first n - 1 hold what tokens share (ranked sememes, morphemes, a form unit, PAD;
see/sememes/units.py); the last slot holds a token-specific unit, one of H buckets the token's
id is hashed into (`token_buckets`, default: as many as the budget allows with the chosen R),
so the shared slots carry what tokens have in common and the last one what tells them apart:
every pair of tokens differs in at least one unit (tokens that share every shared unit get
different buckets). `token_buckets = 0` is the earlier design: n shared slots and a hashed
unit only for tokens whose tuples collide (`separate`).

The paper's code is not public; its open decisions are options here: `sememe_source` (hownet |
wordnet | auto | random: the WordNet/HowNet structure with sememes drawn at random per word,
same counts, the control for "does the sememe prior help"), `n` (order; default 0 = auto:
order 2 where its auto R reaches half its unit dimension q = ceil(sqrt(d)), else 3.
Order 2 gives each token a q x q rank-R product, richer than order 3's q = ceil(d ** (1/3)),
but its one shared slot makes thousands of tokens share every shared unit, they need as many
token buckets, and R falls with the budget. SmolLM2 (q = 24), order 2 against 3 at CR 10 / 20 /
40 / 80 (R = 24 / 13 / 6 / 2 at order 2): SEE 440.7 / 1,327 / 19,687 / 119,543 against 550.7 /
1,286 / 2,987 / 9,107; see_morph 606.0 / 975.9 / 12,918 / 118,427 against 611.7 / 1,483 /
4,176 / 31,180; runs `see-fit-levers`, `see-strength` 20261201-173512, `see-morph-ratios`.
Gemma 3 (q = 26), SEE at CR 10 / 40: order 2 (R = 52 / 17) 681.9 / 3,787 against order 3's
948.1 / 4,311, run `20261201-205628-see-strength-gemma`. The rule picks the better order at
every measured point but SEE on SmolLM2 at CR 20, where the two are within 3%),
`max_sememes` (default: shared slots - 1, at least 1), `max_units` (inventory cap; 0 = auto:
unit budget / (2 * 64 * q), so that the shared units take about half of the budget at R = 64
and the inventory shrinks with the budget instead of starving R: with a fixed 8,192-unit
inventory R fell to 3 at CR 40 and 1 at CR 80; R = 64 from run `20261125-070158-see-capacity`:
at CR 10 fewer shared units for a larger R gave 3,165 (R = 15, the old 2 * 16 * q rule) ->
1,286 (R = 32) -> 982 (R = 64) initial word perplexity), `hash_buckets` (buckets for rare units,
auto: at most max_units / 16), `token_slots` (`freq`, the default: one bucket slot, the H
most frequent tokens of WikiText-2 validation get a bucket each, in order, and only the rest
are hashed (with `token_buckets = 0` there is no bucket slot to order); `hash`: one bucket
slot, the token's id hashed; `digits`: the id's two base-sqrt(V) digits in the last two
slots, word2ketXS-style, nothing stored),
`rank` (R; 0 = auto), `token_buckets` (H; -1 = auto, 0 = none),
`norm` (affine | layernorm | none) and the row fit (rowfit.py: sampling, objective, schedule).

Counting: P = R*(|U| + H)*q + 2d (norm) + V*n (the token -> unit map is stored, int32, and
counted as numbers too). Auto R: the largest R <= `max_rank` that leaves at least as many
token buckets as shared units (H >= |U|), H then fills the budget; `see_morph` is the same
module without sememes (MorphTE-like): morphemes, characters and form units only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from see.methods.base import FitContext, UnreachableCR, check_table, check_target_cr
from see.methods.kronecker import (
    KroneckerEmbedding,
    check_norm,
    norm_params,
    rank_for_budget,
    unit_dim,
)
from see.methods.registry import register
from see.methods.rowfit import RowFit, check_counts

TOKEN_SLOTS = ("hash", "freq", "digits")
AUTO_RANK = 64  # max_units = 0: a shared inventory that leaves R about this large


def token_texts(tokenizer, vocab: int) -> list[str]:
    """Each id's text as its tokenizer decodes it alone ("" for rows past the tokenizer)."""
    n = min(len(tokenizer), vocab)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    texts = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
    return texts + [f"<row {i}>" for i in range(n, vocab)]


def slot_shapes(
    unit_budget: float,
    shared_units: int,
    q: int,
    rank: int,
    token_buckets: int,
    max_rank: int,
    what: str,
    largest_group: int = 1,
) -> tuple[int, int]:
    """(R, H) with R * (|U| + H) * q <= unit_budget; 0 / -1 = chosen here (module docstring):
    auto R leaves H >= |U| and H >= the largest group of tokens that share every shared unit
    (each of them needs its own bucket)."""
    if token_buckets > 0 and rank > 0:
        if rank * (shared_units + token_buckets) * q > unit_budget:
            raise UnreachableCR(f"{what}: R={rank} with H={token_buckets} exceeds the budget")
        return rank, token_buckets
    if token_buckets > 0:
        per_rank = (shared_units + token_buckets) * q
        return rank_for_budget(unit_budget, 0, per_rank, what), token_buckets
    if rank <= 0:
        need = shared_units + max(shared_units, largest_group)
        fits = [r for r in range(1, max_rank + 1) if unit_budget // (r * q) >= need]
        rank = max(fits, default=1)
    buckets = int(unit_budget // (rank * q)) - shared_units
    if buckets < 2:
        raise UnreachableCR(
            f"target CR not reachable for {what}: R={rank} leaves {buckets} token buckets "
            f"(the {shared_units} shared units alone need {rank * shared_units * q} numbers, "
            f"the unit budget is {unit_budget:.0f})"
        )
    return rank, buckets


def token_buckets_of(
    shared: torch.Tensor, buckets: int, counts: torch.Tensor | None = None
) -> torch.Tensor:
    """Hash each token id into one of `buckets`; tokens sharing every shared unit get distinct
    buckets (linear probing within the group), so no two tokens share all n units. With
    `counts` (token_slots = "freq") the `buckets` most frequent tokens get a bucket each, in
    order of frequency, and only the rest are hashed: a token text uses often then has a unit
    of its own, never one it shares with tokens text hardly uses."""
    ids = torch.arange(len(shared), dtype=torch.int64)
    start = (ids * 2654435761 + 97) % (2**32) % buckets  # Knuth's multiplicative hash
    order = ids
    if counts is not None:
        order = torch.sort(counts.double(), descending=True, stable=True).indices
        start[order[:buckets]] = torch.arange(min(buckets, len(order)))
    taken: dict[tuple, set[int]] = {}
    out = start.clone()
    keys = list(map(tuple, shared.tolist()))
    for token_id in order.tolist():
        used = taken.setdefault(keys[token_id], set())
        if len(used) >= buckets:
            raise UnreachableCR(
                f"{len(used) + 1} tokens share units {keys[token_id]}: more than H={buckets}"
            )
        bucket = int(start[token_id])
        while bucket in used:
            bucket = (bucket + 1) % buckets
        used.add(bucket)
        out[token_id] = bucket
    return out


class Layout(NamedTuple):
    """Which units each token has at order n, and the R that fills the budget with them."""

    n: int
    units: torch.Tensor  # V x (stored slots) unit ids
    names: list[str]  # unit id -> name
    rank: int
    radix: int  # token_slots = "digits": the digits' base, else 0
    report: dict  # the unit map's report (coverage, counts, token_buckets)


@dataclass(frozen=True)
class SEEOptions(RowFit):
    """SEE's open decisions (module doc) and the row fit's levers (rowfit.py)."""

    sampling: str = "freq"  # rows by (count + 1): runs `see-gemma-levers`, `see-token-slots`
    sememe_source: str = "auto"
    n: int = 0  # auto: order 2 while the budget leaves it rank, else 3 (module doc)
    max_sememes: int | None = None
    max_units: int = 0
    hash_buckets: int = 512
    separate: bool = True
    token_slots: str = "freq"
    token_buckets: int = -1
    rank: int = 0
    max_rank: int = 512
    norm: str = "affine"
    id_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        from see.sememes import resolve_source_name

        resolve_source_name(self.sememe_source)  # raises for an unknown source, listing them
        if not (isinstance(self.n, int) and (self.n >= 2 or self.n == 0)):
            raise ValueError(f"SEE order n must be an int >= 2 or 0 (auto), got {self.n!r}")
        if self.token_buckets < -1 or self.rank < 0 or self.max_rank < 1:
            raise ValueError(
                f"token_buckets must be >= -1 (-1 auto, 0 none), rank >= 0 (0 auto), max_rank "
                f">= 1; got {self.token_buckets}, {self.rank}, {self.max_rank}"
            )
        if self.max_units < 0 or self.hash_buckets < 1:
            raise ValueError(
                f"max_units must be >= 0 (0 auto) and hash_buckets >= 1; got "
                f"{self.max_units}, {self.hash_buckets}"
            )
        if self.max_sememes is not None and self.max_sememes < 1:
            raise ValueError(f"max_sememes must be >= 1 or unset, got {self.max_sememes}")
        if self.token_slots not in TOKEN_SLOTS:
            raise ValueError(f"token_slots={self.token_slots!r}; allowed: {TOKEN_SLOTS}")
        if self.token_slots == "digits" and self.n == 2:
            raise ValueError(f"token_slots='digits' needs n >= 3 (two digit slots), got n={self.n}")
        check_norm(self.norm)


@register("see")
class SEEEmbedding(KroneckerEmbedding):
    uses_sememes = True

    def __init__(
        self,
        token_units: torch.Tensor,
        num_units: int,
        dim: int,
        rank: int,
        norm: str,
        digit_radix: int = 0,
    ):
        n = token_units.shape[1] + (2 if digit_radix else 0)
        super().__init__(token_units.shape[0], dim, n, rank, num_units, norm)
        self.register_buffer("token_units", token_units.to(torch.int32))
        # token_slots="digits": the last two units are the id's base-v digits, computed from
        # the id (nothing stored), units num_units - 2v .. num_units - 1
        self.digit_radix = digit_radix
        self.mapping_report: dict = {}

    def init_kwargs(self) -> dict:
        return {
            "token_units": self.token_units,
            "num_units": self.vectors.shape[0],
            "dim": self.embedding_dim,
            "rank": self.rank,
            "norm": self.norm_kind,
            "digit_radix": self.digit_radix,
        }

    @torch.no_grad()
    def report_columns(self, tokenizer, data_dir: str | None) -> dict:
        """map_corpus_coverage: share of WikiText-2 validation tokens (first 50k) whose token
        has a sememe unit."""
        from see.evaluation.validation import validation_ids

        ids = validation_ids(tokenizer, 50_000, data_dir)
        has = torch.tensor([name.startswith("s:") for name in self.unit_names])
        return {
            "map_corpus_coverage": has[self.token_units[ids].long()].any(-1).float().mean().item()
        }

    def unit_ids(self, ids: torch.Tensor) -> torch.Tensor:
        shared = self.token_units[ids]
        if not self.digit_radix:
            return shared
        v = self.digit_radix
        first = self.vectors.shape[0] - 2 * v
        digits = torch.stack([first + ids // v, first + v + ids % v], dim=-1)
        return torch.cat([shared, digits.to(shared.dtype)], dim=-1)

    Options = SEEOptions

    @classmethod
    def layout(
        cls, table: torch.Tensor, target_cr: float, options: SEEOptions, ctx: FitContext, n: int
    ) -> Layout:
        """Order-n units of every token (shared slots, then the token slot or the id's digits)
        and the R and H that fill the budget (module doc)."""
        from see.sememes import get_source
        from see.sememes.units import build_unit_map

        norm, token_slots, token_buckets = options.norm, options.token_slots, options.token_buckets
        max_units, hash_buckets, rank = options.max_units, options.hash_buckets, options.rank
        sememe_source, max_sememes = options.sememe_source, options.max_sememes
        digits = token_slots == "digits"
        vocab, dim = table.shape
        source = None
        if cls.uses_sememes:
            randomize = sememe_source == "random"
            source = get_source("auto" if randomize else sememe_source, ctx.data_dir)
        shared_slots = n - 2 if digits else n - 1 if token_buckets else n
        q = unit_dim(dim, n)
        if max_units == 0:  # auto: the shared inventory scales with the budget (module doc)
            unit_budget = vocab * dim / target_cr - vocab * n - norm_params(norm, dim)
            max_units = max(64, int(unit_budget / (2 * AUTO_RANK * q)))
            hash_buckets = min(hash_buckets, max(16, max_units // 16))
        unit_map = build_unit_map(
            token_texts(ctx.tokenizer, vocab),
            n=shared_slots,
            source=source,
            max_sememes=max(1, shared_slots - 1) if max_sememes is None else max_sememes,
            max_units=max_units,
            hash_buckets=hash_buckets,
            separate=options.separate and not token_buckets and not digits,
            random_sememes=cls.uses_sememes and sememe_source == "random",
            seed=ctx.seed,
        )
        num_units = len(unit_map.units)
        fixed = vocab * shared_slots + norm_params(norm, dim)
        if not digits and token_buckets:
            fixed += vocab  # the bucket column is stored
        what = f"{cls.name} with {num_units} shared units (n={n})"
        units, names = unit_map.token_units, list(unit_map.units)
        radix = 0
        if digits:
            radix = unit_dim(vocab, 2)  # v = ceil(sqrt(V)): every id is a distinct digit pair
            names += [f"d1:{k}" for k in range(radix)] + [f"d2:{k}" for k in range(radix)]
            per_rank = len(names) * q
            rank = rank or min(
                rank_for_budget(vocab * dim / target_cr, fixed, per_rank, what), options.max_rank
            )
            buckets = 0
            unit_map.report["collision_rate_after"] = 0.0
        elif token_buckets:
            rank, buckets = slot_shapes(
                vocab * dim / target_cr - fixed,
                num_units,
                q,
                rank,
                token_buckets,
                options.max_rank,
                what,
                largest_group=int(torch.unique(units, dim=0, return_counts=True)[1].max()),
            )
            counts = None
            if token_slots == "freq":
                counts = check_counts(ctx.token_counts, vocab, "token_slots='freq'")
            slot = token_buckets_of(units, buckets, counts) + num_units
            units = torch.cat([units, slot[:, None].to(units.dtype)], dim=1)
            names += [f"t:{k}" for k in range(buckets)]
            unit_map.report["collision_rate_after"] = 0.0  # token_buckets_of guarantees it
        else:
            rank = rank or rank_for_budget(vocab * dim / target_cr, fixed, num_units * q, what)
            buckets = 0
        unit_map.report["token_buckets"] = buckets
        return Layout(n, units, names, rank, radix, unit_map.report)

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: SEEOptions, ctx: FitContext
    ) -> SEEEmbedding:
        check_target_cr(target_cr)
        table = check_table(table)
        if ctx.tokenizer is None:
            raise ValueError(f"{cls.name} needs the model's tokenizer (token texts -> units)")
        vocab, dim = table.shape
        if options.n:
            layout = cls.layout(table, target_cr, options, ctx, options.n)
        else:
            layout = cls.auto_order_layout(table, target_cr, options, ctx)
        rank, report = layout.rank, layout.report
        shown = (f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items())
        print(f"[{cls.name}] unit map: " + ", ".join(shown) + f", R={rank}")
        torch.manual_seed(ctx.seed)
        module = cls(layout.units, len(layout.names), dim, rank, options.norm, layout.radix)
        if module.num_params() > vocab * dim / target_cr:
            raise UnreachableCR(
                f"{cls.name} (n={layout.n}): {module.num_params()} numbers exceed the budget"
            )
        module.mapping_report = report
        module.unit_names = layout.names
        fitted = module.fit_to(table, options, ctx, target_cr)
        fitted.fit_report.update(
            {"see_rank": rank, "see_units": len(layout.names), "see_order": layout.n}
        )
        fitted.fit_report.update({f"map_{k}": v for k, v in report.items()})
        return fitted

    @classmethod
    def auto_order_layout(
        cls, table: torch.Tensor, target_cr: float, options: SEEOptions, ctx: FitContext
    ) -> Layout:
        """n = 0: order 2 where its rank reaches half its unit dimension (R >= q / 2), else 3
        (module doc: order 2 wins while the budget leaves it rank, and collapses after)."""
        if options.token_slots != "digits":
            try:
                two = cls.layout(table, target_cr, options, ctx, 2)
                if 2 * two.rank >= unit_dim(table.shape[1], 2):
                    return two
            except UnreachableCR:
                pass
        return cls.layout(table, target_cr, options, ctx, 3)


@register("see_morph")
class SEEMorphEmbedding(SEEEmbedding):
    """SEE without sememes (MorphTE-like): morphemes, characters, form units and PAD."""

    uses_sememes = False
