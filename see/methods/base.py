"""The interface every embedding replacement implements."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

# field metadata of an option added after cells were published, whose default fits exactly as
# before: results keys leave it out at that default (see.compress.resolved_options)
KEYED_WHEN_SET = "keyed_when_set"


class UnreachableCR(ValueError):
    """The target CR cannot be reached by this method at this size (k, R or rank < 1)."""


def check_target_cr(target_cr: float) -> float:
    if not isinstance(target_cr, (int, float)) or not 1 < target_cr < math.inf:
        raise ValueError(f"target compression ratio must be a finite number > 1, got {target_cr!r}")
    return float(target_cr)


def check_table(table: torch.Tensor) -> torch.Tensor:
    if table.ndim != 2:
        raise ValueError(f"embedding table must be 2-D (V x d), got shape {tuple(table.shape)}")
    bad = (~torch.isfinite(table)).any(dim=1).nonzero().flatten()
    if len(bad):
        raise ValueError(
            f"embedding table has {len(bad)} rows with NaN/inf values (first ids: "
            f"{bad[:5].tolist()})"
        )
    return table


def check_option_type(method: str, name: str, value: Any, hint: Any) -> None:
    """An option of the wrong type (e.g. `freq_weight = "a"`, a TOML string for a number)
    fails naming the option, before its dataclass compares it with anything. Numbers must be
    finite. The value is kept as given (an int stays an int: it is part of the cell key)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return
    kinds = [t for t in allowed if t in (bool, int, float, str)]
    if not kinds:
        return  # a type we do not check here: the dataclass validates it
    ok = any(option_value_is(value, kind) for kind in kinds)
    if ok and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"option {name}={value!r} of method {method!r} must be finite")
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(
            f"option {name}={value!r} of method {method!r} must be {names}, "
            f"not {type(value).__name__}"
        )


def option_value_is(value: Any, kind: type) -> bool:
    """Is `value` a `kind` as an option means it: a bool is only a bool (not an int), an int
    is also a float."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


@dataclass
class FitContext:
    """What the harness, not a config, gives a method's fit: the cell's seed, the tokenizer,
    the data folder, a device, a checkpoint scorer (candidate -> lower is better), the
    WikiText-2 validation token counts and the embedding dimensions' Fisher, each computed on
    first use (most fits never ask)."""

    seed: int = 0
    tokenizer: Any = None
    data_dir: str | None = None
    device: str | None = None
    checkpoint_score: Callable[[CompressedEmbedding], float] | None = None
    count_tokens: Callable[[], torch.Tensor] | None = None
    input_fisher: Callable[[], torch.Tensor] | None = None
    _counts: torch.Tensor | None = field(default=None, repr=False)
    _fisher: torch.Tensor | None = field(default=None, repr=False)

    @property
    def token_counts(self) -> torch.Tensor | None:
        if self._counts is None and self.count_tokens is not None:
            self._counts = self.count_tokens()
        return self._counts

    @property
    def dim_fisher(self) -> torch.Tensor | None:
        """Per embedding dimension, the model's loss sensitivity (see.compress.input_fisher)."""
        if self._fisher is None and self.input_fisher is not None:
            self._fisher = self.input_fisher()
        return self._fisher


CONTEXT_KEYWORDS = {f.name for f in dataclasses.fields(FitContext)} - {"_counts", "_fisher"}


class CompressedEmbedding(nn.Module):
    """Maps token ids to d-vectors with fewer stored numbers than the V x d table.

    Subclasses set `Options` and implement `fit`, `forward` and, where they can do better than
    materialising the table, `head_logits` (logits of a head that reuses this module).
    """

    name: ClassVar[str]
    # the method's options: a dataclass with defaults, validated in __post_init__; rows and
    # saved folders record it with every default resolved
    Options: ClassVar[type] = NoOptions
    # trained methods use ctx.seed and ctx.checkpoint_score (the grid: an initial-perplexity
    # scorer on WikiText-2 validation tokens)
    trained: ClassVar[bool] = False
    # a shared head may keep the rebuilt V x d table between calls (see head_logits)
    caches_head: ClassVar[bool] = True

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.options: dict[str, Any] = {}
        self.fit_report: dict[str, float] = {}
        self.head_cache = True  # see head_logits
        self._head_table: tuple | None = None

    @classmethod
    def fit(
        cls, table: torch.Tensor, target_cr: float, options: Any, ctx: FitContext
    ) -> CompressedEmbedding:
        """The method's replacement for `table` at `target_cr` (each method implements it)."""
        raise NotImplementedError

    @classmethod
    def make_options(cls, options: dict) -> Any:
        """The options dataclass from a config table; unknown names and bad values raise."""
        allowed = sorted(f.name for f in dataclasses.fields(cls.Options))
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {cls.name!r}; allowed: {allowed}"
            )
        hints = typing.get_type_hints(cls.Options)
        for name, value in options.items():
            check_option_type(cls.name, name, value, hints.get(name))
        return cls.Options(**options)

    @classmethod
    def compress_table(
        cls, table: torch.Tensor, target_cr: float, options: Any, ctx: FitContext
    ) -> CompressedEmbedding:
        """`fit` with the options recorded on the module (saved folders keep them)."""
        torch.manual_seed(ctx.seed)
        module = cls.fit(table, target_cr, options, ctx)
        module.options = dataclasses.asdict(options)
        return module

    @classmethod
    def from_table(
        cls, table: torch.Tensor, target_cr: float = 1.0, **keywords
    ) -> CompressedEmbedding:
        """Scripts' shortcut: options and FitContext fields as keywords (`token_counts` and
        `dim_fisher` may be tensors), e.g. `from_table(table, 10, steps=50, seed=1)`."""
        context = {k: keywords.pop(k) for k in list(keywords) if k in CONTEXT_KEYWORDS}
        counts = keywords.pop("token_counts", None)
        if counts is not None:
            context["count_tokens"] = lambda: counts
        fisher = keywords.pop("dim_fisher", None)
        if fisher is not None:
            context["input_fisher"] = lambda: fisher
        ctx = FitContext(**context)
        return cls.compress_table(table, target_cr, cls.make_options(keywords), ctx)

    @classmethod
    def fixed_ratio(cls, options: Any) -> float | None:
        """The one byte ratio a method with these options reaches whatever the target (int8,
        int4), else None: a grid gives such a method one cell at it, not one per ratio."""
        return None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def report_columns(self, tokenizer, data_dir: str | None) -> dict[str, Any]:
        """Extra row columns a method reports about itself (SEE: its mapping's coverage)."""
        return {}

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this module's shapes (tensors may be empty)."""
        raise NotImplementedError

    @torch.no_grad()
    def materialize(self, chunk_size: int = 8192) -> torch.Tensor:
        """The full V x d table, built chunk by chunk of ids."""
        device = next(iter([*self.parameters(), *self.buffers()])).device
        ids = torch.arange(self.num_embeddings, device=device)
        return torch.cat([self(chunk) for chunk in ids.split(chunk_size)])

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits `hidden @ E^T` of a tied head that reuses this module.

        Rebuilding the table costs more than the matmul (SEE: R * q**n numbers per row), so
        with `head_cache` on, the table is kept between calls until a parameter changes
        (tensor version counters): decode runs at dense-head speed, at the price of a V x d
        activation that is not stored in the model's files but does count in peak memory.
        Methods whose rows are cheap to rebuild (`caches_head = False`: the quantizers) and
        `head_cache = False` compute the logits chunk by chunk of rows instead, so no V x d
        table ever exists and the model's bytes really drop.
        """
        if not (self.head_cache and self.caches_head):
            return self.chunked_logits(hidden)
        versions = [(t.data_ptr(), t._version) for t in [*self.parameters(), *self.buffers()]]
        key = (hidden.device, hidden.dtype, *versions)
        if self._head_table is None or self._head_table[0] != key:
            self._head_table = (key, None)  # drop the old table before building a new one
            self._head_table = (key, self.materialize().to(hidden.dtype))
        return hidden @ self._head_table[1].T

    def chunked_logits(self, hidden: torch.Tensor, chunk_size: int = 8192) -> torch.Tensor:
        """`hidden @ E^T` from `chunk_size` rebuilt rows at a time (no V x d table)."""
        ids = torch.arange(self.num_embeddings, device=hidden.device)
        logits = hidden.new_empty(*hidden.shape[:-1], self.num_embeddings)
        for chunk in ids.split(chunk_size):
            logits[..., chunk[0] : chunk[-1] + 1] = hidden @ self(chunk).to(hidden.dtype).T
        return logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters()) + sum(b.numel() for b in self.buffers())

    def num_bytes(self) -> int:
        """Bytes stored (the saved state): an index derived at load is runtime memory only."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    @property
    def reached_cr(self) -> float:
        return self.num_embeddings * self.embedding_dim / self.num_params()

    @property
    def byte_cr(self) -> float:
        """fp32 table bytes (V * d * 4, the tables as loaded) / the bytes this module stores."""
        return self.num_embeddings * self.embedding_dim * 4 / self.num_bytes()

    @torch.no_grad()
    def reconstruction_report(self, table: torch.Tensor) -> dict[str, float]:
        """Relative Frobenius error and mean row cosine of the rebuilt table against `table`."""
        rebuilt = self.materialize().to(table.dtype)
        rel_error = (torch.linalg.norm(rebuilt - table) / torch.linalg.norm(table)).item()
        cos = nn.functional.cosine_similarity(rebuilt, table, dim=1).mean().item()
        return {"fit_rel_error": rel_error, "fit_mean_cos": cos}
