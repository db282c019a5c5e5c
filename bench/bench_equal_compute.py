#!/usr/bin/env python
"""Does the learned searcher pay at equal compute (issue 22)? Solved fraction against (a) CPU core-seconds and
(b) model evaluations per run, for the expert, a checkpoint, and the checkpoint mixed with the expert.

A run stops once its training MSE is <= 1e-10, so the cost at which a solved run stopped is its cost to solve:
the curve at budget B counts the solved runs (fresh-point R^2 >= 0.99999) whose cost is <= B. Costs per run:

* evaluations: every model evaluation, constant fitting's residual and Jacobian passes included (as Operon counts);
* core-seconds: CPU time of the process (all its threads), so the figure does not depend on what else the
  machine runs. The expert runs one problem at a time: its CPU time. A neural batch runs its problems together on
  the model's threads: the batch's CPU time, shared among its problems by the generations each ran (a problem that
  stopped at generation 5 is charged for 5 of the batch's problem-generations). Everything runs in this process.

Per set one PNG (two panels) and one JSON with every run:

    python bench/bench_equal_compute.py --sets feynman arith full physics --seeds 0 --out bench/results/compute
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench.bench_neural import COMPARE_SETS, load_set  # noqa: E402
from bench.common import CpuMonitor, code_state, machine  # noqa: E402
from nsr.config import EvolutionConfig, SamplingConfig  # noqa: E402
from nsr.datasets import EXPRESSIONS_DIR  # noqa: E402
from nsr.drivers import file_jobs, run_jobs  # noqa: E402
from nsr.evaluation import eval_result  # noqa: E402
from nsr.search import Searcher  # noqa: E402


SECONDS = (0.5, 2, 10, 50)  # per-run budgets the table reads the curves at
EVALS = (1_000, 10_000, 100_000)


_CPU = [0.0]


def timed_result(searcher, job, problem, seconds):
    """``eval_result`` plus the CPU time since the previous result: a run's own (expert), or for the first
    problem of a neural batch the whole batch's (the others ~0)."""
    now = time.process_time()
    r = eval_result(searcher, job, problem, seconds)
    r["cpu"] = now - _CPU[0]
    _CPU[0] = time.process_time()  # scoring on fresh points is not the search's cost
    return r


def run_set(searcher, recs, seeds, batch_size, neural):
    """Every (seed, record) run in this process, seed-major, with ``core_seconds`` per run."""
    out = []
    for seed in seeds:
        _CPU[0] = time.process_time()
        res = [r for _, r in run_jobs(searcher, file_jobs(recs, seed), timed_result, batch_size, 1)]
        if not neural:
            for r in res:
                r["core_seconds"] = r["cpu"]
        for s in range(0, len(res) if neural else 0, batch_size):
            batch = res[s:s + batch_size]
            cpu, gens = sum(r["cpu"] for r in batch), sum(r["generations"] for r in batch)
            for r in batch:
                r["core_seconds"] = cpu * r["generations"] / gens
        out += res
    return out


def curve(costs, solved, grid):
    c = np.array([x for x, ok in zip(costs, solved) if ok])
    return [int((c <= g).sum()) for g in grid]


def plot(path, set_name, runs, methods):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "core_seconds", "CPU core-seconds per run"),
                           (axes[1], "evaluations", "model evaluations per run")):
        hi = max(max(r[key] for r in runs[m]) for m in methods)
        lo = max(min(min(r[key] for r in runs[m]) for m in methods), 1e-3)
        grid = np.geomspace(lo, hi, 200)
        for m in methods:
            n = len(runs[m])
            ax.plot(grid, np.array(curve([r[key] for r in runs[m]], [r["solved"] for r in runs[m]], grid)) / n,
                    label=m)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("solved fraction")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{set_name}: solved at equal compute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", choices=list(COMPARE_SETS), default=["feynman", "arith", "full", "physics"])
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "training", "checkpoints", "dagger"))
    p.add_argument("--beta", type=float, default=0.5, help="the mixed searcher: each child the expert's with "
                                                           "probability beta")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--problems", type=int, default=None, help="first N problems of each set (default: all)")
    p.add_argument("--population_size", type=int, default=20)
    p.add_argument("--generations", type=int, default=50)
    p.add_argument("--constant_fitting", type=int, default=10)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "compute"))
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    mon, t_start = CpuMonitor(), time.time()
    searchers = {"expert": None, "dagger": SamplingConfig(checkpoint=a.checkpoint, device=a.device),
                 f"dagger+expert (beta {a.beta:g})": SamplingConfig(checkpoint=a.checkpoint, device=a.device,
                                                                    beta=a.beta)}
    summary = []
    for set_name in a.sets:
        _, opset, consts, recs = load_set(os.path.join(EXPRESSIONS_DIR, COMPARE_SETS[set_name] + ".pkl.gz"),
                                          a.problems)
        recs = [dict(r, X=r["X"][: a.points], y=r["y"][: a.points]) for r in recs]
        evo = EvolutionConfig(population_size=a.population_size, num_generations=a.generations, operator_set=opset,
                              constants=consts, constant_fitting=a.constant_fitting)
        runs = {}
        for name, sampling in searchers.items():
            searcher = Searcher(evo, sampling)
            searcher.load()
            if sampling:  # the model's first calls (allocation, kernel choice) are not a run's cost
                run_set(searcher, recs[:2], a.seeds[:1], 2, True)
            t0 = time.perf_counter()
            res = run_set(searcher, recs, a.seeds, a.batch_size, bool(sampling))
            wall = time.perf_counter() - t0
            threads = searcher.neural.threads if sampling else None
            runs[name] = res
            tot_cs = sum(r["core_seconds"] for r in res)
            row = dict(set=set_name, method=name, runs=len(res), solved=sum(r["solved"] for r in res),
                       wall=wall, core_seconds=tot_cs, evaluations=sum(r["evaluations"] for r in res),
                       model_share=(sum(r["model_time"] or 0 for r in res) / sum(r["time"] for r in res)
                                    if sampling else 0.0), threads=threads or 1)
            row["solved_within_seconds"] = curve([r["core_seconds"] for r in res], [r["solved"] for r in res], SECONDS)
            row["solved_within_evaluations"] = curve([r["evaluations"] for r in res], [r["solved"] for r in res], EVALS)
            summary.append(row)
            print(json.dumps(row), flush=True)
        plot(os.path.join(a.out, f"{set_name}.png"), set_name, runs, list(searchers))
        with open(os.path.join(a.out, f"{set_name}.json"), "w") as f:
            json.dump(dict(runs=runs, args=vars(a)), f, default=float)
    print("\n| set | method | solved / runs | core-s per run | evaluations per run | model share of time | solved within "
          + " / ".join(f"{b:g}" for b in SECONDS) + " core-s | within " + " / ".join(f"{b:,}" for b in EVALS)
          + " evaluations |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in summary:
        print(f"| {row['set']} | {row['method']} | {row['solved']}/{row['runs']} | "
              f"{row['core_seconds'] / row['runs']:.2f} | {row['evaluations'] / row['runs']:,.0f} | "
              f"{100 * row['model_share']:.0f}% | {' / '.join(map(str, row['solved_within_seconds']))} | "
              f"{' / '.join(map(str, row['solved_within_evaluations']))} |")
    out = dict(summary=summary, args=vars(a), code=code_state(), machine=machine(), load=mon.stop(),
               wall=time.time() - t_start, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(out, f, indent=1, default=float)
    print(f"\nother processes used {out['load']['other_cpu']:.0f} CPU-s over {out['wall']:.0f} s")


if __name__ == "__main__":
    main()
