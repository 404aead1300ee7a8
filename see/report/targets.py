"""The issues' targets, checked on published rows (`python -m see targets`).

Issue 40: the training-free frontier (the best method beyond each byte budget against the same
run's baseline, FRONTIER_TARGETS) and pq's fit time on the largest table (pq_fit_time).
Issue 16's SEE targets (initial WikiText word perplexity):

- SEE with default options at most 1/40 of plain SVD's perplexity at CR 10 and 1/10 at CR 20
  (on every model a `see-strength*` run measured; the issue sets CR 10 for Gemma 3 too);
- SEE or see_morph is the best factorisation method (any options measured in the same run) at
  every CR >= 20;
- a SEE fit at CR 10 takes at most 3 minutes on the run's device (`compress_s`: unit map,
  fit and checkpoint selection).
"""

from __future__ import annotations

import pandas as pd

from see.report.headline import interim_default

FACTORISATIONS = ("svd", "groupreduce", "autoencoder", "word2ketxs", "see", "see_morph")
RATIO_TARGETS = {10.0: 40.0, 20.0: 10.0}  # CR -> SVD / SEE must be at least this
FIT_SECONDS = 180.0


def see_targets(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (run, model, CR) of a see-strength run: the ratio and best-method checks."""
    ppl = rows[
        (rows.task == "wikitext")
        & (rows.metric == "word_perplexity")
        & (rows.heal_stage == "initial")
        & rows.value.notna()
        & rows.run_id.str.contains("-see-strength")
    ]
    lines = []
    for (run, model, cr), sub in ppl.groupby(["run_id", "model", "target_cr"]):
        options = sub.method_options.fillna("")
        svd = sub[(sub.method == "svd") & (options == "")].value
        defaults = interim_default(run, "see", cr)  # "": the run's plain rows
        see_rows = sub[(sub.method == "see") & (options == defaults)]
        see = see_rows.value
        fact = sub[sub.method.isin(FACTORISATIONS)]
        if svd.empty or see.empty or fact.empty:
            continue
        best = fact.loc[fact.value.idxmin()]
        line = {
            "run_id": run,
            "model": model,
            "target_cr": cr,
            "svd": svd.iloc[0],
            "see": see.iloc[0],
            "svd_over_see": svd.iloc[0] / see.iloc[0],
            "best_method": best.method,
            "best_options": best.method_options or "",
            "best_value": best.value,
        }
        if cr in RATIO_TARGETS:
            line["ratio_target"] = RATIO_TARGETS[cr]
            line["ratio_met"] = bool(line["svd_over_see"] >= RATIO_TARGETS[cr])
        if cr >= 20:
            line["see_best_met"] = best.method in ("see", "see_morph")
        if cr == 10.0 and "compress_s" in see_rows:
            line["see_fit_s"] = see_rows.compress_s.iloc[0]
            line["fit_time_met"] = bool(line["see_fit_s"] <= FIT_SECONDS)
        lines.append(line)
    return pd.DataFrame(lines)


def targets_markdown(rows: pd.DataFrame) -> str | None:
    table = see_targets(rows)
    if table.empty:
        return None
    return table.to_markdown(index=False, floatfmt=".4g")


# Issue 40: initial quality without training, the best method at or beyond a byte budget
# against the same run's baseline (WikiText word perplexity); (budget, at most this ratio)
FRONTIER_TARGETS = {
    "smollm2-135m": ((20.0, 1.10), (40.0, 1.5), (80.0, 3.0)),
    "gemma3-270m": ((20.0, 1.10), (40.0, 1.5), (80.0, 3.0)),
    "qwen2.5-coder-0.5b": ((20.0, 1.10),),
    "qwen2.5-coder-1.5b": ((20.0, 1.10),),
}


def frontier_targets(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (model, target) from the newest `frontier` run that has the model: the
    best method storing at least `budget`x fewer bytes, its ratio to the baseline with the
    paired interval, and met / missed (missing: no published row reaches the budget)."""
    from see.report.frontier import budget_table, frontier_cells, newest_runs
    from see.report.headline import fitted_before_change

    cells = newest_runs(frontier_cells(rows[~fitted_before_change(rows)], "frontier"))
    best = budget_table(cells) if not cells.empty else pd.DataFrame()
    lines = []
    for model, targets in FRONTIER_TARGETS.items():
        for budget, limit in targets:
            line = {"model": model, "byte_budget": budget, "target": f"<= {limit:g}x baseline"}
            mine = best[(best.model == model) & (best.byte_budget >= budget)] if len(best) else best
            if mine.empty:
                lines.append({**line, "met": "no published row"})
                continue
            top = mine.loc[mine.ppl_over_baseline.idxmin()]
            lines.append(
                {
                    **line,
                    "run_id": top.run_id,
                    "best_method": top.best_method,
                    "options": top.options or "",
                    "byte_cr": top.byte_cr,
                    "ppl_over_baseline": top.ppl_over_baseline,
                    "ratio_ci": top.ratio_ci or "no interval",
                    "met": "met" if top.ppl_over_baseline <= limit else "missed",
                }
            )
    return pd.DataFrame(lines)


# Issue 40: pq's fit on the largest table (Qwen2.5-Coder 1.5B, 151,936 x 1,536) at byte
# ratio 10 within 2 minutes, as faiss's own ProductQuantizer trains and encodes it in ~100 s
PQ_FIT_MODEL, PQ_FIT_CR, PQ_FIT_SECONDS = "qwen2.5-coder-1.5b", 10.0, 120.0


def pq_fit_time(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per published run and options of pq on the 1.5B at byte ratio 10: the whole
    compression (`compress_s`) and the quantizer alone, less the model's input Fisher pass
    (`fisher_s`: one pass per model and run, shared by every Fisher-weighted method; rows
    written before it was recorded have none). Met where the quantizer alone fits in time."""
    pq = rows[
        (rows.method == "pq")
        & (rows.model == PQ_FIT_MODEL)
        & (rows.target_cr == PQ_FIT_CR)
        & (rows.metric == "word_perplexity")
        & rows.compress_s.notna()
    ]
    if pq.empty:
        return pd.DataFrame()
    fisher = pq["fisher_s"] if "fisher_s" in pq else pd.Series(float("nan"), index=pq.index)
    table = pd.DataFrame(
        {
            "run_id": pq.run_id,
            "options": pq.method_options.fillna(""),
            "compress_s": pq.compress_s,
            "fisher_s": fisher,
            "quantizer_s": pq.compress_s - fisher,
        }
    ).drop_duplicates(["run_id", "options"], keep="last")
    table["met"] = table.quantizer_s.map(
        lambda s: "not recorded" if pd.isna(s) else ("met" if s <= PQ_FIT_SECONDS else "missed")
    )
    return table.reset_index(drop=True)
