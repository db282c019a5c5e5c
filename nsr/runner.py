"""Running SR over an expressions file: expert runs in parallel processes, neural
runs in batches, finished results saved as they go and resumable."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Optional

from tqdm import tqdm

from . import safe_io
from .safe_io import InputError
from .traces import SOLVED_MSE, seed_for, summary_line, trace_record


@dataclass(frozen=True)
class RunSpec:
    population_size: int = 20
    num_generations: int = 50
    max_depth: int = 4
    max_size: int = 25
    tournament_size: int = 3
    crossover_prob: float = 0.7
    parsimony: float = 1e-3
    operator_set: str = "arith"
    constants: tuple = (1.0,)
    early_stop: bool = True
    seed: int = 42
    # neural SR
    checkpoint: Optional[str] = None
    batch_size: int = 1
    device: Optional[str] = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    autoregressive: bool = False
    beta: float = 0.0

    def sr_params(self) -> dict:
        return dict(population_size=self.population_size, num_generations=self.num_generations,
                    max_depth=self.max_depth, max_size=self.max_size, tournament_size=self.tournament_size,
                    crossover_prob=self.crossover_prob, parsimony=self.parsimony, operator_set=self.operator_set,
                    constants=tuple(self.constants), early_stop=self.early_stop)

    def recorded_params(self) -> dict:
        d = self.sr_params()
        d["constants"] = list(d["constants"])
        d["seed"] = self.seed
        if self.checkpoint:
            d.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                     autoregressive=self.autoregressive, beta=self.beta)
        return d

    @property
    def source(self) -> str:
        return "neural_sr" if self.checkpoint else "basic_sr"


def _expert_task(task):
    spec, index, record = task
    from .evolution import evolve
    from .proposers import ExpertProposer, initial_population
    from .sr import BasicSR

    t0 = time.perf_counter()
    sr = BasicSR(**spec.sr_params(), collect_trajectory=True)
    problem = sr.make_problem(record["X"], record["y"], rng=seed_for(spec.seed, index), problem_id=record.get("id"))
    evolve([problem], ExpertProposer(), initial_population)
    return trace_record(problem, record, index, spec.recorded_params(), time.perf_counter() - t0, spec.source)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _fingerprint(spec: RunSpec, indexed) -> str:
    h = hashlib.sha256(repr(sorted(asdict(spec).items())).encode())
    for i, r in indexed:
        h.update(str(i).encode())
        h.update(r["X"].tobytes())
        h.update(r["y"].tobytes())
    return h.hexdigest()[:16]


class PartialResults:
    """Finished records of a long run, saved beside the output as it goes.

    ``OUTPUT.partial/`` holds append-only chunk files, each written atomically with
    the records finished since the previous save, so saving costs what is new,
    not everything so far. ``--resume`` reads them all back."""

    def __init__(self, output: str, fingerprint: str, resume: bool, every: float):
        self.path = output + ".partial"
        self.fingerprint, self.every = fingerprint, every
        self.done: dict = {}
        self._pending: list = []
        self._last = time.monotonic()
        if os.path.isdir(self.path):
            if resume:
                for name in sorted(os.listdir(self.path)):
                    if not name.endswith(".pkl.gz"):
                        continue  # a temporary file of an interrupted save
                    obj = safe_io.load(os.path.join(self.path, name), "partial_traces")
                    if obj["metadata"].get("fingerprint") != fingerprint:
                        raise InputError(f"{self.path}: was made by a run with other parameters or data; "
                                         f"delete it or rerun those settings")
                    self.done.update((int(r["index"]), r) for r in obj["records"])
            else:
                self.remove()  # a stale run's leftovers must not mix into a later --resume

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


def run_traces(spec: RunSpec, indexed, output, metadata, num_workers=None, resume=False, save_every=60.0,
               quiet=False):
    """Run every (index, record) and write the traces file; returns (records, metadata)."""
    fingerprint = _fingerprint(spec, indexed)
    partial = PartialResults(output, fingerprint, resume, save_every)
    todo = [(i, r) for i, r in indexed if i not in partial.done]
    if resume and not quiet and partial.done:
        print(f"resuming: {len(partial.done)} of {len(indexed)} expressions already done")
    t0 = time.perf_counter()
    neural = None
    if spec.checkpoint:  # load (and check) the checkpoint before any output appears
        from .neural_runs import NeuralRunner

        neural = NeuralRunner(spec)
    bar = tqdm(total=len(indexed), initial=len(indexed) - len(todo), disable=quiet, desc="expressions",
               unit="expr")
    neural_info = {}
    try:
        if neural is not None:
            neural_info = neural.run(todo, partial, bar)
        else:
            _run_expert(spec, todo, partial, bar, num_workers)
    except BaseException:
        partial.save()  # keep what is finished for --resume
        raise
    finally:
        bar.close()
    records = [partial.done[i] for i, _ in indexed]
    metadata = dict(metadata)
    metadata.update(
        source=spec.source, format_note="one record per expression; see README 'Trace files'",
        params=spec.recorded_params(), num_records=len(records), fingerprint=fingerprint,
        wall_time=time.perf_counter() - t0, solved=sum(r["final_mse"] <= SOLVED_MSE for r in records),
        **neural_info)
    safe_io.save(output, "traces", metadata, records)
    partial.remove()
    if not quiet:
        print(summary_line(records))
        if spec.checkpoint:
            wf = [r["trajectory"]["stats"].get("well_formed_pct") for r in records]
            wf = [w for w in wf if w is not None]
            if wf:
                print(f"well-formed proposals: {sum(wf) / len(wf):.2f}%")
        print(f"wrote {output}")
    return records, metadata


def _run_expert(spec, todo, partial, bar, num_workers):
    workers = min(num_workers or available_cores(), max(len(todo), 1))
    tasks = [(spec, i, r) for i, r in todo]
    if workers <= 1:
        for t in tasks:
            rec = _expert_task(t)
            partial.add(rec)
            bar.update(1)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        try:
            chunk = max(1, len(tasks) // (workers * 16))  # fewer round trips for many small tasks
            for rec in pool.imap_unordered(_expert_task, tasks, chunksize=chunk):
                partial.add(rec)
                bar.update(1)
        except BaseException:
            pool.terminate()
            raise


def content_hash(path: str) -> str:
    """sha256 over a checkpoint folder's files (names and bytes), short form."""
    h = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


