"""Do larger models lose less? Recovery against model size, per method and ratio (issue 20).

Recovery is compressed / baseline of the same run (inverted for perplexities, see build.py's
`add_recovery`), so models with different baselines compare. Per (task, metric) the points
come from one run, the one with the most models, so that limits and settings are the same
for every size; uninformative (model, task) cells (signal.py) are left out. On an accuracy
task whose chance level the signal table has for every model, recovery is measured above
chance, (c - chance) / (b - chance): a plain ratio gives every method a recovery near 1 on a
model whose baseline is itself near chance, which says nothing about the method. Its stderr,
where lm-eval gives one for both values (accuracies, not perplexities), is the delta
method's: r * sqrt((s_c / c)^2 + (s_b / b)^2), with c and b above chance where they are.
"""

from __future__ import annotations

import math

import pandas as pd

from see.report.markdown import markdown_table

POINT_COLUMNS = ["model", "params", "method", "ratio", "recovery", "recovery_stderr", "measure"]
ABOVE_CHANCE = "recovery above chance"


def model_params(rows: pd.DataFrame) -> pd.Series:
    """Each model's parameter count, from its fp32 baseline rows (bytes / 4; a bf16 run's
    bytes would halve it)."""
    fp32 = rows.dtype.fillna("float32") == "float32" if "dtype" in rows else True
    base = rows[(rows.method == "baseline") & rows.model_param_bytes.notna() & fp32]
    return (base.groupby("model").model_param_bytes.first() / 4).astype("int64")


def default_cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Initial rows of every method with its default options, dense head, informative cells."""
    informative = rows.informative if "informative" in rows else pd.Series("", index=rows.index)
    return rows[
        (rows.heal_stage == "initial")
        & (rows.method_options.fillna("") == "")
        & (rows.head_policy.fillna("dense") == "dense")
        & (informative != "no")
        & rows.value.notna()
    ]


def scaling_points(
    rows: pd.DataFrame, task: str, metric: str, chance: dict[str, float] | None = None
) -> pd.DataFrame:
    """One point per (model, method, ratio) from the run with the most models on (task, metric);
    empty when no run has two models. `chance`: model -> the task's chance level (signal
    table); recovery is measured above it when every model of the points has one."""
    if "model_param_bytes" not in rows:
        return pd.DataFrame(columns=POINT_COLUMNS)
    data = default_cells(rows[(rows.task == task) & (rows.metric == metric)])
    # models with a baseline and a compressed cell (a baseline-only run such as `zoo` has no
    # points however many models it has)
    compared = data[data.method != "baseline"].merge(
        data[data.method == "baseline"][["run_id", "model"]].drop_duplicates()
    )
    models_per_run = compared.groupby("run_id").model.nunique()
    if models_per_run.empty or models_per_run.max() < 2:
        return pd.DataFrame(columns=POINT_COLUMNS)
    data = data[data.run_id == models_per_run.idxmax()]
    base = data[data.method == "baseline"].drop_duplicates("model").set_index("model")
    data = data[(data.method != "baseline") & data.model.isin(base.index)]
    params = model_params(rows)
    chance = chance or {}
    above = bool(len(data)) and data.model.isin(list(chance)).all()
    floor = data.model.map(chance) if above else pd.Series(0.0, index=data.index)
    value, base_value = data.value - floor, data.model.map(base.value) - floor
    recovery = value / base_value if above else data.recovery
    points = pd.DataFrame(
        {
            "model": data.model,
            "params": data.model.map(params),
            "method": data.method,
            "ratio": data.target_cr.round(1),
            "recovery": recovery,
            "recovery_stderr": [
                delta_stderr(r, v, s, b, base.stderr[m])
                for r, v, s, b, m in zip(
                    recovery, value, data.stderr, base_value, data.model, strict=True
                )
            ],
            "measure": ABOVE_CHANCE if above else "recovery",
        }
    )
    return points.sort_values(["method", "ratio", "params"]).reset_index(drop=True)


def delta_stderr(
    recovery: float, value: float, stderr: float, base: float, base_stderr: float
) -> float:
    """Stderr of value / base (or its inverse: same relative error); nan without both stderrs."""
    numbers = [math.nan if pd.isna(x) else float(x) for x in (value, stderr, base, base_stderr)]
    value, stderr, base, base_stderr = numbers
    if not all(map(math.isfinite, numbers)) or value == 0 or base == 0:
        return math.nan
    return abs(recovery) * math.hypot(stderr / value, base_stderr / base)


def trend(points: pd.DataFrame) -> str:
    """Smallest against largest model: does the larger one keep more of its quality?"""
    small, large = points.iloc[0], points.iloc[-1]
    diff = large.recovery - small.recovery
    stderr = math.hypot(small.recovery_stderr, large.recovery_stderr)
    said = f"{small.model} {small.recovery:.3g} -> {large.model} {large.recovery:.3g}"
    if math.isnan(stderr):
        verb = "loses less" if diff > 0 else "loses more" if diff < 0 else "loses the same"
        return f"the larger {verb} ({said}; no stderr: direction only)"
    if abs(diff) <= 2 * stderr:
        return f"no difference beyond 2 stderr ({said}, stderr of the difference {stderr:.2g})"
    verb = "loses less" if diff > 0 else "loses more"
    return f"the larger {verb} ({said}, {abs(diff) / stderr:.1f} stderr)"


def scaling_markdown(points: pd.DataFrame) -> str:
    """A line per (method, ratio) of `scaling_points`: recovery at each size, smallest to
    largest, and the trend."""
    order = list(points.drop_duplicates("model").sort_values("params").model)
    lines = []
    for (method, ratio), group in points.groupby(["method", "ratio"], sort=True):
        recoveries = group.set_index("model").recovery
        line = {"method": method, "ratio": ratio}
        line |= {model: recoveries.get(model, math.nan) for model in order}
        line["smallest vs largest size measured: does the larger lose less?"] = (
            trend(group) if len(group) > 1 else "one size"
        )
        lines.append(line)
    return markdown_table(pd.DataFrame(lines), floatfmt=".3g")  # a size not measured: "-"
