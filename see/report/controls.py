"""Controls for an anomaly: a compressed model whose accuracy beats its own baseline's.

Compression removes information, so an accuracy gain beyond the noise needs an explanation
before it is published as a result. On a two-choice task, accuracy depends on a threshold (the
model answers label 1 where its margin, loglik(choice 1) - loglik(choice 0), is positive); a
compression that merely shifts every margin changes how often each label is answered, and
with it the accuracy, without the model telling the labels apart any better. The control
compares the threshold-free separation (see.intervals.margin_auc) of the cell and its
baseline on the same documents, with a paired bootstrap interval. Rows keep each document's
choice log-likelihoods for this (`doc_choice_loglik`, `doc_target`; rows measured before
2026-12-07 lack them).
"""

from __future__ import annotations

import pandas as pd

from see.intervals import auc_difference_interval, margin_auc, margins

GAIN_STDERRS = 2.0  # a gain beyond this many standard errors of the difference is checked


def has_answers(choice_loglik) -> bool:
    """A row's `doc_choice_loglik` holds two choices per document (NaN in older rows)."""
    return isinstance(choice_loglik, list) and bool(choice_loglik) and len(choice_loglik[0]) == 2


def against_baseline(rows: pd.DataFrame) -> pd.DataFrame:
    """Every initial (untrained) compressed accuracy cell beside the baseline of its run, model,
    task and shots (columns `*_base`), with its gain in standard errors of the difference."""
    if rows.empty or not {"metric", "value", "stderr", "method"} <= set(rows.columns):
        return pd.DataFrame()
    keys = ["run_id", "model", "task", "num_fewshot"]
    optional = [*keys, "heal_stage", "method_options", "target_cr", "n", "chance"]
    rows = rows.reindex(columns=rows.columns.union(optional, sort=False))
    data = rows[(rows.metric == "acc") & (rows.heal_stage == "initial") & rows.value.notna()]
    data = data.fillna({"num_fewshot": -1})  # shots not recorded: one group, not NaN keys
    base = data[data.method == "baseline"].drop_duplicates(keys)
    cells = data[data.method != "baseline"].merge(base, on=keys, suffixes=("", "_base"))
    if cells.empty:
        return pd.DataFrame()
    spread = (cells.stderr**2 + cells.stderr_base**2) ** 0.5
    return cells.assign(gain_stderrs=(cells.value - cells.value_base) / spread)


def accuracy_gains(rows: pd.DataFrame) -> pd.DataFrame:
    """The cells whose accuracy beats their baseline by more than GAIN_STDERRS standard errors
    of the difference, every other measurement of the same cell (another run, e.g. on more
    documents: a replication) and every `noise` control cell of the same model and task,
    whatever their gain."""
    cells = against_baseline(rows)
    if cells.empty:
        return cells
    same = ["model", "task", "num_fewshot", "method", "method_options", "target_cr"]
    flagged = cells[cells.gain_stderrs > GAIN_STDERRS][same].drop_duplicates()
    checked = cells.merge(flagged, on=same)
    # the `noise` control (see/methods/noise.py) of a flagged model and task, whatever its gain
    tasks = flagged[["model", "task"]].drop_duplicates()
    noise = cells[cells.method == "noise"].merge(tasks, on=["model", "task"])
    checked = pd.concat([checked, noise]).drop_duplicates(["run_id", *same])
    return checked.sort_values(["model", "task", "method", "target_cr", "run_id"]).reset_index(
        drop=True
    )


def control_line(cell: pd.Series) -> dict:
    """One checked gain: the accuracies, how often each model answers label 1, and the paired
    difference of their threshold-free separation (AUC)."""
    line = {
        "run_id": cell.run_id,
        "model": cell.model,
        "task": cell.task,
        "method": cell.method,
        "options": cell.method_options,
        "target_cr": cell.target_cr,
        "documents": cell.n,
        "rel_error": cell.get("fit_rel_error"),
        "acc": cell.value,
        "baseline_acc": cell.value_base,
        "chance": cell.get("chance"),
        "gain_stderrs": cell.gain_stderrs,
    }
    answers, base_answers = cell.get("doc_choice_loglik"), cell.get("doc_choice_loglik_base")
    paired = cell.get("doc_ids") == cell.get("doc_ids_base")
    if not (has_answers(answers) and has_answers(base_answers) and paired):
        return line | {"verdict": "no per-document answers (measured before they were stored)"}
    target = cell.doc_target
    margin, margin_base = margins(answers), margins(base_answers)
    diff, low, high = auc_difference_interval(margin, margin_base, target)
    if low > 0:
        verdict = "separates the labels better: unexplained, investigate"
    elif high < 0:
        verdict = "separates the labels worse; the gain is a label shift"
    else:
        verdict = "label shift: threshold-free separation tied with the baseline"
    if cell.method == "noise":  # the control itself: what a random change of the table does
        verdict = "control: " + ("separates the labels better" if low > 0 else verdict)
    return line | {
        "answers_1": float((margin > 0).mean()),
        "baseline_answers_1": float((margin_base > 0).mean()),
        "auc": margin_auc(margin, target),
        "baseline_auc": margin_auc(margin_base, target),
        "auc_difference": f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]",
        "verdict": verdict,
    }


def controls_markdown(rows: pd.DataFrame) -> list[str]:
    """The report section: every accuracy gain and its control; [] where there is none."""
    gains = accuracy_gains(rows)
    if gains.empty:
        return []
    table = pd.DataFrame([control_line(cell) for _, cell in gains.iterrows()])
    table = table[[*table.columns.drop("verdict"), "verdict"]]
    return [
        "## Accuracy above the baseline: controls",
        "",
        f"Untrained compressed cells whose accuracy beats their run's baseline by more than "
        f"{GAIN_STDERRS:g} standard errors of the difference in some run, with every run that "
        "measured the same cell (a replication on more documents among them) and the `noise` "
        "control of the same model and task (the full table, each row moved by random noise of "
        "a set relative error: does any perturbation of that size do the same?). `rel_error`: "
        "the table's relative error; `chance`: the majority label's share; `answers_1`: the "
        "share of documents answered with label 1; `auc`: how well the answer margin separates "
        "the labels at any threshold (0.5: not at all); `auc_difference`: cell minus baseline "
        "on the same documents, 95% paired bootstrap. A gain with a tied AUC is a shift in the "
        "preferred label, not a better model; these accuracies rank nothing. See "
        "see/report/controls.py.",
        "",
        table.to_markdown(index=False, floatfmt=".3g"),
        "",
    ]


def gains_note(rows: pd.DataFrame, runs: set[str]) -> list[str]:
    """A line for a results table: which of its accuracies beat their baseline by more than
    GAIN_STDERRS standard errors (untested as gains: the controls section); [] if none. A task
    the report marks uninformative (`informative = "no"`) shows no accuracy in the tables, so
    it gets no line either."""
    mine = rows[rows.run_id.isin(runs)]
    if "informative" in mine:
        mine = mine[mine.informative != "no"]
    cells = against_baseline(mine)
    if cells.empty:
        return []
    flagged = cells[cells.gain_stderrs > GAIN_STDERRS].sort_values(["model", "task", "target_cr"])
    if flagged.empty:
        return []
    named = "; ".join(
        f"{cell.model} {cell.task} {cell.method} at {cell.target_cr:g}x "
        f"({cell.value:.3g} against {cell.value_base:.3g})"
        for _, cell in flagged.iterrows()
    )
    return [
        f"Accuracies above their run baseline's by more than {GAIN_STDERRS:g} standard errors "
        "(not credited to compression; see 'Accuracy above the baseline: controls' in "
        f"reports/README.md): {named}.",
        "",
    ]
