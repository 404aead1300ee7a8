"""Issue 17's quality-vs-bytes frontier, from published `frontier` runs (no torch here).

A cell's bytes are its embedding module's stored bytes; `byte_cr` = fp32 table bytes / them.
A method meets a byte budget B when byte_cr >= B. For each model and budget the table names
the method with the lowest initial WikiText word perplexity among the cells that meet it (with
its SST-2 and RTE accuracy beside it); the plot draws every cell and joins the Pareto-optimal
ones (no other cell has both fewer bytes and a lower perplexity).
"""

from __future__ import annotations

import pandas as pd

from see.report.markdown import markdown_table

QUALITY = ("wikitext", "word_perplexity")
# per-document WikiText terms (see/intervals.py): rows measured before they were stored lack them
DOC_COLUMNS = ["doc_ids", "doc_loglik", "doc_units"]
ACCURACIES = (("sst2", "acc"), ("rte", "acc"))


def frontier_cells(rows: pd.DataFrame, preset: str = "frontier") -> pd.DataFrame:
    """One line per (run, model, method, options, target) of a `preset` run (frontier, or
    sizes for the headline): byte_cr, word perplexity and the task accuracies, initial
    quality only (a task not evaluated, or uninformative: skipped, or marked `informative =
    "no"` by the report because the baseline is at chance, is missing)."""
    data = rows[
        rows.run_id.str.contains(f"-{preset}") & (rows.heal_stage == "initial") & rows.value.notna()
    ]
    if data.empty:
        return pd.DataFrame()
    keys = ["run_id", "model", "method", "method_options", "target_cr"]
    data = data.reindex(columns=data.columns.union(DOC_COLUMNS, sort=False))
    cells = None
    wanted = {"word_ppl": QUALITY, **{task: (task, metric) for task, metric in ACCURACIES}}
    for name, (task, metric) in wanted.items():
        part = data[(data.task == task) & (data.metric == metric)]
        if "informative" in part:
            part = part[part.informative != "no"]
        extra = DOC_COLUMNS if name == "word_ppl" else []
        part = part[[*keys, "byte_cr", "value", *extra]].rename(columns={"value": name})
        if cells is None:
            cells = part
        else:
            cells = cells.merge(part.drop(columns="byte_cr"), on=keys, how="outer")
    return cells.sort_values(["run_id", "model", "byte_cr"]).reset_index(drop=True)


def newest_runs(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model, the cells of the newest run that has it (an older run of the same preset
    may hold rows fitted with defaults that changed since)."""
    if cells.empty:
        return cells
    return cells[cells.run_id == cells.groupby("model").run_id.transform("max")]


def method_label(method: str, options) -> str:
    """A method and its non-default options, e.g. `svd (codes_dtype=int8)`."""
    return f"{method} ({options})" if isinstance(options, str) and options else method


def cell_label(cell: pd.Series) -> str:
    return method_label(cell.method, cell.get("method_options"))


def pareto_front(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells of one model that no other cell beats on both bytes and word perplexity."""
    ordered = cells.dropna(subset=["word_ppl"]).sort_values(
        ["byte_cr", "word_ppl"], ascending=[False, True]
    )
    best, keep = float("inf"), []
    for index, cell in ordered.iterrows():  # from the fewest bytes up
        if cell.word_ppl < best:
            keep.append(index)
            best = cell.word_ppl
    return cells.loc[keep].sort_values("byte_cr")


def budget_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, byte budget): the best method that meets the budget, its quality
    against the baseline with a paired bootstrap interval, and whether it is separated from
    the runner-up (the best other method) or tied with it."""
    budgets = sorted(cells[~cells.method.isin(["baseline", "int8", "int4"])].target_cr.unique())
    cells = cells.reindex(columns=cells.columns.union(DOC_COLUMNS, sort=False))
    lines = []
    for (run, model), sub in cells.groupby(["run_id", "model"]):
        base = sub[sub.method == "baseline"]
        for budget in budgets:
            meets = sub[(sub.byte_cr >= budget - 1e-9) & sub.word_ppl.notna()]
            if meets.empty:
                continue
            best = meets.loc[meets.word_ppl.idxmin()]
            second = runner_up_cell(meets, best.name)
            ratio = paired_ratio(best, base.iloc[0]) if len(base) else None
            lines.append(
                {
                    "run_id": run,
                    "model": model,
                    "byte_budget": budget,
                    "best_method": best.method,
                    "options": best.method_options,
                    "byte_cr": best.byte_cr,
                    "word_ppl": best.word_ppl,
                    "ppl_over_baseline": best.word_ppl / base.word_ppl.iloc[0]
                    if len(base)
                    else None,
                    "ratio_ci": interval_text(ratio, len(best.doc_ids) if ratio else 0),
                    **{task: best.get(task) for task, _ in ACCURACIES},
                    "runner_up": None
                    if second is None
                    else f"{cell_label(second)} ({second.word_ppl:.4g})",
                    "separated": separation(best, second),
                }
            )
    return pd.DataFrame(lines)


def has_documents(cell: pd.Series) -> bool:
    return isinstance(cell.get("doc_loglik"), list) and isinstance(cell.get("doc_units"), list)


def paired_ratio(a: pd.Series, b: pd.Series) -> tuple[float, float, float] | None:
    """Word perplexity of cell a over cell b with its 95% paired bootstrap interval over the
    documents both were evaluated on; None where a cell lacks per-document terms."""
    from see.intervals import ratio_interval

    if not (has_documents(a) and has_documents(b)) or a.get("doc_ids") != b.get("doc_ids"):
        return None
    return ratio_interval(a.doc_loglik, a.doc_units, b.doc_loglik, b.doc_units)


def interval_text(ratio: tuple[float, float, float] | None, documents: int) -> str | None:
    """`1.02 [1.01, 1.04] (20 docs)`: few documents give too narrow a bootstrap interval, so
    the count is always shown beside it."""
    if ratio is None:
        return None
    return f"{ratio[0]:.3g} [{ratio[1]:.3g}, {ratio[2]:.3g}] ({documents} docs)"


def separation(best: pd.Series, second: pd.Series | None) -> str:
    """`yes` where the paired interval of best / runner-up lies below 1, `tied` where it
    holds 1, `no interval` where either cell lacks per-document terms (then no single best
    method is named)."""
    if second is None:
        return "only method"
    ratio = paired_ratio(best, second)
    if ratio is None:
        return "no interval"
    return "yes" if ratio[2] < 1 else "tied"


def runner_up_cell(meets: pd.DataFrame, best_index) -> pd.Series | None:
    """The best other method (its lowest word perplexity): the best method at another ratio is
    no alternative to it."""
    best = cell_label(meets.loc[best_index])
    rest = meets[[cell_label(cell) != best for _, cell in meets.iterrows()]]
    if rest.empty:
        return None
    return rest.loc[rest.word_ppl.idxmin()]


def frontier_markdown(rows: pd.DataFrame) -> str | None:
    cells = newest_runs(frontier_cells(rows))
    if cells.empty:
        return None
    table = budget_table(cells)
    return markdown_table(table)  # a skipped task: "-"
