"""Grid configs: a small dataclass loaded from benchmarks/<preset>.toml and validated once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class GridConfig:
    name: str
    models: list[str]
    methods: list[str]
    ratios: list[float]
    tasks: dict[str, int | None]  # task -> limit (documents); None = the whole split
    head_policies: list[str] = field(default_factory=lambda: ["dense"])
    tie_source: str = "as_loaded"
    # method -> options, or a list of option sets (one cell per set: variants of a method)
    method_options: dict[str, dict | list[dict]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    max_length: int = 2048
    batch_size: int | str = 1  # an int, or "auto" (lm-eval's search; GPU only, CONTRACTS.md)
    bootstrap_iters: int = 1000
    num_fewshot: int | None = None
    dtype: str = "float32"
    data_dir: str | None = None
    # trained methods pick their checkpoint by token perplexity on this many WikiText-2
    # validation tokens (the paper's "initial perplexity" selection; never the test split)
    selection_tokens: int = 2048
    # healing (see/heal.py HealConfig fields); None = initial quality only
    heal: dict | None = None
    # memory/throughput benchmark settings (see/bench/run.py BenchSettings fields)
    bench: dict | None = None

    def __post_init__(self):
        validate(self)

    def config_hash(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def validate(cfg: GridConfig) -> None:
    from see.methods import get_method
    from see.models.surgery import HEAD_POLICIES
    from see.models.zoo import TIE_SOURCES

    for name in ("models", "methods", "ratios", "tasks", "head_policies", "seeds"):
        if not getattr(cfg, name):
            raise ValueError(f"grid {cfg.name!r}: {name} must not be empty")
    for method in cfg.methods:
        get_method(method)  # raises for an unknown method, listing the registered ones
    for method, variants in cfg.method_options.items():
        if method not in cfg.methods:
            raise ValueError(f"grid {cfg.name!r}: method_options for {method!r}, not in methods")
        for options in variants if isinstance(variants, list) else [variants]:
            check_method_options(cfg.name, method, options)
    for ratio in cfg.ratios:
        if not isinstance(ratio, (int, float)) or not ratio > 1:
            raise ValueError(f"grid {cfg.name!r}: compression ratio must be > 1, got {ratio!r}")
    for policy in cfg.head_policies:
        if policy not in HEAD_POLICIES:
            raise ValueError(f"grid {cfg.name!r}: unknown head policy {policy!r}; {HEAD_POLICIES}")
    if cfg.tie_source not in TIE_SOURCES:
        raise ValueError(f"grid {cfg.name!r}: unknown tie_source {cfg.tie_source!r}; {TIE_SOURCES}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"grid {cfg.name!r}: unknown dtype {cfg.dtype!r}; allowed: {DTYPES}")
    for task, limit in cfg.tasks.items():
        if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
            raise ValueError(
                f"grid {cfg.name!r}: limit of task {task!r} must be > 0, got {limit!r}"
            )
    if cfg.heal is not None:
        from see.heal import HealConfig

        try:
            HealConfig(**cfg.heal)
        except TypeError as err:
            raise ValueError(f"grid {cfg.name!r}: bad [heal] table: {err}") from err
    if cfg.bench is not None:
        from see.bench.run import BenchSettings

        try:
            BenchSettings(**cfg.bench)
        except TypeError as err:
            raise ValueError(f"grid {cfg.name!r}: bad [bench] table: {err}") from err
    if cfg.batch_size != "auto" and not (isinstance(cfg.batch_size, int) and cfg.batch_size >= 1):
        raise ValueError(
            f"grid {cfg.name!r}: batch_size must be >= 1 or 'auto', got {cfg.batch_size!r}"
        )
    if cfg.batch_size == "auto":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"grid {cfg.name!r}: batch_size 'auto' needs a GPU; use an int")
    if cfg.selection_tokens < 16:
        raise ValueError(
            f"grid {cfg.name!r}: selection_tokens must be >= 16, got {cfg.selection_tokens}"
        )
    if cfg.max_length < 16:
        raise ValueError(f"grid {cfg.name!r}: max_length must be >= 16, got {cfg.max_length}")


def check_method_options(grid: str, method: str, options) -> None:
    """Options must build the method's options dataclass: known names, allowed values."""
    from see.methods import get_method

    if not isinstance(options, dict):
        raise ValueError(f"grid {grid!r}: options of {method!r} must be a table, got {options!r}")
    try:
        get_method(method).make_options(options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"grid {grid!r}: {err}") from err


def load_grid(preset: str | Path, **overrides) -> GridConfig:
    """A preset name (benchmarks/<name>.toml) or a TOML path -> validated GridConfig."""
    path = Path(preset)
    if not path.suffix:
        path = BENCHMARKS / f"{preset}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in BENCHMARKS.glob("*.toml"))
        raise FileNotFoundError(f"no grid config {str(path)!r}; presets: {known}")
    raw = tomllib.loads(path.read_text())
    raw.setdefault("name", path.stem)
    # TOML has no null: a task limit of 0 or "all" means the whole split
    raw["tasks"] = {t: (None if v in (0, "all") else v) for t, v in raw.get("tasks", {}).items()}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    allowed = {f.name for f in dataclasses.fields(GridConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return GridConfig(**raw)
