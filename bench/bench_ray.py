#!/usr/bin/env python
"""Ray against local worker processes (issue 13): expert trace generation on 100 expressions (population 100 x 100
generations, no early stop) with ``--num_workers 2``, with ``--executor ray`` on a Ray instance the run starts
itself, and on a cluster already running (``ray start --head --num-cpus 2``, then ``--ray_address``); wall times
(medians of ``--repeats``, alternating) and whether the files' records are identical.

    python bench/bench_ray.py --repeats 3 --json bench/results/scale/ray.json
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
from bench.bench_signals import decoded  # noqa: E402

HELDOUT = os.path.join(ROOT, "datasets", "expressions", "heldout_arith_100_c05.pkl.gz")
PORT = "6391"


def run(out, extra):
    cmd = [sys.executable, os.path.join(ROOT, "generate_traces.py"), "--expressions_file", HELDOUT,
           "--population_size", "100", "--num_generations", "100", "--no_early_stop", "--output", out, "--overwrite",
           "--quiet"] + extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(extra)}: {proc.stderr[-400:]}")
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    configs = {"local, --num_workers 2": ["--num_workers", "2"],
               "ray, started by the run": ["--executor", "ray", "--num_workers", "2"],
               "ray, cluster already running": ["--executor", "ray", "--ray_address", f"127.0.0.1:{PORT}"]}
    times = {k: [] for k in configs}
    same = {}
    mon = CpuMonitor()
    subprocess.run(["ray", "start", "--head", "--port", PORT, "--num-cpus", "2", "--include-dashboard", "false"],
                   capture_output=True, check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ref = os.path.join(tmp, "ref.pkl.gz")
            run(ref, configs["local, --num_workers 2"])  # warm numba's cache; the reference records
            run(os.path.join(tmp, "warm.pkl.gz"), configs["ray, cluster already running"])  # warm the cluster's workers
            reference = decoded(ref)
            for rep in range(a.repeats):
                for name, extra in configs.items():
                    out = os.path.join(tmp, f"{rep}.pkl.gz")
                    times[name].append(run(out, extra))
                    same[name] = same.get(name, True) and decoded(out) == reference
                    print(json.dumps(dict(config=name, rep=rep, seconds=times[name][-1], identical=same[name])),
                          flush=True)
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
    load = mon.stop()
    base = statistics.median(times["local, --num_workers 2"])
    print("\n| configuration | wall time (median) | vs local | runs | records identical to local |")
    print("|---|---:|---:|---|---|")
    for name in configs:
        m = statistics.median(times[name])
        print(f"| {name} | {m:.2f} s | {m / base:.2f}x | {', '.join(f'{t:.2f}' for t in times[name])} | "
              f"{'yes' if same[name] else 'NO'} |")
    print(f"other processes used {load['other_cpu']:.1f} CPU-s over {load['wall']:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(times=times, identical=same, load=load, code=code_state(), machine=machine()), f, indent=1)


if __name__ == "__main__":
    main()
