#!/usr/bin/env python
"""Where the time goes without a model (issue 13): neural SR with a stand-in proposer.

The stand-in (nsr.neural.StandInProposer) replaces only the model call by grammar-valid random children, so a
run measures the CPU side of neural SR per problem-generation: building prompts, decoding proposals, heritage,
fitness evaluation and bookkeeping. On a GPU this is what the device waits for.

    python bench/bench_cpu_side.py --batch_size 512 --repeats 3
    python bench/bench_cpu_side.py --profile          # cProfile of one run, top functions
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import CpuMonitor, code_state, machine  # noqa: E402


def run_once(batch_size, generations, population, trajectory, seed, constant_fitting=0):
    from nsr.config import EvolutionConfig
    from nsr.datasets import HELDOUT_EXPRESSIONS, load_expressions
    from nsr.drivers import file_jobs, run_batch
    from nsr.neural import StandInProposer
    from nsr.search import Searcher

    recs = load_expressions(HELDOUT_EXPRESSIONS)["records"]
    pool = (recs * (-(-batch_size // len(recs))))[:batch_size]
    evo = EvolutionConfig(population_size=population, num_generations=generations, early_stop=False,
                          collect_trajectory=trajectory, constant_fitting=constant_fitting)
    searcher = Searcher(evo, neural=StandInProposer())
    jobs = file_jobs(pool, seed)
    t0 = time.perf_counter()
    run_batch(searcher, jobs, lambda *a: None)
    wall = time.perf_counter() - t0
    model = searcher.neural.stats["model_time"]
    n = batch_size * (generations - 1)  # problem-generations proposed (the initial population is not)
    return dict(wall=wall, model=model, ms_per_problem_generation=1000 * (wall - model) / n,
                ms_per_problem_generation_incl_standin=1000 * wall / n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--population_size", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--trajectory", action="store_true", help="with --profile: record trajectories")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    run_once(8, 3, a.population_size, True, 0)  # compile / warm
    if a.profile:
        import cProfile
        import pstats

        cProfile.runctx("run_once(a.batch_size, a.generations, a.population_size, a.trajectory, 0)", globals(), locals(),
                        "/tmp/cpu_side.prof")
        pstats.Stats("/tmp/cpu_side.prof").sort_stats("tottime").print_stats(25)
        return
    rows = []
    mon = CpuMonitor()
    for trajectory in (False, True):
        runs = [run_once(a.batch_size, a.generations, a.population_size, trajectory, rep) for rep in range(a.repeats)]
        row = dict(trajectory=trajectory, batch_size=a.batch_size,
                   ms=statistics.median(r["ms_per_problem_generation"] for r in runs),
                   ms_incl_standin=statistics.median(r["ms_per_problem_generation_incl_standin"] for r in runs),
                   runs=runs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    load = mon.stop()
    print("\n| trajectories recorded | batch | CPU-side ms per problem-generation (median) | incl. stand-in sampling |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {'yes' if r['trajectory'] else 'no'} | {r['batch_size']} | **{r['ms']:.3f}** | {r['ms_incl_standin']:.3f} |")
    print(f"other processes used {load['other_cpu']:.1f} CPU-s over {load['wall']:.1f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(rows=rows, load=load, code=code_state(), machine=machine()), f, indent=1)


if __name__ == "__main__":
    main()
