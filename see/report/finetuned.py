"""Fine-tuned GLUE and SQuAD (issue 42), from rows of the `finetune` stage (no torch here).

Signal: a (model, task) can rank methods after fine-tuning where the fine-tuned baseline beats
the best constant answer (`chance`, stored in the row: the majority label's share for
accuracy, 2p / (1 + p) for binary F1, 0 for Matthews correlation and SQuAD) by more than 2 of
lm-eval's stderr. Ranking: per (model, task, byte budget) the methods by their fine-tuned score,
the best named only where it beats the runner-up by more than 2 combined stderr
(sqrt(se1**2 + se2**2): the two are independent fine-tunings), else "tied".
"""

from __future__ import annotations

import math

import pandas as pd

from see.evaluation.signal import is_informative, primary_metric


def finetuned_points(rows: pd.DataFrame) -> pd.DataFrame:
    """Each fine-tuned (run, model, method, CR, task) at its task's primary metric."""
    if "heal_stage" not in rows:
        return pd.DataFrame()
    data = rows[(rows.heal_stage == "finetune") & rows.value.notna()]
    if data.empty:
        return pd.DataFrame()
    keep = []
    for _, task_rows in data.groupby("task"):
        metric = primary_metric(sorted(task_rows.metric.unique()))
        keep.append(task_rows[task_rows.metric == metric])
    data = pd.concat(keep)
    columns = ["run_id", "model", "method", "target_cr", "byte_cr", "task", "metric"]
    data = data.reindex(columns=[*columns, "value", "stderr", "chance", "n"])
    return data.sort_values(columns[:6]).reset_index(drop=True)


def finetune_signal(points: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, task): the fine-tuned baseline against chance."""
    base = points[points.method == "baseline"]
    lines = [
        {
            "run_id": row.run_id,
            "model": row.model,
            "task": row.task,
            "metric": row.metric,
            "baseline": row.value,
            "stderr": row.stderr,
            "chance": row.chance,
            "informative": is_informative(
                row.value, None if pd.isna(row.stderr) else row.stderr, row.chance
            ),
        }
        for row in base.itertuples()
    ]
    return pd.DataFrame(lines)


def finetuned_ranking(points: pd.DataFrame, signal: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, task, CR): the methods by fine-tuned score, best vs runner-up."""
    informative = {(s.run_id, s.model, s.task): s.informative for s in signal.itertuples()}
    lines = []
    compressed = points[points.method != "baseline"]
    for (run, model, task, cr), cell in compressed.groupby(
        ["run_id", "model", "task", "target_cr"]
    ):
        cell = cell.sort_values("value", ascending=False)
        best = cell.iloc[0]
        line = {
            "model": model,
            "task": task,
            "metric": best.metric,
            "target_cr": cr,
            "best_method": best.method,
            "best": f"{best.value:.3g} ± {best.stderr:.2g}",
            "separated": "only one method",
            "methods": ", ".join(f"{m.method} {m.value:.3g}" for m in cell.itertuples()),
            "task_informative": informative.get((run, model, task), "no baseline"),
            "run_id": run,
        }
        if len(cell) > 1:
            runner = cell.iloc[1]
            gap = best.value - runner.value
            combined = math.hypot(*(0.0 if pd.isna(e) else e for e in (best.stderr, runner.stderr)))
            line["separated"] = (
                f"yes, from {runner.method}" if gap > 2 * combined else f"tied ~ {runner.method}"
            )
        lines.append(line)
    return pd.DataFrame(lines)


def finetuned_markdown(rows: pd.DataFrame) -> list[str]:
    points = finetuned_points(rows)
    if points.empty:
        return []
    signal = finetune_signal(points)
    ranking = finetuned_ranking(points, signal)
    lines = [
        "## Fine-tuned GLUE and SQuAD (issue 42)",
        "",
        "Each task fine-tuned from the cell's initial model with one budget for every method "
        "(`finetune_config`), then evaluated zero-shot by lm-eval; SQuAD is `squad_split` "
        "(SQuAD v1.1 dev split by article). See see/report/finetuned.py.",
        "",
        "Can the task rank methods after fine-tuning (the fine-tuned baseline beats chance by "
        "more than 2 stderr)?",
        "",
        signal.to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    if len(ranking):
        lines += [
            "Methods by fine-tuned score per byte budget (best named where it beats the "
            "runner-up by more than 2 combined stderr):",
            "",
            ranking.to_markdown(index=False, floatfmt=".3g"),
            "",
        ]
    return lines
