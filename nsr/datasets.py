"""Expression datasets: random target expressions, the Nguyen benchmark, and the expressions file.

An expressions file (``format: 'expressions'``) holds metadata (parameters and
the full command) and records ``{id, expression, X, y, num_vars}`` where
``expression`` is canonical infix text, ``X`` is float64 (n_points x
num_vars) and ``y`` float64 (n_points,).
"""
from __future__ import annotations

import os

import numpy as np

from . import safe_io
from .expressions import (ExpressionError, const_token, evaluate, format_infix, parse,
                          resolve_operators, variables_used)
from .safe_io import InputError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXPRESSIONS_DIR = os.path.join(ROOT, "datasets", "expressions")
DEFAULT_EXPRESSIONS = os.path.join(EXPRESSIONS_DIR, "arith_10_c05_default.pkl.gz")
NGUYEN_EXPRESSIONS = os.path.join(EXPRESSIONS_DIR, "nguyen_12.pkl.gz")
HELDOUT_EXPRESSIONS = os.path.join(EXPRESSIONS_DIR, "heldout_arith_100_c05.pkl.gz")

# Nguyen-1..12 (Uy et al. 2011): name, target, variables, input range, points.
NGUYEN = [
    ("Nguyen-1", "x0**3 + x0**2 + x0", 1, (-1, 1), 20),
    ("Nguyen-2", "x0**4 + x0**3 + x0**2 + x0", 1, (-1, 1), 20),
    ("Nguyen-3", "x0**5 + x0**4 + x0**3 + x0**2 + x0", 1, (-1, 1), 20),
    ("Nguyen-4", "x0**6 + x0**5 + x0**4 + x0**3 + x0**2 + x0", 1, (-1, 1), 20),
    ("Nguyen-5", "sin(x0**2)*cos(x0) - 1", 1, (-1, 1), 20),
    ("Nguyen-6", "sin(x0) + sin(x0 + x0**2)", 1, (-1, 1), 20),
    ("Nguyen-7", "log(x0 + 1) + log(x0**2 + 1)", 1, (0, 2), 20),
    ("Nguyen-8", "sqrt(x0)", 1, (0, 4), 20),
    ("Nguyen-9", "sin(x0) + sin(x1**2)", 2, (-1, 1), 100),
    ("Nguyen-10", "2*sin(x0)*cos(x1)", 2, (-1, 1), 100),
    ("Nguyen-11", "x0**x1", 2, (0, 1), 100),
    ("Nguyen-12", "x0**4 - x0**3 + x1**2/2 - x1", 2, (-1, 1), 100),
]


def count_label(n: int) -> str:
    """10 -> '10', 1000 -> '1k', 1500 -> '1.5k', 10000 -> '10k'."""
    if n < 1000:
        return str(n)
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n / 1000:.1f}k".replace(".0k", "k")


# ----------------------------------------------------------------------------
# loading


def validate_expressions(obj, path):
    records = obj["records"]
    if not records:
        raise InputError(f"{path}: the dataset holds no expressions")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise InputError(f"{path}: record {i} is not a dict")
        missing = [k for k in ("id", "X", "y") if k not in r]
        if missing:
            raise InputError(f"{path}: record {i} lacks {', '.join(missing)}")
        rid = r["id"]
        X, y = r["X"], r["y"]
        if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
            raise InputError(f"{path}: record {rid}: X and y must be arrays")
        if X.dtype.kind not in "fiu" or y.dtype.kind not in "fiu":
            raise InputError(f"{path}: record {rid}: X and y must be numeric")
        if X.ndim != 2 or y.ndim != 1:
            raise InputError(f"{path}: record {rid}: X must be 2-D and y 1-D (got {X.shape} and {y.shape})")
        if X.shape[0] != y.shape[0]:
            raise InputError(f"{path}: record {rid}: X has {X.shape[0]} points but y has {y.shape[0]}")
        if X.shape[0] == 0:
            raise InputError(f"{path}: record {rid}: no data points")
        if not (1 <= X.shape[1] <= 10):
            raise InputError(f"{path}: record {rid}: {X.shape[1]} variables (1..10 are supported)")
        if not np.all(np.isfinite(X)) or not np.all(np.isfinite(y)):
            raise InputError(f"{path}: record {rid}: X or y contains NaN or inf")
        nv = r.get("num_vars", X.shape[1])
        if isinstance(nv, bool) or not isinstance(nv, (int, np.integer)):
            raise InputError(f"{path}: record {rid}: num_vars must be an integer, got {nv!r}")
        if nv != X.shape[1]:
            raise InputError(f"{path}: record {rid}: num_vars is {nv} but X has {X.shape[1]} columns")
        expr = r.get("expression")
        if expr is not None and not isinstance(expr, str):
            raise InputError(f"{path}: record {rid}: expression must be a string")


def file_operator_set(meta: dict, override=None, path="") -> str:
    """The operator set to use: the flag, else the file's own, else arith."""
    from .expressions import OPERATOR_SETS

    name = override or meta.get("operator_set") or "arith"
    if not isinstance(name, str) or name not in OPERATOR_SETS:
        raise InputError(f"{path}: unknown operator set {name!r} in its metadata (choose from {', '.join(OPERATOR_SETS)})")
    return name


def file_constants(meta: dict, override=None, path="") -> tuple:
    """The constants to use: the flag, else the file's own, else (1.0,)."""
    consts = override if override else meta.get("constants") or [1.0]
    if not isinstance(consts, (list, tuple)) or not consts:
        raise InputError(f"{path}: 'constants' in its metadata must be a non-empty list of numbers")
    out = []
    for c in consts:
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) or not np.isfinite(c):
            raise InputError(f"{path}: constant {c!r} in its metadata is not a finite number")
        out.append(float(c))
    return tuple(out)


def load_expressions(path: str) -> dict:
    return safe_io.load(path, "expressions", validate_expressions)


# ----------------------------------------------------------------------------
# sampling targets


def sample_tree(rng, binary, unary, n_ops: int, variables, constants, p_var=0.8) -> tuple:
    """A random prefix tree with exactly ``n_ops`` operators."""
    ops = list(binary) + list(unary)
    if n_ops == 0 or not ops:
        if rng.random() < p_var or not constants:
            return (variables[rng.integers(len(variables))],)
        return (constants[rng.integers(len(constants))],)
    op = ops[rng.integers(len(ops))]
    if op in unary:
        return (op,) + sample_tree(rng, binary, unary, n_ops - 1, variables, constants, p_var)
    k = int(rng.integers(0, n_ops))  # operators in the left subtree
    return ((op,) + sample_tree(rng, binary, unary, k, variables, constants, p_var)
            + sample_tree(rng, binary, unary, n_ops - 1 - k, variables, constants, p_var))


def redundant(tokens, declared_vars) -> bool:
    """True when simplification drops a variable or more than one operator
    (``(x0 - x0) * x1``, ``x0 + (1 - x0)``): such a target is easier than its
    complexity says."""
    import sympy as sp

    from .expressions import arity, to_sympy

    n_ops = sum(1 for t in tokens if arity(t) > 0)
    simple = sp.simplify(to_sympy(tokens))
    if {s.name for s in simple.free_symbols} != set(declared_vars):
        return True
    return sp.count_ops(simple) < max(1, n_ops - 1)


def operators_for_complexity(complexity: float) -> int:
    """complexity in [0, 1] -> number of operators (0 -> 1, 0.5 -> 4, 1 -> 8)."""
    return 1 + int(round(complexity * 7 - 1e-9))


def degenerate_reason(y, max_abs=1e6):
    if not np.all(np.isfinite(y)):
        return "non-finite"
    if np.max(np.abs(y)) > max_abs:
        return "huge"
    if np.std(y) < 1e-6 * (1.0 + abs(float(np.mean(y)))):
        return "constant"
    return None


def generate_dataset(n: int, operator_set="arith", complexity=0.5, num_vars=(1, 3), constants=(1.0,),
                     n_points=100, x_range=(-2.0, 2.0), noise=0.0, seed=0, exclude=(), max_tries=1000,
                     progress=None):
    """Sample ``n`` distinct, non-degenerate targets; returns records.

    ``exclude`` holds canonical expressions (and y-signatures, see
    :func:`function_signature`) that must not be produced, to keep sets disjoint.
    """
    binary, unary = resolve_operators(operator_set)
    rng = np.random.default_rng(seed)
    const_toks = [const_token(c) for c in constants]
    seen = set(exclude)
    records = []
    base_ops = operators_for_complexity(complexity)
    tries = 0
    while len(records) < n:
        tries += 1
        if tries > max_tries * n:
            raise InputError(f"could only find {len(records)} of {n} distinct non-degenerate expressions")
        nv = int(rng.integers(num_vars[0], num_vars[1] + 1))
        variables = [f"x{i}" for i in range(nv)]
        n_ops = max(1, base_ops + int(rng.integers(-1, 2)))
        tokens = sample_tree(rng, binary, unary, n_ops, variables, const_toks)
        if variables_used(tokens) != set(variables):
            continue  # every declared variable must matter
        X = rng.uniform(x_range[0], x_range[1], size=(n_points, nv))
        y = evaluate(tokens, X)
        if degenerate_reason(y) is not None:
            continue
        sig = function_signature(tokens, nv)
        text = format_infix(tokens)
        if text in seen or sig in seen:
            continue
        if redundant(tokens, variables):
            seen.add(sig)
            continue
        seen.update((text, sig))
        if noise > 0:
            y = y + noise * np.std(y) * rng.standard_normal(n_points)
        records.append({"id": len(records), "expression": text, "X": X, "y": y, "num_vars": nv})
        if progress is not None:
            progress(1)
    return records


_SIG_X = np.random.default_rng(12345).uniform(-1.7, 1.9, size=(64, 10))


def function_signature(tokens, n_vars) -> str:
    """Identifies a function up to rounding: its values on fixed probe points.
    Two formulas for the same function (``x0*2`` and ``x0+x0``) share it."""
    with np.errstate(all="ignore"):
        v = evaluate(tokens, _SIG_X[:, :n_vars])
    v = np.where(np.isfinite(v), v, 0.0)
    return f"{n_vars}:" + ",".join(f"{a:.6g}" for a in v[:16]) + f"|{np.round(v.sum(), 6):.6g}"


def nguyen_records(seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for i, (name, text, nv, (lo, hi), n) in enumerate(NGUYEN, start=1):
        tokens = parse(text)
        X = rng.uniform(lo, hi, size=(n, nv))
        y = evaluate(tokens, X)
        records.append({"id": i, "name": name, "expression": format_infix(tokens), "source_expression": text,
                        "X": X, "y": y, "num_vars": nv, "x_range": (lo, hi)})
    return records


def fresh_points(record, n=1000, seed=0):
    """New test inputs for a record, drawn from its input range (stored or inferred from X)."""
    X = record["X"]
    lo, hi = record.get("x_range", (float(X.min()), float(X.max())))
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, size=(n, X.shape[1]))


def target_tokens(record):
    try:
        return parse(record["expression"])
    except (ExpressionError, KeyError):
        return None

