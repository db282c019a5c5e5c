#!/usr/bin/env python
"""BasicSR (with fitted constants) against Operon on AI Feynman and Nguyen-1..12 (issue 11).

solve:      both methods on every problem at the same evaluation budget (every model evaluation counts,
            constant fitting included, as Operon counts them), same training points, one thread each;
            per run: accuracy solution (R^2 >= 0.99999 on 1000 fresh points), SRBench symbolic solution,
            evaluations used, time. Runs are spread over --workers processes.
throughput: individuals per second with constant fitting at the same LM iteration count, same data, one
            thread (BasicSR also as distinct and model evaluations per second).
table:      the per-equation markdown table of solve runs' JSON files (S symbolic, A accuracy only, else R^2).

    python bench/bench_feynman.py solve --sets feynman nguyen --budget 100000 --json out.json
    python bench/bench_feynman.py throughput
    python bench/bench_feynman.py table --inputs out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench.common import CpuMonitor, code_state, machine  # noqa: E402
from nsr.config import DATA_PRESET  # noqa: E402
from nsr.pareto import SELECTIONS  # noqa: E402

SETS = {"feynman": ("feynman_100.pkl.gz", "physics"), "nguyen": ("nguyen_12.pkl.gz", "full")}


def load_set(name, limit=None):
    from nsr.datasets import EXPRESSIONS_DIR, load_expressions

    fname, opset = SETS[name]
    recs = load_expressions(os.path.join(EXPRESSIONS_DIR, fname))["records"]
    return [(name, i, r, opset) for i, r in enumerate(recs)][:limit]


def training_data(record, points, noise=0.0, seed=0, index=0):
    """The first ``points`` points (Nguyen ships 20-100; every method sees the same ones); with ``noise``,
    SRBench's target noise: Gaussian with standard deviation ``noise`` x the RMS of the target, drawn from
    ``SeedSequence([seed, index, round(noise * 1e6)])`` (so every method sees the same noisy points)."""
    X, y = record["X"][:points], record["y"][:points]
    if noise:
        rng = np.random.default_rng([seed, index, int(round(noise * 1e6))])
        y = y + rng.normal(0.0, noise * float(np.sqrt(np.mean(y ** 2))), size=y.shape)
    return X, y


def run_basicsr(X, y, opset, budget, seed, a):
    from nsr.estimators import BasicSR

    t0 = time.perf_counter()
    m = BasicSR(population_size=a.basicsr_population, num_generations=10**7, operator_set=opset,
                constant_fitting=a.basicsr_lm_iterations if a.basicsr_lm_iterations is not None else a.lm_iterations,
                max_size=a.max_size, max_depth=a.max_depth,
                tournament_size=a.tournament_size, crossover_prob=a.crossover_prob,
                point_mutation_prob=a.point_mutation_prob, linear_scaling=not a.no_linear_scaling,
                parsimony=a.parsimony, polish=a.polish, model_selection=a.model_selection,
                max_evaluations=budget, seed=seed).fit(X, y)
    st = m.problem_.stats
    front = [dict(complexity=e["complexity"], loss=e["loss"], equation=e["equation"]) for e in _records(m.equations_)]
    return dict(expression=str(m.best_model_), evaluations=int(st["model_evaluations"]), front=front,
                distinct=int(st["evaluations"]), generations=len(m.best_progression), time=time.perf_counter() - t0,
                train_mse=m.get_final_mse())


def _records(frame):
    return frame.to_dict("records") if hasattr(frame, "to_dict") else frame


def run_operon_method(X, y, opset, budget, seed, a):
    from bench.operon_runner import run_operon
    from nsr.expressions import format_infix, parse

    r = run_operon(X, y, operators=opset, population_size=a.operon_population, max_evaluations=budget,
                   lm_iterations=a.lm_iterations, seed=seed, max_length=a.operon_max_length)
    return dict(expression=format_infix(parse(r["expression"])), evaluations=int(r["evaluations"]),
                generations=int(r["generations_run"]), time=float(r["time"]), train_mse=float(r["train_mse"]))


METHODS = {"basicsr": run_basicsr, "operon": run_operon_method}


def one_run(task):
    """A (method, problem, seed) run, scored: in a worker process (sympy's time limit needs its main thread)."""
    method, set_name, index, record, opset, seed, noise, a = task
    from nsr.expressions import parse
    from nsr.metrics import SRBENCH_DIGITS, fresh_r2, symbolic_solution

    X, y = training_data(record, a.points, noise, seed, index)
    out = METHODS[method](X, y, opset, a.budget, seed, a)
    r2 = fresh_r2(out["expression"], record, seed=seed)  # on noiseless fresh points
    threshold = a.r2_threshold if a.r2_threshold is not None else (0.999 if noise else 0.99999)
    out.update(method=method, set=set_name, index=index, name=record.get("name", str(index)), seed=seed,
               noise=noise, target=record["expression"], r2=r2, accuracy=bool(r2 >= threshold),
               size=len(parse(out["expression"])),
               symbolic=bool(r2 > 0.5 and symbolic_solution(out["expression"], record["expression"])))
    out["symbolic_srbench"] = bool(r2 > 0.5 and symbolic_solution(out["expression"], record["expression"],
                                                                   digits=SRBENCH_DIGITS))
    if a.check_front and out.get("front") is not None and out["accuracy"]:
        # is the truth (or an equal formula) on the front? numeric filter first: sympy only for close ones
        out["truth_on_front"] = any(fresh_r2(e["equation"], record, seed=seed) >= 0.999
                                    and symbolic_solution(e["equation"], record["expression"]) for e in out["front"])
    return out


def solve(a):
    problems = [p for s in a.sets for p in load_set(s, a.limit)]
    tasks = [(m, s, i, r, op, seed, noise, a) for noise in a.noise for seed in a.seeds for (s, i, r, op) in problems
             for m in a.methods]
    rows, mon = [], CpuMonitor()
    # each finished run also goes to JSON.rows.jsonl at once: a long run stopped half-way keeps what it measured
    partial = open(a.json + ".rows.jsonl", "w") if a.json else None
    with ProcessPoolExecutor(a.workers) as pool:
        for out in pool.map(one_run, tasks, chunksize=1):
            rows.append(out)
            if partial:
                partial.write(json.dumps(out, default=float) + "\n")
                partial.flush()
            if not a.quiet:
                print(f"{out['method']:8s} {out['name']:10s} seed {out['seed']} noise {out['noise']:g} r2 {out['r2']:.6f} "
                      f"acc {int(out['accuracy'])} sym {int(out['symbolic'])} evals {out['evaluations']} "
                      f"{out['time']:.1f}s  {out['expression'][:70]}", flush=True)
    load = mon.stop()
    summary = summarize(rows, a)
    print(f"\nother processes used {load['other_cpu']:.1f} CPU-s over {load['wall']:.0f} s")
    return dict(rows=rows, summary=summary, load=load)


def summarize(rows, a):
    summary = []
    for s, noise, m in [(s, noise, m) for s in a.sets for noise in a.noise for m in a.methods]:
        rs = [r for r in rows if r["set"] == s and r["method"] == m and r["noise"] == noise]
        fronts = [r["truth_on_front"] for r in rs if "truth_on_front" in r]
        summary.append(dict(set=s, noise=noise, method=m, runs=len(rs), accuracy=sum(r["accuracy"] for r in rs),
                            symbolic=sum(r["symbolic"] for r in rs),
                            symbolic_srbench=sum(r.get("symbolic_srbench", False) for r in rs),
                            median_size=statistics.median(r["size"] for r in rs),
                            truth_on_front=f"{sum(fronts)}/{len(fronts)}" if fronts else "-",
                            median_evaluations=statistics.median(r["evaluations"] for r in rs),
                            median_time=statistics.median(r["time"] for r in rs),
                            total_time=sum(r["time"] for r in rs)))
    print("\n| set | noise | method | runs | accuracy solutions | symbolic solutions | symbolic, SRBench rounding | "
          "median size | truth on front (solved runs) | median evaluations | median s/run |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        print(f"| {r['set']} | {r['noise']:g} | {r['method']} | {r['runs']} | {r['accuracy']} "
              f"({100 * r['accuracy'] / r['runs']:.0f}%) | {r['symbolic']} ({100 * r['symbolic'] / r['runs']:.0f}%) | "
              f"{r['symbolic_srbench']} ({100 * r['symbolic_srbench'] / r['runs']:.0f}%) | "
              f"{r['median_size']:g} | {r['truth_on_front']} | {r['median_evaluations']:,.0f} | {r['median_time']:.1f} |")
    return summary


def _srbench_symbolic(row):
    from nsr.metrics import SRBENCH_DIGITS, symbolic_solution

    return bool(row["r2"] > 0.5 and symbolic_solution(row["expression"], row["target"], digits=SRBENCH_DIGITS))


def rescore(a):
    """Add SRBench's symbolic check (3-decimal rounding) to solve runs' JSON files written without it, in place;
    print their summaries. In worker processes: sympy's time limit needs each one's main thread."""
    for path in a.inputs:
        with open(path) as f:
            run = json.load(f)
        todo = [r for r in run["rows"] if "symbolic_srbench" not in r]
        with ProcessPoolExecutor(a.workers) as pool:
            for r, v in zip(todo, pool.map(_srbench_symbolic, todo, chunksize=4)):
                r["symbolic_srbench"] = v
        for k, v in vars(a).items():  # the summary's grouping comes from the run's own arguments
            run["args"].setdefault(k, v)
        run["summary"] = summarize(run["rows"], argparse.Namespace(**run["args"]))
        with open(path, "w") as f:
            json.dump(run, f, indent=1, default=float)
    return {}


def throughput(a):
    """Individuals per second at the same LM iteration count, on the same data, one thread."""
    from bench.operon_runner import individuals_per_second
    from nsr.estimators import BasicSR

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(a.points, 3))
    cases = [("x0*x1 + x2", "arith", X[:, 0] * X[:, 1] + X[:, 2]),
             ("1.5*x0*x1 - 0.7*x2", "arith", 1.5 * X[:, 0] * X[:, 1] - 0.7 * X[:, 2]),
             ("2.3*sin(1.7*x0) + x1", "full", 2.3 * np.sin(1.7 * X[:, 0]) + X[:, 1])]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    BasicSR(population_size=10, num_generations=3, constant_fitting=a.lm_iterations, seed=0).fit(X, X[:, 0])  # warm
    rows = []
    for name, opset, y in cases:
        for rep in range(a.repeats):
            t0 = time.perf_counter()
            m = BasicSR(population_size=a.operon_population, num_generations=a.generations, operator_set=opset,
                        constant_fitting=a.lm_iterations, early_stop=False, seed=rep).fit(X, y)
            dt = time.perf_counter() - t0
            st = m.problem_.stats
            b = dict(individuals_per_s=a.operon_population * a.generations / dt,
                     distinct_per_s=st["evaluations"] / dt, model_evaluations_per_s=st["model_evaluations"] / dt)
            o = individuals_per_second(X, y, operators=opset, lm_iterations=a.lm_iterations,
                                       population_size=a.operon_population, generations=a.generations, seed=rep)
            rows.append(dict(case=name, rep=rep, basicsr=b, operon=o))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| target | BasicSR individuals/s | Operon individuals/s | ratio | BasicSR distinct/s | "
          f"BasicSR model evaluations/s | Operon evaluations/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in cases:
        rs = [r for r in rows if r["case"] == name]
        bi = statistics.median(r["basicsr"]["individuals_per_s"] for r in rs)
        oi = statistics.median(r["operon"]["individuals_per_second"] for r in rs)
        print(f"| `{name}` | {bi:,.0f} | {oi:,.0f} | **{bi / oi:.1f}x** | "
              f"{statistics.median(r['basicsr']['distinct_per_s'] for r in rs):,.0f} | "
              f"{statistics.median(r['basicsr']['model_evaluations_per_s'] for r in rs):,.0f} | "
              f"{statistics.median(r['operon']['evaluations_per_second'] for r in rs):,.0f} |")
    return dict(rows=rows)


def table(a):
    """Per-equation markdown table from solve runs' JSON files: one column per (method and its non-default
    settings, budget, seed)."""
    columns, names, targets = {}, [], {}
    for path in a.inputs:
        with open(path) as f:
            run = json.load(f)
        args = run["args"]
        tag = "".join(([f" parsimony {args['parsimony']:g}"] if args.get("parsimony", 1e-3) != 1e-3 else [])
                      + ([f" polish {args['polish']}"] if args.get("polish") else []))
        for r in run["rows"]:
            key = (r["method"] + (tag if r["method"] == "basicsr" else ""), args["budget"], r["seed"])
            columns.setdefault(key, {})[(r["set"], r["index"])] = r
            if (r["set"], r["index"]) not in targets:
                names.append((r["set"], r["index"]))
                targets[(r["set"], r["index"])] = (r["name"], r["target"])
    keys = sorted(columns)
    head = " | ".join(f"{m} {b // 1000}k s{s}" for m, b, s in keys)
    print(f"| set | equation | truth | {head} |")
    print("|---|---|---|" + "---|" * len(keys))
    mark = lambda r: "-" if r is None else ("**S**" if r["symbolic"] else "A" if r["accuracy"] else f"{r['r2']:.4f}")
    for k in names:
        name, target = targets[k]
        cells = " | ".join(mark(columns[c].get(k)) for c in keys)
        print(f"| {k[0]} | {name} | `{target}` | {cells} |")
    return {}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["solve", "throughput", "table", "rescore"])
    p.add_argument("--inputs", nargs="+", default=[], help="table, rescore: JSON files written by solve --json")
    p.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["feynman", "nguyen"])
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["basicsr", "operon"])
    p.add_argument("--limit", type=int, default=None, help="first N problems of each set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=int, default=100_000, help="model evaluations per run (fitting included)")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0],
                   help="target noise levels (SRBench: Gaussian, std = level x RMS of the target; test points clean)")
    p.add_argument("--r2_threshold", type=float, default=None,
                   help="fresh-point R^2 of an accuracy solution (default: 0.99999 without noise, 0.999 with)")
    p.add_argument("--check_front", action="store_true",
                   help="for each accuracy solution, check whether the truth is on BasicSR's front")
    p.add_argument("--points", type=int, default=500, help="training points (the first N of each record)")
    p.add_argument("--lm_iterations", type=int, default=DATA_PRESET["constant_fitting"])
    p.add_argument("--basicsr_population", type=int, default=DATA_PRESET["population_size"])
    p.add_argument("--operon_population", type=int, default=1000)
    p.add_argument("--operon_max_length", type=int, default=50)
    b = p.add_argument_group("BasicSR settings (defaults: tuned on every 5th Feynman equation, 100k evaluations)")
    b.add_argument("--basicsr_lm_iterations", type=int, default=None, help="default: --lm_iterations")
    b.add_argument("--max_size", type=int, default=DATA_PRESET["max_size"])
    b.add_argument("--max_depth", type=int, default=DATA_PRESET["max_depth"])
    b.add_argument("--tournament_size", type=int, default=DATA_PRESET["tournament_size"])
    b.add_argument("--crossover_prob", type=float, default=DATA_PRESET["crossover_prob"])
    b.add_argument("--point_mutation_prob", type=float, default=DATA_PRESET["point_mutation_prob"])
    b.add_argument("--no_linear_scaling", action="store_true", help="turn off BasicSR's linear scaling")
    b.add_argument("--parsimony", type=float, default=1e-3, help="fitness penalty per node (BasicSR's default)")
    b.add_argument("--polish", type=int, default=0, help="BasicSR's polish: LM iterations of the final "
                                                         "simplification (0: off, BasicSR's default)")
    b.add_argument("--model_selection", choices=SELECTIONS, default="accuracy",
                   help="the reported model: lowest error (BasicSR's default) or PySR's rule on the front ('best', "
                        "the data preset's)")
    p.add_argument("--generations", type=int, default=10, help="throughput: generations per run")
    p.add_argument("--repeats", type=int, default=3, help="throughput: runs per target")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    t0 = time.time()
    if a.what == "table":
        return table(a)
    if a.what == "rescore":
        return rescore(a)
    out = solve(a) if a.what == "solve" else throughput(a)
    out.update(args=vars(a), code=code_state(), machine=machine(), wall=time.time() - t0,
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
        if a.what == "solve":
            os.remove(a.json + ".rows.jsonl")


if __name__ == "__main__":
    main()
