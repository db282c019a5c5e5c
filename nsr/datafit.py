"""Fitting a user's table: the held-out split, the fit, its metrics and front, the result as plain data.

``basic_sr.py --data`` is a thin CLI over :func:`fit_table`; the result dict is what it prints and what
``--output`` writes as JSON (numbers as numbers, formulas as text in the table's own variable names).
"""
from __future__ import annotations

import math
import time

import numpy as np

from .expressions import Expression
from .metrics import r2_score
from .tables import Table, split
from .traces import trace_record


def _mse(y, pred) -> float:
    with np.errstate(all="ignore"):
        v = float(np.mean((y - pred) ** 2))
    return v if math.isfinite(v) else math.inf


def fit_table(table: Table, estimator, test_fraction: float = 0.25, seed: int = 0, progress: bool = False) -> dict:
    """Split ``table`` (seeded), fit ``estimator`` (a BasicSR) on the training rows, score on the rest."""
    train, test = split(len(table.y), test_fraction, seed)
    t0 = time.perf_counter()
    estimator.set_params(seed=seed)
    estimator.fit(table.X[train], table.y[train], progress=progress)
    seconds = time.perf_counter() - t0
    names = table.names
    model = Expression(estimator.best_model_.tokens, names)
    Xtr, ytr, Xte, yte = table.X[train], table.y[train], table.X[test], table.y[test]

    def metrics(expr):
        pred = expr.evaluate(Xtr)
        out = {"train_mse": _mse(ytr, pred), "train_r2": r2_score(ytr, pred)}
        if len(test):
            pred = expr.evaluate(Xte)
            out.update(test_mse=_mse(yte, pred), test_r2=r2_score(yte, pred) if len(test) > 1 else None)
        return out

    front = []
    for e in estimator.problem_.front.entries():
        expr = Expression(e["tokens"], names)
        front.append({"complexity": e["complexity"], "loss": e["loss"], "score": e["score"],
                      "equation": str(expr), "selected": expr.tokens == model.tokens, **metrics(expr)})
    stats = estimator.problem_.stats
    if estimator.collect_trajectory:  # the run as a trace record, its variables mapped to the table's columns
        record = {"id": 0, "expression": None, "variable_names": names, "columns": table.features,
                  "target_name": table.target}
        estimator.trace_ = trace_record(estimator.problem_, record, 0, seed, seconds, "basic_sr")
    return {
        "data": {"path": table.path, "target": table.target, "features": list(table.features),
                 "variables": dict(zip(table.names, table.features)), "renamed": dict(table.renamed),
                 "rows": len(table.y), "rows_in_file": table.rows_in_file, "rows_dropped": table.rows_dropped,
                 "subsampled": table.subsampled, "train_rows": len(train), "test_rows": len(test),
                 "test_fraction": test_fraction, "seed": seed},
        "settings": estimator.evolution_config().to_dict(),
        "model": {"equation": str(model), "size": model.size, "sympy": _sympy_text(model),
                  "latex": _latex(model), **metrics(model)},
        "front": front,
        "search": {"seconds": seconds, "model_evaluations": int(stats["model_evaluations"]),
                   "generations": len(estimator.best_progression)},
    }


def _sympy_text(expr) -> str:
    try:
        return str(expr.to_sympy())  # sympy's automatic simplification: flattened, (1.0 * x) + 0.0 -> x
    except Exception:  # sympy failing on a legal formula only costs the pretty form
        return str(expr)


def _latex(expr) -> str:
    try:
        return expr.latex()
    except Exception:
        return ""
