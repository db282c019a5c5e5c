"""The compiled (numba) kernels against the NumPy reference and their structural guarantees."""
import numpy as np
import pytest

from helpers import encode_batch, ill_conditioned_points

from nsr import kernels
from nsr.datasets import sample_tree
from nsr.expressions import Primitives, depth, evaluate, format_infix, resolve_operators

FULL_BINARY, FULL_UNARY = resolve_operators("full")
CONSTANTS = ("1.0", "-1.0", "0.5", "2.0", "0.0", "3.0")


def _predict(codes, lengths, Xt, consts, width):
    """The compiled evaluator on programs without fitted constants."""
    return kernels.predict_batch(codes, lengths, np.zeros(codes.shape, dtype=np.float64), Xt, consts, width)


def _cached_mse(cache, codes, lengths, hashes, Xt, y, consts, width):
    """(MSE per program, programs newly evaluated) through ``cache`` (no constant fitting)."""
    mse, new, _evals = cache.mse(codes, lengths, np.zeros(codes.shape, dtype=np.float64),
                                 np.zeros((len(lengths), 2), dtype=np.float64), hashes, Xt, y, consts, width)
    return mse, new


def _breed(pop, lens, fitness, n, rng, *args):
    """kernels.breed without fitted constants: (children, lengths, parents, operators)."""
    children, clens, _cv, parents, ops = kernels.breed(pop, lens, np.zeros(pop.shape, dtype=np.float64), fitness, n,
                                                       rng, *args)
    return children, clens, parents, ops


def _nan_for_nonfinite(a):
    a = np.array(a, dtype=np.float64)
    a[~np.isfinite(a)] = np.nan
    return a




def test_predict_batch_agrees_with_numpy_reference_on_random_programs():
    prims = Primitives(FULL_BINARY, FULL_UNARY, 3, constants=[float(c) for c in CONSTANTS])
    rng = np.random.default_rng(10)
    programs = [sample_tree(rng, FULL_BINARY, FULL_UNARY, int(rng.integers(0, 10)), prims.variables, CONSTANTS,
                            p_var=0.6) for _ in range(500)]
    # points that hit the protected cases: zeros, negatives, integers, fractions
    X = np.vstack([np.linspace(-2.0, 2.0, 21)[:, None].repeat(3, axis=1) * [1.0, -1.0, 0.5],
                   np.random.default_rng(11).uniform(-3, 3, size=(30, 3))])
    codes, lengths, width = encode_batch(prims, programs)
    got = _predict(codes, lengths, np.ascontiguousarray(X.T), prims.constants, width)
    assert got.shape == (len(programs), len(X))
    some_nonfinite = compared = 0
    for i, p in enumerate(programs):
        want = evaluate(p, X)
        some_nonfinite += not np.all(np.isfinite(want))
        ok = ~ill_conditioned_points(p, X)
        compared += ok.sum()
        np.testing.assert_array_equal(np.isfinite(got[i][ok]), np.isfinite(want[ok]), err_msg=format_infix(p))
        assert np.allclose(_nan_for_nonfinite(got[i][ok]), _nan_for_nonfinite(want[ok]), rtol=1e-9, atol=1e-12,
                           equal_nan=True), format_infix(p)
    assert some_nonfinite > 20  # the sample does exercise the non-finite cases
    assert compared > 0.9 * len(programs) * len(X)


def test_mse_is_inf_when_any_point_is_non_finite():
    prims = Primitives(FULL_BINARY, FULL_UNARY, 1, constants=(1.0, -1.0))
    X = np.array([[0.0], [1.0], [2.0], [-1.0]])
    y = np.array([0.0, 1.0, 2.0, -1.0])
    programs = [("x0",), ("^", "x0", "-1.0"), ("+", "x0", "1.0")]
    codes, lengths, width = encode_batch(prims, programs)
    hashes = kernels.hash_rows(codes, lengths)
    mse, n_eval = _cached_mse(kernels.FitnessCache(), codes, lengths, hashes, np.ascontiguousarray(X.T), y,
                              prims.constants, width)
    assert n_eval == 3
    assert mse[0] == 0.0
    assert mse[1] == np.inf  # 1/x0 is inf at 0: the whole candidate is non-finite
    assert mse[2] == pytest.approx(1.0)


def test_mse_cache_evaluates_each_program_once():
    prims = Primitives(("+", "*"), (), 1)
    X = np.linspace(-1, 1, 5)[:, None]
    y = X[:, 0] * 2
    programs = [("x0",), ("+", "x0", "x0"), ("x0",), ("+", "x0", "x0"), ("*", "x0", "1.0")]
    codes, lengths, width = encode_batch(prims, programs)
    hashes = kernels.hash_rows(codes, lengths)
    assert hashes[0] == hashes[2] and hashes[1] == hashes[3] and len(set(hashes.tolist())) == 3
    cache = kernels.FitnessCache()
    Xt = np.ascontiguousarray(X.T)
    mse, n_eval = _cached_mse(cache, codes, lengths, hashes, Xt, y, prims.constants, width)
    assert n_eval == 3
    mse2, n_eval2 = _cached_mse(cache, codes, lengths, hashes, Xt, y, prims.constants, width)
    assert n_eval2 == 0
    np.testing.assert_array_equal(mse, mse2)
    assert mse[1] == 0.0 and mse[0] == mse[2]


def test_fitness_cache_grows_and_keeps_every_entry():
    """Many distinct programs through a small table: it grows, and every value stays retrievable."""
    prims = Primitives(("+", "*"), (), 1)
    rng = np.random.default_rng(0)
    codes, lengths = kernels.random_population(3000, rng, 5, 15, prims.op_codes, prims.leaf_codes)
    hashes = kernels.hash_rows(codes, lengths)
    X = np.linspace(-1, 1, 7)[:, None]
    Xt, y = np.ascontiguousarray(X.T), X[:, 0] ** 3
    cache = kernels.FitnessCache(capacity=16)
    first, n1 = _cached_mse(cache, codes, lengths, hashes, Xt, y, prims.constants, codes.shape[1])
    assert n1 == len(set(hashes.tolist())) == len(cache)
    assert cache.keys.shape[0] >= 2 * len(cache)
    again, n2 = _cached_mse(cache, np.ascontiguousarray(codes[::-1]), np.ascontiguousarray(lengths[::-1]),
                            np.ascontiguousarray(hashes[::-1]), Xt, y, prims.constants, codes.shape[1])
    assert n2 == 0
    np.testing.assert_array_equal(again[::-1], first)


@pytest.mark.parametrize("max_size,max_depth", [(1, 3), (3, 2), (7, 4), (25, 4), (12, 6)])
def test_random_population_respects_size_and_depth(max_size, max_depth):
    prims = Primitives(FULL_BINARY, FULL_UNARY, 2)
    rng = np.random.default_rng(max_size)
    codes, lengths = kernels.random_population(200, rng, max_depth, max_size, prims.op_codes, prims.leaf_codes)
    for c, n in zip(codes, lengths):
        tokens = prims.decode(c[:n])
        assert 1 <= len(tokens) <= max_size
        assert depth(tokens) <= max_depth
        format_infix(tokens)  # well formed


def test_breed_children_are_well_formed_and_within_max_size():
    prims = Primitives(FULL_BINARY, FULL_UNARY, 2)
    rng = np.random.default_rng(12)
    max_size = 9
    pop, lens = kernels.random_population(40, rng, 4, max_size, prims.op_codes, prims.leaf_codes)
    fitness = rng.standard_normal(40)
    for _ in range(5):
        children, clens, parents, ops = _breed(pop, lens, fitness, 39, rng, 3, 0.7, 4, max_size, prims.op_codes,
                                               prims.leaf_codes)
        for k in range(39):
            tokens = prims.decode(children[k, : clens[k]])
            format_infix(tokens)
            assert len(tokens) <= max_size
            if ops[k] == kernels.CROSSOVER:
                assert parents[k, 0] >= 0 and parents[k, 1] >= 0
            else:
                assert ops[k] == kernels.MUTATION and parents[k, 0] >= 0 and parents[k, 1] == -1
            assert np.all(parents[k] < 40)
        assert {kernels.CROSSOVER, kernels.MUTATION} <= set(ops.tolist())
        pop, lens = children, clens
        fitness = rng.standard_normal(39)
