#!/usr/bin/env python
"""Neural SR benchmarks (issues 3, 4 and 12).

quality: NeuralSR (a checkpoint) vs BasicSR on held-out arith problems and Nguyen-1..12 at equal
         population and generations: solve rate (R^2 >= 0.99999 on 1000 fresh points), median final
         training MSE, well-formed %, time per expression.
speed:   time per expression (population 20, 10 generations, early stop off) at several batch sizes,
         split into model time and CPU-side time (fitness, bookkeeping), and peak memory.
compare: the expert and any number of checkpoints on the held-out sets of every family, Nguyen-1..12 and
         Feynman-100 (issue 12): solves per method, the ratio to the expert, paired counts (solved by one
         and not the other), the median generations to solve on runs both solve, time per expression; a plot.

    python bench/bench_neural.py quality --checkpoint training/checkpoints/default --seeds 0 1 2
    python bench/bench_neural.py speed --checkpoint training/checkpoints/default --batch_sizes 1 8 32
    python bench/bench_neural.py compare --checkpoints default=training/checkpoints/default \
        dagger=training/checkpoints/dagger --constant_fitting 10 --seeds 0 1 2 3 4 --json out.json --plot out.png
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from nsr.config import EvolutionConfig, SamplingConfig  # noqa: E402
from nsr.datasets import HELDOUT_EXPRESSIONS, NGUYEN_EXPRESSIONS, file_constants, file_operator_set, load_expressions  # noqa: E402
from nsr.drivers import file_jobs, run_batch  # noqa: E402
from nsr.estimators import DEFAULT_CHECKPOINT  # noqa: E402
from nsr.evaluation import evaluate, summarize  # noqa: E402
from nsr.search import Searcher  # noqa: E402


def load_set(path, n=None):
    d = load_expressions(path)
    recs = d["records"][:n] if n else d["records"]
    return (os.path.basename(path).replace(".pkl.gz", ""), file_operator_set(d["metadata"], None, path),
            file_constants(d["metadata"], None, path), recs)


def quality(args):
    sets = [load_set(HELDOUT_EXPRESSIONS, args.heldout_problems), load_set(NGUYEN_EXPRESSIONS)]
    rows = []
    for gens in args.generations:
        for name, opset, consts, recs in sets:
            evo = EvolutionConfig(population_size=args.population_size, num_generations=gens, operator_set=opset,
                                  constants=consts)
            sampling = SamplingConfig(checkpoint=args.checkpoint, device=args.device, temperature=args.temperature)
            b = summarize(evaluate(Searcher(evo), recs, args.seeds))
            n = summarize(evaluate(Searcher(evo, sampling), recs, args.seeds, args.batch_size))
            for method, s in (("BasicSR", b), ("NeuralSR", n)):
                rows.append({"set": name, "generations": gens, "method": method, **s})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| set | generations | method | solved / runs | solve rate | median final MSE | well-formed % | s / expression |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        wf = f"{r['well_formed_pct']:.1f}" if r["well_formed_pct"] is not None else "-"
        print(f"| {r['set']} | {r['generations']} | {r['method']} | {r['solved']}/{r['runs']} | {r['solve_rate']:.3f} | "
              f"{r['median_train_mse']:.3g} | {wf} | {r['time_per_expression']:.3f} |")
    for gens in args.generations:
        for name, *_ in sets:
            b = next(r for r in rows if r["set"] == name and r["generations"] == gens and r["method"] == "BasicSR")
            n = next(r for r in rows if r["set"] == name and r["generations"] == gens and r["method"] == "NeuralSR")
            ratio = n["solved"] / b["solved"] if b["solved"] else float("nan")
            print(f"{name}, {gens} generations: NeuralSR solves {ratio:.2f}x as many as BasicSR")
    return rows


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(args):
    import torch

    recs = load_expressions(HELDOUT_EXPRESSIONS)["records"]
    searcher = Searcher(EvolutionConfig(population_size=args.population_size, num_generations=args.speed_generations,
                                        early_stop=False, constant_fitting=args.constant_fitting),
                        SamplingConfig(checkpoint=args.checkpoint, device=args.device, forward=args.forward,
                                       dtype=args.dtype))
    ck = searcher.load()
    cuda = ck.device.type == "cuda"
    # warm up (allocator, kernels) outside the timings
    run_batch(searcher, file_jobs(recs[:2], 0), lambda *a: None)
    results = []
    for bs in args.batch_sizes:
        n_problems = max(bs, args.min_problems)
        if n_problems > len(recs):
            reps = -(-n_problems // len(recs))
            pool = (recs * reps)[:n_problems]
        else:
            pool = recs[:n_problems]
        per_expr, model_share, peak = [], [], 0.0
        for rep in range(args.repeats):
            if cuda:
                torch.cuda.reset_peak_memory_stats(ck.device)
            jobs = file_jobs(pool, rep)
            searcher.neural.reset_stats()
            t0 = time.perf_counter()
            for s in range(0, len(jobs), bs):
                run_batch(searcher, jobs[s:s + bs], lambda *a: None)
            wall = time.perf_counter() - t0
            per_expr.append(wall / len(pool))
            model_share.append(searcher.neural.stats["model_time"] / wall)
            peak = torch.cuda.max_memory_allocated(ck.device) / 2**20 if cuda else peak_rss_mb()
        row = {"batch_size": bs, "problems": len(pool), "device": str(ck.device),
               "median_s_per_expression": statistics.median(per_expr), "runs": per_expr,
               "model_share": statistics.median(model_share), "peak_memory_mb": peak,
               "memory_kind": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS (cumulative)"}
        results.append(row)
        print(json.dumps(row), flush=True)
    base = results[0]["median_s_per_expression"]
    print(f"\n| batch size | problems | s / expression (median of {args.repeats}) | vs batch {results[0]['batch_size']} | "
          f"model share of wall time | peak memory MB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch_size']} | {r['problems']} | {r['median_s_per_expression']:.4f} | "
              f"{r['median_s_per_expression'] / base:.2f} | {100 * r['model_share']:.0f}% | {r['peak_memory_mb']:.0f} |")
    return results


COMPARE_SETS = {"arith": "heldout_arith_100_c05", "full": "heldout_full_100_c05", "physics": "heldout_physics_100_c05",
                "nguyen": "nguyen_12", "feynman": "feynman_100"}


def fail(message):
    """Bad input: one line on stderr, exit status 2 (as the toolkit's scripts)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def recorded_expert_runs(paths, set_name, seeds, n) -> list:
    """The expert's runs of ``set_name`` (problems 0..n-1, ``seeds``) from earlier ``compare --json`` files; the
    caller vouches that they ran with the same settings (population, generations, fitting, points)."""
    found = {}
    for path in paths:
        try:
            with open(path) as f:
                for r in json.load(f)["runs"].get(f"{set_name}/expert", []):
                    found[(r["seed"], r["index"])] = r
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            fail(f"--expert_runs {path}: not a compare --json file ({type(e).__name__}: {str(e)[:100]})")
    missing = [(s, i) for s in seeds for i in range(n) if (s, i) not in found]
    if missing:
        fail(f"--expert_runs lack {len(missing)} expert runs of {set_name} (first: seed {missing[0][0]}, "
             f"problem {missing[0][1]})")
    return [found[(s, i)] for s in seeds for i in range(n)]


def compare(args):
    """Every method on every set, the same seeds; paired statistics against the expert."""
    from nsr.datasets import EXPRESSIONS_DIR

    methods = [("expert", None)]
    for c in args.checkpoints:
        name, _, folder = c.partition("=")
        if not name or not folder or not os.path.exists(folder) or name in dict(methods):
            # an empty folder would silently make this "method" the expert
            fail(f"--checkpoints wants distinct NAME=FOLDER pairs with existing folders, got {c!r}")
        methods.append((name, folder))
    rows, results = [], {}
    for set_name in args.sets:
        path = os.path.join(EXPRESSIONS_DIR, COMPARE_SETS[set_name] + ".pkl.gz")
        name, opset, consts, recs = load_set(path, args.heldout_problems if set_name != "feynman" else None)
        recs = [dict(r, X=r["X"][: args.points], y=r["y"][: args.points]) for r in recs]
        evo = EvolutionConfig(population_size=args.population_size, num_generations=args.generations[-1],
                              operator_set=opset, constants=consts, constant_fitting=args.constant_fitting)
        for method, ck in methods:
            if ck is None and args.expert_runs:  # the expert's runs do not depend on the machine: reuse them
                res = recorded_expert_runs(args.expert_runs, set_name, args.seeds, len(recs))
                results[(set_name, method)] = res
                rows.append({"set": set_name, "method": method, **summarize(res), "wall": 0.0,
                             "from": list(args.expert_runs)})
                continue
            sampling = (SamplingConfig(checkpoint=ck, device=args.device, temperature=args.temperature, beta=args.beta)
                        if ck else None)
            t0 = time.perf_counter()
            res = evaluate(Searcher(evo, sampling), recs, args.seeds, args.batch_size,
                           num_workers=1 if ck else args.expert_workers)
            results[(set_name, method)] = res
            s = summarize(res)
            rows.append({"set": set_name, "method": method, **s, "wall": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    table = []
    for set_name in args.sets:
        base = results[(set_name, "expert")]
        for method, _ in methods:
            res = results[(set_name, method)]
            a = {(r["index"], r["seed"]): r for r in res}
            b = {(r["index"], r["seed"]): r for r in base}
            both = [k for k in a if a[k]["solved"] and b[k]["solved"]]
            only_m = sum(a[k]["solved"] and not b[k]["solved"] for k in a)
            only_e = sum(b[k]["solved"] and not a[k]["solved"] for k in a)
            gm = statistics.median(a[k]["generations"] for k in both) if both else float("nan")
            ge = statistics.median(b[k]["generations"] for k in both) if both else float("nan")
            n_sol, n_base = sum(r["solved"] for r in res), sum(r["solved"] for r in base)
            table.append(dict(set=set_name, method=method, solved=n_sol, runs=len(res),
                              ratio=n_sol / n_base if n_base else float("nan"), only_method=only_m, only_expert=only_e,
                              both=len(both), median_generations=gm, expert_median_generations=ge,
                              fewer_generations=1 - gm / ge if both and ge else float("nan"),
                              well_formed=summarize(res)["well_formed_pct"],
                              s_per_expr=summarize(res)["time_per_expression"]))
    print("\n| set | method | solved / runs | vs expert | solved only by it / only by the expert | "
          "median generations to solve (it / expert, runs both solve) | fewer generations | well-formed % | "
          "s / expression |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in table:
        wf = "-" if t["well_formed"] is None else f"{t['well_formed']:.1f}"
        print(f"| {t['set']} | {t['method']} | {t['solved']}/{t['runs']} | {t['ratio']:.2f}x | "
              f"{t['only_method']} / {t['only_expert']} | {t['median_generations']:g} / "
              f"{t['expert_median_generations']:g} ({t['both']} runs) | {100 * t['fewer_generations']:.0f}% | {wf} | "
              f"{t['s_per_expr']:.3f} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(methods)
        for k, (method, _) in enumerate(methods):
            vals = [next(t for t in table if t["set"] == s and t["method"] == method) for s in args.sets]
            ax.bar(np.arange(len(args.sets)) + k * width, [v["solved"] / v["runs"] for v in vals], width, label=method)
        ax.set_xticks(np.arange(len(args.sets)) + width * (len(methods) - 1) / 2, args.sets)
        ax.set_ylabel("solve rate (R² ≥ 0.99999 on fresh points)")
        ax.set_title(f"population {args.population_size}, {args.generations[-1]} generations, "
                     f"{len(args.seeds)} seeds")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return dict(rows=rows, table=table, runs={f"{s}/{m}": r for (s, m), r in results.items()})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["quality", "speed", "compare"])
    p.add_argument("--checkpoints", nargs="+", default=[f"default={DEFAULT_CHECKPOINT}"],
                   help="compare: NAME=FOLDER per neural method")
    p.add_argument("--sets", nargs="+", choices=list(COMPARE_SETS), default=list(COMPARE_SETS))
    p.add_argument("--constant_fitting", type=int, default=0, help="compare and speed: LM iterations (the expert's setting)")
    p.add_argument("--points", type=int, default=1000, help="compare: training points per problem (first N)")
    p.add_argument("--expert_workers", type=int, default=1)
    p.add_argument("--expert_runs", nargs="+", default=None,
                   help="compare: take the expert's runs from these earlier --json files (same settings) "
                        "instead of running it again")
    p.add_argument("--plot", default=None)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--device", default=None)
    p.add_argument("--forward", default="auto", choices=["auto", "tree", "transformers"],
                   help="speed: the model forward sampling runs (nsr/forward.py)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float64"],
                   help="speed: the model's dtype (default: the toolkit's, float32 on CPU)")
    p.add_argument("--population_size", type=int, default=20)
    p.add_argument("--generations", type=int, nargs="+", default=[20, 50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--heldout_problems", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.0,
                   help="compare: each child from the expert with probability beta, else the model (mixed search)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--speed_generations", type=int, default=10)
    p.add_argument("--min_problems", type=int, default=32, help="problems per speed measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    rows = {"quality": quality, "speed": speed, "compare": compare}[args.what](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
