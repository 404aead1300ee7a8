"""Tokens-to-recover curves (issues 18 and 41), from published `heal-curve` and
`heal-frontier` runs (no torch here).

Each evaluated point of a healed cell is a row with its `heal_stage` (`initial`, `stage1`,
`stage2@T`) and `heal_total_tokens` (stage 1 + stage 2 tokens so far; 0 for `initial`). The
table gives, per (model, method, CR), the fewest healing tokens after which WikiText word
perplexity is within 2x (1.5x, 1.1x) of the same run's baseline. Where no evaluated point got
there, it says "not reached within N" and, where the curve still falls, extrapolates: the
excess log-perplexity log(ppl / baseline) is fitted as a power law a * T**-b of the tokens T
through the last three healed points (a line in log-log), and solved for the factor. Its
range is that of the same fit through each pair of those points (leave one out): a rough
uncertainty, marked as an extrapolation wherever it is printed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from see.config import DEFAULT_TEXT

FACTORS = (2.0, 1.5, 1.1)
HEAL_RUNS = ("-heal-curve", "-heal-frontier", "-heal-text")
FIT_POINTS = 3


def curve_points(rows: pd.DataFrame) -> pd.DataFrame:
    """(run, model, method, options, CR, tokens, word ppl) of every point of a curve run."""
    data = rows[
        rows.run_id.str.contains("|".join(HEAL_RUNS))
        & (rows.task == "wikitext")
        & (rows.metric == "word_perplexity")
        & rows.value.notna()
    ].copy()
    if data.empty:
        return pd.DataFrame()
    if "heal_total_tokens" not in data:
        data["heal_total_tokens"] = None
    initial = data.heal_stage == "initial"
    data["tokens"] = data.heal_total_tokens.where(~initial, 0).astype(float)
    if "method_config" not in data:
        data["method_config"] = None
    data["method_config"] = data.method_config.fillna("")  # the baseline has none
    if "byte_cr" not in data:
        data["byte_cr"] = None
    keep = ["run_id", "model", "method", "method_options", "target_cr", "heal_stage", "tokens"]
    columns = [*keep, "method_config", "byte_cr", "value"]
    return data[columns].sort_values(keep[:5] + ["tokens"]).reset_index(drop=True)


def power_fit(tokens: np.ndarray, excess: np.ndarray, factor: float) -> float | None:
    """Tokens at which the line through (log T, log excess) reaches log(factor); None where
    the line does not fall."""
    slope, intercept = np.polyfit(np.log(tokens), np.log(excess), 1)
    if slope >= 0:
        return None
    return float(math.exp((math.log(math.log(factor)) - intercept) / slope))


def extrapolate(
    tokens: list[float], values: list[float], base: float, factor: float
) -> tuple[float, float, float] | None:
    """(estimate, low, high) healing tokens to reach factor x base from the last FIT_POINTS
    healed points of a curve, or None where it cannot be fitted or does not fall; low and high
    come from the fits leaving one point out (high is inf where one of them does not fall)."""
    points = [(t, v) for t, v in zip(tokens, values, strict=True) if t > 0][-FIT_POINTS:]
    if len(points) < 2 or any(v <= base for _, v in points):
        return None
    t = np.array([p[0] for p in points], dtype=float)
    excess = np.log(np.array([p[1] for p in points], dtype=float) / base)
    estimate = power_fit(t, excess, factor)
    if estimate is None:
        return None
    if len(points) < 3:
        return estimate, estimate, estimate
    others = [power_fit(np.delete(t, i), np.delete(excess, i), factor) for i in range(len(t))]
    others = [math.inf if o is None else o for o in others] + [estimate]
    return estimate, min(others), max(others)


def tokens_text(tokens: float) -> str:
    if math.isinf(tokens):
        return "inf"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if tokens >= size:
            return f"{tokens / size:.3g}{unit}"
    return f"{tokens:.3g}"


def not_reached(curve: pd.DataFrame, base: float, factor: float) -> str:
    text = f"not reached within {int(curve.tokens.max()):,}"
    fit = extrapolate(curve.tokens.tolist(), curve.value.tolist(), base, factor)
    if fit is None:
        return f"{text} (no falling trend to extrapolate)"
    estimate, low, high = (tokens_text(x) for x in fit)
    return f"{text}; extrapolated ~{estimate} [{low}, {high}]"


def tokens_to_recover(points: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model, method, options, CR): tokens to reach each factor x baseline."""
    lines = []
    for (run, model), sub in points.groupby(["run_id", "model"]):
        base = sub[sub.method == "baseline"].value
        if base.empty:
            continue
        for (method, options, cr), curve in sub[sub.method != "baseline"].groupby(
            ["method", "method_options", "target_cr"]
        ):
            curve = curve.sort_values("tokens")
            line = {
                "run_id": run,
                "model": model,
                "method": method,
                "options": options,
                "target_cr": cr,
                "initial": curve[curve.tokens == 0].value.min(),
                "final": curve.value.iloc[-1],
                "final_tokens": int(curve.tokens.max()),
            }
            for factor in FACTORS:
                reached = curve[curve.value <= factor * base.iloc[0]].tokens
                line[f"tokens_to_{factor:g}x"] = (
                    f"{int(reached.min()):,}"
                    if len(reached)
                    else not_reached(curve, base.iloc[0], factor)
                )
            lines.append(line)
    return pd.DataFrame(lines)


def stage_choice(points: pd.DataFrame) -> pd.DataFrame:
    """Issue 18's stage choice: at equal total tokens, the curve runs with a stage 1 against
    those without one (stage 2 alone), per (model, method, options, CR), only where both fitted
    the method with the same resolved options (`method_config`: defaults change between runs)."""
    if points.empty:
        return pd.DataFrame()
    with_stage1 = set(points[points.heal_stage == "stage1"].run_id)
    healed = points[points.tokens > 0].assign(stage1=points.run_id.isin(with_stage1))
    keys = ["model", "method", "method_options", "target_cr", "tokens"]
    both = healed[healed.stage1].merge(
        healed[~healed.stage1], on=[*keys, "method_config"], suffixes=("_s1", "_s2")
    )
    if both.empty:
        return pd.DataFrame()
    table = both[keys].assign(
        stage1_then_stage2=both.value_s1,
        stage2_alone=both.value_s2,
        better=[
            "stage 2 alone" if b < a else "stage 1 + 2"
            for a, b in zip(both.value_s1, both.value_s2, strict=True)
        ],
        runs=both.run_id_s1 + " / " + both.run_id_s2,
    )
    return table.sort_values(keys).reset_index(drop=True)


def stage_choice_markdown(points: pd.DataFrame) -> str | None:
    table = stage_choice(points)
    return table.to_markdown(index=False, floatfmt=".4g") if len(table) else None


def curve_markdown(points: pd.DataFrame) -> str | None:
    if points.empty:
        return None
    table = tokens_to_recover(points)
    return table.to_markdown(index=False, floatfmt=".4g") if len(table) else None


def healed_frontier(points: pd.DataFrame) -> pd.DataFrame:
    """Per (model, healing tokens, byte budget) of the `heal-frontier` runs: the best method
    and its word perplexity over the same run's baseline, with every method's ratio."""
    if points.empty:
        return pd.DataFrame()
    data, lines = points[points.run_id.str.contains("-heal-frontier")], []
    for (run, model), sub in data.groupby(["run_id", "model"]):
        base = sub[sub.method == "baseline"].value
        if base.empty:
            continue
        healed = sub[sub.method != "baseline"]
        for (tokens, cr), cell in healed.groupby(["tokens", "target_cr"]):
            ratios = (cell.set_index("method").value / base.iloc[0]).sort_values()
            lines.append(
                {
                    "model": model,
                    "tokens": int(tokens),
                    "target_cr": cr,
                    "best_method": ratios.index[0],
                    "best_ratio": ratios.iloc[0],
                    "all": ", ".join(f"{m} {r:.3g}" for m, r in ratios.items()),
                    "run_id": run,
                }
            )
    return pd.DataFrame(lines)


def healed_frontier_markdown(points: pd.DataFrame) -> str | None:
    table = healed_frontier(points)
    if table.empty:
        return None
    table = table.assign(tokens=table.tokens.map(lambda t: f"{t:,}"))
    return table.to_markdown(index=False, floatfmt=".3g")


def text_choice(rows: pd.DataFrame) -> pd.DataFrame:
    """The healing-text comparison (heal-text-* runs): per (model, method, CR, tokens) each
    text's word perplexity and, against WikiText-2 validation, the paired ratio with its 95%
    bootstrap interval over the same test documents (< 1: the other text healed more)."""
    from see.report.frontier import interval_text, paired_ratio

    data = rows[
        rows.run_id.str.contains("-heal-text-")
        & (rows.task == "wikitext")
        & (rows.metric == "word_perplexity")
        & rows.value.notna()
        & (rows.heal_stage != "initial")
    ]
    if data.empty:
        return pd.DataFrame()
    data = data.assign(text=data.heal_config.map(lambda c: json.loads(c).get("text", DEFAULT_TEXT)))
    lines = []
    keys = ["model", "method", "target_cr", "heal_total_tokens"]
    for (model, method, cr, tokens), cell in data.groupby(keys):
        by_text = {row.text: row for _, row in cell.iterrows()}
        valid = by_text.get(DEFAULT_TEXT)
        for text, row in sorted(by_text.items()):
            ratio = None if valid is None or text == DEFAULT_TEXT else paired_ratio(row, valid)
            docs = len(row.doc_ids) if isinstance(row.get("doc_ids"), list) else 0
            lines.append(
                {
                    "model": model,
                    "method": method,
                    "target_cr": cr,
                    "tokens": int(tokens),
                    "text": text,
                    "word_perplexity": row.value,
                    "vs_validation": interval_text(ratio, docs) or "",
                    "passes": row.get("heal_text_passes"),
                    "run_id": row.run_id,
                }
            )
    return pd.DataFrame(lines)
