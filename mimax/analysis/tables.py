"""Tables as the report and the verdicts show them: one number format per column, cells escaped for
HTML, and for Markdown too (Markdown renderers pass raw HTML through)."""

from __future__ import annotations

import datetime as dt
import html
import math

import numpy as np
import pandas as pd

__all__ = ["html_table", "isnan", "level_text", "md_escape", "md_table", "num"]


def isnan(x) -> bool:
    try:
        return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x)) or x is pd.NA
    except TypeError:
        return False


def level_text(value) -> str:
    """A factor level as shown in labels: floats in their shortest form (1e-4 -> "0.0001")."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def num(x, fmt: str | None = None) -> str:
    """A table cell: 4 decimals, scientific below 1e-3 (or with ``fmt``), "–" for a missing value."""
    if isnan(x):
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if fmt is not None:
            text = format(x, fmt)
        elif abs(x) < 1e-12:
            text = "0"
        elif abs(x) < 1e-3 or abs(x) >= 1e6:
            text = f"{x:.3g}"
        else:
            text = f"{x:.4f}"
        return text.replace("-", "−")
    if isinstance(x, (pd.Timestamp, dt.datetime)):
        return pd.Timestamp(x).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return str(x)


def _column_format(values: pd.Series, name: str) -> str | None:
    """One number format per column, so its digits line up: whole numbers, p-values (3 significant
    digits), small or huge values (4 significant digits), else 4 decimals."""
    x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if name.endswith("_p") or name in ("p", "p_boot"):
        return ".3g"
    if len(x) and np.all(np.isfinite(x)) and np.all(x == np.round(x)) and np.all(np.abs(x) < 1e15):
        return ".0f"
    nonzero = np.abs(x[(x != 0) & np.isfinite(x)])
    if len(nonzero) and (nonzero.min() < 1e-3 or nonzero.max() >= 1e6):
        return ".4g"
    return None


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, cell texts (unescaped) and whether each column is text (left-aligned)."""
    cols = [str(c) for c in frame.columns]
    texty = [not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
             for c in frame.columns]
    fmts = [None if t else _column_format(frame[c], str(c)) for c, t in zip(frame.columns, texty)]
    rows = [[num(v, f) for v, f in zip(rec, fmts)] for rec in frame.itertuples(index=False)]
    return cols, rows, texty


def html_table(frame: pd.DataFrame) -> str:
    cols, rows, texty = _cells(frame)
    cls = lambda i: ' class="t"' if texty[i] else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{html.escape(c)}</th>" for i, c in enumerate(cols))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(v)}</td>" for i, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f'<div class="tbl"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def md_escape(text: str) -> str:
    """Markdown renderers pass raw HTML through: escape <, > and &; | would end a table cell."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def md_table(frame: pd.DataFrame) -> str:
    cols, rows, texty = _cells(frame)
    lines = ["| " + " | ".join(md_escape(c) for c in cols) + " |",
             "|" + "|".join(":---" if t else "---:" for t in texty) + "|"]
    lines += ["| " + " | ".join(md_escape(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
