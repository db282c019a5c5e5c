"""The operator registry (nsr/operators.py) is the one source: the compiled kernels' opcode and arity tables,
the NumPy reference, the parser's spellings, sympy and the vocabulary all agree with it, and for every
operator the compiled evaluator (nsr.kernels.predict_batch) equals the NumPy reference
(nsr.expressions.evaluate) on random programs."""
import math

import numpy as np
import pytest

from helpers import encode_batch, ill_conditioned_points

from nsr import kernels
from nsr.datasets import sample_tree
from nsr.expressions import (CONST_CODE0, VAR_CODE0, Primitives, evaluate, format_infix, parse, subtrees,
                             to_sympy)
from nsr.operators import (ARITY, BINARY, BY_NAME, OPCODE, OPERATOR_SETS, OPERATORS, SPELLINGS, UNARY, apply)
from nsr.tokenizer import VOCAB, Vocab

NAMES = [op.name for op in OPERATORS]
CONSTANTS = ("1.0", "-1.0", "0.5", "2.0", "0.0", "3.0")


def test_registry_tables_are_consistent():
    assert len(set(NAMES)) == len(NAMES)
    assert [OPCODE[n] for n in NAMES] == list(range(len(NAMES)))  # opcode = position
    assert all(BY_NAME[n].opcode == OPCODE[n] for n in NAMES)
    assert set(BINARY) == {n for n in NAMES if ARITY[n] == 2} and set(UNARY) == {n for n in NAMES if ARITY[n] == 1}
    assert set(BINARY) | set(UNARY) == set(NAMES)
    for spelling, name in SPELLINGS.items():
        assert spelling == name or spelling in BY_NAME[name].aliases
    for ops in OPERATOR_SETS.values():
        assert set(ops) <= set(NAMES)


def test_kernel_tables_agree_with_the_registry():
    assert kernels.N_OPERATORS == len(OPERATORS)
    assert kernels.ARITIES.tolist() == [op.arity for op in OPERATORS]
    prims = Primitives(BINARY, UNARY, 3, constants=(1.0, 2.0))
    # leaves are coded after every operator: no variable or constant is read as an operator
    assert VAR_CODE0 >= len(OPERATORS) and CONST_CODE0 >= VAR_CODE0 + 10
    assert min(prims.leaf_codes.tolist()) >= len(OPERATORS)
    assert prims.op_codes.tolist() == [OPCODE[o] for o in BINARY + UNARY]
    assert [int(prims.encode((o,))[0]) for o in BINARY + UNARY] == [OPCODE[o] for o in BINARY + UNARY]
    # the kernel's structure walk uses the same arities: subtree ends agree with the reference parser
    rng = np.random.default_rng(0)
    for _ in range(50):
        tokens = sample_tree(rng, BINARY, UNARY, int(rng.integers(1, 8)), prims.variables, ("1.0", "2.0"))
        codes = prims.encode(tokens)
        ends = np.empty(len(codes) + 1, dtype=np.int64)
        kernels.subtree_ends(codes, len(codes), ends)
        assert sorted((i, int(ends[i])) for i in range(len(codes))) == sorted(subtrees(tokens))


def test_the_vocabulary_holds_every_operator_with_its_arity():
    v = Vocab()
    for op in OPERATORS:
        assert op.name in VOCAB and v.arity[v.ids[op.name]] == op.arity


@pytest.mark.parametrize("name", NAMES)
def test_apply_is_the_registered_numpy_form_and_evaluate_uses_it(name):
    rng = np.random.default_rng(OPCODE[name])
    a, b = rng.uniform(-3, 3, 40), rng.uniform(-3, 3, 40)
    args = (a, b) if ARITY[name] == 2 else (a,)
    with np.errstate(all="ignore"):
        want = BY_NAME[name].numpy(*args)
    np.testing.assert_array_equal(apply(name, *args), want)
    X = np.column_stack([a, b])
    tokens = (name, "x0", "x1") if ARITY[name] == 2 else (name, "x0")
    np.testing.assert_array_equal(evaluate(tokens, X), want)
    # every spelling parses to it, and the canonical text round trips
    for spelling, n in SPELLINGS.items():
        if n == name:
            text = f"x0 {spelling} x1" if ARITY[name] == 2 else f"{spelling}(x0)"
            assert parse(text) == tokens
    assert parse(format_infix(tokens)) == tokens


@pytest.mark.parametrize("name", NAMES)
def test_to_sympy_is_the_plain_function_where_protection_does_not_apply(name):
    import sympy as sp

    x0, x1 = sp.Symbol("x0", real=True), sp.Symbol("x1", real=True)
    tokens = (name, "x0", "x1") if ARITY[name] == 2 else (name, "x0")
    f = sp.lambdify([x0, x1], to_sympy(tokens), modules="numpy")
    X = np.column_stack([np.linspace(0.2, 0.9, 9), np.linspace(1.0, 3.0, 9)])  # positive, away from 0, |x0| < 1
    np.testing.assert_allclose(np.broadcast_to(f(X[:, 0], X[:, 1]), (9,)), evaluate(tokens, X), rtol=1e-12)


def _compiled(prims, programs, X):
    codes, lengths, width = encode_batch(prims, programs)
    cvals = np.zeros(codes.shape, dtype=np.float64)  # no fitted constants
    return kernels.predict_batch(codes, lengths, cvals, np.ascontiguousarray(X.T), prims.constants, width)




@pytest.mark.parametrize("name", NAMES)
def test_compiled_kernel_equals_the_numpy_reference_for_every_operator(name):
    """Random programs that contain ``name`` (with + and * around it), on points that hit the protected
    cases (zeros, negatives, integers, fractions, |x| > 1)."""
    binary = tuple(dict.fromkeys(("+", "*") + ((name,) if ARITY[name] == 2 else ())))
    unary = (name,) if ARITY[name] == 1 else ()
    prims = Primitives(binary, unary, 2, constants=[float(c) for c in CONSTANTS])
    rng = np.random.default_rng(100 + OPCODE[name])
    programs = [(name, "x0", "x1") if ARITY[name] == 2 else (name, "x0")]
    while len(programs) < 150:
        t = sample_tree(rng, binary, unary, int(rng.integers(1, 7)), prims.variables, CONSTANTS, p_var=0.6)
        if name in t:
            programs.append(t)
    grid = np.linspace(-3.0, 3.0, 25)
    X = np.vstack([np.column_stack([grid, grid[::-1]]), [[0.0, 0.0], [1.0, -1.0], [1e-12, -1e-11]],
                   rng.uniform(-2, 2, size=(20, 2))])
    got = _compiled(prims, programs, X)
    compared = 0
    for i, p in enumerate(programs):
        with np.errstate(all="ignore"):
            want = evaluate(p, X)
        ok = ~ill_conditioned_points(p, X)
        g, w = got[i][ok], want[ok]
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(w), err_msg=format_infix(p))
        fin = np.isfinite(w)
        np.testing.assert_allclose(g[fin], w[fin], rtol=1e-9, atol=1e-12, err_msg=format_infix(p))
        np.testing.assert_array_equal(np.sign(g[~fin]), np.sign(w[~fin]))  # +inf / -inf / nan alike
        compared += ok.sum()
    assert compared > 0.9 * len(programs) * len(X)


def test_the_protected_semantics_documented_in_the_registry():
    z = np.array([0.0, 1e-12, -1e-11])
    np.testing.assert_array_equal(apply("/", np.ones(3), z), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(apply("log", z), [0.0, 0.0, 0.0])
    assert apply("log", np.array([-math.e]))[0] == pytest.approx(1.0)
    assert apply("sqrt", np.array([-4.0]))[0] == 2.0
    assert apply("exp", np.array([1e6]))[0] == pytest.approx(math.exp(100.0))
    assert apply("^", np.array([-2.0]), np.array([3.0]))[0] == -8.0  # integer power keeps the sign
    assert apply("^", np.array([-4.0]), np.array([0.5]))[0] == 2.0  # |a| ^ b otherwise
