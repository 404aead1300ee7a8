"""Did a run reproduce the published run of its preset? Rows are matched by cell key.

Tolerance: 1e-4 relative. Two runs of one preset on the same CPU, torch and seeds agree to
about 1e-6 (fp32 sums in the same order); on AVX2 instead of AVX-512 kernels the smoke preset
moved by at most 9.8e-6 (TOLERANCES below), while a real change (another default, another fit)
moves numbers by far more. On a GPU, or with other package versions, expect differences above
it: the table says where and how much.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from see.results import read_rows

TOLERANCE = 1e-4
# A method whose fit moves by more than TOLERANCE on another CPU (a different SIMD width sums
# in another order, and an iterative fit carries the difference on) gets its own tolerance
# here: twice the relative spread measured between two CPUs' runs. Measured for every method
# of `smoke`: the published run 20261206-062626-smoke (AVX-512 kernels) against the same
# preset with torch, MKL and oneDNN held to AVX2, as on a CPU without AVX-512
# (ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2; run
# 20261206-063940-smoke): the largest relative difference was 9.8e-6 (int4's word
# perplexity; pq's k-means 9.6e-6, SEE's fit 4.3e-6, SVD 3.0e-6; accuracies equal). Again
# after pq moved to faiss and GroupReduce joined smoke, faiss held to AVX2 too
# (FAISS_OPT_LEVEL=avx2): runs 20261206-103556-smoke and 20261206-104238-smoke, at most 9.8e-6
# (pq 9.8e-6, GroupReduce 5.7e-6). TOLERANCE leaves a tenfold margin; no method needs its own.
TOLERANCES: dict[str, float] = {}
MEASURED_SPREAD = (
    "none needed: the smoke preset on AVX-512 and on AVX2 kernels (runs 20261206-103556-smoke "
    "and 20261206-104238-smoke, faiss included) differed by at most 9.8e-6 relative "
    "(see/report/verdict.py)."
)
KEY = ["cell_key", "metric", "metric_filter"]


def expected_keys(cfg) -> set[str]:
    """The cell keys a run of grid `cfg` writes with today's code and defaults (no compute:
    keys hash identity and settings)."""
    from see.grid.cells import expand
    from see.grid.pipeline import cell_stages
    from see.grid.rows import identity
    from see.results import cell_key

    return {
        cell_key(identity(cfg, cell, task, stage))
        for cell in expand(cfg)
        for stage in cell_stages(cfg, cell)
        for task in cfg.tasks
    }


def stale_reference(cfg, reference_dir: Path, models: list[str] | None = None) -> dict:
    """Does the published run still match what the preset expands to today? A changed default
    changes a cell key, so the reference can no longer be matched: `reproduce` would end NOT
    reproduced whatever the machine. Returns the keys only today's preset has (`new`) and only
    the reference has (`gone`), among `models` if given."""
    import dataclasses

    chosen = [m for m in cfg.models if not models or m in models]
    ours = expected_keys(dataclasses.replace(cfg, models=chosen)) if chosen else set()
    rows = read_rows(Path(reference_dir) / "rows.jsonl")
    theirs = {r["cell_key"] for r in rows if not models or r.get("model") in models}
    return {"new": sorted(ours - theirs), "gone": sorted(theirs - ours)}


def published_run(results_dir: str | Path, preset: str, exclude: Path | None = None):
    """The newest run of `preset` listed in results/PUBLISHED (other than `exclude`), or None."""
    results_dir = Path(results_dir)
    listing = results_dir / "PUBLISHED"
    if not listing.is_file():
        return None
    found = None
    for line in listing.read_text().splitlines():
        run_dir = results_dir / line.strip()
        config = run_dir / "config.json"
        if not line.strip() or line.startswith("#") or not config.is_file():
            continue
        if exclude is not None and run_dir.resolve() == Path(exclude).resolve():
            continue
        if json.loads(config.read_text()).get("name") == preset:
            if found is None or run_dir.name > found.name:  # run ids start with the time
                found = run_dir
    return found


def metric_rows(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    wanted = [*KEY, "method", "model", "value", "timestamp"]
    frame = frame.reindex(columns=frame.columns.union(wanted, sort=False))
    frame[["metric", "metric_filter"]] = frame[["metric", "metric_filter"]].fillna("-")
    return frame.sort_values("timestamp", kind="stable").drop_duplicates(KEY, keep="last")


def tolerance_of(method, rtol: float) -> float:
    return max(rtol, TOLERANCES.get(method, 0.0))


def compare_runs(
    new: list[dict], reference: list[dict], rtol: float = TOLERANCE, models=None
) -> dict:
    """Per (method, metric): rows matched, the largest relative difference, rows beyond the
    method's tolerance (`rtol`, or its measured cross-CPU spread in TOLERANCES); plus the keys
    only one run has. `reproduced` = every reference row (of `models`, if given) is matched
    within its tolerance."""
    ours, theirs = metric_rows(new), metric_rows(reference)
    if models:
        theirs = theirs[theirs.model.isin(models)]
    both = theirs.merge(
        ours.drop(columns=["method", "model"]),
        on=KEY,
        how="outer",
        suffixes=("_ref", "_new"),
        indicator=True,
    )
    matched = both[both._merge == "both"].copy()
    ref, val = matched.value_ref.astype(float), matched.value_new.astype(float)
    scale = ref.abs().where(ref.abs() > 0, 1.0)
    matched["rel_diff"] = ((val - ref).abs() / scale).where(ref.notna() | val.notna(), 0.0)
    # a value on one side and none on the other (a failed or unreachable cell) never matches
    matched["rel_diff"] = matched.rel_diff.where(ref.isna() == val.isna(), float("inf"))
    matched["tolerance"] = matched.method.map(lambda m: tolerance_of(m, rtol))
    matched["beyond"] = matched.rel_diff > matched.tolerance
    table = (
        matched.astype({"method": object})
        .fillna({"method": "-"})
        .groupby(["method", "metric"])
        .agg(
            rows=("rel_diff", "size"),
            max_rel_diff=("rel_diff", "max"),
            tolerance=("tolerance", "max"),
            beyond_tolerance=("beyond", "sum"),
        )
        .reset_index()
    )
    missing = int((both._merge == "left_only").sum())
    extra = int((both._merge == "right_only").sum())
    reproduced = missing == 0 and len(matched) > 0 and not matched.beyond.any()
    return {
        "table": table,
        "missing": missing,
        "new": extra,
        "matched": len(matched),
        "reproduced": bool(reproduced),
        "rtol": rtol,
    }


def compare_run_dirs(
    new_dir: Path, reference_dir: Path, rtol: float = TOLERANCE, models=None
) -> dict:
    new, reference = read_rows(new_dir / "rows.jsonl"), read_rows(reference_dir / "rows.jsonl")
    return compare_runs(new, reference, rtol, models) | {
        "run": new_dir.name,
        "reference": reference_dir.name,
    }


def verdict_markdown(result: dict) -> str:
    word = "REPRODUCED" if result["reproduced"] else "NOT reproduced"
    lines = [
        f"Run {result['run']} vs published {result['reference']}: **{word}** "
        f"(relative tolerance {result['rtol']:g}, per method where listed; {result['matched']} "
        f"rows matched, {result['missing']} published rows missing here, {result['new']} rows "
        "new here).",
        "",
    ]
    if MEASURED_SPREAD:
        lines += [f"Per-method tolerances: {MEASURED_SPREAD}", ""]
    if not result["table"].empty:
        lines.append(result["table"].to_markdown(index=False, floatfmt=".3g"))
    return "\n".join(lines)
