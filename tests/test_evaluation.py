"""nsr/metrics.py (what "solved" means) and nsr/evaluation.py (solve rates over expression sets, through the
one driver)."""
import numpy as np
import pytest

from nsr.config import EvolutionConfig
from nsr.evaluation import evaluate, summarize
from nsr.expressions import evaluate as eval_expr
from nsr.expressions import parse
from nsr.metrics import (R2_SOLVED, SOLVED_MSE, accuracy_solution, fresh_points, fresh_r2, solved_on_data,
                         symbolic_solution)
from nsr.search import Searcher

ROW_KEYS = {"id", "index", "seed", "target", "found", "train_mse", "r2", "solved", "generations", "evaluations",
            "time", "well_formed_pct", "model_time"}


def _record(expr, lo=-1.0, hi=1.0, n=30, seed=0, **extra):
    X = np.random.default_rng(seed).uniform(lo, hi, size=(n, 1))
    return {"id": extra.pop("id", 0), "expression": expr, "X": X, "y": eval_expr(parse(expr), X), **extra}


def test_solved_on_data_and_accuracy_solution_thresholds():
    assert solved_on_data(0.0) and solved_on_data(SOLVED_MSE) and not solved_on_data(SOLVED_MSE * 1.01)
    assert not solved_on_data(np.inf) and not solved_on_data(np.nan)
    assert accuracy_solution(1.0) and accuracy_solution(R2_SOLVED) and not accuracy_solution(0.9999)
    assert not accuracy_solution(-np.inf)


@pytest.mark.parametrize("found, target, expected", [
    ("((x0 * 2.0000001) + 3.0)", "(x0 * 2.0)", True),      # a constant difference, fitted constants rounded
    ("((0.5 * x0) * x1)", "(x0 * x1)", True),              # a constant ratio
    ("(sin(x0) + (x1 * x1))", "(sin(x0) + (x1 ^ 2.0))", True),
    ("(x0 + x1)", "(x0 * x1)", False),
    ("((x0 * 2.001) + 3.0)", "(x0 * 2.0)", False),         # 2.001 is a different constant, not rounding
    ("3.0", "3.0", False),                                 # a constant model is never a symbolic solution
])
def test_symbolic_solution_follows_srbench(found, target, expected):
    assert symbolic_solution(found, target) is expected


def test_symbolic_solution_is_false_when_sympy_fails(monkeypatch):
    """sympy can raise on unlucky expressions (a 500k-evaluation Feynman run met OverflowError: too many digits
    in integer): that is "cannot decide", never a crash of the whole evaluation."""
    import sympy

    def boom(self, *a, **kw):
        raise OverflowError("too many digits in integer")

    calls = []

    def spy(self, *a, **kw):
        calls.append(self)
        boom(self)

    monkeypatch.setattr(sympy.Expr, "is_constant", spy)
    assert symbolic_solution("(x0 + sin(x1))", "(x0 * x1)") is False
    assert calls  # the failing sympy call was reached


def test_fresh_points_come_from_the_stored_range_else_from_X():
    rec = _record("x0", lo=0.0, hi=1.0, x_range=(5.0, 6.0))
    P = fresh_points(rec, n=200, seed=1)
    assert P.shape == (200, 1) and P.min() >= 5.0 and P.max() <= 6.0
    np.testing.assert_array_equal(P, fresh_points(rec, n=200, seed=1))  # seeded
    rec2 = _record("x0", lo=0.0, hi=1.0)
    P2 = fresh_points(rec2, n=200)
    assert P2.min() >= rec2["X"].min() and P2.max() <= rec2["X"].max()


def test_fresh_r2_tells_the_exact_formula_from_a_fit_of_the_training_points():
    rec = _record("((x0 * x0) * x0)", lo=-1.0, hi=1.0)
    assert fresh_r2("(x0 * (x0 * x0))", rec) == pytest.approx(1.0)
    assert fresh_r2("x0", rec) < 0.9
    P = fresh_points(rec)
    truth = eval_expr(parse(rec["expression"]), P)
    want = 1.0 - np.sum((truth - 1.0) ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert fresh_r2("(1.0 / (x0 - x0))", rec) == pytest.approx(want)  # protected: 1 / 0 is 1
    assert fresh_r2("(x0 ^ 1000.0)", _record("x0", lo=5.0, hi=6.0)) == -np.inf  # not finite on fresh points
    const = _record("1.0")
    assert fresh_r2("1.0", const) == 1.0 and fresh_r2("2.0", const) == -np.inf  # a constant target


def test_evaluate_rows_are_seed_major_and_solved_means_r2_on_fresh_points():
    recs = [_record("(x0 + 1.0)", id=10), _record("((x0 * x0) * x0)", seed=3, id=11), {**_record("x0", id=12),
                                                                                     "expression": None}]
    searcher = Searcher(EvolutionConfig(population_size=20, num_generations=6))
    rows = evaluate(searcher, recs, seeds=[0, 4])
    assert [(r["seed"], r["index"], r["id"]) for r in rows] == [(0, 0, 10), (0, 1, 11), (0, 2, 12), (4, 0, 10),
                                                                 (4, 1, 11), (4, 2, 12)]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["generations"] >= 1 and r["time"] >= 0 and r["well_formed_pct"] is None  # the expert
        assert r["evaluations"] > 0  # the initial population at least
        if r["target"] is None:  # no truth: no R^2, never counted as solved
            assert r["r2"] is None and r["solved"] is False
        else:
            assert r["r2"] == pytest.approx(fresh_r2(r["found"], recs[r["index"]], seed=r["seed"]))
            assert r["solved"] == accuracy_solution(r["r2"])
    assert rows[0]["solved"] and rows[0]["train_mse"] <= SOLVED_MSE  # x0 + 1 is in the initial population
    # the same (seed, position) gives the same run, whatever else is evaluated with it
    again = evaluate(searcher, recs[:2], seeds=[4], num_workers=2)
    assert [(r["found"], r["train_mse"]) for r in again] == [(r["found"], r["train_mse"]) for r in rows[3:5]]
    s = summarize(rows)
    assert s["runs"] == 6 and s["solved"] == sum(r["solved"] for r in rows)
    assert s["solve_rate"] == s["solved"] / 6 and s["well_formed_pct"] is None
    assert s["median_train_mse"] == float(np.median([r["train_mse"] for r in rows]))
    assert summarize([])["runs"] == 0 and np.isnan(summarize([])["solve_rate"])
