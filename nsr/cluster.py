"""Jobs on a Ray cluster: the batch driver's executor across cores, GPUs and nodes (optional: ``pip install -r
requirements-ray.txt``).

* Expert jobs are Ray tasks over small chunks (one numba-compiled process per task slot).
* Neural jobs run in one actor per GPU (per CPU slot without GPUs): each actor loads the checkpoint once,
  lazily, and serves whole batches, the batches a local run makes, so the results are the same.
* A task or actor lost with its worker or node is retried by Ray (``max_retries``, ``max_restarts``); what
  finished streams back to the caller as it finishes (into the partial store for trace files), so a cluster
  that goes away loses nothing finished: the caller gets one :class:`ClusterError` and can ``--resume``.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Optional

from .safe_io import InputError

RETRIES = 3


class ClusterError(InputError):
    """The Ray cluster failed or went away (finished results are kept; resume later)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install -r requirements-ray.txt") from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> bool:
    """A quick TCP check of ``host:port`` (Ray itself retries an unreachable address for minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    if address.startswith("ray://") or not port.isdigit() or not host:
        return True  # a client address or 'auto': let Ray resolve it
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None):
    """Join ``address`` (or start a local cluster of ``num_cpus``) unless already connected."""
    if address and os.path.exists(os.path.expanduser("~/.ray/auth_token")):
        # `ray start` (Ray >= 2.59) secures a cluster with a token it writes there; joining by address then needs
        # token mode said explicitly, before Ray is imported (address="auto" finds it alone)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray = _ray()
    if address and not ray.is_initialized() and not _reachable(address):
        raise ClusterError(f"no Ray cluster answers at {address}")
    if not ray.is_initialized():
        # one model thread per CPU slot, idle OpenMP threads asleep (the driver's own settings must not leak in)
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        try:
            # without an address, a new local instance for this run ("local"): never whatever cluster
            # `ray start` left running on the machine, which Ray would otherwise join
            ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env})
        except Exception as e:  # ray raises ConnectionError, ValueError, RuntimeError... for a bad address
            raise ClusterError(f"cannot start or join a Ray cluster at {address or 'a new local one'}: "
                               f"{str(e).splitlines()[0][:200]}") from None
    return ray


def _chunk_task(searcher, jobs, collect):
    from .drivers import run_batch

    return [(j.index, run_batch(searcher, [j], collect)[0]) for j in jobs]


class _NeuralWorker:
    """One model (loaded on the first batch, kept for the next) serving batches of jobs."""

    def __init__(self, searcher):
        from .threads import configure_threads

        configure_threads()  # Ray's share of cores (OMP_NUM_THREADS), passive waiting
        self.searcher = searcher

    def run(self, jobs, collect):
        from .drivers import run_batch

        return [(j.index, r) for j, r in zip(jobs, run_batch(self.searcher, jobs, collect))]


def _workers(ray, neural: bool, requested: Optional[int]) -> tuple:
    """(number of actors or task slots, resources per actor)."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), max(int(res.get("CPU", 1)), 1)
    if neural and gpus:
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    return min(requested or cpus, cpus), {"num_cpus": 1}


def run_jobs_ray(searcher, jobs, collect: Callable, batch_size: int, progress, address=None,
                 num_workers=None) -> Iterator:
    """Yield ``(job, result)`` as Ray finishes them (see the module docstring)."""
    ray = connect(address, num_workers)
    by_index = {j.index: j for j in jobs}
    neural = searcher.sampling is not None
    try:
        n, resources = _workers(ray, neural, num_workers)
        if neural:
            actor = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES, **resources)(_NeuralWorker)
            pool = [actor.remote(searcher) for _ in range(min(n, -(-len(jobs) // batch_size)) or 1)]
            batches = [jobs[s:s + batch_size] for s in range(0, len(jobs), batch_size)]
            pending = {}
            queue = list(reversed(batches))
            for a in pool:  # one batch in flight per actor; the next goes to whichever finishes first
                if queue:
                    pending[a.run.remote(queue.pop(), collect)] = a
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                a = pending.pop(done)
                if queue:
                    pending[a.run.remote(queue.pop(), collect)] = a
                yield from _finished(ray, done, by_index, progress)
        else:
            task = ray.remote(max_retries=RETRIES, **resources)(_chunk_task)
            size = max(1, min(8, len(jobs) // (4 * n)))  # small chunks: an even spread, few round trips
            refs = [task.remote(searcher, jobs[s:s + size], collect) for s in range(0, len(jobs), size)]
            while refs:
                (done,), refs = ray.wait(refs, num_returns=1)
                yield from _finished(ray, done, by_index, progress)
    except ray.exceptions.RayError as e:
        _reraise(ray, e)


def _reraise(ray, e):
    """A job's own exception (bad input...) as itself; a cluster failure as one ClusterError line."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise ClusterError(f"a Ray task failed: {str(e).splitlines()[0][:200]}") from None
    raise ClusterError(f"the Ray cluster failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def _finished(ray, ref, by_index, progress):
    results = ray.get(ref)
    if progress is not None:
        progress(len(results))
    for index, result in results:
        yield by_index[index], result


def map_ray(fn: Callable, payloads: list, address=None, num_workers=None) -> list:
    """``[fn(p) for p in payloads]`` as Ray tasks (retried when a worker dies), in order."""
    ray = connect(address, num_workers)
    try:
        task = ray.remote(max_retries=RETRIES, num_cpus=1)(fn)
        return ray.get([task.remote(p) for p in payloads])
    except ray.exceptions.RayError as e:
        _reraise(ray, e)
