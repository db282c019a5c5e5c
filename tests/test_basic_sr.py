"""BasicSR and the evolution loop: the scikit-learn interface, reproducibility, the
trajectory format, size limits, the fitness cache and the research code's pitfalls."""
import numpy as np
import pytest

from basic_sr import BasicSR as BasicSRFromScript
from nsr.evolution import OPERATOR_NAMES, EvolutionConfig, Problem, evolve
from nsr.config import ConfigError
from nsr.expressions import Primitives, evaluate, format_infix, parse, resolve_operators
from nsr.proposers import ExpertProposer, initial_population, seed_expressions
from nsr.estimators import BasicSR
from helpers import heritage_lists as _her

GEN_KEYS = {"generation", "population_size", "expressions", "fitnesses", "mses", "heritages", "operators",
            "best_fitness", "best_mse", "best_expression"}


def data_2d(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    y = X[:, 0] ** 3 - X[:, 0] * X[:, 1] + 0.5 * X[:, 1]
    return X, y


def fit_small(seed=1, **kw):
    X, y = data_2d()
    params = dict(population_size=30, num_generations=12, early_stop=False, collect_trajectory=True, seed=seed)
    params.update(kw)
    return BasicSR(**params).fit(X, y)


@pytest.fixture(scope="module")
def fitted():
    return fit_small()


@pytest.fixture(scope="module")
def fitted_full():
    return fit_small(seed=2, operator_set="full", num_generations=10)


# ----------------------------------------------------------------------------
# interface


def test_script_exports_the_same_class():
    assert BasicSRFromScript is BasicSR


def test_parameters_are_the_evolution_config_fields_plus_seed():
    # one source of parameters: BasicSR's defaults are EvolutionConfig's, and a parameter reaches the run
    m = BasicSR()
    assert set(m.get_params()) == set(EvolutionConfig.__dataclass_fields__) | {"seed"}
    assert m.evolution_config() == EvolutionConfig()
    X, y = data_2d(n=20)
    fitted = BasicSR(population_size=7, num_generations=3, max_size=5, early_stop=False, collect_trajectory=True,
                     seed=0).fit(X, y)
    gens = fitted.trajectory["generations"]
    assert len(gens) == 3 and all(g["population_size"] == 7 for g in gens)
    assert max(len(parse(e)) for g in gens for e in g["expressions"]) <= 5


def test_fit_returns_self_and_predict_has_the_right_shape():
    X, y = data_2d(n=30)
    m = BasicSR(population_size=20, num_generations=5, seed=0)
    assert m.fit(X, y) is m
    assert m.predict(X).shape == (30,)
    assert m.predict(X[:7]).shape == (7,)
    assert isinstance(str(m.best_model_), str) and parse(str(m.best_model_)) == m.best_model_.tokens
    assert m.trajectory is None  # not collected by default
    assert len(m.best_progression) >= 1


def test_get_final_mse_is_consistent_with_predict(fitted):
    X, y = data_2d()
    mse = np.mean((fitted.predict(X) - y) ** 2)
    assert fitted.get_final_mse() == pytest.approx(mse, rel=1e-9, abs=1e-12)
    assert fitted.best_progression[-1] == pytest.approx(mse, rel=1e-9, abs=1e-12)


def test_one_dimensional_X_is_accepted():
    x = np.linspace(-1, 1, 25)
    m = BasicSR(population_size=10, num_generations=3, seed=0).fit(x, 2 * x)
    assert m.predict(x).shape == (25,)


@pytest.mark.parametrize("kwargs", [
    dict(population_size=0), dict(population_size=1), dict(population_size=-5), dict(num_generations=0),
    dict(num_generations=-1), dict(max_size=0), dict(max_depth=0), dict(tournament_size=0),
    dict(crossover_prob=1.5), dict(crossover_prob=-0.1), dict(population_size=2.5), dict(time_limit=0),
])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):  # the message names the parameter
        BasicSR(**kwargs)


def test_unknown_operators_are_refused():
    with pytest.raises(ConfigError, match="operator_set"):
        BasicSR(operator_set="bogus")
    with pytest.raises(ConfigError, match="binary_operators"):
        BasicSR(binary_operators=["sin"])
    with pytest.raises(ConfigError, match="unary_operators"):
        BasicSR(unary_operators=["+"])


@pytest.mark.parametrize("X,y,word", [
    (np.zeros((5, 1)), np.zeros(4), "points"),
    (np.zeros((0, 1)), np.zeros(0), "no data"),
    (np.array([[0.0], [np.nan], [1.0]]), np.zeros(3), "nan"),
    (np.array([[0.0], [1.0], [2.0]]), np.array([0.0, np.inf, 1.0]), "inf"),
    (np.zeros((3, 1, 1)), np.zeros(3), "2-d"),
])
def test_fit_refuses_bad_data(X, y, word):
    with pytest.raises(ValueError, match=f"(?i){word}"):
        BasicSR(population_size=4, num_generations=2, seed=0).fit(X, y)


def test_explicit_operator_lists_are_used():
    X, y = data_2d(n=20)
    m = BasicSR(population_size=25, num_generations=6, binary_operators=["+", "*"], unary_operators=["sin"],
                early_stop=False, collect_trajectory=True, seed=3).fit(X, y)
    used = {t for g in m.trajectory["generations"] for e in g["expressions"] for t in parse(e)}
    ops = {t for t in used if t in ("+", "-", "*", "/", "^", "sin", "cos", "exp", "log", "sqrt")}
    assert ops <= {"+", "*", "sin"} and "sin" in ops


# ----------------------------------------------------------------------------
# reproducibility


def _trajectory_signature(m):
    return [(g["expressions"], g["fitnesses"].tolist(), _her(g, "heritages"), g["operators"])
            for g in m.trajectory["generations"]]


def test_same_seed_gives_the_same_trajectory(fitted):
    again = fit_small()
    assert _trajectory_signature(again) == _trajectory_signature(fitted)
    assert str(again.best_model_) == str(fitted.best_model_)
    assert again.trajectory["ancestors_of_best"] == fitted.trajectory["ancestors_of_best"]


def test_an_explicit_generator_gives_the_same_run_as_its_seed(fitted):
    X, y = data_2d()
    m = BasicSR(population_size=30, num_generations=12, early_stop=False, collect_trajectory=True)
    m.fit(X, y, rng=np.random.default_rng(1))
    assert _trajectory_signature(m) == _trajectory_signature(fitted)


def test_different_seeds_give_different_trajectories(fitted):
    other = fit_small(seed=12345)
    assert _trajectory_signature(other) != _trajectory_signature(fitted)
    later = [g["expressions"] for g in other.trajectory["generations"][1:]]
    assert later != [g["expressions"] for g in fitted.trajectory["generations"][1:]]


# ----------------------------------------------------------------------------
# trajectory format


def test_trajectory_has_the_documented_keys(fitted):
    t = fitted.trajectory
    assert {"generations", "ancestors_of_best", "best_progression", "stats"} <= set(t.keys())
    gens = t["generations"]
    assert len(gens) == 12  # early stop off: every generation, the initial one included
    for i, g in enumerate(gens):
        assert GEN_KEYS <= set(g)
        assert g["generation"] == i
        assert g["population_size"] == 30 == len(g["expressions"]) == len(g["fitnesses"])
        assert len(_her(g, "heritages")) == 30 and len(g["operators"]) == 30
        assert isinstance(g["fitnesses"], np.ndarray) and g["fitnesses"].dtype == np.float32
        assert all(isinstance(e, str) for e in g["expressions"])
        assert g["fitnesses"].max() == np.float32(g["best_fitness"])
        # best_expression is the lowest-MSE individual; best_fitness the highest fitness (the next elite)
        assert g["mses"][g["expressions"].index(g["best_expression"])] == g["mses"].min()
        assert g["mses"][g["expressions"].index(g["best_expression"])] == np.float32(g["best_mse"])
    assert gens[-1]["best_expression"] == str(fitted.best_model_)


def test_trajectory_operators_and_heritages(fitted):
    gens = fitted.trajectory["generations"]
    assert set(gens[0]["operators"]) == {"initial"}
    assert all(h == [] for h in _her(gens[0]))
    seen_ops = set()
    for prev, g in zip(gens, gens[1:]):
        assert g["operators"][0] == "elite"
        elite_parent = _her(g, "heritages")[0]
        assert len(elite_parent) == 1
        assert prev["fitnesses"][elite_parent[0]] == prev["fitnesses"].max()
        assert g["expressions"][0] == prev["expressions"][elite_parent[0]]
        assert g["fitnesses"][0] == prev["fitnesses"][elite_parent[0]]
        for op, her in zip(g["operators"][1:], _her(g, "heritages")[1:]):
            assert op in OPERATOR_NAMES and op not in ("elite", "initial")
            assert len(her) == {"crossover": 2, "mutation": 1}[op]
            seen_ops.add(op)
        for her in _her(g, "heritages"):
            assert all(0 <= p < prev["population_size"] for p in her)
    assert seen_ops == {"crossover", "mutation"}


def test_ancestors_of_best_chain_back_through_the_heritages(fitted):
    t = fitted.trajectory
    gens, anc = t["generations"], t["ancestors_of_best"]
    assert len(anc) == len(gens)
    last = gens[-1]
    assert anc[-1] == [fitted.problem_.best_index()]
    assert last["expressions"][anc[-1][0]] == str(fitted.best_model_)
    for g in range(len(gens) - 1, 0, -1):
        want = sorted({p for i in anc[g] for p in _her(gens[g])[i]})
        assert anc[g - 1] == want
        assert all(0 <= i < gens[g - 1]["population_size"] for i in anc[g - 1])
    assert all(len(a) >= 1 for a in anc)


def test_best_progression_never_gets_worse_in_fitness(fitted):
    best_fit = [g["best_fitness"] for g in fitted.trajectory["generations"]]
    assert all(b >= a for a, b in zip(best_fit, best_fit[1:]))  # elitism


# ----------------------------------------------------------------------------
# limits and the fitness cache


@pytest.mark.parametrize("opset,max_size", [("arith", 5), ("full", 7), ("full", 3)])
def test_every_individual_respects_max_size(opset, max_size):
    X, y = data_2d(n=20)
    m = BasicSR(population_size=30, num_generations=15, max_size=max_size, max_depth=4, operator_set=opset,
                early_stop=False, collect_trajectory=True, seed=4).fit(X, y)
    sizes = [len(parse(e)) for g in m.trajectory["generations"] for e in g["expressions"]]
    assert max(sizes) <= max_size
    assert max(sizes) >= max_size - 2  # the limit binds: it is not respected by accident


def test_initial_random_trees_respect_max_depth():
    from nsr.expressions import depth

    X, y = data_2d(n=20)
    for max_depth in (1, 2, 3, 4):
        m = BasicSR(population_size=40, num_generations=1, max_depth=max_depth, operator_set="full",
                    collect_trajectory=True, seed=5).fit(X, y)
        g0 = m.trajectory["generations"][0]["expressions"]
        assert max(depth(parse(e)) for e in g0) <= max(max_depth, 2)  # seeds (x+c, sin(x)) have depth 2


def test_initial_population_starts_with_the_simple_seeds():
    prims = Primitives(*resolve_operators("full"), 2, constants=(1.0,))
    seeds = seed_expressions(prims)
    for s in [("x0",), ("x1",), ("1.0",), ("+", "x0", "1.0"), ("*", "x1", "1.0"), ("*", "x0", "x0"),
              ("sin", "x1"), ("sqrt", "x0")]:
        assert s in seeds
    X, y = data_2d(n=20)
    m = BasicSR(population_size=60, num_generations=1, operator_set="full", collect_trajectory=True,
                seed=0).fit(X, y)
    g0 = m.trajectory["generations"][0]["expressions"]
    assert {format_infix(s) for s in seeds} <= set(g0)
    assert len(set(g0)) == len(g0)  # random fill avoids duplicates


def test_identical_expressions_are_not_evaluated_twice(fitted, fitted_full):
    for m in (fitted, fitted_full):
        gens = m.trajectory["generations"]
        distinct = {e for g in gens for e in g["expressions"]}
        total = sum(len(g["expressions"]) for g in gens)
        assert m.trajectory["stats"]["evaluations"] == len(distinct)
        assert len(distinct) < total  # duplicates did occur, so the cache did work


# ----------------------------------------------------------------------------
# pitfalls of the research code


def test_early_stop_triggers_with_default_settings():
    X, _ = data_2d(n=30)
    y = X[:, 0] + 1.0
    m = BasicSR(population_size=20, num_generations=30, collect_trajectory=True, seed=0).fit(X, y)
    gens = m.trajectory["generations"]
    assert len(gens) < 30
    assert len(m.best_progression) == len(gens)
    assert m.get_final_mse() <= 1e-10
    first_solved = next(i for i, b in enumerate(m.best_progression) if b <= 1e-10)
    assert len(gens) <= first_solved + 1 + EvolutionConfig().simplify_generations


def test_early_stop_triggers_on_a_target_that_needs_evolution():
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, size=(30, 1))
    y = X[:, 0] * X[:, 0] + X[:, 0]
    m = BasicSR(population_size=100, num_generations=50, seed=0).fit(X, y)
    assert m.get_final_mse() <= 1e-10
    assert len(m.best_progression) < 50


def test_early_stop_off_runs_every_generation():
    X, _ = data_2d(n=30)
    m = BasicSR(population_size=20, num_generations=9, early_stop=False, seed=0).fit(X, X[:, 0] + 1.0)
    assert len(m.best_progression) == 9


def _problem(X, y, constants=(1.0,), opset="full", **cfg):
    config = EvolutionConfig(**{"collect_trajectory": True, "operator_set": opset, "constants": constants, **cfg})
    return Problem(X, y, config, np.random.default_rng(0))


def _codes(problem, programs):
    width = max(len(p) for p in programs)
    codes = np.zeros((len(programs), width), dtype=np.int16)
    lengths = np.zeros(len(programs), dtype=np.int64)
    for i, p in enumerate(programs):
        codes[i, : len(p)] = problem.primitives.encode(p)
        lengths[i] = len(p)
    return codes, lengths


def test_candidate_non_finite_on_some_points_gets_minus_inf_and_never_wins():
    # y = x0 on points half of which are x0 == 0. The cheat x0 + (1/x0 - 1/x0) is exact where it is
    # defined and NaN on the other half; scoring only the finite points would make it win.
    X = np.array([[0.0]] * 10 + [[v] for v in np.linspace(0.5, 2.0, 10)])
    y = X[:, 0].copy()
    p = _problem(X, y, constants=(1.0, -1.0))
    cheat = ("+", "x0", "-", "^", "x0", "-1.0", "^", "x0", "-1.0")
    assert not np.all(np.isfinite(evaluate(cheat, X)))
    honest = ("*", "x0", "1.0")
    poor = ("1.0",)
    _, mse, fit = p.score(*_codes(p, [cheat, poor, honest]))
    assert fit[0] == -np.inf and not np.isfinite(mse[0])
    assert np.isfinite(fit[1]) and np.isfinite(fit[2])
    p.start(*_codes(p, [cheat, poor]))
    assert p.best_tokens() == poor
    assert p.generations[0]["best_expression"] == "1.0"


def test_non_finite_candidates_never_become_best_during_evolution():
    rng = np.random.default_rng(8)
    X = np.vstack([np.zeros((5, 1)), rng.uniform(-2, 2, size=(25, 1))])
    y = np.sin(X[:, 0]) + X[:, 0]
    m = BasicSR(population_size=40, num_generations=10, operator_set="full", constants=(1.0, -1.0, 2.0),
                early_stop=False, collect_trajectory=True, seed=9).fit(X, y)
    nonfinite_seen = 0
    for g in m.trajectory["generations"]:
        nonfinite_seen += sum(not np.all(np.isfinite(evaluate(parse(e), X))) for e in g["expressions"])
        assert np.all(np.isfinite(evaluate(parse(g["best_expression"]), X)))
        assert np.isfinite(g["best_fitness"])
    assert nonfinite_seen > 0  # such candidates did occur
    assert np.all(np.isfinite(m.predict(X)))


def test_power_trees_are_not_all_losers():
    # '^' was NaN everywhere in the research code, so every tree containing it lost.
    rng = np.random.default_rng(10)
    X = rng.uniform(-2, 2, size=(40, 1))
    y = X[:, 0] ** 3
    p = _problem(X, y, constants=(1.0, 2.0, 3.0, 0.5))
    progs = [("^", "x0", "3.0"), ("^", "x0", "2.0"), ("^", "x0", "0.5"), ("*", "x0", "x0"), ("x0",), ("1.0",)]
    _, mse, fit = p.score(*_codes(p, progs))
    assert np.all(np.isfinite(fit))
    assert int(np.argmax(fit)) == 0 and mse[0] == pytest.approx(0.0, abs=1e-20)
    m = BasicSR(population_size=30, num_generations=8, operator_set="full", constants=(1.0, 2.0, 3.0),
                early_stop=False, collect_trajectory=True, seed=11).fit(X, y)
    pow_fits = [f for g in m.trajectory["generations"] for e, f in zip(g["expressions"], g["fitnesses"])
                if "^" in e]
    assert pow_fits and np.mean(np.isfinite(pow_fits)) > 0.5


def test_size_penalty_is_scaled_to_the_target():
    # On a low-variance target a flat 0.01 x size penalty lets a constant beat the true formula.
    rng = np.random.default_rng(12)
    X = rng.uniform(-1, 1, size=(50, 1))
    y = 0.001 * X[:, 0] + 0.001
    p = _problem(X, y, constants=(0.001,), opset="arith")
    true_formula = ("+", "*", "0.001", "x0", "0.001")
    constant = ("0.001",)
    _, mse, fit = p.score(*_codes(p, [true_formula, constant]))
    assert mse[0] < 1e-20 and mse[1] < 1e-6  # both are tiny in absolute terms ...
    assert fit[0] > fit[1]  # ... but the true formula wins
    # end to end: y = 0.001 x0 is found (x0 * 0.001 is a seed) and kept against the constants
    y2 = 0.001 * X[:, 0]
    m = BasicSR(population_size=30, num_generations=5, constants=(0.001,), seed=13).fit(X, y2)
    assert "x0" in str(m.best_model_)
    np.testing.assert_allclose(m.predict(X), y2, rtol=1e-9, atol=1e-15)


def test_fitness_is_invariant_to_the_scale_of_y():
    # Error normalised by var(y): scaling target and candidates together leaves every fitness unchanged.
    rng = np.random.default_rng(14)
    X = rng.uniform(-1, 1, size=(30, 1))
    fits = []
    for scale in (1.0, 1e-4, 1e3):
        c = repr(float(scale))
        progs = [("*", c, "x0"), ("*", c, "*", "x0", "x0"), (c,), ("+", "*", c, "x0", "*", c, "*", "x0", "x0")]
        p = _problem(X, scale * (X[:, 0] ** 2 + X[:, 0]), constants=(scale,), opset="arith")
        fits.append(p.score(*_codes(p, progs))[2])
    np.testing.assert_allclose(fits[1], fits[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fits[2], fits[0], rtol=1e-9, atol=1e-12)
    assert int(np.argmax(fits[1])) == 3


NGUYEN3 = "(x0 * (1.0 + (x0 * (1.0 + (x0 * (1.0 + (x0 * (1.0 + x0))))))))"
NGUYEN4 = "(x0 * (1.0 + (x0 * (1.0 + (x0 * (1.0 + (x0 * (1.0 + (x0 * (1.0 + x0))))))))))"


def test_default_max_size_admits_nguyen_3_and_4():
    assert len(parse(NGUYEN3)) == 17 and len(parse(NGUYEN4)) == 21
    default = BasicSR().max_size
    assert len(parse(NGUYEN3)) <= default and len(parse(NGUYEN4)) <= default
    assert EvolutionConfig().max_size >= 21


@pytest.mark.parametrize("text,powers", [(NGUYEN3, 5), (NGUYEN4, 6)])
def test_population_keeps_the_smallest_nguyen_forms(text, powers):
    rng = np.random.default_rng(15)
    X = rng.uniform(-1, 1, size=(20, 1))
    y = sum(X[:, 0] ** k for k in range(1, powers + 1))
    sr = BasicSR(early_stop=False, num_generations=4, population_size=30, collect_trajectory=True)
    problem = sr.searcher().problem(X, y, rng=np.random.default_rng(0))
    codes, lengths = initial_population(problem)[:2]
    assert codes.shape[1] >= len(parse(text))
    target = parse(text)
    codes[-1, : len(target)] = problem.primitives.encode(target)
    lengths[-1] = len(target)
    evolve([problem], ExpertProposer(), lambda p: (codes, lengths))
    gens = problem.generations
    assert gens[0]["best_expression"] == text
    assert gens[0]["mses"][-1] <= 1e-20 and np.isfinite(gens[0]["fitnesses"][-1])
    for g in gens[1:]:
        assert g["expressions"][0] == text
    assert format_infix(problem.best_tokens()) == text
