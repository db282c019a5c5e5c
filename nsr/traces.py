"""Trace files: the recorded evolution of SR runs, one record per expression.

A traces file (``format: 'traces'``) has metadata (command, parameters,
package versions, time, ``source``) and records::

    expression_id, target_expression, final_expression, final_mse, solved,
    time, trajectory, basicsr_params, binary_operators, unary_operators,
    constants, num_vars, X, y (float32), source

``trajectory`` is ``{'generations': [...], 'ancestors_of_best': [...],
'best_progression': [...], 'stats': {...}}``; each generation holds
``generation, population_size, expressions (infix), fitnesses (float32),
mses (float32), heritages, operators, best_fitness, best_mse,
best_expression``. ``heritages`` is an int32 array (population x 2) of parent
indices into the previous generation, -1 where there is none: crossover
``[a, b]``, mutation ``[a, -1]``, the elite ``[argmax, -1]``, initial
``[-1, -1]`` (:func:`parents` gives a row as a list). An array, not a list of
lists: a million small lists made trace files 8x slower to load.
"""
from __future__ import annotations

import numpy as np

from . import safe_io
from .evolution import Problem
from .expressions import ExpressionError, format_infix
from .safe_io import InputError

SOLVED_MSE = 1e-10
GENERATION_KEYS = ("generation", "expressions", "fitnesses", "heritages", "operators")


def parents(row) -> list:
    """The parent indices in one row of ``heritages`` (``[a, b]``, ``[a]`` or ``[]``)."""
    return [int(a) for a in row if a >= 0]


def seed_for(seed: int, index: int) -> np.random.Generator:
    """The generator of the expression at ``index`` in its file: independent of
    sharding, worker count, batch size and resumption."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def trace_record(problem: Problem, record: dict, index: int, params: dict, elapsed: float, source: str) -> dict:
    best = problem.best_tokens()
    mse = float(problem.mse[problem.best_index()])
    prims = problem.primitives
    return {
        "expression_id": record.get("id", index),
        "index": index,
        "target_expression": record.get("expression"),
        "final_expression": format_infix(best),
        "final_mse": mse,
        "solved": bool(mse <= SOLVED_MSE),
        "time": float(elapsed),
        "trajectory": problem.trajectory(),
        "basicsr_params": dict(params),
        "binary_operators": list(prims.binary),
        "unary_operators": list(prims.unary),
        "constants": [float(c) for c in prims.constants],
        "num_vars": int(problem.X.shape[1]),
        "X": problem.X.astype(np.float32),
        "y": problem.y.astype(np.float32),
        "source": source,
    }


def validate_traces(obj, path, require_trajectories=True):
    records = obj["records"]
    if not records:
        raise InputError(f"{path}: the traces file holds no records")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise InputError(f"{path}: record {i} is not a dict")
        for key in ("X", "y", "trajectory"):
            if key not in r:
                raise InputError(f"{path}: record {i} lacks {key!r}")
        traj = r["trajectory"]
        if not isinstance(traj, dict) or not isinstance(traj.get("generations"), list):
            raise InputError(f"{path}: record {i} has no trajectory (expected a dict with 'generations')")
        if require_trajectories and not traj["generations"]:
            raise InputError(f"{path}: record {i} has an empty trajectory (was it run without collecting one?)")
        for g, gen in enumerate(traj["generations"]):
            missing = [k for k in GENERATION_KEYS if k not in gen]
            if missing:
                raise InputError(f"{path}: record {i} generation {g} lacks {', '.join(missing)}")
            if len(gen["expressions"]) != len(gen["fitnesses"]):
                raise InputError(f"{path}: record {i} generation {g}: {len(gen['expressions'])} expressions "
                                 f"but {len(gen['fitnesses'])} fitnesses")
        X, y = r["X"], r["y"]
        if not isinstance(X, np.ndarray) or X.ndim != 2 or not isinstance(y, np.ndarray) or y.shape != X.shape[:1]:
            raise InputError(f"{path}: record {i}: X must be 2-D and y 1-D with as many points")
        if not np.all(np.isfinite(X)) or not np.all(np.isfinite(y)):
            raise InputError(f"{path}: record {i}: X or y contains NaN or inf")


def load_traces(path: str, require_trajectories=True) -> dict:
    return safe_io.load(path, "traces", lambda o, p: validate_traces(o, p, require_trajectories))


def primitives_of(record):
    from .expressions import Primitives

    try:
        return Primitives(record["binary_operators"], record["unary_operators"], record["num_vars"],
                          record["constants"])
    except (KeyError, ExpressionError) as e:
        raise InputError(f"trace record {record.get('expression_id')}: bad primitives ({e})") from None


def summary_line(records) -> str:
    n = len(records)
    solved = sum(1 for r in records if r["final_mse"] <= SOLVED_MSE)
    mean_t = sum(r["time"] for r in records) / max(n, 1)
    return f"solved {solved}/{n} (MSE <= {SOLVED_MSE:g}); mean time per expression {mean_t:.3f} s"
