#!/usr/bin/env python
"""BasicSR against gplearn's SymbolicRegressor at equal population and generations (issue 2, item 7).

Two parts, both on Nguyen-1..12 (operator set 'full') and on arith problems
(the first 20 of the held-out arith file, operator set 'arith'):

* throughput: individuals evaluated per second = population_size x generations
  run / wall time of ``fit``, early stop off, single process, 100 data points.
  For each (problem, seed) the runs are interleaved: BasicSR, BasicSR with
  ``collect_trajectory=True``, then gplearn, so both see the same machine state.
  BasicSR caches identical expressions within a run; its distinct evaluations
  (``problem_.stats['evaluations']``) are reported beside the nominal count.
* solve rate: solved = R^2 >= 0.99999 on 1000 fresh test points drawn from the
  record's input range; both methods early-stop (BasicSR at MSE <= 1e-10,
  gplearn at raw MSE <= 1e-10, since gplearn has no elitism and could otherwise
  lose a found solution). Runs are spread over ``--workers`` processes.

    python bench/bench_basicsr.py                       # the BENCHMARKS.md table
    python bench/bench_basicsr.py --seeds 2 --problems N1-4,A0-4 --throughput_problems N1,A0 --json
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import shlex
import statistics
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import CpuMonitor, code_state, machine  # noqa: E402
from nsr.datasets import HELDOUT_EXPRESSIONS, NGUYEN_EXPRESSIONS, load_expressions  # noqa: E402
from nsr.metrics import fresh_points  # noqa: E402
from nsr.expressions import evaluate, parse  # noqa: E402
from nsr.estimators import BasicSR  # noqa: E402

R2_SOLVED = 0.99999
N_ARITH_DEFAULT = 20


# ----------------------------------------------------------------------------
# gplearn configuration


def _gp_pow(x1, x2):
    """Protected power with BasicSR's semantics: real power for integer exponents, |a|^b otherwise;
    non-finite results become 1.0 (gplearn needs closure)."""
    with np.errstate(all="ignore"):
        r = np.where(x2 == np.round(x2), np.power(x1, x2), np.power(np.abs(x1), x2))
    return np.where(np.isfinite(r), r, 1.0)


def _gp_exp(x1):
    """exp with BasicSR's clip of the argument at 100."""
    with np.errstate(all="ignore"):
        return np.exp(np.minimum(x1, 100.0))


def gplearn_function_set(opset: str, full_set: str):
    if opset == "arith":
        return ("add", "sub", "mul")
    fs = ["add", "sub", "mul", "div", "sin", "cos", "log", "sqrt"]
    if full_set == "extended":
        from gplearn.functions import make_function

        fs += [make_function(function=_gp_pow, name="pow", arity=2, wrap=False),
               make_function(function=_gp_exp, name="exp", arity=1, wrap=False)]
    return tuple(fs)


def make_gplearn(opset, seed, args, stopping_criteria):
    from gplearn.genetic import SymbolicRegressor

    return SymbolicRegressor(
        population_size=args.population_size, generations=args.num_generations,
        function_set=gplearn_function_set(opset, args.gp_full_set), const_range=tuple(args.gp_const_range),
        metric="mse", stopping_criteria=stopping_criteria, random_state=seed, n_jobs=1)


# ----------------------------------------------------------------------------
# problems


def load_problems():
    """{key: problem}; keys N1..N12 (Nguyen, 'full') and A0..A99 (held-out arith, 'arith')."""
    out = {}
    for r in load_expressions(NGUYEN_EXPRESSIONS)["records"]:
        out[f"N{r['id']}"] = dict(key=f"N{r['id']}", name=r["name"], set="nguyen", opset="full", record=r)
    for i, r in enumerate(load_expressions(HELDOUT_EXPRESSIONS)["records"]):
        out[f"A{i}"] = dict(key=f"A{i}", name=f"arith-{r['id']}", set="arith", opset="arith", record=r)
    return out


def select(spec: str, problems: dict) -> list:
    """'nguyen,arith' or 'N1-4,A0-9,N11' -> problem keys (in order, no repeats)."""
    keys = []
    for item in spec.replace(" ", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower() == "nguyen":
            keys += [f"N{i}" for i in range(1, 13)]
        elif item.lower() == "arith":
            keys += [f"A{i}" for i in range(N_ARITH_DEFAULT)]
        elif item[0] in "NA" and "-" in item:
            lo, hi = item[1:].split("-")
            keys += [f"{item[0]}{i}" for i in range(int(lo), int(hi) + 1)]
        else:
            keys.append(item)
    bad = [k for k in keys if k not in problems]
    if bad:
        raise SystemExit(f"bench_basicsr.py: error: unknown problem(s) {', '.join(bad)} "
                         f"(use N1..N12, A0..A99, ranges like N1-4, or 'nguyen'/'arith')")
    return list(dict.fromkeys(keys))


def target_of(problem):
    return parse(problem["record"]["expression"])


def throughput_data(problem, n_points):
    """n_points training points: the record's own if it has enough, else fresh ones from its input range."""
    r = problem["record"]
    if r["X"].shape[0] >= n_points:
        return r["X"][:n_points], r["y"][:n_points]
    X = fresh_points(r, n_points, seed=0)
    return X, evaluate(target_of(problem), X)


def r2_score(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_pred.shape != y_true.shape or not np.all(np.isfinite(y_pred)):
        return -np.inf
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    sse = float(np.sum((y_true - y_pred) ** 2))
    return 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else -np.inf)


# ----------------------------------------------------------------------------
# throughput


def warm_up():
    """Compile (or load) the numba kernels and import gplearn before anything is timed."""
    from gplearn.genetic import SymbolicRegressor

    X = np.linspace(-1, 1, 16)[:, None]
    for opset in ("arith", "full"):
        BasicSR(population_size=10, num_generations=3, operator_set=opset, seed=0).fit(X, X[:, 0] + 1)
        BasicSR(population_size=10, num_generations=3, operator_set=opset, seed=0,
                collect_trajectory=True).fit(X, X[:, 0] + 1)
    SymbolicRegressor(population_size=10, generations=2, random_state=0).fit(X, X[:, 0] + 1)


def run_throughput(args, problems, keys, seeds, log):
    rows = []
    for key in keys:
        p = problems[key]
        X, y = throughput_data(p, args.num_points)
        for seed in seeds:
            row = dict(problem=key, name=p["name"], set=p["set"], seed=seed)
            mon = CpuMonitor()
            for label, traj in (("basicsr", False), ("basicsr_traj", True)):
                m = BasicSR(population_size=args.population_size, num_generations=args.num_generations,
                            operator_set=p["opset"], early_stop=False, collect_trajectory=traj, seed=seed)
                t0 = time.perf_counter()
                m.fit(X, y)
                dt = time.perf_counter() - t0
                gens = len(m.best_progression)
                row[label] = dict(time=dt, generations=gens, individuals=args.population_size * gens,
                                  evaluations=int(m.problem_.stats["evaluations"]),
                                  mean_size_final=float(np.mean(m.problem_.lengths)))
            g = make_gplearn(p["opset"], seed, args, stopping_criteria=-1.0)  # raw MSE >= 0 > -1: never stops
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                g.fit(X, y)
                dt = time.perf_counter() - t0
            gens = len(g.run_details_["generation"])
            row["gplearn"] = dict(time=dt, generations=gens, individuals=args.population_size * gens,
                                  evaluations=args.population_size * gens,
                                  mean_size=float(np.mean(g.run_details_["average_length"])))
            for label in ("basicsr", "basicsr_traj", "gplearn"):
                d = row[label]
                d["ind_per_s"] = d["individuals"] / d["time"]
                d["eval_per_s"] = d["evaluations"] / d["time"]
            row["cpu"] = mon.stop()
            log(f"  throughput {key:<4} seed {seed}: BasicSR {row['basicsr']['ind_per_s']:>10,.0f}/s  "
                f"(+traj {row['basicsr_traj']['ind_per_s']:>9,.0f}/s)  gplearn {row['gplearn']['ind_per_s']:>7,.0f}/s  "
                f"[other processes {row['cpu']['other_cpu']:.1f} CPU-s]")
            rows.append(row)
    return rows


def summarize_throughput(rows):
    def med(label, field, subset=None):
        vals = [r[label][field] for r in rows if subset is None or r["set"] == subset]
        return statistics.median(vals) if vals else float("nan")

    out = {}
    for subset in (None, "nguyen", "arith"):
        if subset is not None and not any(r["set"] == subset for r in rows):
            continue
        s = {}
        for label in ("basicsr", "basicsr_traj", "gplearn"):
            s[label] = {f: med(label, f, subset) for f in ("ind_per_s", "eval_per_s", "time", "evaluations",
                                                           "individuals", "generations")}
        s["gplearn"]["mean_size"] = med("gplearn", "mean_size", subset)
        s["basicsr"]["mean_size_final"] = med("basicsr", "mean_size_final", subset)
        s["ratio"] = s["basicsr"]["ind_per_s"] / s["gplearn"]["ind_per_s"]
        s["ratio_traj"] = s["basicsr_traj"]["ind_per_s"] / s["gplearn"]["ind_per_s"]
        s["ratio_distinct"] = s["basicsr"]["eval_per_s"] / s["gplearn"]["ind_per_s"]
        s["runs"] = sum(1 for r in rows if subset is None or r["set"] == subset)
        out[subset or "all"] = s
    return out


def throughput_table(summary, args):
    lines = [
        f"Throughput: population {args.population_size} x {args.num_generations} generations, "
        f"{args.num_points} points, early stop off, single process; medians over (problem, seed) runs.",
        "",
        "| problems | runs | BasicSR ind/s | BasicSR+trajectory ind/s | gplearn ind/s | ratio (BasicSR/gplearn) "
        "| ratio with trajectory | BasicSR distinct evals per fit | BasicSR distinct evals/s | ratio on distinct evals "
        "| BasicSR fit time | gplearn fit time | gplearn mean program size | BasicSR final mean size |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        b, bt, g = s["basicsr"], s["basicsr_traj"], s["gplearn"]
        lines.append(
            f"| {name} | {s['runs']} | {b['ind_per_s']:,.0f} | {bt['ind_per_s']:,.0f} | {g['ind_per_s']:,.0f} "
            f"| **{s['ratio']:.0f}x** | {s['ratio_traj']:.0f}x | {b['evaluations']:,.0f} of {b['individuals']:,.0f} "
            f"| {b['eval_per_s']:,.0f} | {s['ratio_distinct']:.0f}x | {b['time'] * 1000:.1f} ms "
            f"| {g['time']:.2f} s | {g['mean_size']:.1f} | {b['mean_size_final']:.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# solve rate


_PROBLEMS = None
_ARGS = None


def _init_worker(problems, args):
    global _PROBLEMS, _ARGS
    _PROBLEMS, _ARGS = problems, args


def solve_task(task):
    method, key, seed = task
    p, args = _PROBLEMS[key], _ARGS
    r = p["record"]
    X, y = r["X"], r["y"]
    X_test = fresh_points(r, args.test_points, seed)
    with np.errstate(all="ignore"):
        y_test = evaluate(target_of(p), X_test)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if method == "basicsr":
            m = BasicSR(operator_set=p["opset"], population_size=args.population_size,
                        num_generations=args.num_generations, seed=seed).fit(X, y)
            found, gens = str(m.best_model_), len(m.best_progression)
            train_mse = m.get_final_mse()
        else:
            m = make_gplearn(p["opset"], seed, args, stopping_criteria=args.gp_stop)
            m.fit(X, y)
            found, gens = str(m._program), len(m.run_details_["generation"])
            train_mse = float(m.run_details_["best_fitness"][-1])
        dt = time.perf_counter() - t0
        y_pred = m.predict(X_test)
    r2 = r2_score(y_test, y_pred)
    return dict(method=method, problem=key, name=p["name"], set=p["set"], seed=seed, r2=r2,
                solved=bool(r2 >= R2_SOLVED), train_mse=train_mse, time=dt, generations=gens,
                found=found, target=r["expression"])


def run_solve(args, problems, keys, seeds, log):
    tasks = []
    for key in keys:
        for seed in seeds:
            tasks += [("gplearn", key, seed), ("basicsr", key, seed)]
    results = []
    if args.workers <= 1:
        _init_worker(problems, args)
        it = map(solve_task, tasks)
        pool = None
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        pool = ctx.Pool(args.workers, initializer=_init_worker, initargs=(problems, args))
        it = pool.imap_unordered(solve_task, tasks, chunksize=1)
    try:
        for i, res in enumerate(it, 1):
            results.append(res)
            if i % 20 == 0 or i == len(tasks):
                log(f"  solve rate: {i}/{len(tasks)} runs done")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    order = {k: i for i, k in enumerate(keys)}
    results.sort(key=lambda d: (order[d["problem"]], d["seed"], d["method"]))
    return results


def summarize_solve(results):
    out = {}
    for subset in ("nguyen", "arith", "all"):
        rs = [r for r in results if subset == "all" or r["set"] == subset]
        if not rs:
            continue
        b = sum(r["solved"] for r in rs if r["method"] == "basicsr")
        g = sum(r["solved"] for r in rs if r["method"] == "gplearn")
        n = sum(1 for r in rs if r["method"] == "basicsr")
        tb = statistics.median(r["time"] for r in rs if r["method"] == "basicsr")
        tg = statistics.median(r["time"] for r in rs if r["method"] == "gplearn")
        out[subset] = dict(runs=n, basicsr=b, gplearn=g, ratio=(b / g if g else float("inf")),
                           basicsr_median_time=tb, gplearn_median_time=tg)
    return out


def solve_tables(summary, results, keys, problems, seeds, args):
    lines = [
        f"Solve rate: population {args.population_size} x {args.num_generations} generations, "
        f"{len(seeds)} seeds; solved = R^2 >= {R2_SOLVED} on {args.test_points} fresh test points.",
        "",
        "| problem set | runs per method | BasicSR solved | gplearn solved | ratio (BasicSR/gplearn) "
        "| BasicSR median fit time | gplearn median fit time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        ratio = f"{s['ratio']:.2f}x" if np.isfinite(s["ratio"]) else "inf (gplearn 0)"
        lines.append(f"| {name} | {s['runs']} | {s['basicsr']} ({100 * s['basicsr'] / s['runs']:.0f}%) "
                     f"| {s['gplearn']} ({100 * s['gplearn'] / s['runs']:.0f}%) | **{ratio}** "
                     f"| {s['basicsr_median_time']:.3f} s | {s['gplearn_median_time']:.2f} s |")
    lines += ["", f"Per problem (solved out of {len(seeds)} seeds):", "",
              "| problem | target | BasicSR | gplearn |", "|---|---|---:|---:|"]
    for key in keys:
        rs = [r for r in results if r["problem"] == key]
        b = sum(r["solved"] for r in rs if r["method"] == "basicsr")
        g = sum(r["solved"] for r in rs if r["method"] == "gplearn")
        lines.append(f"| {problems[key]['name']} | `{problems[key]['record']['expression']}` | {b} | {g} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------


def versions():
    import numba
    import sklearn

    import gplearn

    return dict(numpy=np.__version__, numba=numba.__version__, gplearn=gplearn.__version__,
                scikit_learn=sklearn.__version__)


def code_line(start, end):
    line = f"Code: commit {start['commit']}"
    line += f" with uncommitted changes to {', '.join(start['modified'])}." if start["modified"] else ", clean."
    if end != start:
        line += f" WARNING: the library changed during the run (now {end['commit']}, modified {end['modified']})."
    return line


def cpu_line(cpu, what):
    return (f"Machine check ({what}): {cpu['wall']:.0f} s wall, this benchmark used {cpu['own_cpu']:.0f} CPU-s, "
            f"other processes {cpu['other_cpu']:.1f} CPU-s, hypervisor steal {cpu['steal']:.1f} s.")


def parse_args(argv):
    p = argparse.ArgumentParser(description="BasicSR vs gplearn: throughput and solve rate (issue 2).")
    p.add_argument("--seeds", type=int, default=5, help="solve-rate seeds 0..N-1 (default 5)")
    p.add_argument("--problems", default="nguyen,arith",
                   help="solve-rate problems: 'nguyen' (N1..N12), 'arith' (A0..A19), keys or ranges like N1-4,A0-9")
    p.add_argument("--throughput_seeds", type=int, default=3, help="throughput seeds 0..N-1 (default 3)")
    p.add_argument("--throughput_problems", default="nguyen,A0-7",
                   help="throughput problems, same syntax (default: Nguyen-1..12 and the first 8 arith)")
    p.add_argument("--population_size", type=int, default=100)
    p.add_argument("--num_generations", type=int, default=100)
    p.add_argument("--num_points", type=int, default=100, help="training points for the throughput part")
    p.add_argument("--test_points", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="processes for the solve-rate part only")
    p.add_argument("--gp_const_range", type=float, nargs=2, default=[-1.0, 1.0],
                   help="gplearn const_range (default -1 1, gplearn's own, which contains 1.0)")
    p.add_argument("--gp_full_set", choices=["extended", "builtin"], default="extended",
                   help="'full' set for gplearn: builtin = add sub mul div sin cos log sqrt; extended adds "
                        "protected pow and exp made with gplearn.functions.make_function (gplearn has neither)")
    p.add_argument("--gp_stop", type=float, default=1e-10,
                   help="gplearn stopping_criteria (raw MSE) in the solve-rate part (BasicSR stops at 1e-10)")
    p.add_argument("--skip_throughput", action="store_true")
    p.add_argument("--skip_solve", action="store_true")
    p.add_argument("--json", nargs="?", const="", default=None,
                   help="write results as JSON (default path bench/results/basicsr_<time>.json)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    problems = load_problems()
    tp_keys = select(args.throughput_problems, problems)  # bad names fail before any work
    solve_keys = select(args.problems, problems)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    load1 = os.getloadavg()[0]
    if load1 > 1.5:
        log(f"WARNING: load average {load1:.2f} > 1.5: other work is running; timings will be off")
    log("warming up (numba compile / cache load, gplearn import)")
    warm_up()
    out = dict(command="python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + list(
        sys.argv[1:] if argv is None else argv)), date=started.isoformat(timespec="seconds"),
        machine=machine(), versions=versions(), params=vars(args), code_at_start=code_state())
    md = []
    if not args.skip_throughput:
        t0 = time.perf_counter()
        mon = CpuMonitor()
        rows = run_throughput(args, problems, tp_keys, list(range(args.throughput_seeds)), log)
        cpu = mon.stop()
        summ = summarize_throughput(rows)
        out["throughput"] = dict(summary=summ, runs=rows, wall_time=time.perf_counter() - t0, cpu=cpu)
        md.append(throughput_table(summ, args) + "\n\n" + cpu_line(cpu, "throughput part"))
    if not args.skip_solve:
        keys = solve_keys
        seeds = list(range(args.seeds))
        t0 = time.perf_counter()
        mon = CpuMonitor()
        results = run_solve(args, problems, keys, seeds, log)
        cpu = mon.stop()
        summ = summarize_solve(results)
        out["solve_rate"] = dict(summary=summ, runs=results, wall_time=time.perf_counter() - t0, cpu=cpu)
        md.append(solve_tables(summ, results, keys, problems, seeds, args) + "\n\n" + cpu_line(cpu, "solve-rate part"))
    out["wall_time"] = time.perf_counter() - t_start
    out["code_at_end"] = code_state()
    md.append(f"Total wall time {out['wall_time']:.0f} s. {code_line(out['code_at_start'], out['code_at_end'])}")
    print("\n\n".join(md))
    if args.json is not None:
        path = args.json or os.path.join(ROOT, "bench", "results",
                                         f"basicsr_{started.strftime('%Y%m%dT%H%M%S')}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1, default=float)
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
