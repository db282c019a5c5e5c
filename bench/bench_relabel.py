#!/usr/bin/env python
"""DAgger relabeling speed: states per second on one core (issue 5).

Relabels every state of a neural trace file with ``nsr.relabel.Relabeler`` (the
code behind ``dagger_relabel.py``), in this process pinned to one CPU, for
``--label expert`` and ``--label best_of_k --k K``; ``--repeats`` passes each,
alternating, medians reported. Loading and saving the file are not timed (the
script's closing summary reports the same relabel-only rate).

Without ``--input`` it first makes a neural trace with the shipped checkpoint:
``generate_traces.py --checkpoint training/checkpoints/default`` on the first
``--problems`` held-out arith problems, population 20, 50 generations.

    python bench/bench_relabel.py
    python bench/bench_relabel.py --input datasets/traces/gen50_x.pkl.gz --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import CpuMonitor, code_state, machine  # noqa: E402
from nsr.datasets import HELDOUT_EXPRESSIONS  # noqa: E402


def make_neural_trace(folder, problems, quiet):
    cmd = [sys.executable, os.path.join(ROOT, "generate_traces.py"), "--expressions_file", HELDOUT_EXPRESSIONS,
           "--max_expressions", str(problems), "--checkpoint", os.path.join(ROOT, "training/checkpoints/default"),
           "--batch_size", "32", "--population_size", "20", "--num_generations", "50", "--seed", "0",
           "--output_dir", folder, "--quiet"]
    if not quiet:
        print("making a neural trace:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    (name,) = [f for f in os.listdir(folder) if f.endswith(".pkl.gz")]
    return os.path.join(folder, name)


def time_pass(records, label, k):
    from nsr.relabel import Relabeler

    rl = Relabeler(label, k, seed=0)
    t0 = time.perf_counter()
    for i, r in enumerate(records):
        rl.relabel_record(r, i)
    return rl.states, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", help="a neural trace file (default: make one)")
    p.add_argument("--problems", type=int, default=50, help="problems in the trace made when --input is absent")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.input or make_neural_trace(tmp, args.problems, args.quiet)
        from nsr.traces import load_traces

        data = load_traces(path)
    records = data["records"]
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # "on one core"
    time_pass(records[:1], "best_of_k", args.k)  # compile / warm the numba kernels and the parse memo
    configs = [("expert", 1), ("best_of_k", args.k)]
    rates = {c: [] for c in configs}
    mon = CpuMonitor()
    states = 0
    for _ in range(args.repeats):
        for label, k in configs:
            # a fresh parse memo each pass, so later passes are not flattered by the earlier ones
            from nsr.expressions import parse_cached

            parse_cached.cache_clear()
            states, dt = time_pass(records, label, k)
            rates[(label, k)].append(states / dt)
    load = mon.stop()
    rows = [dict(label=label, k=k, states=states, states_per_s=statistics.median(r), all=r)
            for (label, k), r in rates.items()]
    pop = len(records[0]["trajectory"]["generations"][0]["expressions"])
    print(f"{len(records)} trajectories, {states} states, population {pop}, 1 core, {args.repeats} passes each")
    print("| label | states | states/s (median) | passes |")
    print("|---|---:|---:|---|")
    for r in rows:
        name = r["label"] + (f" (k={r['k']})" if r["k"] > 1 else "")
        print(f"| {name} | {r['states']} | {r['states_per_s']:,.0f} | "
              + ", ".join(f"{x:,.0f}" for x in r["all"]) + " |")
    print(f"other processes used {load['other_cpu']:.1f} CPU-s over {load['wall']:.1f} s; "
          f"code {code_state()}; {machine()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, load=load, code=code_state(), machine=machine(), input=path), f, indent=1)


if __name__ == "__main__":
    main()
