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

To add a label type: a name in :data:`LABELS` and its choice of candidates in
:meth:`Relabeler.relabel_state`.
"""
from __future__ import annotations

import os
import time

import numpy as np
from tqdm import tqdm

from . import safe_io
from .drivers import check_output, map_chunks
from .evolution import ELITE, OPERATOR_NAMES, Problem
from .expressions import ExpressionError, format_infix, parse_cached
from .proposers import ExpertProposer
from .safe_io import InputError
from .traces import load_traces, record_config, validate_traces

LABELS = ("expert", "best_of_k")


class Relabeler:
    """Relabels trajectories (parses are memoised: populations repeat across states)."""

    def __init__(self, label="expert", k=1, seed=0):
        if label not in LABELS:
            raise InputError(f"unknown label {label!r} (choose from {', '.join(LABELS)})")
        if label == "best_of_k" and not 1 <= k <= 1000:
            raise InputError(f"k must be in [1, 1000], got {k}")
        self.label, self.k, self.seed = label, (k if label == "best_of_k" else 1), int(seed)
        self.states = 0

    @staticmethod
    def tokens(text, where):
        try:
            return parse_cached(text)
        except (ExpressionError, TypeError) as e:
            raise InputError(f"{where}unparseable recorded expression: {e}") from None

    def relabel_record(self, record, index: int, where="") -> dict:
        cfg = record_config(record, where)
        try:
            problem = Problem(record["X"], record["y"], cfg, None, record.get("expression_id"))
        except ExpressionError as e:
            raise InputError(f"{where}{e}") from None
        traj = dict(record["trajectory"])
        new_gens = []
        for g, gen in enumerate(traj["generations"]):
            if not len(gen["expressions"]):
                raise InputError(f"{where}generation {g} has an empty population")
            problem.rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), g]))
            new_gens.append(self.relabel_state(problem, gen, g, f"{where}generation {g}: "))
        traj["generations"] = new_gens
        out = dict(record)
        out["trajectory"] = traj
        out.update(dagger=True, original_source=record.get("source", "neural_sr"), dagger_label=self.label,
                   dagger_k=self.k)
        return out

    def relabel_state(self, problem: Problem, gen: dict, generation: int, where="") -> dict:
        """A copy of ``gen`` with the expert's next population from that state added."""
        exprs = gen["expressions"]
        fitness = np.asarray(gen["fitnesses"], dtype=np.float64)
        prims = problem.primitives
        toks = [self.tokens(e, where) for e in exprs]
        width = max(problem.config.max_size, max(len(t) for t in toks))
        codes = np.zeros((len(toks), width), dtype=np.int16)
        cvals = np.zeros((len(toks), width))
        lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
        try:
            for i, t in enumerate(toks):
                codes[i, : len(t)], cvals[i, : len(t)] = prims.encode_values(t)
        except ExpressionError as e:
            raise InputError(f"{where}{e}") from None
        problem.load_state(codes, lengths, fitness, generation, cvals)
        n = len(toks) - 1
        elite = int(np.argmax(fitness))
        prop = ExpertProposer.propose_one(problem, n * self.k)
        _, _, cand_fit = problem.score(prop.codes, prop.lengths, prop.cvals)
        choice = np.arange(n)
        if self.k > 1:
            # candidate j of slot i is j*n + i; argmax takes the first maximum, so candidate 0 wins ties
            choice = np.argmax(cand_fit.reshape(self.k, n), axis=0) * n + np.arange(n)
        labels = [format_infix(prims.decode(prop.codes[c, : prop.lengths[c]], prop.cvals[c, : prop.lengths[c]]))
                  for c in choice.tolist()]
        ops = [OPERATOR_NAMES[o] for o in prop.operators[choice].tolist()]
        self.states += 1
        with np.errstate(over="ignore"):  # beyond float32 range becomes inf, as in the recorded fitnesses
            fit32 = np.concatenate(([fitness[elite]], cand_fit[choice])).astype(np.float32)
        gen = dict(gen)
        gen.update(
            expert_expressions=[exprs[elite]] + labels,
            expert_heritages=np.concatenate(([[elite, -1]], prop.parents[choice])).astype(np.int32),
            expert_operators=[OPERATOR_NAMES[ELITE]] + ops,
            expert_fitnesses=fit32,
        )
        return gen

    @property
    def params(self) -> dict:
        return {"label": self.label, "k": self.k, "seed": self.seed}


def _relabel_chunk(payload):
    relabeler, items, where = payload
    out = [relabeler.relabel_record(r, i, where=f"{where}: record {i}: ") for i, r in items]
    return out, relabeler.states


def relabel_file(input_path: str, output: str, relabeler: Relabeler, metadata: dict, force=False, overwrite=False,
                 quiet=False, executor: str = "local", num_workers: int = 1, ray_address=None) -> dict:
    """Relabel every state of a neural traces file into ``output`` (the input is never modified), in chunks
    of records over worker processes or Ray tasks (every state has its own random stream, so the labels do
    not depend on how the work is split). Returns the new file's metadata."""
    check_output(output, overwrite, [input_path])
    data = load_traces(input_path)
    meta = data["metadata"]
    source = meta.get("source") or data["records"][0].get("source")
    if meta.get("dagger"):
        raise InputError(f"{input_path}: already a DAgger trace")
    if source != "neural_sr" and not force:
        raise InputError(f"{input_path}: not a neural SR trace (source {source!r}); relabeling expert traces "
                         f"adds nothing (use --force to do it anyway)")
    t0 = time.perf_counter()
    items = list(enumerate(data["records"]))
    if executor == "local" and num_workers <= 1:
        records = [relabeler.relabel_record(r, i, where=f"{input_path}: record {i}: ")
                   for i, r in tqdm(items, disable=quiet, desc="relabel", unit="traj")]
    else:
        size = max(1, len(items) // (4 * max(num_workers, 1)))
        chunks = [(Relabeler(relabeler.label, relabeler.k, relabeler.seed), items[s:s + size], input_path)
                  for s in range(0, len(items), size)]
        done = map_chunks(_relabel_chunk, chunks, executor, num_workers, ray_address)
        records = [r for recs, _ in done for r in recs]
        relabeler.states += sum(n for _, n in done)
    elapsed = time.perf_counter() - t0
    new_meta = dict(meta)
    new_meta.update(dagger=True, original_source=source, relabel=metadata, relabel_params=relabeler.params,
                    relabeled_from=os.path.abspath(input_path), states=relabeler.states, relabel_seconds=elapsed,
                    num_records=len(records))
    safe_io.save(output, "traces", new_meta, records)
    return new_meta
