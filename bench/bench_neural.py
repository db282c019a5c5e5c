#!/usr/bin/env python
"""Neural SR benchmarks (issues 3 and 4).

quality: NeuralSR (a checkpoint) vs BasicSR on held-out arith problems and Nguyen-1..12 at equal
         population and generations: solve rate (R^2 >= 0.99999 on 1000 fresh points), median final
         training MSE, well-formed %, time per expression.
speed:   time per expression (population 20, 10 generations, early stop off) at several batch sizes,
         split into model time and CPU-side time (fitness, bookkeeping), and peak memory.

    python bench/bench_neural.py quality --checkpoint training/checkpoints/default --seeds 0 1 2
    python bench/bench_neural.py speed --checkpoint training/checkpoints/default --batch_sizes 1 8 32
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

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
                                        early_stop=False), SamplingConfig(checkpoint=args.checkpoint, device=args.device))
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["quality", "speed"])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--device", default=None)
    p.add_argument("--population_size", type=int, default=20)
    p.add_argument("--generations", type=int, nargs="+", default=[20, 50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--heldout_problems", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--speed_generations", type=int, default=10)
    p.add_argument("--min_problems", type=int, default=32, help="problems per speed measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    rows = quality(args) if args.what == "quality" else speed(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
