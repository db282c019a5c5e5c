"""What counts as solved. Two definitions, for two different questions:

* :func:`solved_on_data` — the run reached ``MSE <= SOLVED_MSE`` (1e-10) on
  the problem's own data points. This is what trace files record (``solved``)
  and what runs stop early on; it needs no knowledge of the true formula.
* :func:`accuracy_solution` — the found expression reaches ``R^2 >= R2_SOLVED``
  (0.99999) on 1000 *fresh* points from the problem's input range (SRBench's
  "accuracy solution"). Evaluation and benchmarks report this: it tells an
  exact formula from one that only fits the training points.
"""
from __future__ import annotations

import numpy as np

from .expressions import evaluate, parse

SOLVED_MSE = 1e-10
R2_SOLVED = 0.99999
SRBENCH_DIGITS = 3  # SRBench's symbolic check rounds the model's floats to 3 decimals


def solved_on_data(mse: float) -> bool:
    return bool(mse <= SOLVED_MSE)


def fresh_points(record, n=1000, seed=0):
    """New test inputs for a record, drawn from its input range: ``x_range`` as one (lo, hi) for every
    variable or one per variable, else the range of its X."""
    X = record["X"]
    rng = np.random.default_rng(seed)
    r = record.get("x_range")
    if r is None:
        return rng.uniform(float(X.min()), float(X.max()), size=(n, X.shape[1]))
    r = np.asarray(r, dtype=np.float64)
    if r.ndim == 1:
        return rng.uniform(r[0], r[1], size=(n, X.shape[1]))
    return rng.uniform(r[:, 0], r[:, 1], size=(n, X.shape[1]))


def fresh_r2(found_text, record, n=1000, seed=0) -> float:
    """R^2 of ``found_text`` against the record's target on fresh points (-inf if not finite)."""
    X = fresh_points(record, n, seed)
    y = evaluate(parse(record["expression"]), X)
    with np.errstate(all="ignore"):
        return r2_score(y, evaluate(parse(found_text), X))


def r2_score(y, pred) -> float:
    """The coefficient of determination; -inf where either side is not finite."""
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(pred)) or not np.all(np.isfinite(y)):
            return -np.inf
        ss_res = float(np.sum((y - pred) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else -np.inf
    return 1.0 - ss_res / ss_tot


def accuracy_solution(r2: float) -> bool:
    return bool(r2 >= R2_SOLVED)


def _round_floats(expr, digits=6):
    import sympy as sp

    return expr.xreplace({a: sp.Float(round(float(a), digits)) for a in expr.atoms(sp.Float)})


class _time_limit:
    """Raise TimeoutError after ``seconds`` (SIGALRM, main thread of a Unix process; elsewhere no limit):
    sympy's simplify can run for minutes on an unlucky expression."""

    def __init__(self, seconds):
        import signal
        import threading

        self.on = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
        self.seconds = seconds

    def __enter__(self):
        if self.on:
            import signal

            def _raise(*_):
                raise TimeoutError("sympy took too long")

            self.old = signal.signal(signal.SIGALRM, _raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.on:
            import signal

            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)


def symbolic_solution(found_text: str, target_text: str, timeout: float = 10.0, digits: int = 6) -> bool:
    """SRBench's *symbolic solution*: after simplifying the model and rounding its floats to ``digits``
    decimals, the difference to the true formula or the ratio of the two is a constant (and the model is not
    itself a constant). False when sympy cannot decide within ``timeout`` seconds.

    ``digits=6`` (the default, stricter than SRBench) is what every noiseless figure uses; SRBench's own check
    rounds to 3 decimals (``SRBENCH_DIGITS``), which noisy data needs: fitted constants then carry the noise in
    their fourth digit."""
    import sympy as sp

    from .expressions import parse, to_sympy

    try:
        with _time_limit(timeout):
            true = to_sympy(parse(target_text))
            model = _round_floats(sp.simplify(to_sympy(parse(found_text)), ratio=1), digits)
            if not model.free_symbols:
                return False
            diff = _round_floats(true - model, digits)
            frac = _round_floats(model / true, digits)
            if diff == 0 or frac.is_constant() or diff.is_constant():
                return True
            return bool(_round_floats(sp.simplify(diff, ratio=1), digits).is_constant())
    except Exception:  # sympy raising anything (seen: OverflowError from evalf, 500k Feynman run) is "cannot decide"
        return False
