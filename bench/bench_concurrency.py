#!/usr/bin/env python
"""Shared cores (issue 13): one neural run alone vs two side by side, each timed.

Runs ``test_batched_sr.py`` (the shipped checkpoint, 3 problems, population 20, 50 generations) once alone and
twice concurrently, ``--repeats`` times, alternating, and reports each run's wall time and the ratio of the
concurrent runs' median to the lone runs' median (fair sharing of the cores gives about 2x; OpenMP threads that
spin while they wait gave 6x). ``--env KEY=VALUE`` sets variables for the runs (e.g. OMP_WAIT_POLICY=ACTIVE, to
see spinning threads again); ``--root`` runs another checkout's script (an earlier release, for before/after).

    python bench/bench_concurrency.py --repeats 3 --json bench/results/scale/concurrency.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import CpuMonitor, code_state, machine  # noqa: E402


def start(root, env, seed):
    cmd = [sys.executable, os.path.join(root, "test_batched_sr.py"), "--seed", str(seed)]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), \
        time.perf_counter()


def wait(proc_t0):
    proc, t0 = proc_t0
    _, err = proc.communicate()
    if proc.returncode not in (0, 1):  # 1: some proposal not well-formed (not expected, but not a crash)
        raise SystemExit(f"test_batched_sr.py failed ({proc.returncode}): {err[-300:]}")
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--root", default=ROOT, help="the checkout whose test_batched_sr.py runs")
    p.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # what the scripts choose themselves is what is measured
    env.pop("OMP_WAIT_POLICY", None)
    env.update(kv.split("=", 1) for kv in a.env)
    wait(start(a.root, env, 0))  # warm: numba cache, file cache
    alone, together = [], []
    mon = CpuMonitor()
    for rep in range(a.repeats):
        alone.append(wait(start(a.root, env, rep)))
        pair = [start(a.root, env, rep), start(a.root, env, rep + 100)]
        together += [wait(x) for x in pair]
        print(json.dumps(dict(rep=rep, alone=alone[-1], together=together[-2:])), flush=True)
    load = mon.stop()
    ratio = statistics.median(together) / statistics.median(alone)
    print(f"\nalone: median {statistics.median(alone):.2f} s ({', '.join(f'{t:.2f}' for t in alone)}); two at once: "
          f"median {statistics.median(together):.2f} s each ({', '.join(f'{t:.2f}' for t in together)}); "
          f"ratio {ratio:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(alone=alone, together=together, ratio=ratio, env=a.env, root=a.root, load=load,
                           code=code_state(), machine=machine()), f, indent=1)


if __name__ == "__main__":
    main()
