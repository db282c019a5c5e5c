#!/usr/bin/env python
"""Signals matrix for generate_traces.py (issue 9): {SIGINT, SIGTERM, SIGKILL} x {1, 2 workers} x {expert, neural}.

Each trial starts a run, sends the signal after a random delay, and checks:
* hang: the process is still alive 10 s after the signal (then it is killed and counted);
* exit status: 130 for SIGINT, 143 for SIGTERM (-9 for SIGKILL);
* orphans: no process of the run is left behind;
* lost results: SIGINT/SIGTERM must save every finished result (the count in OUTPUT.partial/ is compared with the
  count the run reported finishing); SIGKILL may lose at most what finished since the last periodic save;
* resume: ``--resume`` then completes the run, and its decoded records equal those of an uninterrupted run.

    python bench/bench_signals.py --trials 10 --json bench/results/trust/signals.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import code_state, machine  # noqa: E402

HELDOUT = os.path.join(ROOT, "datasets", "expressions", "heldout_arith_100_c05.pkl.gz")
CHECKPOINT = os.path.join(ROOT, "training", "checkpoints", "default")
SOURCES = {
    "expert": ["--max_expressions", "60", "--population_size", "100", "--num_generations", "150", "--no_early_stop"],
    "neural": ["--max_expressions", "24", "--population_size", "12", "--num_generations", "8", "--no_early_stop",
               "--checkpoint", CHECKPOINT, "--batch_size", "4", "--device", "cpu"],
}
ENV = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def command(source, workers, output, resume=False):
    cmd = [sys.executable, os.path.join(ROOT, "generate_traces.py"), "--expressions_file", HELDOUT,
           "--output", output, "--num_workers", str(workers), "--save_every", "0.5", "--seed", "7", "--quiet"]
    return cmd + SOURCES[source] + (["--resume"] if resume else [])


def decoded(path):
    """The records with what legitimately varies between runs (timings) left out."""
    from nsr.traces import load_traces

    out = []
    for r in load_traces(path)["records"]:
        r = dict(r)
        r.pop("time", None)
        traj = dict(r["trajectory"])
        stats = {k: v for k, v in traj["stats"].items() if k not in ("wall_time", "model_time")}
        traj["stats"] = stats
        r["trajectory"] = traj
        out.append(repr_safe(r))
    return out


def repr_safe(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {k: repr_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [repr_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return (obj.dtype.str, obj.shape, obj.tobytes())
    return obj


def partial_count(output):
    from nsr import safe_io

    folder = output + ".partial"
    if not os.path.isdir(folder):
        return 0
    return sum(len(safe_io.load(os.path.join(folder, f), "partial_traces")["records"])
               for f in os.listdir(folder) if f.endswith(".pkl.gz"))


def descendants(pid):
    """Processes whose parent chain leads to ``pid`` (read from /proc)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pids):
    left = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(p)
        except OSError:
            pass
    return left


def trial(source, workers, sig, reference, rng, tmp):
    out = os.path.join(tmp, f"t{rng.randrange(10**9)}.pkl.gz")
    proc = subprocess.Popen(command(source, workers, out), env=ENV, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # wait until the run has started working (its first partial save), then a random moment more
    t0 = time.time()
    while not os.path.isdir(out + ".partial") and proc.poll() is None and time.time() - t0 < 60:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    family = [proc.pid] + descendants(proc.pid)
    sent = time.time()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=10)
        hang = False
    except subprocess.TimeoutExpired:
        hang = True
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    stop_s = time.time() - sent
    time.sleep(0.3)
    orphans = alive(family[1:])
    for p in orphans:
        os.kill(p, signal.SIGKILL)
    saved = partial_count(out)
    finished_note = None
    for line in (err or "").splitlines():
        if "finished results are in" in line:
            finished_note = int(line.split("finished results are in")[0].split()[-1])
    lost = None if finished_note is None else finished_note - saved
    res = subprocess.run(command(source, workers, out, resume=True), env=ENV, capture_output=True, text=True)
    identical = res.returncode == 0 and decoded(out) == reference
    return dict(source=source, workers=workers, signal=sig.name, hang=hang, exit=proc.returncode,
                stop_s=round(stop_s, 3), orphans=len(orphans), saved=saved, reported=finished_note, lost=lost,
                resume_exit=res.returncode, resume_identical=identical, traceback="Traceback" in (err or ""),
                stderr=(err or "").strip()[-200:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=10, help="per cell")
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    # A job started in the background (`cmd &`, nohup) inherits SIGINT ignored, and so would the runs under test:
    # restore the default so that they see Ctrl-C as a terminal user's run would.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(a.seed)
    rows = []
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for source in a.sources:
            for workers in (1, 2):
                ref = os.path.join(tmp, f"ref_{source}_{workers}.pkl.gz")
                subprocess.run(command(source, workers, ref), env=ENV, check=True)
                reference = decoded(ref)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                    for _ in range(a.trials):
                        r = trial(source, workers, sig, reference, rng, tmp)
                        rows.append(r)
                        print(json.dumps({k: v for k, v in r.items() if k != "stderr"}), flush=True)
    expect = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -9}
    print("\n| source | workers | signal | trials | hangs | wrong exit status | tracebacks | orphans "
          "| lost finished results | resume identical | median stop s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    import statistics

    for source in a.sources:
        for workers in (1, 2):
            for sig in ("SIGINT", "SIGTERM", "SIGKILL"):
                rs = [r for r in rows if r["source"] == source and r["workers"] == workers and r["signal"] == sig]
                lost = sum(r["lost"] or 0 for r in rs) if sig != "SIGKILL" else "n/a"
                print(f"| {source} | {workers} | {sig} | {len(rs)} | {sum(r['hang'] for r in rs)} | "
                      f"{sum(r['exit'] != expect[sig] for r in rs)} | {sum(r['traceback'] for r in rs)} | "
                      f"{sum(r['orphans'] for r in rs)} | {lost} | "
                      f"{sum(r['resume_identical'] for r in rs)}/{len(rs)} | "
                      f"{statistics.median(r['stop_s'] for r in rs):.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(rows=rows, code=code_state(), machine=machine(), wall=time.time() - t_start,
                           date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), f, indent=1)


if __name__ == "__main__":
    main()
