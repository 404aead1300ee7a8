"""Expand a grid config into cells and run them: compress, evaluate, append rows.

A cell is (model, method, ratio, head policy, seed); each task it is evaluated on is one
results key. A cell is a pure function of its config, so any executor can run it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from see.config import GridConfig
from see.evaluation.lmeval import PERPLEXITY_DEFINITION, check_tasks, evaluate
from see.evaluation.tasks import skipped_tasks
from see.heal import HealConfig, Healer, TeacherCache, training_ids
from see.results import ResultStore, cell_key, device_name, open_run, provenance


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


def expand(cfg: GridConfig) -> list[Cell]:
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

    fixed = get_method(method).fixed_ratio(dict(options))  # int8, int4: one ratio each
    ratios = [1.0] if method == "baseline" else [fixed] if fixed else cfg.ratios
    policies = ["dense"] if method == "baseline" else cfg.head_policies
    seeds = cfg.seeds if is_trained(method) else cfg.seeds[:1]  # baseline, SVD: deterministic
    return [
        Cell(model, method, float(ratio), policy, seed, options)
        for ratio in ratios
        for policy in policies
        for seed in seeds
    ]


def identity(cfg: GridConfig, cell: Cell, task: str, stage: str = "initial") -> dict:
    """The identity and settings columns of a (cell, task, healing stage) key."""
    limit = cfg.tasks[task]
    heal = None if stage == "initial" else json.dumps(cfg.heal, sort_keys=True)
    return {
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
        "num_fewshot": cfg.num_fewshot,
        "batch_size": cfg.batch_size,
        "bootstrap_iters": cfg.bootstrap_iters,
        "dtype": cfg.dtype,
        "torch_threads": torch.get_num_threads(),
        "chat_template": False,
        "perplexity_definition": PERPLEXITY_DEFINITION.format(max_length=cfg.max_length)
        if task == "wikitext"
        else None,
        "weights": "pretrained",
        "seed": cell.seed,
        "selection_tokens": cfg.selection_tokens if is_trained(cell.method) else None,
    }


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


def is_trained(method: str) -> bool:
    from see.methods import get_method

    return get_method(method).trained


def build_model(cell: Cell, cfg: GridConfig):
    """Load the model and install the cell's compressed embedding.

    Returns (model, tok, info, teacher): teacher = the original (input embedding, head) modules,
    which healing swaps back in to get the uncompressed model's outputs.
    """
    from see.compress import compress
    from see.models import compress_model, count_bytes, load_model

    start = time.perf_counter()
    model, tok = load_model(cell.model, getattr(torch, cfg.dtype), cfg.tie_source)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    compressed = None
    if cell.method != "baseline":
        compressed = compress(
            model,
            tok,
            cell.method,
            cell.target_cr,
            dict(cell.method_options),
            seed=cell.seed,
            head_policy=cell.head_policy,
            data_dir=cfg.data_dir,
            selection_tokens=cfg.selection_tokens,
            max_length=cfg.max_length,
            dtype=getattr(torch, cfg.dtype),
        )
    teacher = (model.get_input_embeddings(), model.get_output_embeddings())
    compress_model(model, compressed, cell.head_policy)
    info = {"load_s": load_s, "compress_s": time.perf_counter() - start, **count_bytes(model)}
    info["convert_s"] = zoo_convert_seconds(cell.model)
    if compressed is not None:
        info["reached_cr"] = compressed.reached_cr
        info["byte_cr"] = compressed.byte_cr
        info.update(compressed.fit_report)
        if getattr(compressed, "history", None):
            info["fit_history"] = json.dumps(compressed.history)
        if hasattr(compressed, "token_units"):
            info["map_corpus_coverage"] = corpus_coverage_on_validation(compressed, tok, cfg)
    else:
        emb = model.get_input_embeddings()
        info["reached_cr"] = 1.0
        info["byte_cr"] = 1.0
        info["embedding_params"] = emb.weight.numel()
    return model, tok, info, teacher


def corpus_coverage_on_validation(compressed, tok, cfg: GridConfig) -> float:
    """Share of WikiText-2 validation tokens (first 50k) whose token has a sememe unit."""
    from see.evaluation.validation import validation_ids

    ids = validation_ids(tok, 50_000, cfg.data_dir)
    names = compressed.unit_names
    has = torch.tensor([names[i].startswith("s:") for i in range(len(names))])
    return has[compressed.token_units[ids].long()].any(-1).float().mean().item()


def zoo_convert_seconds(name: str) -> float | None:
    """How long the one-time GGUF conversion of a zoo model took (None for other models)."""
    from see.models.zoo import ZOO, cache_dir

    marker = cache_dir() / "models" / name / "see_zoo.json"
    if name not in ZOO or not marker.is_file():
        return None
    return json.loads(marker.read_text()).get("convert_s")


def adds_bos(tok) -> bool:
    ids = tok("a").input_ids
    return bool(tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id)


def teacher_cache(cfg: GridConfig, cell: Cell, heal: HealConfig) -> TeacherCache | None:
    """Stage 2's teacher top-k, shared on disk by every cell healed on the same model."""
    if heal.teacher_top_k == 0:
        return None
    from see.models.zoo import cache_dir

    model_id = f"{cell.model}|{cfg.dtype}|{cfg.tie_source}"
    return TeacherCache(cache_dir() / "teacher", model_id)


def cell_stages(cfg: GridConfig, cell: Cell) -> list[str]:
    """`initial`, then the healing stages with a budget (none for the baseline)."""
    if cfg.heal is None or cell.method == "baseline":
        return ["initial"]
    return ["initial", *HealConfig(**cfg.heal).stages()]


def run_cell(
    cell: Cell,
    cfg: GridConfig,
    pending: dict[str, list[str]],
    run_id: str,
    device: str,
    run_dir: Path | None = None,
) -> Iterator[list[dict]]:
    """Compress, heal and evaluate one cell; yields the rows of each (stage, task) when done.

    A target CR the method cannot reach gives one row per task with value None and the reason.
    Healing checkpoints go to run_dir/heal/<cell>/<stage>.pt, so a killed run resumes there.
    """
    from see.methods.base import UnreachableCR

    try:
        model, tok, info, teacher = build_model(cell, cfg)
    except UnreachableCR as err:
        print(f"[see] {cell.model} {cell.method} CR {cell.target_cr:g}: {err}")
        for stage, tasks in pending.items():
            for task in tasks:
                yield [status_row(cfg, cell, task, run_id, device, "unreachable", str(err), stage)]
        return
    healer, heal_info = None, {}
    for stage in cell_stages(cfg, cell):
        if stage != "initial":
            if healer is None:
                heal_cfg = HealConfig(**cfg.heal)
                ids = training_ids(heal_cfg, tok, cfg.data_dir)
                healer = Healer(
                    model,
                    *teacher,
                    heal_cfg,
                    ids,
                    seed=cell.seed,
                    cache=teacher_cache(cfg, cell, heal_cfg),
                )
            # the points of a curve continue one stage-2 run: one checkpoint for all of them
            name = stage.partition("@")[0]
            key = cell_key(identity(cfg, cell, next(iter(cfg.tasks)), name) | {"task": None})
            checkpoint = run_dir / "heal" / key / f"{name}.pt" if run_dir else None
            heal_info = healer.run(stage, checkpoint)
        for task in pending.get(stage, []):
            metric_rows = evaluate(
                model,
                tok,
                [task],
                limit=cfg.tasks[task],
                num_fewshot=cfg.num_fewshot,
                batch_size=cfg.batch_size,
                max_length=cfg.max_length,
                bootstrap_iters=cfg.bootstrap_iters,
                seed=cell.seed,
                data_dir=cfg.data_dir,
            )
            base = identity(cfg, cell, task, stage)
            common = {
                **base,
                **info,
                **heal_info,
                "cell_key": cell_key(base),
                "config_hash": cfg.config_hash(),
            }
            common["add_bos"] = adds_bos(tok)  # a fact of the model's tokenizer, not a setting
            common.update(provenance(run_id, device))
            yield [{**common, **row, "task": task} for row in metric_rows]


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


EXECUTORS = ("local", "submitit-local", "slurm")


def run_grid(
    cfg: GridConfig,
    results_dir: str | Path = "results",
    run_id: str | None = None,
    executor: str = "local",
):
    """Run every pending (cell, task) of the grid into results/runs/<run_id>; resumable.

    `executor`: `local` runs cells one after another in this process; `submitit-local` and
    `slurm` submit each cell as a submitit job (a local subprocess, or a Slurm job with the
    SEE_SLURM_* settings) and append each job's rows here as it finishes.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; allowed: {EXECUTORS}")
    from see.models.zoo import check_model

    for model in cfg.models:  # before the run folder exists and before the first cell
        check_model(model)
    skipped = skipped_tasks(list(cfg.tasks))
    for reason in skipped.values():
        print(f"[see] skipping {reason}")
    runnable = [t for t in cfg.tasks if t not in skipped]
    check_tasks(runnable, min((v for v in cfg.tasks.values() if v), default=None), cfg.data_dir)
    store = open_run(results_dir, dataclasses.asdict(cfg), cfg.name, run_id)
    run_id = store.run_dir.name
    done = store.done_keys()
    device = device_name()
    cells = expand(cfg)
    start = time.perf_counter()
    work = []
    for cell in cells:
        pending = {
            stage: [t for t in cfg.tasks if cell_key(identity(cfg, cell, t, stage)) not in done]
            for stage in cell_stages(cfg, cell)
        }
        for stage, tasks in pending.items():
            for task in [t for t in tasks if t in skipped]:
                reason = skipped[task]
                store.append(
                    [status_row(cfg, cell, task, run_id, device, "skipped", reason, stage)]
                )
            pending[stage] = [t for t in tasks if t not in skipped]
        if any(pending.values()):
            work.append((cell, pending))
    if executor == "local":
        for cell, pending in tqdm(work, desc=f"grid {cfg.name}", unit="cell"):
            for task_rows in run_cell(cell, cfg, pending, run_id, device, store.run_dir):
                store.append(task_rows)
    else:
        run_with_submitit(work, cfg, run_id, store, executor)
    print(
        f"[see] grid {cfg.name}: {len(cells)} cells ({len(work)} run) in "
        f"{time.perf_counter() - start:.1f} s -> {store.path}"
    )
    return store


def cell_job(cell: Cell, cfg: GridConfig, pending: dict, run_id: str, run_dir: str) -> list:
    """One cell as a pure function of its config (what an executor runs elsewhere)."""
    return list(run_cell(cell, cfg, pending, run_id, device_name(), Path(run_dir)))


def run_with_submitit(
    work: list, cfg: GridConfig, run_id: str, store: ResultStore, executor: str
) -> None:
    import os

    import submitit

    folder = store.run_dir / "submitit"
    cluster = "local" if executor == "submitit-local" else "slurm"
    pool = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if cluster == "slurm":
        pool.update_parameters(
            slurm_partition=os.environ.get("SEE_SLURM_PARTITION"),
            gpus_per_node=int(os.environ.get("SEE_SLURM_GPUS", "1")),
            timeout_min=int(os.environ.get("SEE_SLURM_TIMEOUT_MIN", "240")),
        )
    else:
        pool.update_parameters(timeout_min=int(os.environ.get("SEE_JOB_TIMEOUT_MIN", "240")))
    jobs = [
        pool.submit(cell_job, cell, cfg, pending, run_id, str(store.run_dir))
        for cell, pending in work
    ]
    for job in tqdm(jobs, desc=f"grid {cfg.name} ({executor})", unit="cell"):
        for task_rows in job.result():
            store.append(task_rows)
