"""DAgger relabeling: ask the expert proposer what it would do from recorded states.

For every generation of a neural trajectory, the recorded population
(expressions and fitnesses) is loaded into a :class:`~nsr.evolution.Problem`
and the expert proposer makes the next population from exactly that state:
the elite (index 0) and ``population_size - 1`` children, with heritages and
the operator used. The labels are stored beside the neural data as
``expert_expressions``, ``expert_heritages``, ``expert_operators`` and
``expert_fitnesses``; nothing recorded by the rollout is changed.

``best_of_k``: the expert proposes k candidates per child slot and the fittest
is the label. Every state has its own generator (``SeedSequence([seed,
record index, generation])``), and candidate 0 of every slot is exactly the
plain expert label from that stream, so best-of-k labels are never less fit.
"""
from __future__ import annotations

import numpy as np

from .evolution import ELITE, OPERATOR_NAMES, EvolutionConfig, Problem
from .expressions import ExpressionError, format_infix, parse_cached
from .proposers import ExpertProposer
from .safe_io import InputError
from .traces import primitives_of

LABELS = ("expert", "best_of_k")


def _config_of(record) -> EvolutionConfig:
    p = record.get("basicsr_params") or {}
    cfg = EvolutionConfig()
    for k in ("population_size", "max_depth", "max_size", "tournament_size", "crossover_prob", "parsimony"):
        if k in p:
            setattr(cfg, k, p[k])
    return cfg


class Relabeler:
    """Relabels trajectories (parses are memoised: populations repeat across states)."""

    def __init__(self, label="expert", k=1):
        if label not in LABELS:
            raise InputError(f"unknown label {label!r} (choose from {', '.join(LABELS)})")
        if label == "best_of_k" and k < 1:
            raise InputError(f"--k must be >= 1, got {k}")
        self.label, self.k = label, (k if label == "best_of_k" else 1)
        self.states = 0

    @staticmethod
    def tokens(text):
        try:
            return parse_cached(text)
        except (ExpressionError, TypeError) as e:
            raise InputError(f"unparseable recorded expression: {e}") from None

    def relabel_record(self, record, seed: int, index: int, where="") -> dict:
        prims = primitives_of(record)
        cfg = _config_of(record)
        problem = Problem(record["X"], record["y"], prims, None, cfg, record.get("expression_id"))
        out = dict(record)
        traj = dict(record["trajectory"])
        new_gens = []
        for g, gen in enumerate(traj["generations"]):
            exprs, fits = gen.get("expressions"), gen.get("fitnesses")
            if exprs is None or fits is None or len(exprs) != len(fits) or not len(exprs):
                raise InputError(f"{where}generation {g} lacks a population with fitnesses")
            problem.rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), g]))
            new_gens.append(self.relabel_state(problem, gen, g))
        traj["generations"] = new_gens
        out["trajectory"] = traj
        out.update(dagger=True, original_source=record.get("source", "neural_sr"), dagger_label=self.label,
                   dagger_k=self.k)
        return out

    def relabel_state(self, problem: Problem, gen: dict, generation: int) -> dict:
        """A copy of ``gen`` with the expert's next population from that state added."""
        exprs = gen["expressions"]
        fitness = np.asarray(gen["fitnesses"], dtype=np.float64)
        prims = problem.primitives
        toks = [self.tokens(e) for e in exprs]
        width = max(problem.config.max_size, max(len(t) for t in toks))
        codes = np.zeros((len(toks), width), dtype=np.int16)
        lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        try:
            for i, t in enumerate(toks):
                codes[i, : len(t)] = prims.encode(t)
        except ExpressionError as e:
            raise InputError(f"generation {generation}: {e}") from None
        problem.codes, problem.lengths, problem.fitness = codes, lengths, fitness
        n = len(toks) - 1
        elite = int(np.argmax(fitness))
        prop = ExpertProposer.propose_one(problem, n * self.k)
        _, _, cand_fit = problem._score(prop.codes, prop.lengths)
        choice = np.arange(n)
        if self.k > 1:
            # candidate j of slot i is j*n + i; argmax takes the first maximum, so candidate 0 wins ties
            choice = np.argmax(cand_fit.reshape(self.k, n), axis=0) * n + np.arange(n)
        labels = [format_infix(prims.decode(prop.codes[c, : prop.lengths[c]])) for c in choice.tolist()]
        ops = [OPERATOR_NAMES[o] for o in prop.operators[choice].tolist()]
        self.states += 1
        gen = dict(gen)
        gen.update(
            expert_expressions=[exprs[elite]] + labels,
            expert_heritages=np.concatenate(([[elite, -1]], prop.parents[choice])).astype(np.int32),
            expert_operators=[OPERATOR_NAMES[ELITE]] + ops,
            expert_fitnesses=np.concatenate(([fitness[elite]], cand_fit[choice])).astype(np.float32),
        )
        return gen
