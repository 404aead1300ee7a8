"""`python -m see bench-heal`: healing tokens/s per stage, before and after the speed levers.

One compressed model (default: SVD at CR 10 on smollm2-135m) is healed for a few steps under
each variant of `VARIANTS`, from the same starting state, on this machine, in this process:
the first variant of each stage is the old default (the "before"), the others are the levers.
Each variant runs one untimed warm-up step first. Rows: tokens/s, the last loss, and the token
perplexity after the timed steps on the first `selection_tokens` tokens of WikiText-2
validation (the healing text itself: a same-text check that a faster variant did not heal
worse per token, not a held-out score).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
import sys
import time
from pathlib import Path

import torch

from see.config import STAGES

# Each stage's settings before issue 18, every lever pinned: a variant changes only what its
# name says, so the "before" stays the before whatever HealConfig's defaults become (a variant
# left to the defaults silently measured compile = true once compile became the default).
OLD = {
    "stage1": {
        "align_layers": (-1,),
        "row_loss": "raw",
        "autocast": "off",
        "cache_hidden": False,
        "compile": False,
    },
    "stage2": {"teacher_top_k": 0, "autocast": "off", "compile": False},
}
BF16, COMPILED = {"autocast": "bf16"}, {"compile": True}
NO_ROWS, CACHED, TOP64 = {"row_loss": "none"}, {"cache_hidden": True}, {"teacher_top_k": 64}


def _variant(stage: str, *changes: dict, cache: str | None = None) -> tuple:
    settings = dict(OLD[stage])
    for change in changes:
        settings.update(change)
    return stage, settings, cache


VARIANTS = {  # name -> (stage, HealConfig settings, teacher cache); first of a stage = before
    "stage1 last layer, raw rows (old default)": _variant("stage1"),
    "stage1 last layer, no row terms": _variant("stage1", NO_ROWS),
    "stage1 layer 2, no row terms": _variant("stage1", NO_ROWS, {"align_layers": (2,)}),
    "stage1 last layer, no row terms, bf16": _variant("stage1", NO_ROWS, BF16),
    "stage1 last layer, no row terms, teacher computed": _variant(
        "stage1", NO_ROWS, CACHED, cache="fill"
    ),
    "stage1 last layer, no row terms, teacher from the cache": _variant(
        "stage1", NO_ROWS, CACHED, cache="read"
    ),
    "stage1 last layer, no row terms, bf16, teacher computed": _variant(
        "stage1", NO_ROWS, BF16, CACHED, cache="fill"
    ),
    "stage1 last layer, no row terms, bf16, teacher from the cache": _variant(
        "stage1", NO_ROWS, BF16, CACHED, cache="read"
    ),
    "stage1 last layer, no row terms, compiled, teacher from the cache": _variant(
        "stage1", NO_ROWS, COMPILED, CACHED, cache="read"
    ),
    "stage1 last layer, no row terms, bf16, compiled, teacher from the cache": _variant(
        "stage1", NO_ROWS, BF16, COMPILED, CACHED, cache="read"
    ),
    **{
        f"stage1 layer {layer}, no row terms, bf16, teacher {how}": _variant(
            "stage1", NO_ROWS, BF16, CACHED, {"align_layers": (layer,)}, cache=mode
        )
        for layer in (4, 8, 15)
        for how, mode in (("computed", "fill"), ("from the cache", "read"))
    },
    "stage2 full teacher, fp32 (old default)": _variant("stage2"),
    "stage2 full teacher, bf16": _variant("stage2", BF16),
    "stage2 teacher top-64, computed": _variant("stage2", TOP64, cache="fill"),
    "stage2 teacher top-64, from the cache": _variant("stage2", TOP64, cache="read"),
    "stage2 teacher top-64, compiled, from the cache": _variant(
        "stage2", TOP64, COMPILED, cache="read"
    ),
    "stage2 teacher top-64, bf16, computed": _variant("stage2", TOP64, BF16, cache="fill"),
    "stage2 teacher top-64, bf16, from the cache": _variant("stage2", TOP64, BF16, cache="read"),
    "stage2 teacher top-64, bf16, compiled, from the cache": _variant(
        "stage2", TOP64, BF16, COMPILED, cache="read"
    ),
}


def chosen_variants(stages: tuple[str, ...], only: str | None) -> list[str]:
    """The variants of `stages` whose name matches the regular expression `only` (all when
    None), each stage's first variant (its "before") always included. A "from the cache"
    variant reads what an earlier "computed" variant of the same settings stored: keep both."""
    firsts = {stage: name for name, (stage, _, _) in reversed(VARIANTS.items())}
    return [
        name
        for name, (stage, _, _) in VARIANTS.items()
        if stage in stages and (only is None or name == firsts[stage] or re.search(only, name))
    ]


def heal_speed(
    model: str = "smollm2-135m",
    method: str = "svd",
    ratio: float = 10.0,
    steps: int = 8,
    batch_size: int = 4,
    seq_len: int = 256,
    selection_tokens: int = 2048,
    data_dir: str | None = None,
    stages: tuple[str, ...] = STAGES,
    only: str | None = None,
) -> list[dict]:
    """One row per variant of `stages` (not stored: see `run_heal_speed`)."""
    import tempfile

    from see.config import GridConfig
    from see.evaluation.validation import token_perplexity, validation_ids
    from see.grid import Cell, build_model
    from see.heal import HealConfig, Healer, TeacherCache
    from see.heal_text import file_ids

    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"bench-heal stages {list(stages)}; allowed: {', '.join(STAGES)}")
    try:
        names = chosen_variants(stages, only)
    except re.error as error:
        raise ValueError(f"bench-heal --only {only!r}: not a regex ({error})") from None
    cfg = GridConfig(
        name="bench-heal",
        models=[model],
        methods=[method],
        ratios=[ratio],
        tasks={"wikitext": 1},
        data_dir=data_dir,
    )
    cell = Cell(model, method, float(ratio), "dense", 0)
    student, tok, _, teacher = build_model(cell, cfg)
    compressed = student.get_input_embeddings()
    start = copy.deepcopy(compressed.state_dict())
    check_ids = validation_ids(tok, selection_tokens, data_dir)
    initial_ppl = token_perplexity(student, check_ids)
    rows, cache_dir = [], tempfile.mkdtemp(prefix="see-teacher-")
    for name in names:
        stage, overrides, cache_mode = VARIANTS[name]
        budget = {"stage1_steps": 0, "stage2_steps": 0, f"{stage}_steps": steps}
        heal = HealConfig(batch_size=batch_size, seq_len=seq_len, **{**budget, **overrides})
        ids = file_ids(heal, tok, data_dir)
        compressed.load_state_dict(start)
        warm_up = dataclasses.replace(heal, **{f"{stage}_steps": 1})
        began = time.perf_counter()
        Healer(student, *teacher, warm_up, ids).run(stage)  # untimed (compiles where asked)
        warmup_s = time.perf_counter() - began
        compressed.load_state_dict(start)
        cache = TeacherCache(cache_dir, f"{model}|bench") if cache_mode else None
        summary = Healer(student, *teacher, heal, ids, cache=cache).run(stage)
        row = {
            "bench": "heal",
            "variant": name,
            "stage": stage,
            "heal_config": json.dumps(dataclasses.asdict(heal), sort_keys=True, default=str),
            "heal_tokens": summary["heal_tokens"],
            "heal_wall_s": summary["heal_wall_s"],
            "warmup_s": warmup_s,
            "tokens_per_s": summary["heal_tokens"] / summary["heal_wall_s"],
            "heal_last_loss": summary["heal_last_loss"],
            "validation_token_ppl": token_perplexity(student, check_ids),
            "initial_token_ppl": initial_ppl,
        }
        print(
            f"[bench-heal] {name}: {row['tokens_per_s']:.1f} tokens/s, token ppl "
            f"{row['validation_token_ppl']:.4g}",
            file=sys.stderr,
        )
        rows.append(row)
    return rows


def run_heal_speed(results_dir: str | Path = "results", **settings) -> Path:
    """Measure and store the rows in results/runs/<id>-bench-heal (a new run each time)."""
    from see.results import cell_key, device_name, open_run, provenance

    bound = inspect.signature(heal_speed).bind(**settings)
    bound.apply_defaults()  # every setting, defaults included, goes into the rows
    identity = {**bound.arguments, "target_cr": float(bound.arguments["ratio"])}
    store = open_run(results_dir, identity, "bench-heal")
    run_id = store.run_dir.name
    device = device_name()
    for row in heal_speed(**settings):
        ident = {
            **identity,
            "task": "bench-heal",
            "variant": row["variant"],
            "torch_threads": torch.get_num_threads(),
        }
        store.append([{**ident, **row, "cell_key": cell_key(ident), **provenance(run_id, device)}])
    print(summary(store.rows()))
    return store.run_dir


def summary(rows: list[dict]) -> str:
    """tokens/s per variant and the speed-up over its stage's first ("before") variant."""
    lines, before = [], {}
    for row in rows:
        base = before.setdefault(row["stage"], row["tokens_per_s"])
        lines.append(
            f"{row['variant']:<40} {row['tokens_per_s']:8.1f} tokens/s  "
            f"x{row['tokens_per_s'] / base:.2f}  token ppl "
            f"{row['validation_token_ppl']:.4g}"
        )
    return "\n".join(lines)
