#!/usr/bin/env python
"""The GPU path in one prepared script (issue 13), at most ~5 minutes on an H100/H200: run it as is.

1. train 200 steps in bf16 (tiny data made on the spot: expert traces of 200 training problems);
2. BatchedNeuralSR at batch 1/32/128/512 (population 20, 10 generations, early stop off) with the shipped
   checkpoint: seconds per expression, the model's share of wall time, peak GPU memory; batch 512 again with
   constant fitting (10 LM iterations per new individual);
3. end to end: a neural trace of the 100 held-out problems in one batch, then its DAgger relabel;
4. the same loop with the stand-in proposer (no model): the CPU side per problem-generation at batch 512.

Everything goes to one JSON file (``--json``, default bench_gpu.json). ``--device cpu --quick`` is a smoke run
of the same code on a CPU (small sizes; its figures mean nothing for a GPU).

    python bench/bench_gpu.py --json $OUT/bench_gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import code_state, machine  # noqa: E402


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def gpu_info(torch):
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return dict(name=p.name, memory_gb=round(p.total_memory / 2**30, 1), count=torch.cuda.device_count(),
                torch=torch.__version__, cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())


def train_part(tmp, device, steps, problems):
    """Expert traces of ``problems`` training problems, then ``steps`` bf16 steps of a small model."""
    from nsr.config import EvolutionConfig, RunConfig
    from nsr.datasets import DatasetConfig, generate_dataset
    from nsr.drivers import file_jobs, write_traces
    from nsr.search import Searcher
    from nsr.trainer import TrainConfig, train

    recs = generate_dataset(DatasetConfig(num_expressions=problems, seed=9001))
    traces = os.path.join(tmp, "expert.pkl.gz")
    t0 = time.perf_counter()
    write_traces(Searcher(EvolutionConfig(population_size=20, num_generations=20, collect_trajectory=True)),
                 file_jobs(recs, 0), traces, {}, RunConfig(quiet=True))
    t_traces = time.perf_counter() - t0
    t0 = time.perf_counter()
    folder = train(TrainConfig(traces=(traces,), name="gpu", output_dir=os.path.join(tmp, "runs"), steps=steps,
                               eval_every=max(1, steps // 2), save_every=steps, device=device, precision="bf16",
                               quiet=True))
    wall = time.perf_counter() - t0
    with open(os.path.join(folder, "metrics.json")) as f:
        m = json.load(f)
    return dict(traces_s=t_traces, train_s=wall, steps=steps, s_per_step=wall / steps, bf16=m["bf16"],
                device=m["device"], final_train_loss=m["final_train_loss"], final_val_loss=m["final_val_loss"])


def speed_part(torch, device, checkpoint, runs, generations, rows):
    """``runs``: (batch size, LM iterations of constant fitting) pairs; each result is appended to ``rows`` as
    soon as it is measured, so a part stopped half-way keeps what it measured."""
    from nsr.config import EvolutionConfig, SamplingConfig
    from nsr.datasets import HELDOUT_EXPRESSIONS, load_expressions
    from nsr.drivers import file_jobs, run_batch
    from nsr.search import Searcher

    recs = load_expressions(HELDOUT_EXPRESSIONS)["records"]
    searchers = {}
    for bs, fitting in runs:
        if fitting not in searchers:
            searchers[fitting] = Searcher(EvolutionConfig(population_size=20, num_generations=generations,
                                                          early_stop=False, constant_fitting=fitting),
                                          SamplingConfig(checkpoint=checkpoint, device=device))
            run_batch(searchers[fitting], file_jobs(recs[:4], 0), lambda *a: None)  # warm: allocator, kernels, numba
        searcher = searchers[fitting]
        ck = searcher.load()
        pool = (recs * (-(-bs // len(recs))))[:bs]
        if ck.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        searcher.neural.reset_stats()
        t0 = time.perf_counter()
        run_batch(searcher, file_jobs(pool, 1), lambda *a: None)
        wall = time.perf_counter() - t0
        model = searcher.neural.stats["model_time"]
        rows.append(dict(batch_size=bs, constant_fitting=fitting, s_per_expression=wall / bs, model_share=model / wall,
                         cpu_ms_per_problem_generation=1000 * (wall - model) / (bs * (generations - 1)),
                         peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if ck.device.type == "cuda" else None,
                         dtype=str(ck.dtype)))
        log(json.dumps(rows[-1]))
    return rows


def end_to_end(tmp, device, checkpoint, n, generations):
    """generate_traces.py (neural, one batch) then dagger_relabel.py, as a user runs them."""
    from nsr.datasets import HELDOUT_EXPRESSIONS

    out = os.path.join(tmp, "neural.pkl.gz")
    steps = {}
    for name, cmd in (
        ("neural_trace", [sys.executable, os.path.join(ROOT, "generate_traces.py"), "--expressions_file",
                          HELDOUT_EXPRESSIONS, "--max_expressions", str(n), "--checkpoint", checkpoint,
                          "--batch_size", str(n), "--num_generations", str(generations), "--device", device,
                          "--output", out, "--quiet"]),
        ("relabel", [sys.executable, os.path.join(ROOT, "dagger_relabel.py"), "--input", out, "--label", "best_of_k",
                     "--k", "4", "--quiet"])):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        steps[name] = dict(seconds=time.perf_counter() - t0, exit=proc.returncode, stderr=proc.stderr[-500:])
        log(name, json.dumps(steps[name]))
    return steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--checkpoint", default=os.path.join(ROOT, "training", "checkpoints", "default"))
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run of the script, e.g. on a CPU)")
    p.add_argument("--json", default="bench_gpu.json")
    a = p.parse_args(argv)
    import torch

    quick = a.quick
    out = dict(machine=machine(), code=code_state(), gpu=gpu_info(torch), device=a.device, quick=quick,
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    t_start = time.perf_counter()

    def save():
        out["wall_s"] = time.perf_counter() - t_start
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)

    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (
            ("train_bf16", lambda: train_part(tmp, a.device, 5 if quick else 200, 20 if quick else 200)),
            ("batched_speed", lambda: speed_part(torch, a.device, a.checkpoint,
                                                 [(1, 0), (4, 0), (4, 10)] if quick else
                                                 [(1, 0), (32, 0), (128, 0), (512, 0), (512, 10)], 3 if quick else 10,
                                                 out.setdefault("batched_speed", []))),
            ("end_to_end", lambda: end_to_end(tmp, a.device, a.checkpoint, 8 if quick else 100, 3 if quick else 50)),
        ):
            log("start", name)
            try:
                out[name] = fn()
            except Exception as e:  # one failing part must not lose the others' figures
                out[name + "_error"] = f"{type(e).__name__}: {e}"
                log("FAILED", name, out[name + "_error"])
            save()
        log("start stand_in")
        try:
            from bench.bench_cpu_side import run_once

            out["stand_in_cpu_side"] = run_once(8 if quick else 512, 3 if quick else 10, 20, True, 0)
        except Exception as e:
            out["stand_in_cpu_side"] = dict(error=f"{type(e).__name__}: {e}")
        save()
    log("done in", round(out["wall_s"], 1), "s ->", a.json)


if __name__ == "__main__":
    main()
