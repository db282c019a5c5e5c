#!/usr/bin/env python
"""Wall time of ``python generate_traces.py`` with 1 worker against 2 (issue 2, item 7).

Each configuration is run ``--repeats`` times, alternating (1, 2, 1, 2, ...), as
a fresh process writing into a temporary folder; the table gives medians and
the speedup (median time with 1 worker / median time with 2). Besides the
process wall time it reports the run's own ``wall_time`` from the output
metadata (expressions run and results collected, before the file is written),
so start-up and the final save can be told apart from the parallel part.

    python bench/bench_traces.py                 # the BENCHMARKS.md table
    python bench/bench_traces.py --max_expressions 20 --repeats 1 --json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import CpuMonitor, code_state, machine  # noqa: E402
from nsr.datasets import HELDOUT_EXPRESSIONS  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description="generate_traces.py wall time, 1 worker vs 2 (issue 2).")
    p.add_argument("--expressions_file", default=os.path.relpath(HELDOUT_EXPRESSIONS, ROOT))
    p.add_argument("--max_expressions", type=int, default=40)
    p.add_argument("--population_size", type=int, default=100)
    p.add_argument("--num_generations", type=int, default=100)
    p.add_argument("--early_stop", action="store_true", help="keep early stopping on (default: --no_early_stop)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--extra", default="", help="further generate_traces.py arguments, one string")
    p.add_argument("--json", nargs="?", const="", default=None,
                   help="write results as JSON (default path bench/results/traces_<time>.json)")
    return p.parse_args(argv)


def gen_command(args, workers, out_dir):
    cmd = [sys.executable, "generate_traces.py", "--expressions_file", args.expressions_file,
           "--max_expressions", str(args.max_expressions), "--population_size", str(args.population_size),
           "--num_generations", str(args.num_generations), "--num_workers", str(workers),
           "--output_dir", out_dir, "--quiet"]
    if not args.early_stop:
        cmd.append("--no_early_stop")
    return cmd + shlex.split(args.extra)


def run_once(args, workers):
    from nsr.traces import load_traces

    with tempfile.TemporaryDirectory(prefix="bench_traces_") as tmp:
        cmd = gen_command(args, workers, tmp)
        mon = CpuMonitor()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        cpu = mon.stop()
        if proc.returncode != 0:
            raise SystemExit(f"bench_traces.py: generate_traces.py failed ({proc.returncode}): {proc.stderr.strip()}")
        files = [f for f in os.listdir(tmp) if f.endswith(".pkl.gz")]
        data = load_traces(os.path.join(tmp, files[0]))
        meta = data["metadata"]
        times = [r["time"] for r in data["records"]]
        return dict(workers=workers, wall=wall, run_wall=float(meta["wall_time"]), records=len(data["records"]),
                    solved=int(meta["solved"]), sum_expr_time=float(sum(times)),
                    file_bytes=os.path.getsize(os.path.join(tmp, files[0])), cpu_s=cpu["own_cpu"],
                    other_cpu_s=cpu["other_cpu"], steal_s=cpu["steal"])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    code_start = code_state()
    load1 = os.getloadavg()[0]
    if load1 > 1.5:
        print(f"WARNING: load average {load1:.2f} > 1.5: other work is running; timings will be off",
              file=sys.stderr)
    # one untimed run first: numba's on-disk cache and the OS file cache are warm for every timed run
    print("untimed warm-up run", file=sys.stderr, flush=True)
    run_once(args, args.workers[0])
    runs = []
    for rep in range(args.repeats):
        for w in args.workers:
            r = run_once(args, w)
            r["repeat"] = rep
            runs.append(r)
            print(f"  repeat {rep} workers {w}: {r['wall']:.2f} s (run {r['run_wall']:.2f} s, "
                  f"sum of per-expression times {r['sum_expr_time']:.2f} s, CPU {r['cpu_s']:.2f} s; "
                  f"other processes {r['other_cpu_s']:.2f} CPU-s)", file=sys.stderr, flush=True)
    summary = {}
    for w in args.workers:
        rs = [r for r in runs if r["workers"] == w]
        summary[w] = dict(wall=statistics.median(r["wall"] for r in rs),
                          run_wall=statistics.median(r["run_wall"] for r in rs),
                          outside=statistics.median(r["wall"] - r["run_wall"] for r in rs),
                          sum_expr_time=statistics.median(r["sum_expr_time"] for r in rs),
                          cpu_s=statistics.median(r["cpu_s"] for r in rs),
                          other_cpu_max=max(r["other_cpu_s"] for r in rs),
                          records=rs[0]["records"], solved=rs[0]["solved"], file_bytes=rs[0]["file_bytes"])
    base = summary[args.workers[0]]
    cmd = " ".join(shlex.quote(a) for a in gen_command(args, "W", "TMPDIR")[1:])
    lines = [f"`python {cmd}` (W = workers), {args.repeats} alternating repeats, medians:", "",
             "| workers | wall time | speedup vs 1 | run time (metadata wall_time) | speedup of run time "
             "| start-up + final save | CPU time (all processes) | expressions | solved | output size "
             "| other processes, worst run |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in args.workers:
        s = summary[w]
        lines.append(f"| {w} | {s['wall']:.2f} s | **{base['wall'] / s['wall']:.2f}x** | {s['run_wall']:.2f} s "
                     f"| {base['run_wall'] / s['run_wall']:.2f}x | {s['outside']:.2f} s | {s['cpu_s']:.2f} s "
                     f"| {s['records']} | {s['solved']} | {s['file_bytes'] / 1e6:.1f} MB "
                     f"| {s['other_cpu_max']:.2f} CPU-s |")
    code_end = code_state()
    code = f"Code: commit {code_start['commit']}"
    code += (f" with uncommitted changes to {', '.join(code_start['modified'])}." if code_start["modified"]
             else ", clean.")
    if code_end != code_start:
        code += (f" WARNING: the library changed during the run (now {code_end['commit']}, "
                 f"modified {code_end['modified']}).")
    lines += ["", code]
    print("\n".join(lines))
    if args.json is not None:
        path = args.json or os.path.join(ROOT, "bench", "results", f"traces_{started.strftime('%Y%m%dT%H%M%S')}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        out = dict(command="python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + list(
            sys.argv[1:] if argv is None else argv)), date=started.isoformat(timespec="seconds"),
            machine=machine(), params=vars(args), summary={str(k): v for k, v in summary.items()}, runs=runs,
            generate_command=gen_command(args, "W", "TMPDIR"), code_at_start=code_start, code_at_end=code_end)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
