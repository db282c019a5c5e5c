"""Evaluating SR methods on expression sets: the numbers benchmarks and the DAgger loop report.

A problem counts as *solved* when the found expression reaches R^2 >= 0.99999
on 1000 fresh test points drawn from the problem's input range (not the
training points). Each (problem, seed) pair is one run.
"""
from __future__ import annotations

import time

import numpy as np

from .datasets import fresh_points
from .expressions import evaluate, parse
from .sr import BasicSR
from .traces import seed_for

R2_SOLVED = 0.99999


def test_r2(found_text, record, n=1000, seed=0):
    """R^2 of ``found_text`` against the record's target on fresh points (-inf if not finite)."""
    X = fresh_points(record, n, seed)
    y = evaluate(parse(record["expression"]), X)
    with np.errstate(all="ignore"):
        pred = evaluate(parse(found_text), X)
        if not np.all(np.isfinite(pred)) or not np.all(np.isfinite(y)):
            return -np.inf
        ss_res = float(np.sum((y - pred) ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else -np.inf
    return 1.0 - ss_res / ss_tot


def _result(record, seed, text, mse, elapsed, stats=None):
    r2 = test_r2(text, record, seed=seed)
    out = {"id": record.get("id"), "seed": seed, "target": record.get("expression"), "found": text,
           "train_mse": float(mse), "r2": r2, "solved": bool(r2 >= R2_SOLVED), "time": float(elapsed)}
    if stats:
        out.update(well_formed_pct=stats.get("well_formed_pct"), model_time=stats.get("model_time"))
    return out


def run_basic(records, seeds, operator_set, population_size, num_generations, **params):
    out = []
    for seed in seeds:
        for i, r in enumerate(records):
            t0 = time.perf_counter()
            sr = BasicSR(population_size=population_size, num_generations=num_generations,
                         operator_set=operator_set, **params).fit(r["X"], r["y"], rng=seed_for(seed, i))
            out.append(_result(r, seed, str(sr.best_model_), sr.get_final_mse(), time.perf_counter() - t0))
    return out


def run_neural(records, seeds, operator_set, population_size, num_generations, checkpoint, batch_size=32,
               sr=None, **params):
    """Neural SR, problems batched; time per expression is the batch wall time / batch size."""
    from .neural_sr import BatchedNeuralSR

    sr = sr or BatchedNeuralSR(checkpoint, population_size=population_size, num_generations=num_generations,
                               operator_set=operator_set, **params)
    sr.neural.ck  # load outside the timed part
    out = []
    for seed in seeds:
        for start in range(0, len(records), batch_size):
            chunk = list(enumerate(records))[start:start + batch_size]
            problems = sr.make_problems([r["X"] for _, r in chunk], [r["y"] for _, r in chunk],
                                        rngs=[seed_for(seed, i) for i, _ in chunk])
            t0 = time.perf_counter()
            sr.run_problems(problems)
            per = (time.perf_counter() - t0) / len(chunk)
            for (i, r), p in zip(chunk, problems):
                from .expressions import format_infix

                out.append(_result(r, seed, format_infix(p.best_tokens()), p.mse[p.best_index()], per, p.stats))
    return out


def summarize(results) -> dict:
    n = len(results)
    solved = sum(r["solved"] for r in results)
    wf = [r["well_formed_pct"] for r in results if r.get("well_formed_pct") is not None]
    return {
        "runs": n,
        "solved": solved,
        "solve_rate": solved / n if n else float("nan"),
        "median_train_mse": float(np.median([r["train_mse"] for r in results])) if n else float("nan"),
        "well_formed_pct": float(np.mean(wf)) if wf else None,
        "time_per_expression": float(np.mean([r["time"] for r in results])) if n else float("nan"),
    }
