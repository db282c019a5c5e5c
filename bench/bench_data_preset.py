#!/usr/bin/env python
"""Time to a result with the data preset (issue 21): ``basic_sr.py --data`` on a 1,000-row, 5-column CSV, on one
core (``taskset -c 0``), the whole command (interpreter start, imports, compiled-kernel cache load, reading,
the fit at 100k evaluations, the front, printing) and the fit alone as the command reports it.

The CSV: four seeded inputs a..d in [1, 5], target ``y = a * b / c + sin(d) * a`` with 1% noise (a few models' worth of
search: it does not stop early).

    python bench/bench_data_preset.py --repeats 5 --json bench/results/data/preset_time.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench.common import CpuMonitor, code_state, machine  # noqa: E402


def write_csv(path, rows=1000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 5, (rows, 4))
    y = X[:, 0] * X[:, 1] / X[:, 2] + np.sin(X[:, 3]) * X[:, 0]
    y = y + rng.normal(0, 0.01 * np.sqrt(np.mean(y ** 2)), rows)
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,y", comments="", fmt="%.10g")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp()
    csv = os.path.join(tmp, "table.csv")
    write_csv(csv)
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    mon, rows = CpuMonitor(), []
    for rep in range(a.repeats + 1):  # the first run warms the compiled-kernel cache; not counted
        cmd = ["taskset", "-c", "0", sys.executable, os.path.join(ROOT, "basic_sr.py"), "--data", csv,
               "--seed", str(rep)]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if out.returncode:
            sys.exit(out.stderr)
        fit = float(re.search(r"evaluations, ([\d.]+) s", out.stdout).group(1))
        evals = int(re.search(r"([\d,]+) model evaluations", out.stdout).group(1).replace(",", ""))
        r2 = re.search(r"test R2 ([-\d.e+]+)", out.stdout).group(1)
        row = dict(seed=rep, wall=wall, fit=fit, evaluations=evals, test_r2=float(r2), warmup=rep == 0)
        print(json.dumps(row), flush=True)
        rows.append(row)
    timed = [r for r in rows if not r["warmup"]]
    summary = dict(median_wall=statistics.median(r["wall"] for r in timed),
                   median_fit=statistics.median(r["fit"] for r in timed),
                   median_evaluations=statistics.median(r["evaluations"] for r in timed))
    print(f"\nmedian of {len(timed)}: whole command {summary['median_wall']:.2f} s, fit {summary['median_fit']:.2f} s, "
          f"{summary['median_evaluations']:,.0f} evaluations")
    out = dict(rows=rows, summary=summary, args=vars(a), code=code_state(), machine=machine(), load=mon.stop(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"other processes used {out['load']['other_cpu']:.0f} CPU-s over {out['load']['wall']:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
