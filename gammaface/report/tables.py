"""Markdown tables without an extra dependency."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _cell(value: object, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(_cell(v, digits) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])
