"""Cells: a grid config expanded into (model, method, ratio, head policy, seed, options).

A cell is a pure function of its config, so any executor can run it; int8/int4 get one cell at
their own ratio, deterministic methods one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from see.config import GridConfig


@dataclass(frozen=True)
class Cell:
    model: str
    method: str
    target_cr: float
    head_policy: str
    seed: int
    method_options: tuple[tuple[str, object], ...] = ()

    def options_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.method_options)


def check_methods(cfg: GridConfig) -> None:
    """What only the method layer knows (the config itself is checked without torch): every
    method registered, every option set builds its options dataclass, batch_size "auto" only
    with a GPU. Called before a run folder exists and before any model loads."""
    from see.methods import get_method

    for method in cfg.methods:
        get_method(method)  # raises for an unknown method, listing the registered ones
    for method, variants in cfg.method_options.items():
        for options in variants if isinstance(variants, list) else [variants]:
            try:
                get_method(method).make_options(options)
            except (TypeError, ValueError) as err:
                raise ValueError(f"grid {cfg.name!r}: {err}") from err
    if cfg.batch_size == "auto":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"grid {cfg.name!r}: batch_size 'auto' needs a GPU; use an int")


def expand(cfg: GridConfig) -> list[Cell]:
    check_methods(cfg)
    cells = []
    for model in cfg.models:
        for method in cfg.methods:
            variants = cfg.method_options.get(method, {})
            for opts in variants if isinstance(variants, list) else [variants]:
                options = tuple(sorted(opts.items()))
                cells += _method_cells(cfg, model, method, options)
    return cells


def _method_cells(cfg: GridConfig, model: str, method: str, options: tuple) -> list[Cell]:
    from see.methods import get_method

    cls = get_method(method)
    fixed = cls.fixed_ratio(cls.make_options(dict(options)))  # int8, int4: one ratio each
    ratios = [1.0] if method == "baseline" else [fixed] if fixed else cfg.ratios
    policies = ["dense"] if method == "baseline" else cfg.head_policies
    seeds = cfg.seeds if is_trained(method) else cfg.seeds[:1]  # baseline, SVD: deterministic
    return [
        Cell(model, method, float(ratio), policy, seed, options)
        for ratio in ratios
        for policy in policies
        for seed in seeds
    ]


def is_trained(method: str) -> bool:
    from see.methods import get_method

    return get_method(method).trained
