"""Scikit-learn style front ends over the one evolution loop."""
from __future__ import annotations

import numpy as np

from .evolution import EvolutionConfig, Problem, evolve
from .expressions import DEFAULT_CONSTANTS, Expression, Primitives, resolve_operators
from .proposers import ExpertProposer, initial_population


def validate_xy(X, y):
    """Float64 (X 2-D, y 1-D) or a ValueError naming the problem."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_points x n_vars), got shape {X.shape}")
    if y.ndim != 1:
        y = y.ravel() if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} points but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError("no data points")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or inf")
    return X, y


class SRBase:
    """Shared parameters and results; subclasses choose the proposer."""

    def __init__(self, population_size=100, num_generations=50, max_depth=4, max_size=25, tournament_size=3,
                 crossover_prob=0.7, operator_set="arith", binary_operators=None, unary_operators=None,
                 constants=DEFAULT_CONSTANTS, parsimony=1e-3, mse_threshold=1e-10, early_stop=True,
                 simplify_generations=0, time_limit=None, collect_trajectory=False, seed=None):
        self.population_size = population_size
        self.num_generations = num_generations
        self.max_depth = max_depth
        self.max_size = max_size
        self.tournament_size = tournament_size
        self.crossover_prob = crossover_prob
        self.operator_set = operator_set
        self.binary_operators = binary_operators
        self.unary_operators = unary_operators
        self.constants = tuple(constants)
        self.parsimony = parsimony
        self.mse_threshold = mse_threshold
        self.early_stop = early_stop
        self.simplify_generations = simplify_generations
        self.time_limit = time_limit
        self.collect_trajectory = collect_trajectory
        self.seed = seed
        self.config().validate()
        resolve_operators(operator_set, binary_operators, unary_operators)

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in (
            "population_size", "num_generations", "max_depth", "max_size", "tournament_size", "crossover_prob",
            "operator_set", "binary_operators", "unary_operators", "constants", "parsimony", "mse_threshold",
            "early_stop", "simplify_generations", "time_limit", "collect_trajectory", "seed")}

    def config(self) -> EvolutionConfig:
        return EvolutionConfig(
            population_size=self.population_size, num_generations=self.num_generations, max_depth=self.max_depth,
            max_size=self.max_size, tournament_size=self.tournament_size, crossover_prob=self.crossover_prob,
            parsimony=self.parsimony, mse_threshold=self.mse_threshold, early_stop=self.early_stop,
            simplify_generations=self.simplify_generations, time_limit=self.time_limit,
            collect_trajectory=self.collect_trajectory)

    def primitives(self, n_vars) -> Primitives:
        binary, unary = resolve_operators(self.operator_set, self.binary_operators, self.unary_operators)
        return Primitives(binary, unary, n_vars, self.constants)

    def make_problem(self, X, y, rng=None, problem_id=None) -> Problem:
        X, y = validate_xy(X, y)
        rng = rng if rng is not None else np.random.default_rng(self.seed)
        return Problem(X, y, self.primitives(X.shape[1]), rng, self.config().validate(), problem_id)

    def _finish(self, problem: Problem):
        self.problem_ = problem
        self.best_model_ = Expression(problem.best_tokens())
        self.best_progression = list(problem.best_progression)
        self.trajectory = problem.trajectory() if self.collect_trajectory else None
        self.n_features_in_ = problem.X.shape[1]
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        return self.best_model_.evaluate(X)

    def get_final_mse(self) -> float:
        return float(self.problem_.mse[self.problem_.best_index()])


class BasicSR(SRBase):
    """The genetic-programming expert.

    >>> model = BasicSR(population_size=50, num_generations=20, seed=0).fit(X, y)
    >>> print(model.best_model_, model.get_final_mse())
    """

    def fit(self, X, y, rng=None):
        problem = self.make_problem(X, y, rng)
        evolve([problem], ExpertProposer(), initial_population)
        return self._finish(problem)
