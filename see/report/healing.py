"""Issue 18's tokens-to-recover curves, from published `heal-curve` runs (no torch here).

Each evaluated point of a healed cell is a row with its `heal_stage` (`initial`, `stage1`,
`stage2@T`) and `heal_total_tokens` (stage 1 + stage 2 tokens so far; 0 for `initial`). The
table gives, per (model, method, CR), the fewest healing tokens after which initial WikiText
word perplexity is within 2x (1.5x, 1.1x) of the same run's baseline, or "not reached within
N" where no evaluated point got there.
"""

from __future__ import annotations

import pandas as pd

FACTORS = (2.0, 1.5, 1.1)


def curve_points(rows: pd.DataFrame) -> pd.DataFrame:
    """(run, model, method, options, CR, tokens, word ppl) of every point of a curve run."""
    data = rows[
        rows.run_id.str.contains("-heal-curve")
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
    keep = ["run_id", "model", "method", "method_options", "target_cr", "heal_stage", "tokens"]
    columns = [*keep, "method_config", "value"]
    return data[columns].sort_values(keep[:5] + ["tokens"]).reset_index(drop=True)


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
            line = {
                "run_id": run,
                "model": model,
                "method": method,
                "options": options,
                "target_cr": cr,
                "initial": curve[curve.tokens == 0].value.min(),
                "final": curve.loc[curve.tokens.idxmax()].value,
                "final_tokens": int(curve.tokens.max()),
            }
            for factor in FACTORS:
                reached = curve[curve.value <= factor * base.iloc[0]].tokens
                line[f"tokens_to_{factor:g}x"] = (
                    f"{int(reached.min()):,}"
                    if len(reached)
                    else f"not reached within {int(curve.tokens.max()):,}"
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


def stage_choice_markdown(rows: pd.DataFrame) -> str | None:
    table = stage_choice(curve_points(rows))
    return table.to_markdown(index=False, floatfmt=".4g") if len(table) else None


def curve_markdown(rows: pd.DataFrame) -> str | None:
    points = curve_points(rows)
    if points.empty:
        return None
    table = tokens_to_recover(points)
    return table.to_markdown(index=False, floatfmt=".4g") if len(table) else None
