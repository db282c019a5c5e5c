"""Expression datasets: random target expressions, the Nguyen benchmark, and the expressions file.

An expressions file (``format: 'expressions'``) holds metadata (parameters and
the full command) and records ``{id, expression, X, y, num_vars}`` where
``expression`` is canonical infix text, ``X`` is float64 (n_points x
num_vars) and ``y`` float64 (n_points,).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from . import safe_io
from .config import Config, Float, Int, Rule, param
from .expressions import (ExpressionError, const_token, evaluate, format_infix, parse, parse_cached,
                          resolve_operators, subtrees, variables_used)
from .operators import OPERATOR_SETS
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
    records = safe_io.checked_records(obj, path, "expressions", ("id", "X", "y"))
    for i, r in enumerate(records):
        rid = r["id"] if isinstance(r["id"], (int, np.integer, str)) and len(str(r["id"])) <= 40 else i
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
            raise InputError(f"{path}: record {rid}: num_vars must be an integer, got {type(nv).__name__}")
        if nv != X.shape[1]:
            raise InputError(f"{path}: record {rid}: num_vars is {nv} but X has {X.shape[1]} columns")
        expr = r.get("expression")
        if expr is not None:
            if not isinstance(expr, str):
                raise InputError(f"{path}: record {rid}: expression must be a string")
            try:
                used = variables_used(parse_cached(expr))
            except ExpressionError as e:
                raise InputError(f"{path}: record {rid}: its expression does not parse ({e})") from None
            extra = sorted(v for v in used if int(v[1:]) >= nv)
            if extra:
                raise InputError(f"{path}: record {rid}: its expression uses {', '.join(extra)} but X has {nv} "
                                 f"column(s)")


def file_operator_set(meta: dict, override=None, path="") -> str:
    """The operator set to use: the flag, else the file's own, else arith."""
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


def insert_constant(rng, tokens, binary, value_range) -> tuple:
    """``tokens`` with one random subtree wrapped as (c * subtree) or (subtree + c), c a random real
    with two decimals (never within 0.05 of 0 or 1, which would hide it)."""
    ops = [o for o in ("*", "+") if o in binary] or list(binary)
    while True:
        c = round(float(rng.uniform(*value_range)), 2)
        if abs(c) >= 0.05 and abs(c - 1.0) >= 0.05:
            break
    spans = subtrees(tokens)
    s, e = spans[int(rng.integers(len(spans)))]
    op = ops[int(rng.integers(len(ops)))]
    wrapped = (op, const_token(c)) + tokens[s:e] if op == "*" else (op,) + tokens[s:e] + (const_token(c),)
    return tokens[:s] + wrapped + tokens[e:]


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


@dataclass(frozen=True)
class DatasetConfig(Config):
    """How random target expressions are sampled (datasets/generate_expressions.py)."""

    operator_set: str = param("arith", "operator set of the targets", Rule("str", choices=tuple(OPERATOR_SETS)))
    num_expressions: int = param(10, "how many targets", Int(1, 10_000_000))
    complexity: float = param(0.5, "0..1, drives the number of operators (0 -> 1, 0.5 -> 4, 1 -> 8)", Float(0.0, 1.0))
    min_vars: int = param(1, "fewest variables per target", Int(1, 10))
    max_vars: int = param(3, "most variables per target", Int(1, 10))
    constants: tuple = param((1.0,), "constants targets may use", Rule("floats"))
    num_points: int = param(100, "data points per target", Int(1, 10_000_000))
    x_min: float = param(-2.0, "inputs are uniform in [x_min, x_max]", Float())
    x_max: float = param(2.0, "inputs are uniform in [x_min, x_max]", Float())
    noise: float = param(0.0, "Gaussian noise on y, as a fraction of std(y)", Float(0.0))
    real_constants: int = param(0, "random real constants put into each target, as (c * subtree) or "
                                   "(subtree + c)", Int(0, 16))
    constant_range: tuple = param((-5.0, 5.0), "range of the random real constants (2 decimals)",
                                  Rule("floats", min_items=2, max_items=2))
    seed: int = param(0, "sampling seed", Int(0, 2**63 - 1))

    def validate(self):
        lo, hi = self.constant_range
        if not lo < hi or max(abs(lo), abs(hi)) < 0.1:
            raise InputError(f"constant_range must be lo < hi reaching beyond +-0.1, got {lo} {hi}")
        if self.min_vars > self.max_vars:
            raise InputError(f"need min_vars <= max_vars, got {self.min_vars} and {self.max_vars}")
        if not self.x_min < self.x_max:
            raise InputError(f"x_min must be below x_max, got {self.x_min} and {self.x_max}")


def generate_dataset(cfg: DatasetConfig, exclude=(), max_tries=1000, progress=None):
    """Sample ``cfg.num_expressions`` distinct, non-degenerate targets; returns records.

    ``exclude`` holds canonical expressions (and y-signatures, see
    :func:`function_signature`) that must not be produced, to keep sets disjoint.
    """
    n = cfg.num_expressions
    binary, unary = resolve_operators(cfg.operator_set)
    rng = np.random.default_rng(cfg.seed)
    const_toks = [const_token(c) for c in cfg.constants]
    seen = set(exclude)
    records = []
    base_ops = operators_for_complexity(cfg.complexity)
    tries = 0
    while len(records) < n:
        tries += 1
        if tries > max_tries * n:
            raise InputError(f"could only find {len(records)} of {n} distinct non-degenerate expressions")
        nv = int(rng.integers(cfg.min_vars, cfg.max_vars + 1))
        variables = [f"x{i}" for i in range(nv)]
        n_ops = max(1, base_ops + int(rng.integers(-1, 2)))
        tokens = sample_tree(rng, binary, unary, n_ops, variables, const_toks)
        for _ in range(cfg.real_constants):
            tokens = insert_constant(rng, tokens, binary, cfg.constant_range)
        if variables_used(tokens) != set(variables):
            continue  # every declared variable must matter
        X = rng.uniform(cfg.x_min, cfg.x_max, size=(cfg.num_points, nv))
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
        if cfg.noise > 0:
            y = y + cfg.noise * np.std(y) * rng.standard_normal(cfg.num_points)
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


# ----------------------------------------------------------------------------
# the AI Feynman benchmark (SRBench's ground-truth Feynman problems)

FEYNMAN_CSV = os.path.join(os.path.dirname(ROOT), "shared", "benchmarks", "FeynmanEquations.csv")
FEYNMAN_EXPRESSIONS = os.path.join(EXPRESSIONS_DIR, "feynman_100.pkl.gz")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def feynman_row(row: dict, rng, n_points: int):
    """One table row -> an expressions-file record (variables renamed x0.. in the table's order), or an
    InputError saying what is wrong with the row. Returns (record, note) where note flags a repaired row."""
    name = (row.get("Filename") or "?").strip()
    listed, note = [], None
    for i in range(1, 11):
        v = (row.get(f"v{i}_name") or "").strip()
        if v:
            try:
                lo, hi = float(row[f"v{i}_low"]), float(row[f"v{i}_high"])
            except (TypeError, ValueError):
                raise InputError(f"{name}: variable {v} has no numeric range") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise InputError(f"{name}: variable {v} has range [{lo}, {hi}]")
            listed.append((v, lo, hi))
    try:
        declared = int(float(row.get("# variables") or 0))
    except ValueError:
        declared = -1
    if declared != len(listed):
        note = f"{name}: '# variables' says {declared} but {len(listed)} variables are listed with ranges; used those"
    if not listed:
        raise InputError(f"{name}: no variables listed")
    formula = (row.get("Formula") or "").strip()
    names = {v: f"x{i}" for i, (v, _, _) in enumerate(listed)}
    known = {"pi", "exp", "sqrt", "sin", "cos", "tan", "tanh", "arcsin", "asin", "ln", "log"}
    unknown = sorted({t for t in _IDENT.findall(formula) if t not in names and t not in known})
    if unknown:
        raise InputError(f"{name}: the formula {formula!r} uses {', '.join(unknown)}, which the row does not list")
    renamed = _IDENT.sub(lambda m: names.get(m.group(0), m.group(0)), formula)
    try:
        tokens = parse(renamed)
    except ExpressionError as e:
        raise InputError(f"{name}: cannot parse the formula {formula!r} ({e})") from None
    X = np.column_stack([rng.uniform(lo, hi, n_points) for _, lo, hi in listed])
    y = evaluate(tokens, X)
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name}: the formula is not finite over its ranges")
    return {"name": name, "expression": format_infix(tokens), "source_expression": formula,
            "output": (row.get("Output") or "").strip(), "variable_names": [v for v, _, _ in listed],
            "X": X, "y": y, "num_vars": len(listed), "x_range": [(lo, hi) for _, lo, hi in listed]}, note


def feynman_records(csv_path: str = FEYNMAN_CSV, n_points: int = 1000, seed: int = 0, warn=None):
    """The AI Feynman equations as records; a malformed row is reported through ``warn`` and skipped."""
    import csv

    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{csv_path}: cannot read the table ({e})") from None
    if not rows or "Formula" not in rows[0]:
        raise InputError(f"{csv_path}: not an AI Feynman table (no 'Formula' column)")
    rng = np.random.default_rng(seed)
    records, notes = [], []
    for row in rows:
        try:
            rec, note = feynman_row(row, rng, n_points)
        except InputError as e:
            notes.append(f"skipped {e}")
            if warn:
                warn(f"skipped {e}")
            continue
        if note:
            notes.append(note)
            if warn:
                warn(note)
        rec["id"] = len(records)
        records.append(rec)
    return records, notes


def target_tokens(record):
    try:
        return parse(record["expression"])
    except (ExpressionError, KeyError):
        return None

