"""The compiled CPU side of neural SR equals its plain-Python definitions: children decoded from sampled rows,
inferred parents and warm-started constants (nsr.children), infix formatting (Primitives.format_many) and
error buckets (nsr.prompt)."""
import math

import numpy as np
import pytest

from nsr.children import infer, split_rows, to_children
from nsr.datasets import sample_tree
from nsr.expressions import FIT_CODE, FIT_INIT, FIT_TOKEN, Primitives, format_infix, subtrees
from nsr.neural import infer_parents
from nsr.prompt import error_buckets

BINARY, UNARY = ("+", "-", "*", "/", "^"), ("sin", "cos", "exp", "log", "sqrt", "tanh", "asin")


def _programs(prims, rng, n, max_ops=6):
    return [sample_tree(rng, prims.binary, prims.unary, int(rng.integers(0, max_ops + 1)), prims.variables,
                        list(prims.constant_leaves)) for _ in range(n)]


def _rows(prims, progs, width):
    codes = np.zeros((len(progs), width), dtype=np.int16)
    cvals = np.zeros((len(progs), width))
    for k, t in enumerate(progs):
        codes[k, : len(t)], cvals[k, : len(t)] = prims.encode_values(t)
    return codes, np.array([len(t) for t in progs], dtype=np.int64), cvals


def _warm_start_reference(child, members, member_values):
    """Each C takes the value of the best member holding the largest subtree of the child around it."""
    values = [FIT_INIT if t == FIT_TOKEN else 0.0 for t in child]
    todo = {i for i, t in enumerate(child) if t == FIT_TOKEN}
    for s, e in sorted(subtrees(child), key=lambda se: (se[0] - se[1], se[0])):
        inside = [i for i in todo if s <= i < e]
        if not inside:
            continue
        for idx, toks in members:
            at = next((q for q in range(len(toks) - (e - s) + 1) if toks[q:q + e - s] == child[s:e]), -1)
            if at >= 0:
                for i in inside:
                    values[i] = member_values[idx][at + i - s]
                todo.difference_update(inside)
                break
    return values


@pytest.mark.parametrize("fit", [False, True])
def test_compiled_parents_and_warm_starts_equal_the_reference(fit):
    rng = np.random.default_rng(3 if fit else 4)
    prims = Primitives(BINARY, UNARY, 2, (1.0, 2.0), fit_constants=fit)
    checked = 0
    for trial in range(40):
        members = list(dict.fromkeys(_programs(prims, rng, 12)))
        # children: recombinations of member subtrees (so parents exist) and fresh random ones
        kids = []
        for _ in range(15):
            a, b = members[rng.integers(len(members))], members[rng.integers(len(members))]
            sa, sb = subtrees(a), subtrees(b)
            s, e = sa[rng.integers(len(sa))]
            q, r = sb[rng.integers(len(sb))]
            kids.append(a[:s] + b[q:r] + a[e:])
        kids += _programs(prims, rng, 5)
        width = max(map(len, members + kids))
        mcodes, mlen, mcv = _rows(prims, members, width)
        mcv = np.where(mcodes == FIT_CODE, rng.normal(size=mcv.shape), mcv)
        ccodes, clen, _ = _rows(prims, kids, width)
        pop_index = rng.permutation(40)[: len(members)]  # members in rank order -> population indices
        parents, cvals = infer(ccodes, clen, np.ones(len(kids), bool), mcodes, mlen, mcv, pop_index, fit)
        subs = [(int(pop_index[m]), {t[s:e] for s, e in subtrees(t)}) for m, t in enumerate(members)]
        for k, child in enumerate(kids):
            want = infer_parents(child, subs)
            assert parents[k].tolist() == want + [-1] * (2 - len(want))
            if fit:
                ref = _warm_start_reference(child, list(enumerate(members)), mcv)
                assert np.array_equal(cvals[k, : len(child)], ref)
            checked += 1
    assert checked == 800


def test_sampled_rows_become_children_and_invalid_ones_are_flagged():
    prims = Primitives(("+", "*"), ("sin",), 1, (1.0,))
    # vocabulary ids: 0 pad, 1 eos, 2 sep, then tokens; the table maps ids to the problem's codes
    tokens = ["+", "*", "sin", "x0", "1.0", "x1"]
    code_of_id = np.array([-1, -1, -1] + [prims._code.get(t, -1) for t in tokens])
    tid = {t: 3 + i for i, t in enumerate(tokens)}
    rows = np.array([[tid["+"], tid["x0"], tid["1.0"], 1, 0, 0],     # valid
                     [tid["sin"], tid["x0"], 1, 0, 0, 0],            # valid
                     [tid["+"], tid["x0"], 1, 0, 0, 0],              # incomplete
                     [tid["x1"], 1, 0, 0, 0, 0],                     # x1 is not among the primitives
                     [tid["x0"], tid["x0"], 1, 0, 0, 0],             # trailing token
                     [tid["*"], tid["x0"], tid["*"], tid["x0"], tid["x0"], 1]])  # 5 tokens > max_size 4
    pop = np.zeros((1, 4), dtype=np.int16)
    pop[0, :1] = prims.encode(("x0",))
    codes, lengths, valid, parents, _ = to_children(rows, 6, 1, 0, 2, 4, 4, code_of_id, pop, np.array([1]),
                                                    np.zeros((1, 4)), np.array([0]), False)
    assert valid.tolist() == [True, True, False, False, False, False]
    assert lengths.tolist() == [3, 2, 0, 0, 0, 0]
    assert prims.decode(codes[0, :3]) == ("+", "x0", "1.0") and parents[0].tolist() == [0, -1]
    # autoregressive: one row, children split at <sep>, missing ones empty
    ids, n = split_rows(np.array([[tid["x0"], 2, tid["1.0"], 1, 0]]), 3, 1, 0, 2, 8)
    assert n.tolist() == [1, 1, 0] and ids[0, 0] == tid["x0"] and ids[1, 0] == tid["1.0"]


@pytest.mark.parametrize("fit", [False, True])
def test_compiled_formatting_equals_format_infix(fit):
    rng = np.random.default_rng(5)
    prims = Primitives(BINARY, UNARY, 3, (1.0, -1.0, 2.5), fit_constants=fit)
    progs = _programs(prims, rng, 2000, max_ops=9)
    width = max(map(len, progs))
    codes, lengths, cvals = _rows(prims, progs, width)
    cvals = np.where(codes == FIT_CODE, rng.normal(scale=10, size=cvals.shape), cvals)
    rows = rng.permutation(len(progs))[:1500]
    got = prims.format_many(codes, lengths, rows, cvals)
    want = [format_infix(prims.decode(codes[r, : lengths[r]], cvals[r, : lengths[r]])) for r in rows]
    assert got == want
    assert all(prims.format(codes[r, : lengths[r]], cvals[r, : lengths[r]]) == w for r, w in zip(rows[:200], want))


def test_error_buckets_equal_the_scalar_definition():
    def reference(mse, scale):  # the definition in words: half-decade bins of log10(MSE / var(y))
        if not math.isfinite(mse):
            return 30
        nmse = mse / scale
        if not math.isfinite(nmse):
            return 29
        if nmse <= 1e-12:
            return 0
        return min(max(int(math.floor((math.log10(nmse) + 12.0) / 0.5)) + 1, 1), 29)

    rng = np.random.default_rng(0)
    edges = 10.0 ** np.arange(-20, 8, 0.5)
    with np.errstate(over="ignore"):
        vals = np.concatenate([10 ** rng.uniform(-16, 8, 20000), edges, np.nextafter(edges, 0),
                               np.nextafter(edges, np.inf), [0.0, np.inf, -np.inf, np.nan, 1e308, 5e-324]])
    for scale in (1.0, 0.37, 123.4, 1e-200):
        assert error_buckets(vals, scale).tolist() == [reference(float(v), scale) for v in vals]


def test_stand_in_proposer_runs_the_neural_loop_without_a_model():
    from nsr.config import EvolutionConfig
    from nsr.drivers import file_jobs, run_batch
    from nsr.neural import StandInProposer
    from nsr.search import Searcher

    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(30, 2))
    recs = [{"X": X, "y": X[:, 0] * X[:, 1] + i} for i in range(4)]
    searcher = Searcher(EvolutionConfig(population_size=10, num_generations=5, early_stop=False,
                                        collect_trajectory=True, constant_fitting=5), neural=StandInProposer())
    probs = run_batch(searcher, file_jobs(recs, 0), lambda s, j, p, t: p)
    for p in probs:
        assert len(p.generations) == 5 and p.stats["well_formed_pct"] == 100.0
        assert all(op == "neural" for g in p.generations[1:] for op in g["operators"][1:])
