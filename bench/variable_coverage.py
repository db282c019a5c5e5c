#!/usr/bin/env python
"""Which of a problem's variables a searcher keeps in its population (issue 12's Feynman gap).

On the Feynman-100 equations with 4-9 variables, per method (the expert, and each checkpoint): the share of the
problem's variables that appear in the population at generations 0, 1, 5 and the last, and in the last generation
the share of x0-x2 and of x3 and above present. A searcher that drops a variable cannot find a formula that needs
it. Population 20, fitting 10, early stop off; the first --points points of each equation.

    python bench/variable_coverage.py --checkpoints dagger=training/checkpoints/dagger --problems 24
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import code_state, machine  # noqa: E402

VAR = re.compile(r"x(\d+)")


def variables_in(expressions) -> set:
    return {int(v) for e in expressions for v in VAR.findall(e)}


def coverage(searcher, records, seed):
    from nsr.traces import seed_for

    problems = [searcher.problem(r["X"], r["y"], seed_for(seed, i)) for i, r in enumerate(records)]
    searcher.run(problems)
    gens = {}
    low, high = [], []
    for p, r in zip(problems, records):
        n = r["X"].shape[1]
        trajectory = p.trajectory()["generations"]
        for key, g in (("0", 0), ("1", 1), ("5", 5), ("last", len(trajectory) - 1)):
            if g < len(trajectory):
                gens.setdefault(key, []).append(len(variables_in(trajectory[g]["expressions"])) / n)
        used = variables_in(trajectory[-1]["expressions"])
        low.append(sum(v in used for v in range(3)) / 3)
        high.append(sum(v in used for v in range(3, n)) / (n - 3))
    return {"population_share_by_generation": {k: float(np.mean(v)) for k, v in gens.items()},
            "last_x0_x2": float(np.mean(low)), "last_x3_up": float(np.mean(high))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", nargs="*", default=[], help="NAME=FOLDER per neural method (the expert always)")
    p.add_argument("--problems", type=int, default=24, help="the first N Feynman equations with 4+ variables")
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from bench.bench_neural import COMPARE_SETS, load_set
    from nsr.config import EvolutionConfig, SamplingConfig
    from nsr.datasets import EXPRESSIONS_DIR
    from nsr.search import Searcher

    _, opset, consts, recs = load_set(os.path.join(EXPRESSIONS_DIR, COMPARE_SETS["feynman"] + ".pkl.gz"))
    records = [dict(r, X=r["X"][: a.points], y=r["y"][: a.points]) for r in recs if r["X"].shape[1] >= 4]
    records = records[: a.problems]
    evo = EvolutionConfig(population_size=20, num_generations=a.generations, early_stop=False, constant_fitting=10,
                          operator_set=opset, constants=consts, collect_trajectory=True)
    methods = [("expert", None)] + [tuple(c.split("=", 1)) for c in a.checkpoints]
    rows = []
    for name, folder in methods:
        searcher = Searcher(evo, SamplingConfig(checkpoint=folder, device=a.device) if folder else None)
        rows.append({"method": name, **coverage(searcher, records, a.seed)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method | variables in the population, generation 0 / 1 / 5 / last | last generation: x0-x2 | x3 and up |")
    print("|---|---|---:|---:|")
    for r in rows:
        g = r["population_share_by_generation"]
        print(f"| {r['method']} | {' / '.join(f'{100 * g[k]:.0f}%' if k in g else '-' for k in ('0', '1', '5', 'last'))} | "
              f"{100 * r['last_x0_x2']:.0f}% | {100 * r['last_x3_up']:.0f}% |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(machine=machine(), code=code_state(), args=vars(a), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
