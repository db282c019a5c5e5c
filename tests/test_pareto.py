"""The accuracy-vs-complexity front: kept during the search, Pareto-filtered, scored, and the model choice."""
import math

import numpy as np
import pytest

from nsr.estimators import BasicSR
from nsr.expressions import parse
from nsr.pareto import Front, select


def entry(c, loss, score=0.0):
    return {"complexity": c, "loss": loss, "score": score, "tokens": ("x0",)}


def test_front_keeps_the_lowest_error_per_size_and_filters_dominated_ones():
    f = Front()
    f.offer(np.array([5.0, 4.0, 9.0, np.inf]), np.array([1, 1, 3, 5]), lambda i: (f"m{i}",))
    f.offer(np.array([3.0, 6.0, np.nan]), np.array([3, 5, 7]), lambda i: (f"n{i}",))
    assert f.best == {1: (4.0, ("m1",)), 3: (3.0, ("n0",)), 5: (6.0, ("n1",))}
    e = f.entries()  # size 5 (6.0) is dominated by size 3 (3.0): off the front
    assert [(x["complexity"], x["loss"]) for x in e] == [(1, 4.0), (3, 3.0)]
    assert e[0]["score"] == 0 and e[1]["score"] == pytest.approx(-(math.log(3) - math.log(4)) / 2)


def test_select_accuracy_and_pysr_best():
    e = [entry(1, 10.0, 0.0), entry(3, 1.0, 1.15), entry(5, 0.9, 0.05), entry(9, 0.8, 0.03)]
    assert select(e, "accuracy") == 3
    assert select(e, "best") == 1  # the knee: within 1.5x of 0.8, and the highest score
    e2 = [entry(1, 10.0, 0.0), entry(3, 1.0, 1.15), entry(5, 0.0, 300.0)]
    assert select(e2, "best") == 2  # an exact fit: only it is within 1.5x of 0
    with pytest.raises(ValueError):
        select(e, "nope")


def test_the_front_is_what_the_search_saw():
    """Without fitting, each front entry's loss is the lowest MSE recorded for its size in any generation."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (50, 2))
    y = X[:, 0] ** 3 + X[:, 1] * X[:, 0] + np.sin(X[:, 1])
    m = BasicSR(population_size=40, num_generations=15, operator_set="full", collect_trajectory=True, seed=1).fit(X, y)
    seen = {}
    for gen in m.trajectory:
        for text, mse in zip(gen["expressions"], gen["mses"]):
            n = len(parse(text))
            if np.isfinite(mse):
                seen[n] = min(seen.get(n, np.inf), float(mse))
    kept = m.problem_.front.best
    assert set(kept) == set(seen)
    for n, (loss, tokens) in kept.items():
        assert loss == pytest.approx(seen[n], rel=1e-6)  # traces store float32
        assert len(tokens) == n
    front = m.problem_.front.entries()
    assert front[-1]["loss"] == pytest.approx(m.get_final_mse())  # accuracy: the front's most accurate end


def test_best_selection_prefers_a_simpler_model_on_noisy_data():
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 3, (200, 2))
    y = 2.5 * X[:, 0] * X[:, 1] + rng.normal(0, 0.3, 200)
    common = dict(population_size=200, max_evaluations=60_000, num_generations=10**6, operator_set="physics",
                  constant_fitting=10, linear_scaling=True, max_size=40, seed=0)
    acc = BasicSR(model_selection="accuracy", **common).fit(X, y)
    best = BasicSR(model_selection="best", **common).fit(X, y)
    assert acc.problem_.front.best == best.problem_.front.best  # the same search: only the choice differs
    assert best.best_model_.size <= acc.best_model_.size
    assert best.get_final_mse() <= 1.5 * acc.get_final_mse()
