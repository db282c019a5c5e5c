"""Small helpers for printing results: sympy-simplified formulas, aligned tables."""
from __future__ import annotations

from .expressions import ExpressionError, parse, to_sympy


def simplified(text: str, max_len: int = 60) -> str:
    """A formula in sympy's simplified form (falls back to the text itself)."""
    if text is None:
        return "-"
    try:
        import sympy as sp

        out = str(sp.simplify(to_sympy(parse(text))))
    except (ExpressionError, TypeError, ValueError, RecursionError, AttributeError):
        out = text
    return out if len(out) <= max_len else out[: max_len - 3] + "..."


def table(rows, headers) -> str:
    """Plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) if rows else False for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if numeric[i] and k else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
