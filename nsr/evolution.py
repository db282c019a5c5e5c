"""The one evolution loop.

BasicSR, neural SR, batched neural SR and mixed rollouts all run
:func:`evolve`: a batch of :class:`Problem` s, each with its own population,
random generator, fitness cache and early stop, advanced one generation at a
time. Only the *proposer* of children differs (expert operators, a model, or a
mixture); a single run is a batch of one.

Each generation the new population is the previous fittest individual (the
elite, index 0) followed by the proposer's children. Fitness is ``-(MSE /
var(y)) - parsimony * size``; a candidate that is non-finite on any point has
fitness ``-inf``. The best is the lowest-MSE individual (see
:meth:`Problem.best_index`); each run also keeps its accuracy-versus-complexity
front (:mod:`nsr.pareto`), from which ``model_selection`` picks the reported model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from . import kernels
from .config import EvolutionConfig
from .expressions import Primitives, const_token, format_infix
from .pareto import Front, select
from .simplify import polish

OPERATOR_NAMES = ("initial", "crossover", "mutation", "elite", "neural")
INITIAL, CROSSOVER, MUTATION, ELITE, NEURAL = range(5)
assert CROSSOVER == kernels.CROSSOVER and MUTATION == kernels.MUTATION


@dataclass
class Proposal:
    """Children for one problem: codes (n x width), lengths, parents (n x 2, -1 = none), operator codes,
    and the starting values of their fitted constants (n x width, aligned with codes; None: no fitting)."""

    codes: np.ndarray
    lengths: np.ndarray
    parents: np.ndarray
    operators: np.ndarray
    cvals: Optional[np.ndarray] = None


@dataclass
class Problem:
    """One regression problem under evolution."""

    X: np.ndarray
    y: np.ndarray
    config: EvolutionConfig
    rng: Optional[np.random.Generator]
    problem_id: object = None
    # filled by start()
    codes: np.ndarray = field(default=None, repr=False)
    lengths: np.ndarray = field(default=None, repr=False)
    cvals: np.ndarray = field(default=None, repr=False)  # fitted constants, aligned with codes
    ab: np.ndarray = field(default=None, repr=False)  # linear scaling (a, b) per individual: (1, 0) without
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
        self.primitives: Primitives = self.config.primitives(X.shape[1])
        self.Xt = np.ascontiguousarray(X.T)
        var = float(np.var(y))
        self.scale = var if var > 1e-300 else 1.0
        self.cache = kernels.FitnessCache(fitted_width=self.config.max_size if self.primitives.fit else 0)
        self.best_progression: list = []
        self.generations: list = []
        self.parents_history: list = []
        self._infix: dict = {}
        self._stop_at = None
        self._reported = None  # set by polish
        self._t0 = None
        self.front = Front()
        self.stats.update(evaluations=0, proposals=0, model_evaluations=0)

    # -- population bookkeeping ------------------------------------------------
    def _values(self, cvals, codes):
        return np.zeros(codes.shape) if cvals is None else cvals

    def score(self, codes, lengths, cvals=None, ab=None):
        """(hashes, MSE, fitness) of programs, through this run's cache (each distinct skeleton is evaluated,
        and its constants fitted, once). With constant fitting, ``cvals`` is fitted in place.

        ``stats['evaluations']`` counts distinct programs evaluated, ``stats['model_evaluations']`` every
        evaluation of a model, the fitting's residual and Jacobian passes included (as Operon counts)."""
        hashes = kernels.hash_rows(codes, lengths)
        ab = np.empty((len(lengths), 2)) if ab is None else ab
        mse, n_new, n_evals = self.cache.mse(codes, lengths, self._values(cvals, codes), ab, hashes, self.Xt, self.y,
                                             self.primitives.constants, codes.shape[1], self.config.constant_fitting,
                                             self.config.linear_scaling)
        self.stats["evaluations"] += n_new
        self.stats["model_evaluations"] += n_evals
        return hashes, mse, kernels.fitness_of(mse, lengths, self.scale, self.config.parsimony)

    def start(self, codes, lengths, cvals=None):
        """Set and score the initial population (generation 0)."""
        self._t0 = time.perf_counter()
        self.codes, self.lengths = codes, np.asarray(lengths, dtype=np.int64)
        self.cvals = self._values(cvals, codes)
        self.ab = np.empty((len(self.lengths), 2))
        hashes, self.mse, self.fitness = self.score(self.codes, self.lengths, self.cvals, self.ab)
        n = len(self.lengths)
        self._record(hashes, np.full((n, 2), -1, dtype=np.int64), np.full(n, INITIAL, dtype=np.int8))

    def load_state(self, codes, lengths, fitness, generation: int, cvals=None):
        """Set a recorded population (DAgger relabeling asks the expert about it); nothing is recorded."""
        self.codes, self.lengths = codes, np.asarray(lengths, dtype=np.int64)
        self.cvals = self._values(cvals, codes)
        self.fitness = np.asarray(fitness, dtype=np.float64)
        self.generation = int(generation)

    def advance(self, proposal: Proposal):
        elite = int(np.argmax(self.fitness))
        pcvals = proposal.cvals if proposal.cvals is not None else np.zeros(proposal.codes.shape)
        codes, lengths, cvals, ab = kernels.next_generation(self.codes, self.lengths, self.cvals, self.ab, elite,
                                                             proposal.codes, np.asarray(proposal.lengths, np.int64),
                                                             pcvals)
        hashes, mse, fit = self.score(codes[1:], lengths[1:], cvals[1:], ab[1:])
        elite_hash = kernels.hash_rows(codes[:1], lengths[:1])
        self.codes, self.lengths, self.cvals, self.ab = codes, lengths, cvals, ab
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
        self.front.offer(self.mse, self.lengths, self.model_tokens)
        if cfg.collect_trajectory:
            exprs = self._format_all(hashes.tolist())
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
                "best_expression": format_infix(self.model_tokens(best)) if cfg.linear_scaling else exprs[best],
            })
        # early stop, generation budget, time limit
        if cfg.early_stop and self._stop_at is None and best_mse <= cfg.mse_threshold:
            self._stop_at = self.generation + cfg.simplify_generations
        if (self.generation >= cfg.num_generations - 1
                or (self._stop_at is not None and self.generation >= self._stop_at)
                or (cfg.time_limit is not None and time.perf_counter() - self._t0 > cfg.time_limit)
                or (cfg.max_evaluations is not None and self.stats["model_evaluations"] >= cfg.max_evaluations)):
            self.done = True
            if cfg.polish:
                self._polish()
            self.stats["wall_time"] = time.perf_counter() - self._t0

    def _polish(self):
        """Replace the reported individual by its simplification (:mod:`nsr.simplify`), within what is left
        of the evaluation budget; it stays the reported best even where its error moved by the tolerance."""
        cfg, i = self.config, self.best_index()
        left = None if cfg.max_evaluations is None else cfg.max_evaluations - self.stats["model_evaluations"]
        if left is not None and left <= 0:  # the search spent the budget: nothing left to polish with
            self.stats["polish_evaluations"] = 0
            return
        codes, n, cvals, ab, sse, evals = polish(self.codes[i], self.lengths[i], self.cvals[i], self.Xt, self.y,
                                                 self.primitives.constants, cfg.polish, cfg.linear_scaling, left)
        self.codes[i], self.cvals[i], self.lengths[i], self.ab[i] = codes, cvals, n, ab
        self.mse[i] = sse / len(self.y)
        self.fitness[i] = kernels.fitness_of(self.mse[i:i + 1], self.lengths[i:i + 1], self.scale, cfg.parsimony)[0]
        self._reported = i
        self.front.offer(self.mse[i:i + 1], self.lengths[i:i + 1], lambda _: self.model_tokens(i))
        self.stats["model_evaluations"] += evals
        self.stats["polish_evaluations"] = evals

    def _format_all(self, hashes) -> list:
        """Infix text of every individual: each distinct skeleton formatted once per run (its fitted values are
        the cache's, so equal skeletons print equal), new ones in one compiled pass."""
        infix = self._infix
        new = [i for i, h in enumerate(hashes) if h not in infix]
        if new:
            for i, text in zip(new, self.primitives.format_many(self.codes, self.lengths, new, self.cvals)):
                infix.setdefault(hashes[i], text)
        return [infix[h] for h in hashes]

    # -- results ---------------------------------------------------------------
    def best_index(self) -> int:
        """The individual with the lowest MSE (ties: the fittest, i.e. the smallest).

        Parsimony steers selection, but a short near-miss must not hide an exact
        formula: the reported best, early stopping and ``ancestors_of_best`` go
        by the error alone, as gplearn reports its program. After ``polish``, the polished individual."""
        if self._reported is not None:
            return self._reported
        return int(kernels.best_index(self.mse, self.fitness))

    def tokens(self, i) -> tuple:
        """Individual ``i``'s tokens, its fitted constants shown as numbers."""
        n = self.lengths[i]
        return self.primitives.decode(self.codes[i, :n], self.cvals[i, :n])

    def model_tokens(self, i) -> tuple:
        """What individual ``i`` predicts: its tokens, inside ``((a * f) + b)`` with linear scaling."""
        toks = self.tokens(i)
        if not self.config.linear_scaling:
            return toks
        a, b = self.ab[i]
        return ("+", "*", const_token(a)) + toks + (const_token(b),)

    def skeleton(self, i) -> tuple:
        """Individual ``i``'s tokens with ``C`` for its fitted constants."""
        return self.primitives.decode(self.codes[i, : self.lengths[i]])

    def best_tokens(self) -> tuple:
        """The reported model: the lowest-MSE individual (with its linear scaling, if on)."""
        return self.model_tokens(self.best_index())

    def reported(self) -> tuple:
        """(model tokens, training MSE) of the model the run reports, by ``config.model_selection``: the best
        (lowest MSE, polished) for ``accuracy``, else the front's pick (:func:`nsr.pareto.select`)."""
        if self.config.model_selection == "accuracy":
            i = self.best_index()
            return self.model_tokens(i), float(self.mse[i])
        entries = self.front.entries()
        e = entries[select(entries, self.config.model_selection)]
        return e["tokens"], e["loss"]

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


def evolve(problems: Sequence[Problem], proposer, initializer: Callable, progress: Callable = None,
           workers: int = 1, tick: Callable = None):
    """Run every problem to its end; ``proposer.propose(active, n_children)``
    returns one :class:`Proposal` per active problem. ``progress(n)`` is told
    of each generation in which ``n`` problems finished; ``tick(problems)`` of every generation (a long single
    fit's progress bar).

    ``workers`` > 1 scores the children of different problems in that many threads: constant fitting is
    compiled code that releases the GIL, and it is most of a neural batch's CPU time (the model waits on it).
    Each problem keeps its own state, so the results do not depend on ``workers``."""
    problems = list(problems)
    if workers > 1 and len(problems) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(problems))) as pool:
            return _evolve(problems, proposer, initializer, progress, pool, tick)
    return _evolve(problems, proposer, initializer, progress, None, tick)


def _advance(pair):
    pair[0].advance(pair[1])


def _evolve(problems, proposer, initializer, progress, pool, tick=None):
    for p in problems:
        p.start(*initializer(p))
    finished = sum(p.done for p in problems)  # solved at once, or a one-generation budget
    if progress is not None and finished:
        progress(finished)
    while True:
        active = [p for p in problems if not p.done]
        if not active:
            break
        n_children = active[0].config.population_size - 1
        proposals = proposer.propose(active, n_children)
        if pool is None or len(active) == 1:
            for p, prop in zip(active, proposals):
                p.advance(prop)
        else:
            list(pool.map(_advance, zip(active, proposals)))
        finished = sum(p.done for p in active)
        if progress is not None and finished:
            progress(finished)
        if tick is not None:
            tick(problems)
    return problems
