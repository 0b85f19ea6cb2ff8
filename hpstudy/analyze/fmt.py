"""Numbers as people read them, once for every text table and HTML page."""

from __future__ import annotations

import math
from typing import Any


def finite(x: Any) -> bool:
    """A real number that is not NaN or infinite (booleans are not numbers here)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def number(v: Any, *, digits: int = 4, pct: bool = False, signed: bool = False,
           fixed: bool = False, missing: str = "-") -> str:
    """One value for a table cell.

    Args:
        v: a number, or anything else (printed as text; None/NaN print ``missing``).
        digits: significant digits (or decimals with ``fixed``).
        pct: a fraction shown as a percentage with one decimal (0.934 -> ``93.4%``).
        signed: always show the sign (differences, effects).
        fixed: ``digits`` decimals instead of significant digits.
        missing: what None, NaN and infinities print as.
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return missing
    if not finite(v):
        return str(v)
    sign = "+" if signed else ""
    if pct:
        return f"{100 * v:{sign}.1f}%"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e12
                              and not fixed):
        return f"{int(v):{sign}d}"
    return f"{v:{sign}.{digits}f}" if fixed else f"{v:{sign}.{digits}g}"


def interval(lo: Any, hi: Any, **kw: Any) -> str:
    """``[lo, hi]`` with :func:`number`'s options, or ``-`` when it is not known."""
    if not finite(lo) or not finite(hi):
        return kw.get("missing", "-")
    return f"[{number(lo, **kw)}, {number(hi, **kw)}]"


def p_value(p: Any, missing: str = "-") -> str:
    """A p-value: three decimals, ``<0.001`` below that."""
    if not finite(p):
        return missing
    return "<0.001" if p < 0.001 else f"{p:.3f}"
