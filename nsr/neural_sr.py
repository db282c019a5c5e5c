"""Neural SR: the evolution loop with the neural proposer, over a batch of problems.

A single neural run is a batch of one (:class:`NeuralSR`); :class:`BatchedNeuralSR`
advances many problems together, one model call per generation serving every
problem still running. Problems keep their own population, generator, fitness
cache and early stop, drop out of the batch when they finish, and may have
different numbers of variables.
"""
from __future__ import annotations

import os

from .datasets import ROOT
from .evolution import evolve
from .proposers import MixedProposer, initial_population
from .safe_io import InputError
from .sr import SRBase, validate_xy
from .traces import seed_for

DEFAULT_CHECKPOINT = os.path.join(ROOT, "training", "checkpoints", "default")
DEFAULT_AR_CHECKPOINT = os.path.join(ROOT, "training", "checkpoints", "default_ar")


class BatchedNeuralSR(SRBase):
    """``BatchedNeuralSR(checkpoint).batched_fit(X_list, y_list) -> (models, mses, trajectories)``."""

    def __init__(self, checkpoint=DEFAULT_CHECKPOINT, population_size=20, num_generations=50, temperature=1.0,
                 top_k=0, top_p=1.0, autoregressive=None, constrained=True, device=None, beta=0.0,
                 eval_workers=1, max_prompt_members=32, collect_trajectory=True, seed=None, **sr_params):
        super().__init__(population_size=population_size, num_generations=num_generations,
                         collect_trajectory=collect_trajectory, seed=seed, **sr_params)
        if not 0.0 <= beta <= 1.0:
            raise InputError(f"beta must be in [0, 1], got {beta}")
        self.checkpoint = checkpoint
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.autoregressive, self.constrained, self.device = autoregressive, constrained, device
        self.beta, self.eval_workers, self.max_prompt_members = beta, eval_workers, max_prompt_members
        self._neural = None

    @property
    def neural(self):
        """The neural proposer; its checkpoint loads on first use and is shared by later calls."""
        if self._neural is None:
            from .neural import NeuralProposer

            self._neural = NeuralProposer(self.checkpoint, self.device, self.temperature, self.top_k, self.top_p,
                                          self.autoregressive, self.constrained, self.max_prompt_members)
        return self._neural

    @property
    def proposer(self):
        return MixedProposer(self.neural, self.beta) if self.beta > 0 else self.neural

    def make_problems(self, X_list, y_list, rngs=None, ids=None):
        if not isinstance(X_list, (list, tuple)) or not isinstance(y_list, (list, tuple)):
            raise InputError("X_list and y_list must be lists of arrays")
        if len(X_list) != len(y_list):
            raise InputError(f"X_list has {len(X_list)} problems but y_list has {len(y_list)}")
        if not X_list:
            raise InputError("empty batch: no problems given")
        problems = []
        for i, (X, y) in enumerate(zip(X_list, y_list)):
            try:
                X, y = validate_xy(X, y)
            except ValueError as e:
                raise InputError(f"problem {i}: {e}") from None
            rng = rngs[i] if rngs is not None else seed_for(self.seed if self.seed is not None else 0, i)
            problems.append(self.make_problem(X, y, rng=rng, problem_id=ids[i] if ids is not None else i))
        return problems

    def run_problems(self, problems, batch_size=None, progress=None):
        """Evolve ``problems`` in batches of ``batch_size`` (default: all at once)."""
        self.neural.check(problems)
        size = batch_size or len(problems)
        for start in range(0, len(problems), size):
            evolve(problems[start:start + size], self.proposer, initial_population, progress=progress,
                   workers=self.eval_workers)
        return problems

    def batched_fit(self, X_list, y_list, batch_size=None):
        problems = self.run_problems(self.make_problems(X_list, y_list), batch_size)
        self.problems_ = problems
        models = [p.best_tokens() for p in problems]
        from .expressions import Expression

        models = [Expression(t) for t in models]
        mses = [float(p.mse[p.best_index()]) for p in problems]
        trajectories = [p.trajectory() for p in problems]
        return models, mses, trajectories


class NeuralSR(BatchedNeuralSR):
    """Neural SR on one problem: the batch-of-one case, with BasicSR's interface."""

    def fit(self, X, y, rng=None):
        problems = self.make_problems([X], [y], rngs=[rng] if rng is not None else None)
        self.run_problems(problems)
        return self._finish(problems[0])


def batched_fit(X_list, y_list, checkpoint=DEFAULT_CHECKPOINT, batch_size=None, **params):
    """One call: ``(final_models, final_mses, trajectories)`` for a list of problems."""
    return BatchedNeuralSR(checkpoint, **params).batched_fit(X_list, y_list, batch_size)
