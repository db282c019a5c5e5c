"""Evaluating SR methods on expression sets: the numbers benchmarks and the DAgger loop report.

Each (problem, seed) pair is one run; a run is an *accuracy solution* when the
found expression reaches R^2 >= 0.99999 on 1000 fresh test points from the
problem's input range (:mod:`nsr.metrics`). Runs go through the one batch
driver, so the expert and the model are measured by the same code.
"""
from __future__ import annotations

import numpy as np

from .drivers import file_jobs, run_jobs
from .expressions import format_infix
from .metrics import accuracy_solution, fresh_r2
from .search import Searcher


def eval_result(searcher: Searcher, job, problem, seconds: float) -> dict:
    """``collect`` for evaluation: what was found and how good it is on fresh points."""
    tokens, train_mse = problem.reported()
    text = format_infix(tokens)
    r2 = fresh_r2(text, job.record, seed=job.seed) if job.record.get("expression") else None  # needs the truth
    st = problem.stats
    return {"id": job.problem_id, "index": job.index, "seed": job.seed, "target": job.record.get("expression"),
            "found": text, "train_mse": train_mse, "r2": r2,
            "solved": r2 is not None and accuracy_solution(r2), "generations": len(problem.best_progression),
            "evaluations": int(st["model_evaluations"]),
            "time": float(seconds), "well_formed_pct": st.get("well_formed_pct"), "model_time": st.get("model_time")}


def evaluate(searcher: Searcher, records, seeds, batch_size=32, num_workers=1, progress=None) -> list:
    """One result per (seed, record), seed-major. Expression ``i`` with seed ``s`` uses ``SeedSequence([s, i])``.

    Neural runs batch each seed's problems (``batch_size`` per model call); their time per expression is
    the batch's wall time divided by its size."""
    searcher.load()  # outside the timed part
    out = []
    for seed in seeds:
        jobs = file_jobs(records, seed)
        done = dict((j.index, r) for j, r in run_jobs(searcher, jobs, eval_result, batch_size, num_workers, progress))
        out += [done[j.index] for j in jobs]
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
