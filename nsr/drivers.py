"""The one batch driver: many problems through a :class:`~nsr.search.Searcher`.

Every way of running SR over many problems goes through :func:`run_jobs`:
``generate_traces.py`` (expert, neural or mixed), ``batched_neural_sr.py``,
evaluation and benchmarks, and the DAgger loop's rollouts. A :class:`Job` is
one problem (a record of an expressions file), its position in the file and
the run's seed, which together fix its random generator: results do not depend
on how jobs are batched, sharded, spread over processes or resumed. Neural
jobs run in batches in this process (one model call per generation serves the
batch); expert jobs run one at a time, in worker processes when asked.

:func:`write_traces` adds what long runs need: finished results saved as they
come (``OUTPUT.partial/``), ``--resume``, and clean stops on SIGINT/SIGTERM.
"""
from __future__ import annotations

import ctypes
import hashlib
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from tqdm import tqdm

from . import safe_io
from .config import RunConfig
from .safe_io import InputError
from .search import Searcher
from .threads import cores_available
from .traces import seed_for, storable_data, summary_line, trace_record, validate_traces


@dataclass(frozen=True)
class Job:
    index: int  # position in its file: with the seed, fixes the problem's generator
    record: dict  # X, y and (optionally) id, expression
    seed: int

    @property
    def problem_id(self):
        return self.record.get("id", self.index)


def file_jobs(records, seed: int, indices=None) -> list:
    """Jobs for records of one file (``indices``: their positions, default 0..n-1)."""
    indices = range(len(records)) if indices is None else indices
    return [Job(int(i), r, int(seed)) for i, r in zip(indices, records)]


def run_batch(searcher: Searcher, jobs, collect: Callable, progress=None) -> list:
    """Run ``jobs`` together; ``collect(searcher, job, problem, seconds)`` makes each result.

    ``seconds`` is the batch's wall time divided by its size (a batch's problems run together)."""
    problems = []
    for j in jobs:
        try:
            problems.append(searcher.problem(j.record["X"], j.record["y"], seed_for(j.seed, j.index), j.problem_id))
        except ValueError as e:
            raise InputError(f"expression {j.problem_id}: {e}") from None
    t0 = time.perf_counter()
    searcher.run(problems, progress)
    per = (time.perf_counter() - t0) / max(len(jobs), 1)
    return [collect(searcher, j, p, per) for j, p in zip(jobs, problems)]


def trace_result(searcher: Searcher, job: Job, problem, seconds: float) -> dict:
    """``collect`` for trace files: the full trace record."""
    return trace_record(problem, job.record, job.index, job.seed, seconds, searcher.source, searcher.sampling)


def _expert_task(payload):
    searcher, job, collect = payload
    return job, run_batch(searcher, [job], collect)[0]


def run_jobs(searcher: Searcher, jobs, collect: Callable, batch_size: int = 32, num_workers: int = 1,
             progress: Optional[Callable] = None, executor: str = "local", ray_address: Optional[str] = None) -> Iterator:
    """Yield ``(job, result)`` as jobs finish; ``progress(n)`` counts finished problems.

    ``executor='ray'`` runs them on a Ray cluster (:func:`nsr.cluster.run_jobs_ray`): the same batches and
    seeds, so the same results."""
    jobs = list(jobs)
    if executor == "ray":
        from .cluster import run_jobs_ray

        yield from run_jobs_ray(searcher, jobs, collect, batch_size, progress, ray_address, num_workers)
        return
    if searcher.sampling is not None:  # neural: in batches sharing one model call per generation
        searcher.load()
        for s in range(0, len(jobs), batch_size):
            batch = jobs[s:s + batch_size]
            yield from zip(batch, run_batch(searcher, batch, collect, progress))
        return
    tasks = ((searcher, j, collect) for j in jobs)
    if num_workers <= 1 or len(jobs) <= 1:
        results = map(_expert_task, tasks)
    else:
        results = WorkerPool(min(num_workers, len(jobs))).imap_unordered(_expert_task, tasks)
    try:
        for job, result in results:
            if progress is not None:
                progress(1)
            yield job, result
    finally:
        if hasattr(results, "close"):  # stop the workers now, not when garbage collected
            results.close()


def map_chunks(fn: Callable, payloads, executor: str = "local", num_workers: int = 1,
               ray_address: Optional[str] = None) -> list:
    """``[fn(p) for p in payloads]``, in order, spread over worker processes or a Ray cluster (``fn`` must be
    a module-level function; each payload a picklable chunk of work)."""
    payloads = list(payloads)
    if executor == "ray":
        from .cluster import map_ray

        return map_ray(fn, payloads, ray_address, num_workers)
    if num_workers <= 1 or len(payloads) <= 1:
        return [fn(p) for p in payloads]
    out = dict(WorkerPool(min(num_workers, len(payloads))).imap_unordered(_indexed, ((k, fn, p) for k, p in
                                                                                       enumerate(payloads))))
    return [out[k] for k in range(len(payloads))]


def _indexed(task):
    k, fn, payload = task
    return k, fn(payload)


# ----------------------------------------------------------------------------
# worker processes


def _die_with_parent():
    """Linux: the kernel kills this process when its parent dies (no orphans computing or printing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere: the worker stops at its next read from the closed pipe


def _worker_main(conn, fn, others, parent_pid):
    for c in others:  # pipes of the other workers: holding them would keep those open after the parent died
        c.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked by the parent for the fork
    _die_with_parent()
    if os.getppid() != parent_pid:
        return
    while True:
        try:
            payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            out = (True, fn(payload))
        except Exception as e:  # the parent re-raises it (bad input in a record, ...)
            out = (False, e)
        try:
            conn.send(out)
        except (BrokenPipeError, OSError):
            return


class WorkerPool:
    """Forked worker processes, one task at a time each, over pipes.

    Written out rather than ``multiprocessing.Pool``, whose helper threads could
    hang on Ctrl-C with 2+ workers: here the parent only ever waits in
    ``connection.wait`` (interruptible), workers ignore SIGINT and die with the
    parent, and a task lost to a killed worker runs again on a new one."""

    def __init__(self, n: int, retries: int = 2):
        self.n, self.retries = n, retries
        self.ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
        self.procs: dict = {}  # conn -> process

    def _start(self, fn):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, fn, list(self.procs), os.getpid()), daemon=True)
        with _signals_blocked():  # a Ctrl-C must not reach the child before it ignores SIGINT
            proc.start()
        child.close()
        self.procs[parent] = proc
        return parent

    def imap_unordered(self, fn, payloads) -> Iterator:
        todo = deque(enumerate(payloads))
        busy, failures = {}, {}
        try:
            while todo or busy:
                while todo and len(busy) < self.n:
                    idle = [c for c in self.procs if c not in busy]
                    conn = idle[0] if idle else self._start(fn)
                    busy[conn] = todo.popleft()
                    conn.send(busy[conn][1])
                for conn in mp.connection.wait(list(busy)):
                    try:
                        ok, out = conn.recv()
                    except (EOFError, OSError):  # the worker died: run its task again on a new one
                        task = busy.pop(conn)
                        self._drop(conn)
                        failures[task[0]] = failures.get(task[0], 0) + 1
                        if failures[task[0]] > self.retries:
                            raise RuntimeError(f"a worker process died {failures[task[0]]} times on one task") from None
                        todo.appendleft(task)
                        continue
                    del busy[conn]
                    if not ok:
                        raise out
                    yield out
        finally:
            self.close()

    def _drop(self, conn):
        proc = self.procs.pop(conn)
        conn.close()
        proc.join(timeout=1)

    def close(self):
        for conn, proc in list(self.procs.items()):
            proc.kill()  # busy workers hold nothing worth waiting for: finished results are the parent's
            conn.close()
        for proc in self.procs.values():
            proc.join(timeout=5)
        self.procs.clear()


# ----------------------------------------------------------------------------
# trace files: partial results, resume, output


def run_fingerprint(searcher: Searcher, jobs) -> str:
    """Identifies a run's parameters and data: a partial store only resumes the run that made it."""
    h = hashlib.sha256(repr(sorted(searcher.evolution.to_dict().items())).encode())
    if searcher.sampling is not None:  # not the device: a run may resume on other hardware
        h.update(repr(sorted((k, v) for k, v in searcher.sampling.to_dict().items() if k != "device")).encode())
    for j in jobs:
        h.update(f"{j.index}:{j.seed}".encode())
        h.update(j.record["X"].tobytes())
        h.update(j.record["y"].tobytes())
    return h.hexdigest()[:16]


class PartialResults:
    """Finished records of a long run, saved beside the output as it goes.

    ``OUTPUT.partial/`` holds append-only chunk files, each written atomically with
    the records finished since the previous save, so saving costs what is new,
    not everything so far. ``resume`` reads them all back; an existing store is
    never deleted unless ``overwrite``."""

    def __init__(self, output: str, fingerprint: str, resume: bool, overwrite: bool, every: float):
        self.path = output + ".partial"
        self.fingerprint, self.every = fingerprint, every
        self.done: dict = {}
        self._pending: list = []
        self._last = time.monotonic()
        if os.path.exists(self.path):
            if resume:
                self._load()
            elif overwrite:
                self.remove()
            else:
                raise InputError(f"{self.path}: an interrupted run's results are here; pass --resume to continue it "
                                 f"or --overwrite to discard them")

    def _load(self):
        if not os.path.isdir(self.path):
            raise InputError(f"{self.path}: is not a folder of partial results")
        for name in sorted(os.listdir(self.path)):
            if not name.endswith(".pkl.gz"):
                continue  # a temporary file of an interrupted save
            obj = safe_io.load(os.path.join(self.path, name), "partial_traces",
                               lambda o, p: validate_traces(o, p, require_trajectories=False))
            if obj["metadata"].get("fingerprint") != self.fingerprint:
                raise InputError(f"{self.path}: was made by a run with other parameters or data; rerun those "
                                 f"settings, or pass --overwrite to discard it")
            self.done.update((int(r["index"]), r) for r in obj["records"])

    def add(self, record):
        self.done[int(record["index"])] = record
        self._pending.append(int(record["index"]))
        if time.monotonic() - self._last >= self.every:
            self.save()

    def save(self):
        if self._pending:
            os.makedirs(self.path, exist_ok=True)
            n = sum(1 for f in os.listdir(self.path) if f.endswith(".pkl.gz"))
            safe_io.save(os.path.join(self.path, f"part-{n:05d}.pkl.gz"), "partial_traces",
                         {"fingerprint": self.fingerprint}, [self.done[i] for i in self._pending])
            self._pending = []
        self._last = time.monotonic()

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


def check_output(path: str, overwrite: bool, inputs=()):
    """Fail before any work if ``path`` cannot or must not be written (exists without --overwrite, is an input)."""
    safe_io.check_output_file(path)
    for inp in inputs:
        if inp and os.path.exists(inp) and os.path.exists(path) and os.path.samefile(inp, path):
            raise InputError(f"{path}: the output is also an input")
        if inp and os.path.abspath(inp) == os.path.abspath(path):
            raise InputError(f"{path}: the output is also an input")
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{path}: exists; pass --overwrite to replace it")


def write_traces(searcher: Searcher, jobs, output: str, metadata: dict, run: RunConfig, resume=False,
                 overwrite=False, inputs=(), run_id: Optional[str] = None):
    """Run every job and write the traces file; returns (records, metadata).

    Interrupted (SIGINT, SIGTERM, an error), it saves what is finished to
    ``OUTPUT.partial/`` for ``resume`` and re-raises. ``run_id`` identifies the
    whole run when ``jobs`` are one shard of it (see :func:`merge_traces`)."""
    check_output(output, overwrite, inputs)
    for j in jobs:  # data a trace cannot store (float32) is refused before any work, not after the run
        storable_data(j.record["X"], j.record["y"], f"expression {j.problem_id}: ")
    # a bad checkpoint fails before any output appears; a Ray run checks it on this machine's CPU (the
    # driver may have no GPU: the actors load it on theirs)
    ck = (Searcher(searcher.evolution, searcher.sampling.replace(device="cpu")) if run.executor == "ray"
          and searcher.sampling is not None else searcher).load()
    fingerprint = run_fingerprint(searcher, jobs)
    partial = PartialResults(output, fingerprint, resume, overwrite, run.save_every)
    todo = [j for j in jobs if j.index not in partial.done]
    if resume and not run.quiet and partial.done:
        print(f"resuming: {len(partial.done)} of {len(jobs)} expressions already done")
    neural = searcher.sampling is not None
    t0 = time.perf_counter()
    results = run_jobs(searcher, todo, trace_result, run.neural_batch_size, run.num_workers or cores_available(),
                       executor=run.executor, ray_address=run.ray_address)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), disable=run.quiet, desc="expressions", unit="expr")
    try:
        for _job, rec in results:
            partial.add(rec)
            bar.update(1)
    except BaseException as e:
        results.close()  # stop the workers first
        with _signals_blocked():
            partial.save()  # keep what is finished for --resume
        if partial.done:
            note = f"{len(partial.done)} finished results are in {partial.path}; rerun with --resume"
            if isinstance(e, InputError):  # e.g. the Ray cluster went away: one line says both
                raise type(e)(f"{e}; {note}") from None
            e.nsr_note = note
        raise
    finally:
        bar.close()
    records = [partial.done[j.index] for j in jobs]
    meta = dict(metadata)
    meta.update(
        source=searcher.source, format_note="one record per expression; see README 'Trace files'",
        params=searcher.evolution.to_dict(), seed=run.seed, num_records=len(records),
        fingerprint=run_id or fingerprint,
        wall_time=time.perf_counter() - t0, solved=sum(bool(r["solved"]) for r in records))
    if neural:
        from .model import checkpoint_hash

        meta.update(sampling_params=searcher.sampling.to_dict(), checkpoint=os.path.abspath(ck.path),
                    checkpoint_hash=checkpoint_hash(ck.path), checkpoint_mode=ck.mode,
                    device=str(ck.device) if run.executor == "local" else f"ray ({searcher.sampling.device or 'auto'})",
                    batch_size=run.neural_batch_size, model_stats=dict(searcher.neural.stats))
    safe_io.save(output, "traces", meta, records)
    partial.remove()
    if not run.quiet:
        print(summary_line(records))
        wf = [r["trajectory"]["stats"].get("well_formed_pct") for r in records]
        wf = [w for w in wf if w is not None]
        if wf:
            print(f"well-formed proposals: {sum(wf) / len(wf):.2f}%")
        print(f"wrote {output}")
    return records, meta


class _signals_blocked:
    """SIGINT/SIGTERM wait until the block ends (a second Ctrl-C must not cut a save short)."""

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def merge_traces(paths, output: str, overwrite=False) -> dict:
    """One traces file from the shards of one run (``generate_traces.py --shard i/n``): the records an
    unsharded run writes, in the same order. The shards must share a run (the same input, parameters and
    seed: their ``fingerprint``) and together hold every expression of it exactly once."""
    from .traces import load_traces

    check_output(output, overwrite, paths)
    shards = [load_traces(p) for p in paths]
    meta0 = shards[0]["metadata"]
    for p, sh in zip(paths, shards):
        m = sh["metadata"]
        if m.get("fingerprint") != meta0.get("fingerprint") or m.get("source") != meta0.get("source"):
            raise InputError(f"{p}: is not a shard of the same run as {paths[0]} (another input, parameters or seed)")
        if not m.get("shard"):
            raise InputError(f"{p}: is not a shard (no 'shard' in its metadata)")
    total = meta0.get("expressions_total")
    seen = {}
    for p, sh in zip(paths, shards):
        for r in sh["records"]:
            i = int(r["index"])
            if i in seen:
                raise InputError(f"expression {i} is in both {seen[i][0]} and {p}")
            seen[i] = (p, r)
    missing = sorted(set(range(total)) - set(seen)) if isinstance(total, int) else []
    if missing:
        raise InputError(f"the shards miss {len(missing)} expression(s) of the run (first: index {missing[0]}); "
                         f"{len(set(m['metadata']['shard'][1] for m in shards))} shard count(s) given")
    records = [seen[i][1] for i in sorted(seen)]
    meta = {k: v for k, v in meta0.items() if k not in ("shard", "command", "parameters", "created", "host")}
    meta.update(merged_from=[os.path.abspath(p) for p in paths], num_records=len(records),
                solved=sum(bool(r["solved"]) for r in records),
                wall_time=sum(float(sh["metadata"].get("wall_time", 0.0)) for sh in shards),
                command=[sh["metadata"].get("command") for sh in shards])
    safe_io.save(output, "traces", meta, records, validate=validate_traces)
    return meta
