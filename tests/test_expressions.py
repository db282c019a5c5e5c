"""The expression engine: infix text, sympy, structure, protected evaluation, integer codes."""
import math

import numpy as np
import pytest

from nsr import expressions as ex
from nsr.datasets import sample_tree
from nsr.expressions import (Expression, ExpressionError, Primitives, depth, evaluate, format_infix, parse,
                             resolve_operators, subtrees, to_sympy)
from nsr.operators import ARITY, BINARY, EXP_CLIP, OPERATOR_SETS, OPERATORS, UNARY

FULL_BINARY, FULL_UNARY = resolve_operators("full")
VARS3 = ["x0", "x1", "x2"]
NONNEG_CONSTANTS = ["1.0", "0.5", "2.0", "3.0", "0.0", "1e-05", "123.456", "2.5e+20"]
SIGNED_CONSTANTS = ["1.0", "-1.0", "0.5", "-0.5", "2.0", "-3.25"]


def random_trees(n, constants, seed=0, max_ops=9, variables=VARS3, binary=FULL_BINARY, unary=FULL_UNARY):
    rng = np.random.default_rng(seed)
    return [sample_tree(rng, binary, unary, int(rng.integers(0, max_ops + 1)), variables, constants, p_var=0.6)
            for _ in range(n)]


def grid(n_vars=3, lo=-2.0, hi=2.0, n=41):
    """Points spanning [lo, hi] in every column, 0 included when lo < 0 < hi."""
    base = np.linspace(lo, hi, n)
    cols = [np.roll(base, 7 * j) for j in range(n_vars)]
    return np.column_stack(cols)


# ----------------------------------------------------------------------------
# infix text


def test_operator_sets_resolve_by_arity_and_full_is_every_operator():
    for name, ops in OPERATOR_SETS.items():
        b, u = resolve_operators(name)
        assert b == tuple(o for o in ops if ARITY[o] == 2) and u == tuple(o for o in ops if ARITY[o] == 1)
        assert set(b) <= set(BINARY) and set(u) <= set(UNARY)
    assert set().union(*OPERATOR_SETS.values()) == {op.name for op in OPERATORS}  # every operator is in a set
    assert set(OPERATOR_SETS["arith"]) < set(OPERATOR_SETS["full"])
    assert resolve_operators("arith")[1] == ()  # arith has no unary operators


def test_format_is_the_parenthesised_infix_style():
    assert format_infix(("+", "x0", "1.0")) == "(x0 + 1.0)"
    assert format_infix(("sin", "x0")) == "sin(x0)"
    assert format_infix(("*", "sin", "x1", "-", "x0", "2.0")) == "(sin(x1) * (x0 - 2.0))"
    assert format_infix(("x3",)) == "x3"


def test_round_trip_over_many_random_trees():
    trees = random_trees(600, NONNEG_CONSTANTS, seed=1)
    assert any("^" in t for t in trees) and any("log" in t for t in trees)
    for tokens in trees:
        text = format_infix(tokens)
        assert parse(text) == tokens, text
        assert str(Expression.parse(text)) == text


def test_round_trip_keeps_constants_exactly():
    for c in (0.5, 1.0 / 3.0, 1e-05, 6.02214076e23, 123.456, 0.1 + 0.2):
        tok = ex.const_token(c)
        assert parse(format_infix(("*", tok, "x0"))) == ("*", tok, "x0")
        assert float(parse(format_infix((tok,)))[0]) == c


def test_round_trip_with_negative_constants_outside_powers():
    # Negative constants are written in parentheses, so they round trip anywhere.
    for tokens in [("+", "x0", "-1.0"), ("-", "-1.0", "x0"), ("*", "-0.5", "x1"), ("sin", "-1.0"),
                   ("^", "x0", "-1.0"), ("/", "-3.25", "-", "x0", "-1.0"), ("-1.0",), ("exp", "*", "-1.0", "x0")]:
        text = format_infix(tokens)
        assert parse(text) == tokens, text


def test_round_trip_negative_constant_as_power_base():
    tokens = ("^", "-1.0", "2.0")
    text = format_infix(tokens)  # '((-1.0) ^ 2.0)', i.e. (-1)^2 = 1
    assert parse(text) == tokens
    X = np.zeros((1, 1))
    assert evaluate(parse(text), X)[0] == pytest.approx(1.0)


def test_round_trip_over_random_trees_with_negative_constants():
    for tokens in random_trees(600, SIGNED_CONSTANTS, seed=2):
        assert parse(format_infix(tokens)) == tokens, format_infix(tokens)


SYMPY_STYLE = [
    ("x0**2 + sin(x1)", lambda x0, x1, x2: x0 ** 2 + np.sin(x1)),
    ("x0^2 + sin(x1)", lambda x0, x1, x2: x0 ** 2 + np.sin(x1)),
    ("2*x0 - x1/3", lambda x0, x1, x2: 2 * x0 - x1 / 3),
    ("-x0", lambda x0, x1, x2: -x0),
    ("-x0**2", lambda x0, x1, x2: -(x0 ** 2)),
    ("-x0*x1 + 1", lambda x0, x1, x2: -x0 * x1 + 1),
    ("3 - -x2", lambda x0, x1, x2: 3 + x2),
    ("x0 - x1 - x2", lambda x0, x1, x2: (x0 - x1) - x2),
    ("x0/x1/4", lambda x0, x1, x2: (x0 / x1) / 4),
    ("2**3**2 * x0", lambda x0, x1, x2: 512.0 * x0),
    ("x2**2**-1", lambda x0, x1, x2: np.abs(x2) ** 0.5),
    ("exp(-x0) * cos(x1 + x2)", lambda x0, x1, x2: np.exp(-x0) * np.cos(x1 + x2)),
    ("sqrt(x0**2 + 1) - log(x1**2 + 1)", lambda x0, x1, x2: np.sqrt(x0 ** 2 + 1) - np.log(x1 ** 2 + 1)),
    ("pi*x0 + E", lambda x0, x1, x2: math.pi * x0 + math.e),
    ("1e-3*x0 + .5 + 2.5E2", lambda x0, x1, x2: 1e-3 * x0 + 0.5 + 250.0),
    ("(x0 + 1)*(x0 - 1)", lambda x0, x1, x2: (x0 + 1) * (x0 - 1)),
    ("  x1 ** 3  ", lambda x0, x1, x2: x1 ** 3),
    ("+x0", lambda x0, x1, x2: x0),
]


@pytest.mark.parametrize("text,formula", SYMPY_STYLE, ids=[t for t, _ in SYMPY_STYLE])
def test_parse_sympy_style_strings(text, formula):
    rng = np.random.default_rng(3)
    X = rng.uniform(0.3, 2.0, size=(50, 3)) * rng.choice([-1.0, 1.0], size=(50, 3))
    got = evaluate(parse(text), X)
    np.testing.assert_allclose(got, formula(X[:, 0], X[:, 1], X[:, 2]), rtol=1e-12, atol=1e-12)


def test_ln_is_log():
    assert parse("ln(x0)") == parse("log(x0)") == ("log", "x0")
    assert parse("ln(x0 + 1) * 2") == ("*", "log", "+", "x0", "1.0", "2.0")


def test_over_deep_or_over_long_text_is_an_expression_error_not_a_crash():
    deep = "(" * 500 + "x0**2" + ")" * 500  # not the canonical format ('**'): the recursive parser
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse(deep)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse("-" * 1000 + "x0")
    with pytest.raises(ExpressionError, match="too long"):
        parse("x0 + " * 30_000 + "x0")
    assert parse("(" * 150 + "x0**2" + ")" * 150) == ("^", "x0", "2.0")  # moderate nesting still parses
    canonical = "x0"
    for _ in range(300):  # the canonical fast path is iterative: deep canonical text round trips
        canonical = f"sin({canonical})"
    assert parse(canonical) == ("sin",) * 300 + ("x0",)


def test_subtrees_lists_every_subtree_once():
    tokens = parse("((x0 * x0) + sin(x1))")
    spans = subtrees(tokens)
    assert sorted(spans) == sorted({(0, 6), (1, 4), (2, 3), (3, 4), (4, 6), (5, 6)})
    for s, e in spans:
        assert ex.is_valid(tokens[s:e])
    for tokens in random_trees(100, NONNEG_CONSTANTS, seed=11):
        spans = subtrees(tokens)
        assert len(spans) == len(tokens) and (0, len(tokens)) in spans  # one per node, the whole tree among them
        assert all(ex.is_valid(tokens[s:e]) for s, e in spans)


def test_parse_integers_become_float_constants():
    assert parse("2*x0") == ("*", "2.0", "x0")
    assert parse("-3") == ("-3.0",)


def test_power_is_right_associative():
    assert parse("x0**x1**x2") == ("^", "x0", "^", "x1", "x2")
    assert parse("x0^x1^x2") == ("^", "x0", "^", "x1", "x2")
    assert parse("x0 - x1 - x2") == ("-", "-", "x0", "x1", "x2")


@pytest.mark.parametrize("text", [
    "", "   ", "x0 +", "+", "(x0 + 1", "x0 + 1)", "()", "x0 x1", "x10", "y", "foo(x0)", "sin x0", "sin()",
    "x0 $ 1", "1..2", "x0 ** * 2", "import os", "__import__('os')", "x0; x1", "sin(x0", ",", "x0 = 1",
])
def test_invalid_strings_raise_expression_error(text):
    with pytest.raises(ExpressionError):
        parse(text)


def test_parse_rejects_non_strings():
    for bad in (None, 3, ("+", "x0", "1.0"), b"x0"):
        with pytest.raises(ExpressionError):
            parse(bad)


def test_invalid_token_sequences_are_rejected():
    for bad in [(), ("+", "x0"), ("x0", "x1"), ("sin",), ("+", "x0", "x1", "x2"), ("foo",), ("nan",),
                ("inf",), ("x10",)]:
        assert not ex.is_valid(bad)
        with pytest.raises(ExpressionError):
            Expression(bad)
    with pytest.raises(ExpressionError):
        ex.const_token(float("inf"))


# ----------------------------------------------------------------------------
# sympy


def _in_safe_domain(tokens, X):
    """True when every operator of ``tokens`` works on X where its plain and
    protected meanings agree (no division by ~0, positive log/sqrt arguments,
    positive or integer-power bases, exp arguments below the clip)."""
    for i, tok in enumerate(tokens):
        a = ARITY.get(tok, 0)
        if a == 0:
            continue
        j = i + 1
        end = dict(subtrees(tokens))  # start -> end of every subtree
        k = end[j]
        first = evaluate(tokens[j:k], X)
        second = evaluate(tokens[k:end[k]], X) if a == 2 else None
        vals = [first] + ([second] if second is not None else [])
        if not all(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e6) for v in vals):
            return False
        if tok == "/" and np.any(np.abs(second) < 1e-3):
            return False
        if tok in ("log", "sqrt") and np.any(first < 1e-3):
            return False
        if tok == "^" and (np.any(first < 1e-3) or np.any(np.abs(second) > 20)):
            return False
        if tok == "exp" and np.any(first > 50):
            return False
    return np.all(np.isfinite(evaluate(tokens, X)))


def test_to_sympy_agrees_with_evaluate_on_a_safe_domain():
    import sympy as sp

    rng = np.random.default_rng(4)
    X = rng.uniform(0.5, 2.0, size=(25, 3))
    syms = [sp.Symbol(v, real=True) for v in VARS3]
    checked = 0
    for tokens in random_trees(300, ["1.0", "0.5", "2.0", "3.0"], seed=5, max_ops=6):
        if not _in_safe_domain(tokens, X):
            continue
        f = sp.lambdify(syms, to_sympy(tokens), modules="numpy")
        with np.errstate(all="ignore"):
            want = np.broadcast_to(np.asarray(f(X[:, 0], X[:, 1], X[:, 2]), dtype=np.complex128), (len(X),))
        np.testing.assert_allclose(want.imag, 0.0, atol=1e-9)
        np.testing.assert_allclose(evaluate(tokens, X), want.real, rtol=1e-8, atol=1e-10,
                                   err_msg=format_infix(tokens))
        checked += 1
    assert checked >= 100  # the filter keeps a meaningful sample


def test_to_sympy_on_known_expressions():
    import sympy as sp

    x0, x1 = sp.Symbol("x0", real=True), sp.Symbol("x1", real=True)
    assert sp.simplify(to_sympy(parse("x0**2 + sin(x1)")) - (x0 ** 2 + sp.sin(x1))) == 0
    assert sp.simplify(to_sympy(parse("(x0 - 1.0) / x1")) - (x0 - 1) / x1) == 0
    assert sp.simplify(Expression.parse("exp(log(x0))").to_sympy() - sp.exp(sp.log(x0))) == 0


# ----------------------------------------------------------------------------
# structure


@pytest.mark.parametrize("text,n,d", [
    ("x0", 1, 1),
    ("1.0", 1, 1),
    ("(x0 + 1.0)", 3, 2),
    ("sin(x0)", 2, 2),
    ("sin(cos(x0))", 3, 3),
    ("((x0 * x0) + sin(x1))", 6, 3),
    ("(((x0 + x1) + x2) + x3)", 7, 4),
    ("(x0 + (x1 + (x2 + sqrt(x3))))", 8, 5),
    ("((x0 - x1) * (x2 / exp(x0)))", 8, 4),
])
def test_size_and_depth_of_known_expressions(text, n, d):
    tokens = parse(text)
    assert len(tokens) == n and depth(tokens) == d
    e = Expression.parse(text)
    assert e.size == n and e.depth == d


def test_expression_wrapper_is_immutable_and_hashable():
    a, b = Expression.parse("(x0 + 1.0)"), Expression(("+", "x0", "1.0"))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Expression.parse("(1.0 + x0)")
    with pytest.raises(AttributeError):
        a.tokens = ("x0",)
    np.testing.assert_array_equal(a.evaluate(np.array([[1.0], [2.0]])), [2.0, 3.0])


# ----------------------------------------------------------------------------
# protected evaluation


def _operand_trees(op):
    """Every way to apply ``op`` to x0 and a few constants."""
    if ARITY[op] == 1:
        return [(op, "x0")]
    return [(op, "x0", "x0"), (op, "x0", "2.0"), (op, "x0", "0.5"), (op, "2.0", "x0"), (op, "x0", "-1.0"),
            (op, "-2.0", "x0")]


@pytest.mark.parametrize("op", OPERATOR_SETS["full"])
def test_no_operator_is_nan_everywhere(op):
    X = np.linspace(-2.0, 2.0, 41)[:, None]
    assert 0.0 in X
    for tokens in _operand_trees(op):
        v = evaluate(tokens, X)
        assert v.shape == (41,)
        finite = np.isfinite(v)
        # finite on (nearly) every point: at most the single point x0 == 0 may blow up (e.g. x0 ^ -1)
        assert finite.sum() >= 40, (format_infix(tokens), v)


def test_power_with_negative_bases_and_integer_exponents():
    X = np.array([[-2.0], [-1.5], [-1.0], [-0.5], [0.5], [1.0], [2.0]])
    x = X[:, 0]
    np.testing.assert_allclose(evaluate(parse("(x0 ^ 2.0)"), X), x ** 2)
    np.testing.assert_allclose(evaluate(parse("(x0 ^ 3.0)"), X), x ** 3)  # keeps the sign
    np.testing.assert_allclose(evaluate(parse("(x0 ^ -1.0)"), X), 1.0 / x)
    np.testing.assert_allclose(evaluate(parse("(x0 ^ 0.0)"), X), np.ones_like(x))
    assert np.all(np.isfinite(evaluate(parse("(x0 ^ x0)"), X)))


def test_power_with_non_integer_exponents_is_finite():
    X = np.linspace(-2.0, 2.0, 41)[:, None]
    for text in ("(x0 ^ 0.5)", "(x0 ^ 1.5)", "(x0 ^ 2.5)", "((x0 - 3.0) ^ 0.5)", "(-2.0 ^ (x0 * 0.5))"):
        v = evaluate(parse(text), X)
        assert np.all(np.isfinite(v)), (text, v)
    # where both are defined it is the real power
    pos = np.array([[0.25], [1.0], [4.0]])
    np.testing.assert_allclose(evaluate(parse("(x0 ^ 0.5)"), pos), np.sqrt(pos[:, 0]))


def test_power_in_the_full_set_is_not_nan_on_typical_data():
    # The research code's '^' was NaN everywhere: every tree with it lost.
    rng = np.random.default_rng(6)
    X = rng.uniform(-2, 2, size=(100, 2))
    trees = [t for t in random_trees(400, ["1.0", "2.0", "0.5"], seed=7, variables=["x0", "x1"]) if "^" in t]
    assert len(trees) > 50
    finite_everywhere = [t for t in trees if np.all(np.isfinite(evaluate(t, X)))]
    assert len(finite_everywhere) > len(trees) // 2


def test_protected_division():
    X = np.array([[1.0, 0.0], [5.0, 1e-12], [-3.0, -1e-11], [6.0, 2.0], [1.0, 1e-9]])
    v = evaluate(parse("(x0 / x1)"), X)
    np.testing.assert_array_equal(v[:3], [1.0, 1.0, 1.0])
    assert v[3] == 3.0 and v[4] == pytest.approx(1e9)


def test_protected_log_sqrt_exp():
    X = np.array([[0.0], [1e-12], [-math.e], [math.e], [-4.0], [1000.0]])
    np.testing.assert_allclose(evaluate(parse("log(x0)"), X)[:4], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(evaluate(parse("sqrt(x0)"), X)[[0, 4]], [0.0, 2.0])
    e = evaluate(parse("exp(x0)"), X)
    assert np.all(np.isfinite(e)) and e[-1] == pytest.approx(math.exp(EXP_CLIP))


def test_evaluate_never_returns_a_view_of_X_and_checks_shapes():
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    v = evaluate(("x1",), X)
    v[:] = 0.0
    assert X[0, 1] == 2.0
    with pytest.raises(ExpressionError):
        evaluate(("x2",), X)
    with pytest.raises(ExpressionError):
        evaluate(("x0",), np.array([1.0, 2.0]))


# ----------------------------------------------------------------------------
# integer codes


def test_primitives_encode_decode_round_trip():
    prims = Primitives(FULL_BINARY, FULL_UNARY, 3, constants=(1.0, -1.0, 0.5, 2.0))
    for tokens in random_trees(200, ["1.0", "-1.0", "0.5", "2.0"], seed=8):
        codes = prims.encode(tokens)
        assert codes.dtype == np.int16 and len(codes) == len(tokens)
        assert prims.decode(codes) == tokens
        assert prims.admits(tokens)
    assert len(set(prims.encode(prims.tokens).tolist())) == len(prims.tokens)  # codes are distinct


def test_primitives_refuse_foreign_tokens_and_bad_sizes():
    prims = Primitives(("+", "*"), (), 2, constants=(1.0,))
    assert not prims.admits(("sin", "x0"))
    with pytest.raises(ExpressionError):
        prims.encode(("sin", "x0"))
    with pytest.raises(ExpressionError):
        prims.encode(("+", "x2", "1.0"))  # only x0, x1
    with pytest.raises(ExpressionError):
        prims.encode(("+", "x0", "2.0"))  # not among the constants
    for n in (0, -1, 11):
        with pytest.raises(ExpressionError):
            Primitives(("+",), (), n)
    assert Primitives(("+",), (), 1, constants=(1.0, 1, 1.0)).constant_tokens == ("1.0",)  # deduplicated


def test_resolve_operators_rejects_unknown_names():
    with pytest.raises(ExpressionError):
        resolve_operators("bogus")
    with pytest.raises(ExpressionError):
        resolve_operators(None, binary_operators=["sin"])
    with pytest.raises(ExpressionError):
        resolve_operators(None, unary_operators=["tan"])
    with pytest.raises(ExpressionError):
        resolve_operators(None, binary_operators=[], unary_operators=[])
    assert resolve_operators(None, binary_operators=["+"], unary_operators=["sin"]) == (("+",), ("sin",))
