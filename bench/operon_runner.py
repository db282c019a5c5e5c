#!/usr/bin/env python
"""Operon (pyoperon 0.6.2) as a benchmark baseline: fit at an exact evaluation budget, count
evaluations the way Operon does, and return the model as a sympy-parsable string.

    from bench.operon_runner import run_operon, individuals_per_second
    r = run_operon(X, y, operators="full", population_size=1000, max_evaluations=1_000_000,
                   lm_iterations=10, seed=0)
    r["expression"], r["evaluations"], r["train_mse"]

What pyoperon 0.6.2 does (wheel = Operon rev fad10f08, read from its source and checked by experiment):

* Single precision. ``pyoperon.Version()`` says "single-precision build": X and y are stored as
  float32, coefficients are float32 and ``predict`` returns float32. A perfect model therefore has a
  train MSE of about (1e-7 * |y|)^2, not 0, and the float64 evaluation of ``expression`` agrees with
  ``predict`` only to float32 rounding (~1e-7 relative, more where terms cancel), never 1e-8.
* Evaluations. The budget (``max_evaluations``, set as ``Evaluator.Budget``) is compared with
  ``Evaluator.TotalEvaluations = ResidualEvaluations + JacobianEvaluations``: one residual
  evaluation per fitness evaluation (initial population included), plus, per offspring, every
  residual and every Jacobian evaluation Levenberg-Marquardt made (a Jacobian counts as one
  evaluation whatever the number of coefficients). ``stats_['evaluation_count']`` is
  ``CallCount``, the number of fitness evaluations (individuals), not the budget's count.
  ``fit`` evaluates the best model once more after the run; we subtract that evaluation.
* The stop test (budget used up, ``generations`` reached, or ``max_time`` seconds passed) runs
  before each offspring is made, so a single-thread run overshoots the budget by at most one
  offspring's evaluations (1 + LM's <= lm_iterations + 2 residual and <= lm_iterations + 1 Jacobian
  evaluations; ~20 seen at 10 iterations) and its last generation may be partial (it still counts
  in ``generations_run``). The initial population (``population_size`` evaluations, no LM) counts;
  each generation then makes population_size - 1 offspring (slot 0 is the elite copy, not re-evaluated).
* LM: ``optimizer_iterations`` is the knob (Eigen's LevenbergMarquardt with maxfev =
  iterations + 2); 0 (the sklearn default) turns constant fitting off, and constants then change
  only by mutation. ``GeneticAlgorithmConfig``'s ``local_iterations`` is only recorded: the loop
  does not read it. Every variable leaf carries a weight (w * x) that LM fits too, and the r2 objective
  fits a*f + b by least squares at every evaluation (free linear scaling, appended to the model).
* Operators are unprotected IEEE float32: x/0 = +-inf, log(x<=0) = nan/-inf, sqrt(x<0) = nan,
  pow(a, b) = std::pow (nan for a < 0 with non-integer b), asin(|x|>1) = nan. Non-finite
  fitness becomes the worst value, so such models just lose. ``protected=True`` swaps in
  logabs, sqrtabs, powabs (log|a|, sqrt|a|, |a|^b; BasicSR's power keeps the sign for integer
  b and its log is 0 near 0); Operon has no protected division (its ``aq`` is a / sqrt(1 + b^2)).
* ``get_model_string`` writes 1-based names X1..Xn, numbers as fixed-point "{:.Nf}"
  (default N = 3, so 1e-5 prints as 0.000), '^' for power, every variable as (w * Xi). We format
  the postfix tree ourselves instead: x0..x{n-1}, repr() of each float32 value (exact), '**'.
"""
from __future__ import annotations

import time

import numpy as np

# The project's operator sets, in Operon's symbol names (constant and variable are always added).
_FULL = ("add", "sub", "mul", "div", "pow", "sin", "cos", "exp", "log", "sqrt")
OPERATOR_SETS = {
    "arith": ("add", "sub", "mul"),
    "full": _FULL,
    "physics": _FULL + ("tanh", "asin"),
}
# closest Operon has to BasicSR's protected operators (there is no protected division)
_PROTECTED = {"log": "logabs", "sqrt": "sqrtabs", "pow": "powabs"}
_NO_LIMIT = 2 ** 62  # Operon's limits are size_t; "none" is a number no run reaches

# How each Operon node type prints in sympy syntax, children in evaluation order.
_UNARY = {"sin": "sin({})", "cos": "cos({})", "exp": "exp({})", "log": "log({})", "sqrt": "sqrt({})",
          "tanh": "tanh({})", "asin": "asin({})", "abs": "Abs({})", "square": "({})**2",
          "logabs": "log(Abs({}))", "sqrtabs": "sqrt(Abs({}))"}
_BINARY = {"pow": "({})**({})", "powabs": "Abs({})**({})", "div": "({})/({})", "sub": "({}) - ({})"}


def allowed_symbols(operators: str, protected: bool = False) -> str:
    ops = [(_PROTECTED.get(o, o) if protected else o) for o in OPERATOR_SETS[operators]]
    return ",".join(ops + ["constant", "variable"])


def _number(v: float) -> str:
    """Exact text of a coefficient: a float32 value is exactly a float64, and repr round-trips it."""
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("oo" if v > 0 else "(-oo)")
    return repr(float(v)) if v >= 0 else f"({float(v)!r})"


def tree_to_sympy_string(tree, names: dict) -> str:
    """Operon tree (postfix: a node's first child is right before it) -> sympy text.

    ``names`` maps variable hash -> name. Only what Operon's creators produce is accepted: weights on
    leaves, functions with weight 1 and sub/div of arity <= 2 (its n-ary, weighted sub is
    weight*a - b - c, which a generic rule would get wrong), so an unexpected tree fails loudly.
    """
    nodes = tree.Nodes

    def fmt(i):
        n = nodes[i]
        if n.IsConstant:
            return _number(n.Value)
        if n.IsVariable:
            name = names[n.HashValue]
            return name if n.Value == 1 else f"({_number(n.Value)}*{name})"
        kind = str(n.Type).split(".")[-1].lower()
        kids, j = [], i - 1
        for _ in range(n.Arity):
            kids.append(fmt(j))
            j -= nodes[j].Length + 1
        if n.Value != 1 or (kind in ("sub", "div") and n.Arity > 2):
            raise ValueError(f"unsupported Operon node {kind} (arity {n.Arity}, weight {n.Value})")
        if kind in ("add", "mul"):
            return "(" + (" + " if kind == "add" else "*").join(kids) + ")"
        if n.Arity == 1 and kind in ("sub", "div"):
            return f"(-{kids[0]})" if kind == "sub" else f"(1/{kids[0]})"
        table = _UNARY if n.Arity == 1 else _BINARY
        if kind not in table:
            raise ValueError(f"no sympy spelling for Operon node {kind}")
        return "(" + table[kind].format(*kids) + ")"

    return fmt(len(nodes) - 1)


def _counts(reg) -> dict:
    """Evaluation counts of the run, less the evaluation ``fit`` makes of each returned model afterwards
    (one: exact for the default single objective; multi-objective runs count through another evaluator)."""
    s, after = reg.stats_, len(reg.pareto_front_)
    residual = s["residual_evaluations"] - after
    return dict(evaluations=residual + s["jacobian_evaluations"], residual_evaluations=residual,
                jacobian_evaluations=s["jacobian_evaluations"], individuals=s["evaluation_count"] - after)


def run_operon(X, y, *, operators: str, population_size: int, max_evaluations: int | None = None,
               generations: int | None = None, lm_iterations: int, seed: int, max_length: int = 50,
               threads: int = 1, time_limit: int | None = None, protected: bool = False, **operon_kwargs) -> dict:
    """Fit Operon until ``max_evaluations`` (Operon's count, see the module doc), ``generations`` or
    ``time_limit`` (whole seconds) runs out; a limit left None does not apply. ``lm_iterations=0``
    turns constant fitting off. Other ``SymbolicRegressor`` parameters pass through unchanged."""
    from pyoperon.sklearn import SymbolicRegressor

    if max_evaluations is None and generations is None and time_limit is None:
        raise ValueError("give max_evaluations, generations or time_limit: Operon would stop at its defaults")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    reg = SymbolicRegressor(
        allowed_symbols=allowed_symbols(operators, protected),
        population_size=population_size,
        max_evaluations=_NO_LIMIT if max_evaluations is None else int(max_evaluations),
        generations=_NO_LIMIT if generations is None else int(generations),
        optimizer_iterations=int(lm_iterations),
        max_length=max_length,
        n_threads=threads,  # 0 would mean all cores
        max_time=None if time_limit is None else int(time_limit),
        random_state=int(seed),  # None would draw a fresh seed
        **operon_kwargs,
    )
    t0 = time.perf_counter()
    reg.fit(X, y)
    elapsed = time.perf_counter() - t0

    names = {h: f"x{i}" for i, h in enumerate(reg.variables_)}  # variables_ is in column order
    with np.errstate(all="ignore"):
        pred = reg.predict(X).astype(np.float64)
    counts = _counts(reg)
    return dict(expression=tree_to_sympy_string(reg.model_, names), **counts,
                generations_run=int(reg.stats_["generations"]), time=elapsed,
                train_mse=float(np.mean((pred - y) ** 2)), length=int(reg.stats_["model_length"]),
                budget_exhausted=max_evaluations is not None and counts["evaluations"] >= max_evaluations,
                model=reg)


def sympy_roundtrip(result: dict, X) -> dict:
    """Evaluate ``result['expression']`` in float64 through sympy and compare it with Operon's own
    float64 text of the same tree (``get_model_string`` at 60 decimals, exact for float32
    coefficients; checks the formatting) and with ``predict`` (float32; checks the semantics).
    Errors are max |difference| / max |prediction|."""
    import sympy

    X = np.asarray(X, dtype=np.float64)
    reg = result["model"]
    syms = sympy.symbols([f"x{i}" for i in range(X.shape[1])])

    def evaluate(text):
        f = sympy.lambdify(syms, sympy.sympify(text), "numpy")
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(f(*X.T), dtype=np.float64), (len(X),))

    ours = evaluate(result["expression"])
    operon_text = reg.get_model_string(reg.model_, precision=60, names=[str(s) for s in syms])
    reference = evaluate(operon_text.replace("^", "**"))
    with np.errstate(all="ignore"):
        pred = reg.predict(X).astype(np.float64)
    scale = max(np.max(np.abs(pred)), 1e-300)
    return dict(vs_operon_text=float(np.max(np.abs(ours - reference)) / scale),
                vs_predict=float(np.max(np.abs(ours - pred)) / scale))


def individuals_per_second(X, y, *, operators: str, lm_iterations: int, population_size: int = 1000,
                           generations: int = 10, seed: int = 0) -> dict:
    """Operon's steady-state throughput on one thread: a run of ``generations`` minus a run of the
    initial population alone (same seed, so the same start), which takes setup, the initial
    population (evaluated without LM) and fit's post-processing out of the rate."""
    common = dict(operators=operators, population_size=population_size, lm_iterations=lm_iterations,
                  seed=seed, threads=1)
    init = run_operon(X, y, generations=0, **common)
    full = run_operon(X, y, generations=generations, **common)
    wall = full["time"] - init["time"]
    individuals = full["individuals"] - init["individuals"]
    evaluations = full["evaluations"] - init["evaluations"]
    return dict(individuals_per_second=individuals / wall, evaluations_per_second=evaluations / wall,
                evaluations_per_individual=evaluations / individuals, individuals=individuals,
                evaluations=evaluations, time=wall, lm_iterations=lm_iterations, n_points=len(X))


def _self_check():
    rng = np.random.default_rng(0)
    X1 = rng.uniform(-1, 1, (500, 3))
    theta = rng.uniform(1, 3, (500, 1))
    problems = [("x0*x1 + x2", X1, X1[:, 0] * X1[:, 1] + X1[:, 2], "arith"),
                ("exp(-theta**2/2)/sqrt(2*pi)  [I.6.2a]", theta,
                 np.exp(-theta[:, 0] ** 2 / 2) / np.sqrt(2 * np.pi), "full")]
    for label, X, y, ops in problems:
        r = run_operon(X, y, operators=ops, population_size=1000, max_evaluations=100_000,
                       lm_iterations=10, seed=0)
        again = run_operon(X, y, operators=ops, population_size=1000, max_evaluations=100_000,
                           lm_iterations=10, seed=0)
        check = sympy_roundtrip(r, X)
        print(f"== {label} (operators={ops})")
        print({k: v for k, v in r.items() if k != "model"})
        print("sympy round trip:", check)
        assert again["expression"] == r["expression"] and again["evaluations"] == r["evaluations"], "not deterministic"
        assert 0 <= r["evaluations"] - 100_000 < 40, "budget not respected"
        assert check["vs_operon_text"] < 1e-12, "expression differs from Operon's own text"
        # predict is float32: evolved models with cancellation differ from float64 by up to ~3e-5
        assert check["vs_predict"] < 1e-4, "expression differs from predict beyond float32 rounding"
    print("throughput:", individuals_per_second(X1, problems[0][2], operators="arith", lm_iterations=10,
                                                generations=5))
    print("self-check passed")


if __name__ == "__main__":
    _self_check()
