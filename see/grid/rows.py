"""The columns of a grid row: a (cell, task, healing stage)'s identity and settings (what
`results.cell_key` hashes), rows that say why a cell has no value, the log line per cell."""

from __future__ import annotations

import json

from see.config import GridConfig, perplexity_definition
from see.grid.cells import Cell, is_trained
from see.results import cell_key, provenance


def identity(cfg: GridConfig, cell: Cell, task: str, stage: str = "initial") -> dict:
    """The identity and settings columns of a (cell, task, healing stage) key."""
    limit = cfg.tasks[task]
    finetuned = stage == "finetune"
    heal = None if stage in ("initial", "finetune") else json.dumps(cfg.heal, sort_keys=True)
    identity = {
        "heal_config": heal,
        "model": cell.model,
        "method": cell.method,
        "method_options": cell.options_text(),
        "method_config": method_config(cell),
        "target_cr": cell.target_cr,
        "head_policy": cell.head_policy,
        "tie_source": cfg.tie_source,
        "sememe_source": sememe_source(cell),
        "heal_stage": stage,
        "task": task,
        "limit": limit,
        "max_length": cfg.max_length,
        "num_fewshot": 0 if finetuned else fewshot_setting(cfg, cell.model, task),
        "batch_size": cfg.batch_size,
        "bootstrap_iters": cfg.bootstrap_iters,
        "dtype": cfg.dtype,
        "chat_template": False,
        "perplexity_definition": perplexity_definition(cell.model, cfg.max_length)
        if task == "wikitext"
        else None,
        "weights": "pretrained",
        "seed": cell.seed,
        "selection_tokens": cfg.selection_tokens if is_trained(cell.method) else None,
    }
    if finetuned:  # only fine-tuned rows carry the key: earlier rows keep theirs
        identity["finetune_config"] = json.dumps(cfg.finetune, sort_keys=True)
    return identity


def fewshot_setting(cfg: GridConfig, model: str, task: str) -> int | None:
    """The grid's num_fewshot, or with "signal" the signal table's choice for (model, task)."""
    from see.evaluation.signal import NO_CHANCE_TASKS, fewshot_for

    if cfg.num_fewshot != "signal":
        return cfg.num_fewshot
    return None if task in NO_CHANCE_TASKS else fewshot_for(model, task)


def heal_key(cfg: GridConfig, cell: Cell, stage: str) -> str:
    """Key of a cell's healing checkpoint: the cell and the [heal] table, not a task."""
    per_task = {"task": None, "limit": None, "perplexity_definition": None}
    return cell_key(identity(cfg, cell, next(iter(cfg.tasks)), stage) | per_task)


def method_config(cell: Cell) -> str | None:
    """The cell's resolved options as JSON (defaults included): part of the results key."""
    from see.compress import resolved_options

    if cell.method == "baseline":
        return None
    return json.dumps(
        resolved_options(cell.method, dict(cell.method_options)), sort_keys=True, default=str
    )


def sememe_source(cell: Cell) -> str | None:
    """The resolved sememe source of a cell whose method uses sememes (else None)."""
    from see.methods import get_method
    from see.sememes import resolve_source_name

    if not getattr(get_method(cell.method), "uses_sememes", False):
        return None
    return resolve_source_name(dict(cell.method_options).get("sememe_source", "auto"))


def status_row(
    cfg: GridConfig,
    cell: Cell,
    task: str,
    run_id: str,
    device: str,
    status: str,
    reason: str,
    stage: str = "initial",
) -> dict:
    """A row with no value that says why (`unreachable` CR, `skipped` task)."""
    base = identity(cfg, cell, task, stage)
    row = {**base, "cell_key": cell_key(base), "config_hash": cfg.config_hash()}
    row.update(metric=None, value=None, status=status, note=reason)
    return {**row, **provenance(run_id, device)}


def cell_summary(cell: Cell, rows: list[dict], seconds: float) -> str:
    """One log line per cell: the first metric of each (stage, task) it measured."""
    shown, parts = set(), []
    for row in rows:
        where = (row.get("heal_stage"), row["task"])
        if where in shown:
            continue
        shown.add(where)
        stage = "" if where[0] == "initial" else f"{where[0]} "
        value = row.get("value")
        parts.append(
            f"{stage}{row['task']} {row.get('metric') or row.get('status')}"
            + (f" {value:.4g}" if isinstance(value, float) else "")
        )
    options = f" [{cell.options_text()}]" if cell.method_options else ""
    return (
        f"[see] {cell.model} {cell.method}{options} CR {cell.target_cr:g} "
        f"head {cell.head_policy} seed {cell.seed}: {'; '.join(parts)} ({seconds:.0f} s)"
    )
