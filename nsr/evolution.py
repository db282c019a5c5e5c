"""The one evolution loop.

BasicSR, neural SR, batched neural SR and mixed rollouts all run
:func:`evolve`: a batch of :class:`Problem` s, each with its own population,
random generator, fitness cache and early stop, advanced one generation at a
time. Only the *proposer* of children differs (expert operators, a model, or a
mixture); a single run is a batch of one.

Each generation the new population is the previous fittest individual (the
elite, index 0) followed by the proposer's children. Fitness is ``-(MSE /
var(y)) - parsimony * size``; a candidate that is non-finite on any point has
fitness ``-inf``. The reported best is the lowest-MSE individual (see
:meth:`Problem.best_index`).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from . import kernels
from .expressions import Primitives, format_infix

OPERATOR_NAMES = ("initial", "crossover", "mutation", "elite", "neural")
INITIAL, CROSSOVER, MUTATION, ELITE, NEURAL = range(5)
assert CROSSOVER == kernels.CROSSOVER and MUTATION == kernels.MUTATION


@dataclass
class EvolutionConfig:
    population_size: int = 100
    num_generations: int = 50  # generations in the trajectory, the initial one included
    max_depth: int = 4  # bound on random trees (initial population and mutation)
    max_size: int = 25  # bound on every individual's node count
    tournament_size: int = 3
    crossover_prob: float = 0.7
    parsimony: float = 1e-3  # per node, against the variance-normalised MSE
    mse_threshold: float = 1e-10
    early_stop: bool = True
    simplify_generations: int = 0  # extra generations after reaching the threshold
    time_limit: Optional[float] = None  # seconds per problem
    collect_trajectory: bool = False

    def validate(self):
        for name in ("population_size", "num_generations", "max_depth", "max_size", "tournament_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.population_size < 2:
            raise ValueError(f"population_size must be at least 2, got {self.population_size}")
        if not 0.0 <= self.crossover_prob <= 1.0:
            raise ValueError(f"crossover_prob must be in [0, 1], got {self.crossover_prob}")
        if not (self.parsimony >= 0 and np.isfinite(self.parsimony)):
            raise ValueError(f"parsimony must be a finite number >= 0, got {self.parsimony}")
        if self.simplify_generations < 0:
            raise ValueError(f"simplify_generations must be >= 0, got {self.simplify_generations}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be positive, got {self.time_limit}")
        return self

    def as_dict(self):
        return asdict(self)


@dataclass
class Proposal:
    """Children for one problem: codes (n x width), lengths, parents (n x 2, -1 = none), operator codes."""

    codes: np.ndarray
    lengths: np.ndarray
    parents: np.ndarray
    operators: np.ndarray


@dataclass
class Problem:
    """One regression problem under evolution."""

    X: np.ndarray
    y: np.ndarray
    primitives: Primitives
    rng: np.random.Generator
    config: EvolutionConfig
    problem_id: object = None
    # filled by start()
    codes: np.ndarray = field(default=None, repr=False)
    lengths: np.ndarray = field(default=None, repr=False)
    mse: np.ndarray = field(default=None, repr=False)
    fitness: np.ndarray = field(default=None, repr=False)
    generation: int = 0
    done: bool = False
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        X = np.asarray(self.X, dtype=np.float64)
        y = np.asarray(self.y, dtype=np.float64).ravel()
        if X.ndim == 1:
            X = X[:, None]
        self.X, self.y = X, y
        self.Xt = np.ascontiguousarray(X.T)
        var = float(np.var(y))
        self.scale = var if var > 1e-300 else 1.0
        self.cache = kernels.FitnessCache()
        self.best_progression: list = []
        self.generations: list = []
        self.parents_history: list = []
        self._infix: dict = {}
        self._stop_at = None
        self._t0 = None
        self.stats.update(evaluations=0, proposals=0)

    # -- population bookkeeping ------------------------------------------------
    def _score(self, codes, lengths):
        hashes = kernels.hash_rows(codes, lengths)
        mse, n_eval = self.cache.mse(codes, lengths, hashes, self.Xt, self.y, self.primitives.constants,
                                     codes.shape[1])
        self.stats["evaluations"] += int(n_eval)
        with np.errstate(invalid="ignore", over="ignore"):
            fit = -mse / self.scale - self.config.parsimony * lengths
        fit[~np.isfinite(mse)] = -np.inf
        return hashes, mse, fit

    def start(self, codes, lengths):
        """Set and score the initial population (generation 0)."""
        self._t0 = time.perf_counter()
        self.codes, self.lengths = codes, np.asarray(lengths, dtype=np.int64)
        hashes, self.mse, self.fitness = self._score(self.codes, self.lengths)
        n = len(self.lengths)
        self._record(hashes, np.full((n, 2), -1, dtype=np.int64), np.full(n, INITIAL, dtype=np.int8))

    def advance(self, proposal: Proposal):
        elite = int(np.argmax(self.fitness))
        width = max(self.codes.shape[1], proposal.codes.shape[1])
        new = np.zeros((1 + len(proposal.lengths), width), dtype=np.int16)
        new[0, : self.codes.shape[1]] = self.codes[elite]
        new[1:, : proposal.codes.shape[1]] = proposal.codes
        lengths = np.concatenate(([self.lengths[elite]], proposal.lengths)).astype(np.int64)
        hashes, mse, fit = self._score(new[1:], lengths[1:])
        elite_hash = kernels.hash_rows(new[:1], lengths[:1])
        self.codes, self.lengths = new, lengths
        self.mse = np.concatenate(([self.mse[elite]], mse))
        self.fitness = np.concatenate(([self.fitness[elite]], fit))
        parents = np.concatenate(([[elite, -1]], proposal.parents)).astype(np.int64)
        ops = np.concatenate(([ELITE], proposal.operators)).astype(np.int8)
        self.generation += 1
        self.stats["proposals"] += len(proposal.lengths)
        self._record(np.concatenate((elite_hash, hashes)), parents, ops)

    def _record(self, hashes, parents, ops):
        cfg = self.config
        best = self.best_index()
        best_mse = float(self.mse[best])
        self.best_progression.append(best_mse)
        self.parents_history.append(parents)
        if cfg.collect_trajectory:
            exprs = [self._format(h, i) for i, h in enumerate(hashes.tolist())]
            with np.errstate(over="ignore"):  # beyond float32 range becomes inf, as it should
                fit32, mse32 = self.fitness.astype(np.float32), self.mse.astype(np.float32)
            self.generations.append({
                "generation": self.generation,
                "population_size": len(self.lengths),
                "expressions": exprs,
                "fitnesses": fit32,
                "mses": mse32,
                "heritages": parents.astype(np.int32),  # (n, 2), -1 = no parent; see nsr.traces.parents
                "operators": [OPERATOR_NAMES[o] for o in ops.tolist()],
                "best_fitness": float(self.fitness.max()),
                "best_mse": best_mse,
                "best_expression": exprs[best],
            })
        # early stop, generation budget, time limit
        if cfg.early_stop and self._stop_at is None and best_mse <= cfg.mse_threshold:
            self._stop_at = self.generation + cfg.simplify_generations
        if (self.generation >= cfg.num_generations - 1
                or (self._stop_at is not None and self.generation >= self._stop_at)
                or (cfg.time_limit is not None and time.perf_counter() - self._t0 > cfg.time_limit)):
            self.done = True
            self.stats["wall_time"] = time.perf_counter() - self._t0

    def _format(self, h, i):
        s = self._infix.get(h)
        if s is None:
            s = format_infix(self.tokens(i))
            self._infix[h] = s
        return s

    # -- results ---------------------------------------------------------------
    def best_index(self) -> int:
        """The individual with the lowest MSE (ties: the fittest, i.e. the smallest).

        Parsimony steers selection, but a short near-miss must not hide an exact
        formula: the reported best, early stopping and ``ancestors_of_best`` go
        by the error alone, as gplearn reports its program."""
        m = self.mse.min()
        cand = np.flatnonzero(self.mse == m)
        return int(cand[np.argmax(self.fitness[cand])]) if len(cand) > 1 else int(cand[0])

    def tokens(self, i) -> tuple:
        return self.primitives.decode(self.codes[i, : self.lengths[i]])

    def best_tokens(self) -> tuple:
        return self.tokens(self.best_index())

    def ancestors_of_best(self) -> list:
        """Per generation, the sorted indices of the individuals the final best descends from."""
        current = {self.best_index()}
        out = [sorted(current)]
        for parents in reversed(self.parents_history[1:]):
            prev = set()
            for i in current:
                prev.update(int(p) for p in parents[i] if p >= 0)
            current = prev
            out.append(sorted(current))
        return out[::-1]

    def trajectory(self) -> dict:
        return {
            "generations": self.generations,
            "ancestors_of_best": self.ancestors_of_best(),
            "best_progression": list(self.best_progression),
            "stats": dict(self.stats),
        }


def evolve(problems: Sequence[Problem], proposer, initializer: Callable, progress=None, workers: int = 1):
    """Run every problem to its end; ``proposer.propose(active, n_children)``
    returns one :class:`Proposal` per active problem.

    ``workers`` > 1 scores problems in threads (the kernels release the GIL).
    """
    problems = list(problems)
    for p in problems:
        codes, lengths = initializer(p)
        p.start(codes, lengths)
    pool = ThreadPoolExecutor(workers) if workers > 1 and len(problems) > 1 else None
    try:
        while True:
            active = [p for p in problems if not p.done]
            if not active:
                break
            n_children = active[0].config.population_size - 1
            proposals = proposer.propose(active, n_children)
            if pool is None:
                for p, prop in zip(active, proposals):
                    p.advance(prop)
            else:
                list(pool.map(lambda a: a[0].advance(a[1]), zip(active, proposals)))
            if progress is not None:
                progress(sum(p.done for p in problems), active)
    finally:
        if pool is not None:
            pool.shutdown()
    return problems
