"""The one Markdown table writer (pandas' `to_markdown`), with the package's number format."""

from __future__ import annotations

import numpy as np
import pandas as pd


def cell(value: object, digits: int = 3) -> str:
    """A float to `digits` decimals; a missing value (None, NaN, inf) as 'n/a'; anything else
    as text."""
    if value is None:
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table of `df` without its index; cells are formatted here, so tabulate is told
    not to re-read them as numbers."""
    text = df.map(lambda v: cell(v, digits)) if len(df) else df.astype(str)
    return text.to_markdown(index=False, disable_numparse=True) + "\n"
