#!/usr/bin/env python
"""Constant fitting in one scoring thread against the model's thread count, side by side (issue 13).

A neural batch with fitting on scores its problems' children in as many threads as torch has
(nsr.evolution.evolve(workers=...)). This runs the same batch both ways in one process, alternating, with the
model's own threads unchanged, so only the scoring differs: the first Feynman-100 equations (1,000 points each,
where fitting weighs most), population 20, early stop off.

    python bench/bench_fit_threads.py --problems 32 --generations 10 --repeats 3 --json out.json
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

from bench.common import code_state, machine  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "training", "checkpoints", "dagger"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--problems", type=int, default=32, help="first N Feynman equations, one batch")
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--constant_fitting", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import torch

    from bench.bench_neural import COMPARE_SETS, load_set
    from nsr.config import EvolutionConfig, SamplingConfig
    from nsr.datasets import EXPRESSIONS_DIR
    from nsr.neural import NeuralProposer
    from nsr.search import Searcher
    from nsr.traces import seed_for

    _, opset, consts, recs = load_set(os.path.join(EXPRESSIONS_DIR, COMPARE_SETS["feynman"] + ".pkl.gz"), a.problems)
    evo = EvolutionConfig(population_size=20, num_generations=a.generations, early_stop=False, operator_set=opset,
                          constants=consts, constant_fitting=a.constant_fitting)
    searcher = Searcher(evo, SamplingConfig(checkpoint=a.checkpoint, device=a.device))
    searcher.load()
    threads = torch.get_num_threads()
    rows = []
    for rep in range(a.repeats):
        for scoring in (1, threads):
            NeuralProposer.threads = property(lambda self, n=scoring: n)  # only the scoring threads change
            problems = [searcher.problem(r["X"], r["y"], seed_for(0, i)) for i, r in enumerate(recs)]
            searcher.neural.reset_stats()
            t0 = time.perf_counter()
            searcher.run(problems)
            wall = time.perf_counter() - t0
            model = searcher.neural.stats["model_time"]
            rows.append(dict(repeat=rep, scoring_threads=scoring, model_threads=threads, wall_s=wall, model_s=model,
                             other_s=wall - model, best_mse=[float(q.mse[q.best_index()]) for q in problems]))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "best_mse"}), flush=True)
    summary = {}
    for scoring in (1, threads):
        sel = [r for r in rows if r["scoring_threads"] == scoring]
        summary[scoring] = dict(median_wall_s=statistics.median(r["wall_s"] for r in sel),
                                median_other_s=statistics.median(r["other_s"] for r in sel))
    same = all(r["best_mse"] == rows[0]["best_mse"] for r in rows)
    print(f"\n| scoring threads | wall s (median of {a.repeats}) | outside the model, s |")
    print("|---:|---:|---:|")
    for scoring, s in summary.items():
        print(f"| {scoring} | {s['median_wall_s']:.2f} | {s['median_other_s']:.2f} |")
    print(f"identical results: {same}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(machine=machine(), code=code_state(), args=vars(a), rows=rows, summary=summary,
                           identical=same), f, indent=1)


if __name__ == "__main__":
    main()
