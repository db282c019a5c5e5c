"""Proposers of children for :func:`nsr.evolution.evolve`, and the initial population.

A proposer has one method, ``propose(problems, n_children) -> [Proposal]``,
one proposal per problem. The expert (BasicSR's operators) works on each
problem's own generator; the neural proposer lives in :mod:`nsr.neural`;
:class:`MixedProposer` lets each child slot come from the expert with
probability ``beta``, else from the model.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .evolution import NEURAL, Problem, Proposal
from .expressions import FIT_CODE, Primitives


def seed_expressions(prims: Primitives) -> list:
    """Simple seeds: each variable and constant, x+c, x*c, x*x, and each unary of each variable
    (constants include the placeholder ``C`` of a fitted constant when fitting)."""
    consts = prims.constant_leaves
    seeds = [(v,) for v in prims.variables] + [(c,) for c in consts]
    ops = set(prims.operators)
    for v in prims.variables:
        for c in consts:
            if "+" in ops:
                seeds.append(("+", v, c))
            if "*" in ops:
                seeds.append(("*", v, c))
        if "*" in ops:
            seeds.append(("*", v, v))
        seeds.extend((u, v) for u in prims.unary)
    return list(dict.fromkeys(seeds))


def initial_population(problem: Problem):
    """Seeds (a random subset when there are more than the population), then
    random trees, avoiding duplicates where a few retries allow. Returns
    (codes, lengths, fitted constants' starting values)."""
    cfg, prims, rng = problem.config, problem.primitives, problem.rng
    n = cfg.population_size
    seeds = [s for s in seed_expressions(prims) if len(s) <= cfg.max_size]
    if len(seeds) > n:
        keep = np.sort(rng.choice(len(seeds), size=n, replace=False))
        seeds = [seeds[i] for i in keep]
    width = cfg.max_size
    codes = np.zeros((n, width), dtype=np.int16)
    lengths = np.zeros(n, dtype=np.int64)
    for i, s in enumerate(seeds):
        codes[i, : len(s)] = prims.encode(s)
        lengths[i] = len(s)
    seen = set(kernels.hash_rows(codes[: len(seeds)], lengths[: len(seeds)]).tolist())
    filled = len(seeds)
    for _attempt in range(10):
        if filled == n:
            break
        need = n - filled
        cand, clen = kernels.random_population(need, rng, cfg.max_depth, cfg.max_size, prims.op_codes, prims.leaf_codes)
        hashes = kernels.hash_rows(cand, clen).tolist()
        for j, h in enumerate(hashes):
            if h not in seen or _attempt == 9:
                seen.add(h)
                codes[filled] = cand[j]
                lengths[filled] = clen[j]
                filled += 1
                if filled == n:
                    break
    return codes, lengths, np.where(codes == FIT_CODE, kernels.FIT_INIT, 0.0)


class ExpertProposer:
    """BasicSR's operators: tournament selection, subtree crossover, subtree mutation."""

    def propose(self, problems, n_children):
        return [self.propose_one(p, n_children) for p in problems]

    @staticmethod
    def propose_one(p: Problem, n_children: int) -> Proposal:
        cfg, prims = p.config, p.primitives
        codes, lengths, cvals, parents, ops = kernels.breed(
            p.codes, p.lengths, p.cvals, p.fitness, n_children, p.rng, cfg.tournament_size, cfg.crossover_prob,
            cfg.max_depth, cfg.max_size, prims.op_codes, prims.leaf_codes, cfg.point_mutation_prob)
        return Proposal(codes, lengths, parents, ops, cvals)


class MixedProposer:
    """Each child slot comes from the expert with probability ``beta``, else from the model.

    The trace records who made each child through its operator (``neural`` or
    the expert's ``crossover``/``mutation``).
    """

    def __init__(self, neural, beta: float, expert=None):
        self.neural, self.beta = neural, float(beta)
        self.expert = expert or ExpertProposer()

    def propose(self, problems, n_children):
        if self.beta >= 1.0:  # exactly the expert's run (no mask drawn from its stream), no model work
            return self.expert.propose(problems, n_children)
        masks = [p.rng.random(n_children) < self.beta for p in problems]
        counts = [int((~m).sum()) for m in masks]
        neural = self.neural.propose(problems, counts)
        out = []
        for p, m, nprop in zip(problems, masks, neural):
            eprop = self.expert.propose_one(p, int(m.sum()))
            width = max(eprop.codes.shape[1], nprop.codes.shape[1])
            codes = np.zeros((n_children, width), dtype=np.int16)
            codes[m, : eprop.codes.shape[1]] = eprop.codes
            codes[~m, : nprop.codes.shape[1]] = nprop.codes
            cvals = np.zeros((n_children, width))
            cvals[m, : eprop.cvals.shape[1]] = eprop.cvals
            if nprop.cvals is not None:
                cvals[~m, : nprop.cvals.shape[1]] = nprop.cvals
            lengths = np.empty(n_children, dtype=np.int64)
            lengths[m], lengths[~m] = eprop.lengths, nprop.lengths
            parents = np.empty((n_children, 2), dtype=np.int64)
            parents[m], parents[~m] = eprop.parents, nprop.parents
            ops = np.full(n_children, NEURAL, dtype=np.int8)
            ops[m] = eprop.operators
            out.append(Proposal(codes, lengths, parents, ops, cvals))
        return out
