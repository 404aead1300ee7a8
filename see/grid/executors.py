"""Run a grid: every pending (cell, task) into results/runs/<run_id>, resumable; cells one
after another here (`local`) or as submitit jobs (local subprocesses or Slurm)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from see.config import GridConfig, grid_defaults
from see.evaluation.lmeval import check_tasks
from see.evaluation.signal import uninformative_reason
from see.evaluation.tasks import skipped_tasks
from see.grid.cells import Cell, check_methods, expand
from see.grid.pipeline import cell_stages, run_cell
from see.grid.rows import cell_summary, fewshot_setting, identity, status_row
from see.results import ResultStore, cell_key, device_name, measured_rows, open_run

EXECUTORS = ("local", "submitit-local", "slurm")


def run_grid(
    cfg: GridConfig,
    results_dir: str | Path = "results",
    run_id: str | None = None,
    executor: str = "local",
    force_config: bool = False,
    models: list[str] | None = None,
    reuse: list[str] | None = None,
    redo: list[str] | None = None,
    copy_only: bool = False,
):
    """Run every pending (cell, task) of the grid into results/runs/<run_id>; resumable.

    `executor`: `local` runs cells one after another in this process; `submitit-local` and
    `slurm` submit each cell as a submitit job (a local subprocess, or a Slurm job with the
    SEE_SLURM_* settings) and append each job's rows here as it finishes. `force_config`
    resumes a run whose config changed (see `open_run`). `models` runs only these of the
    grid's models; the run's config keeps them all, so a later session resumes the same run
    with the others and no config change. `reuse` names earlier runs whose measured rows
    with the same cell key are copied (with `reused_from`) instead of measured again. `redo`
    (METHOD or METHOD@RATIO) measures those cells again although the run has them (after a
    fix): reports keep the latest row per cell key, the old rows stay in rows.jsonl.
    `copy_only` copies the `reuse` rows and measures nothing: it lists the cells left pending.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; allowed: {EXECUTORS}")
    if copy_only and not reuse:
        raise ValueError("--copy-only needs --reuse RUN_ID[,RUN_ID]: the runs to copy from")
    unknown = [m for m in models or [] if m not in cfg.models]
    if unknown:
        raise ValueError(f"models {unknown} not in preset {cfg.name!r}: {cfg.models}")
    chosen = models or cfg.models
    again = redo_matcher(cfg, redo or [])
    from see.models.zoo import check_model

    check_methods(cfg)
    for model in chosen:  # before the run folder exists and before the first cell
        check_model(model)
        for task in cfg.tasks:
            fewshot_setting(cfg, model, task)  # "signal": the table must have the entry
    skipped = skipped_tasks(list(cfg.tasks))
    for reason in skipped.values():
        print(f"[see] skipping {reason}")
    runnable = [t for t in cfg.tasks if t not in skipped]
    uninformative = {
        (model, task): uninformative_reason(model, task)
        for model in chosen
        for task in runnable
        if cfg.skip_uninformative
    }
    check_tasks(runnable, min((v for v in cfg.tasks.values() if v), default=None), cfg.data_dir)
    earlier = measured_rows(results_dir, reuse or [])
    store = open_run(
        results_dir, dataclasses.asdict(cfg), cfg.name, run_id, force_config, grid_defaults()
    )
    run_id = store.run_dir.name
    measured = store.done_keys()
    device = device_name()
    cells = [cell for cell in expand(cfg) if cell.model in chosen]
    start = time.perf_counter()
    work, reused_count = [], 0
    for cell in cells:
        done, copies = (set(), {}) if again(cell) else (measured, earlier)
        keys = {
            stage: {t: cell_key(identity(cfg, cell, t, stage)) for t in cfg.tasks}
            for stage in cell_stages(cfg, cell)
        }
        pending = {stage: [t for t in cfg.tasks if keys[stage][t] not in done] for stage in keys}
        for stage, tasks in pending.items():
            # a fine-tuned task can rank methods where the zero-shot one cannot: not skipped
            reasons = {
                t: skipped.get(t) or (stage != "finetune" and uninformative.get((cell.model, t)))
                for t in cfg.tasks
            }
            for task in [t for t in tasks if reasons[t]]:
                store.append(
                    [status_row(cfg, cell, task, run_id, device, "skipped", reasons[task], stage)]
                )
            for task in [t for t in tasks if not reasons[t] and keys[stage][t] in copies]:
                store.append([reused(row, run_id) for row in copies[keys[stage][task]]])
                reused_count += 1
            pending[stage] = [t for t in tasks if not reasons[t] and keys[stage][t] not in copies]
        if any(pending.values()):
            work.append((cell, pending))
    if reused_count:
        print(f"[see] {reused_count} (cell, task) measurements copied from {reuse}")
    if copy_only:
        for cell, pending in work:
            tasks = sorted({task for tasks in pending.values() for task in tasks})
            where = f"{cell.model} {cell.method} x{cell.target_cr:g} head {cell.head_policy}"
            print(f"[see] not measured (--copy-only): {where}: {', '.join(tasks)}")
        work = []
    if executor == "local":
        for cell, pending in tqdm(work, desc=f"grid {cfg.name}", unit="cell", disable=False):
            cell_start, cell_rows = time.perf_counter(), []
            for task_rows in run_cell(cell, cfg, pending, run_id, device, store.run_dir):
                store.append(task_rows)
                cell_rows += task_rows
            tqdm.write(cell_summary(cell, cell_rows, time.perf_counter() - cell_start))
    else:
        run_with_submitit(work, cfg, run_id, store, executor)
    print(
        f"[see] grid {cfg.name}: {len(cells)} cells ({len(work)} run) in "
        f"{time.perf_counter() - start:.1f} s -> {store.path}"
    )
    return store


def redo_matcher(cfg: GridConfig, specs: list[str]) -> Callable[[Cell], bool]:
    """METHOD or METHOD@RATIO specs -> does a cell match one; a clear error for a method or
    ratio the grid does not have (before the run folder is touched). A ratio matches a cell's
    target CR rounded to the decimals written, so `int4@7.1` names int4's 7.11x cells."""
    cells = expand(cfg)
    wanted = []
    for spec in specs:
        method, _, ratio = spec.partition("@")
        if method not in cfg.methods:
            raise ValueError(f"--redo {spec!r}: method {method!r} not in {cfg.methods}")
        ratios = sorted({c.target_cr for c in cells if c.method == method})
        decimals = len(ratio.partition(".")[2])
        try:
            matched = (
                [cr for cr in ratios if round(cr, decimals) == float(ratio)] if ratio else ratios
            )
        except ValueError:
            matched = []
        if not matched:
            raise ValueError(f"--redo {spec!r}: ratio {ratio!r} not in {method}'s ratios {ratios}")
        wanted += [(method, cr) for cr in matched]
    return lambda cell: (cell.method, cell.target_cr) in wanted


def reused(row: dict, run_id: str) -> dict:
    """A measured row of an earlier run as a row of this one: its provenance (commit, device,
    timestamp, timings) stays its own, `reused_from` names the run that measured it."""
    return {**row, "run_id": run_id, "reused_from": row.get("reused_from") or row["run_id"]}


def cell_job(cell: Cell, cfg: GridConfig, pending: dict, run_id: str, run_dir: str) -> list:
    """One cell as a pure function of its config (what an executor runs elsewhere)."""
    from see.runtime import apply_threads

    apply_threads()  # $SEE_THREADS and OMP_WAIT_POLICY come through the environment
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
    for job in tqdm(jobs, desc=f"grid {cfg.name} ({executor})", unit="cell", disable=False):
        for task_rows in job.result():
            store.append(task_rows)
