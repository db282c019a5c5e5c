"""Trace generation on Ray (nsr.cluster), on a local 2-CPU Ray instance: the same records as a local run (expert
and neural), a worker killed mid-run retried with nothing lost, resume across executors, one-line errors."""
import os
import signal
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")

from helpers import assert_same_data, run_cli, without_timing  # noqa: E402

from nsr.config import EvolutionConfig, RunConfig, SamplingConfig  # noqa: E402
from nsr.drivers import file_jobs, trace_result, write_traces  # noqa: E402
from nsr.search import Searcher  # noqa: E402
from nsr.traces import load_traces  # noqa: E402

@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable in Ray's workers
    yield
    ray.shutdown()


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        X = rng.uniform(-2, 2, size=(25, 2))
        out.append({"id": i, "expression": "t", "X": X, "y": X[:, 0] * X[:, 1] + X[:, 0] ** 2 - (i % 3)})
    return out


def _records_of(path):
    return [without_timing(r) for r in load_traces(path)["records"]]


def killing_collect(searcher, job, problem, seconds):
    """trace_result, but the first worker to reach a job carrying a marker path dies (SIGKILL) before returning."""
    marker = job.record.get("kill_marker")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return trace_result(searcher, job, problem, seconds)


def test_ray_expert_traces_equal_a_local_run_even_when_a_worker_is_killed(local_ray, tmp_path, monkeypatch):
    recs = _records(10)
    searcher = Searcher(EvolutionConfig(population_size=20, num_generations=8, collect_trajectory=True))
    jobs = file_jobs(recs, 5)
    local = str(tmp_path / "local.pkl.gz")
    write_traces(searcher, jobs, local, {}, RunConfig(num_workers=1, quiet=True))
    on_ray = str(tmp_path / "ray.pkl.gz")
    write_traces(searcher, jobs, on_ray, {}, RunConfig(executor="ray", quiet=True))
    assert_same_data(_records_of(local), _records_of(on_ray))
    # a worker killed mid-run: Ray runs its task again; the file is still the same
    import nsr.drivers as drivers

    marker = tmp_path / "killed"
    recs[3] = dict(recs[3], kill_marker=str(marker))
    monkeypatch.setattr(drivers, "trace_result", killing_collect)
    killed = str(tmp_path / "killed.pkl.gz")
    write_traces(searcher, file_jobs(recs, 5), killed, {}, RunConfig(executor="ray", quiet=True))
    assert marker.exists()  # a worker did die
    assert_same_data(_records_of(local), _records_of(killed))


def test_ray_neural_traces_equal_a_local_run(local_ray, tmp_path, tiny_checkpoint):
    recs = _records(6, seed=1)
    evo = EvolutionConfig(population_size=8, num_generations=4, collect_trajectory=True, early_stop=False)
    sampling = SamplingConfig(checkpoint=tiny_checkpoint, device="cpu", dtype="float64")
    jobs = file_jobs(recs, 3)
    outs = []
    for name, executor in (("local", "local"), ("ray", "ray")):
        path = str(tmp_path / f"{name}.pkl.gz")
        write_traces(Searcher(evo, sampling), jobs, path, {},
                     RunConfig(executor=executor, batch_size=4, num_workers=1, quiet=True))  # one actor: one torch import
        outs.append(_records_of(path))
    assert_same_data(outs[0], outs[1])


def test_a_local_partial_store_resumes_on_ray(local_ray, tmp_path, monkeypatch):
    import nsr.drivers as drivers

    recs = _records(8, seed=2)
    searcher = Searcher(EvolutionConfig(population_size=15, num_generations=6, collect_trajectory=True))
    jobs = file_jobs(recs, 9)
    ref = str(tmp_path / "ref.pkl.gz")
    write_traces(searcher, jobs, ref, {}, RunConfig(num_workers=1, quiet=True))
    out = str(tmp_path / "out.pkl.gz")
    real = drivers.run_jobs

    def interrupted(*a, **kw):  # three results, then Ctrl-C
        for k, item in enumerate(real(*a, **kw)):
            if k == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(drivers, "run_jobs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_traces(searcher, jobs, out, {}, RunConfig(num_workers=1, quiet=True))
    monkeypatch.setattr(drivers, "run_jobs", real)
    assert os.path.isdir(out + ".partial") and not os.path.exists(out)
    write_traces(searcher, jobs, out, {}, RunConfig(executor="ray", quiet=True), resume=True)
    assert_same_data(_records_of(ref), _records_of(out))


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path):
    from helpers import assert_one_line_error

    proc = run_cli("generate_traces", ["--executor", "ray", "--ray_address", "127.0.0.1:9", "--output",
                                       tmp_path / "o.pkl.gz", "--quiet"], timeout=180)
    assert_one_line_error(proc, "ray")
    assert not os.path.exists(tmp_path / "o.pkl.gz")
