"""Trace files: the recorded evolution of SR runs, one record per expression.

A traces file (``format: 'traces'``) has metadata (command, parameters,
package versions, time, ``source``) and records::

    expression_id, index, seed, target_expression, final_expression, final_mse,
    solved, time, trajectory, basicsr_params, sampling_params (neural runs),
    binary_operators, unary_operators, constants, num_vars, X, y (float32), source
    (and, for a run on a user's table, variable_names, columns, target_name: x0.. shown as names[i], read from
    columns[i])

``basicsr_params`` is the run's :class:`~nsr.config.EvolutionConfig` as a
dict, ``sampling_params`` its :class:`~nsr.config.SamplingConfig`.
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
from .config import EvolutionConfig
from .evolution import Problem
from .expressions import format_infix
from .metrics import SOLVED_MSE, solved_on_data
from .safe_io import InputError

GENERATION_KEYS = ("generation", "expressions", "fitnesses", "mses", "heritages", "operators")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def parents(row) -> list:
    """The parent indices in one row of ``heritages`` (``[a, b]``, ``[a]`` or ``[]``)."""
    return [int(a) for a in row if a >= 0]


def seed_for(seed: int, index: int) -> np.random.Generator:
    """The generator of the expression at ``index`` in its file: independent of
    sharding, worker count, batch size and resumption."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def storable_data(X, y, where=""):
    """X and y as float32, as traces store them, or an InputError if they do not fit (so a trace is
    never written that its own loader would refuse)."""
    with np.errstate(over="ignore"):
        X32, y32 = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.float32)
    if not (np.all(np.isfinite(X32)) and np.all(np.isfinite(y32))):
        raise InputError(f"{where}X or y exceeds the float32 range (|value| > {FLOAT32_MAX:.3g}) that traces "
                         f"store; rescale the data")
    return X32, y32


def trace_record(problem: Problem, record: dict, index: int, seed: int, elapsed: float, source: str,
                 sampling=None) -> dict:
    """One record of a traces file (see the module docstring)."""
    best, mse = problem.reported()
    prims = problem.primitives
    X32, y32 = storable_data(problem.X, problem.y, f"expression {record.get('id', index)}: ")
    out = {
        "expression_id": record.get("id", index),
        "index": index,
        "seed": int(seed),
        "target_expression": record.get("expression"),
        "final_expression": format_infix(best),
        "final_mse": mse,
        "solved": solved_on_data(mse),
        "time": float(elapsed),
        "trajectory": problem.trajectory(),
        "basicsr_params": problem.config.to_dict(),
        "binary_operators": list(prims.binary),
        "unary_operators": list(prims.unary),
        "constants": [float(c) for c in prims.constants],
        "num_vars": int(problem.X.shape[1]),
        "X": X32,
        "y": y32,
        "source": source,
    }
    if sampling is not None:
        out["sampling_params"] = sampling.to_dict()
    for key in ("variable_names", "columns", "target_name"):  # a user's table: how x0.. map to its columns
        if record.get(key) is not None:
            out[key] = list(record[key]) if key != "target_name" else str(record[key])
    return out


def record_config(record, where="") -> EvolutionConfig:
    """The evolution parameters a record was run with (validated: they may reach the compiled kernels)."""
    params = record.get("basicsr_params")
    if params is None:
        params = {}
    cfg = EvolutionConfig.from_dict(params, where)
    try:
        return cfg.replace(binary_operators=tuple(record["binary_operators"]),
                           unary_operators=tuple(record["unary_operators"]), constants=tuple(record["constants"]))
    except KeyError as e:
        raise InputError(f"{where}record lacks {e.args[0]!r}") from None
    except (TypeError, InputError) as e:
        raise InputError(f"{where}bad primitives ({e})") from None


def _check_values(a, key, n, where):
    """One float per expression, no NaN."""
    if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind != "f" or len(a) != n:
        raise InputError(f"{where}: {key} must be a float array with one value per expression")
    if np.isnan(a).any():
        raise InputError(f"{where}: {key} contains NaN")


def _check_children(gen, prefix, n, n_parents, where):
    """A population's texts, operators and parent indices (into a population of n_parents), as consumers
    index them."""
    missing = [prefix + k for k in ("expressions", "operators", "heritages") if prefix + k not in gen]
    if missing:
        raise InputError(f"{where} lacks {', '.join(missing)}")
    texts, ops, her = gen[prefix + "expressions"], gen[prefix + "operators"], gen[prefix + "heritages"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InputError(f"{where}: {prefix}expressions must be a list of strings")
    if not isinstance(ops, list) or len(ops) != n or not all(isinstance(o, str) for o in ops):
        raise InputError(f"{where}: {prefix}operators must be a list of {n} strings")
    if not isinstance(her, np.ndarray) or her.shape != (n, 2) or her.dtype.kind not in "iu":
        raise InputError(f"{where}: {prefix}heritages must be an integer array of shape ({n}, 2)")
    if her.size and (her.min() < -1 or her.max() >= n_parents):
        raise InputError(f"{where}: {prefix}heritages must be parent indices in -1..{n_parents - 1}")


def validate_traces(obj, path, require_trajectories=True):
    records = safe_io.checked_records(obj, path, "traces", ("X", "y", "trajectory"))
    for i, r in enumerate(records):
        traj = r["trajectory"]
        if not isinstance(traj, dict) or not isinstance(traj.get("generations"), list):
            raise InputError(f"{path}: record {i} has no trajectory (expected a dict with 'generations')")
        if require_trajectories and not traj["generations"]:
            raise InputError(f"{path}: record {i} has an empty trajectory (was it run without collecting one?)")
        prev_n = 0
        for g, gen in enumerate(traj["generations"]):
            if not isinstance(gen, dict):
                raise InputError(f"{path}: record {i} generation {g} is not a dict")
            missing = [k for k in GENERATION_KEYS if k not in gen]
            if missing:
                raise InputError(f"{path}: record {i} generation {g} lacks {', '.join(missing)}")
            where = f"{path}: record {i} generation {g}"
            n = len(gen["expressions"]) if isinstance(gen["expressions"], list) else -1
            for key in ("fitnesses", "mses"):
                _check_values(gen[key], key, n, where)
            _check_children(gen, "", n, prev_n if g else n, where)
            if "expert_expressions" in gen:  # DAgger labels: children of this generation's population
                m = len(gen["expert_expressions"]) if isinstance(gen["expert_expressions"], list) else -1
                _check_children(gen, "expert_", m, n, where)
                if gen.get("expert_fitnesses") is not None:
                    _check_values(gen["expert_fitnesses"], "expert_fitnesses", m, where)
            prev_n = n
        X, y = r["X"], r["y"]
        if not isinstance(X, np.ndarray) or X.ndim != 2 or not isinstance(y, np.ndarray) or y.shape != X.shape[:1]:
            raise InputError(f"{path}: record {i}: X must be 2-D and y 1-D with as many points")
        if X.dtype.kind not in "fiu" or y.dtype.kind not in "fiu":
            raise InputError(f"{path}: record {i}: X and y must be numeric")
        if not np.all(np.isfinite(X)) or not np.all(np.isfinite(y)):
            raise InputError(f"{path}: record {i}: X or y contains NaN or inf")


def load_traces(path: str, require_trajectories=True) -> dict:
    return safe_io.load(path, "traces", lambda o, p: validate_traces(o, p, require_trajectories))


def summary_line(records) -> str:
    n = len(records)
    solved = sum(1 for r in records if solved_on_data(r["final_mse"]))
    mean_t = sum(r["time"] for r in records) / max(n, 1)
    return f"solved {solved}/{n} (MSE <= {SOLVED_MSE:g}); mean time per expression {mean_t:.3f} s"
