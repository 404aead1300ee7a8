"""Markdown tables for reports: a missing value shows as "-", not "nan"."""

from __future__ import annotations

import pandas as pd


def markdown_table(table: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """`table` as a markdown table (no index, `floatfmt` digits: 4 significant by default),
    NaN and None as "-"."""
    shown = table.astype(object).where(table.notna(), None)  # tabulate prints NaN as "nan"
    return shown.to_markdown(index=False, floatfmt=floatfmt, missingval="-")
