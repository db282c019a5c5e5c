"""A search method: the evolution loop's parameters and its proposer of children.

:class:`Searcher` is what every front end runs: the estimators (``BasicSR``,
``NeuralSR``, ``BatchedNeuralSR``), the batch driver (trace files,
evaluation, DAgger rollouts) and the relabeler. The proposer is the expert's
operators, the model (a checkpoint loaded once, lazily, and shared by every
batch), or a mixture of the two (``beta``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .config import EvolutionConfig, SamplingConfig
from .evolution import Problem, evolve
from .proposers import ExpertProposer, MixedProposer, initial_population
from .safe_io import InputError


def validate_xy(X, y):
    """Float64 (X 2-D, y 1-D) or a ValueError naming the problem (1-D ``X`` is one variable)."""
    if y is None:
        raise ValueError("this estimator requires y to be passed, but the target y is None")
    for name, v in (("X", X), ("y", y)):
        if hasattr(v, "toarray") or type(v).__module__.startswith("scipy.sparse"):
            raise TypeError(f"sparse {name} is not supported: pass a dense array ({name}.toarray())")
        if np.iscomplexobj(np.asarray(v)):
            raise ValueError(f"Complex data not supported ({name} is complex)")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_points x n_vars), got shape {X.shape}")
    if X.shape[1] == 0:
        raise ValueError(f"0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
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


class Searcher:
    """Evolution parameters plus a proposer: expert (no checkpoint), neural, or mixed (``sampling.beta > 0``)."""

    def __init__(self, evolution: EvolutionConfig, sampling: Optional[SamplingConfig] = None, neural=None):
        self.evolution = evolution
        self._neural = neural  # a ready neural proposer (e.g. the stand-in of nsr.neural), else made from sampling
        if neural is not None and sampling is None:
            sampling = neural.sampling
        self.sampling = sampling if sampling is not None and sampling.checkpoint else None

    def __getstate__(self):  # sent to worker processes without a loaded model
        return {**self.__dict__, "_neural": None}

    @property
    def source(self) -> str:
        return "neural_sr" if self.sampling else "basic_sr"

    @property
    def neural(self):
        """The neural proposer (``None`` for the expert); its checkpoint loads on first use."""
        if self.sampling is not None and self._neural is None:
            from .neural import NeuralProposer

            self._neural = NeuralProposer(self.sampling)
        return self._neural

    def load(self):
        """Load and check the checkpoint now (so a bad one fails before any work); ``None`` for the expert."""
        if self.neural is None:
            return None
        ck = self.neural.load()
        binary, unary = self.evolution.operators()
        try:
            ck.vocab.check_supports(1, binary + unary, self.evolution.primitives(1).constant_leaves)
        except ValueError as e:
            raise InputError(f"{ck.path}: {e}") from None
        return ck

    def proposer(self):
        if self.neural is None:
            return ExpertProposer()
        return MixedProposer(self.neural, self.sampling.beta) if self.sampling.beta > 0 else self.neural

    def problem(self, X, y, rng: Optional[np.random.Generator], problem_id=None) -> Problem:
        X, y = validate_xy(X, y)
        return Problem(X, y, self.evolution, rng, problem_id)

    def run(self, problems, progress=None, tick=None):
        """Evolve ``problems`` together (one model call per generation serves them all); ``tick(problems)``
        after every generation."""
        workers = 1
        if self.neural is not None:
            self.neural.check(problems)
            if self.evolution.constant_fitting:  # fitting is the CPU side's bulk: the model's threads share it
                workers = self.neural.threads
        return evolve(problems, self.proposer(), initial_population, progress=progress, workers=workers, tick=tick)
