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
    keep = ["run_id", "model", "method", "method_options", "target_cr", "heal_stage", "tokens"]
    return data[[*keep, "value"]].sort_values(keep[:5] + ["tokens"]).reset_index(drop=True)


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


def curve_markdown(rows: pd.DataFrame) -> str | None:
    points = curve_points(rows)
    if points.empty:
        return None
    table = tokens_to_recover(points)
    return table.to_markdown(index=False, floatfmt=".4g") if len(table) else None
