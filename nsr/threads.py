"""How many threads a process uses, decided once, before torch starts its pool."""
from __future__ import annotations

import os
import sys


def cores_available() -> int:
    """The cores this process may run on (its CPU affinity: a cluster scheduler's or Ray's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def configure_threads(threads: int | None = None):
    """Size torch's (OpenMP's) thread pool to what this process may use and make idle threads sleep.

    OpenMP threads spin while they wait for work; two model processes on the same cores then steal each other's
    time (two test_batched_sr.py side by side ran 6x slower each, where sharing fairly costs 2x). Passive waiting
    and one thread per available core avoid that. An explicit count (``--threads``) wins; otherwise a count
    already set in the environment (by the user, or by Ray for its tasks) is kept. Call it before the first
    model loads: OpenMP reads its settings once."""
    try:
        n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or cores_available()
    except ValueError:
        n = cores_available()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if threads or var not in os.environ:
            os.environ[var] = str(n)
    if threads and "torch" in sys.modules:  # already imported: its pool can still be resized
        sys.modules["torch"].set_num_threads(n)
    return n
