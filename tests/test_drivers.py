"""nsr/drivers.py, the one batch driver: worker processes (results equal a serial run, a worker killed
mid-task is replaced and its task rerun), run_jobs, and write_traces' refusal to replace an output or an
interrupted run's partial store unless told (--overwrite / --resume)."""
import os
import signal

import numpy as np
import pytest
from helpers import (assert_one_line_error, assert_same_data, run_in_process, simple_record, tree_listing,
                     without_timing, write_expressions)

from nsr import safe_io
from nsr.config import EvolutionConfig, RunConfig
from nsr.drivers import Job, WorkerPool, file_jobs, run_jobs, trace_result, write_traces
from nsr.safe_io import InputError
from nsr.search import Searcher
from nsr.traces import load_traces

# ----------------------------------------------------------------------------
# worker processes


def _square(payload):
    i, _marker = payload
    return i, i * i


def _die_once(payload):
    """Kills its own process (SIGKILL: no cleanup, no reply) the first time it sees the marker file."""
    i, marker = payload
    if i == 3 and marker and os.path.exists(marker):
        os.unlink(marker)
        os.kill(os.getpid(), signal.SIGKILL)
    return i, i * i


def _always_die(payload):
    os.kill(os.getpid(), signal.SIGKILL)


def _raise(payload):
    i, _ = payload
    if i == 2:
        raise InputError(f"bad record {i}")
    return i, i


def test_worker_pool_results_equal_the_serial_ones():
    payloads = [(i, None) for i in range(12)]
    serial = sorted(map(_square, payloads))
    assert sorted(WorkerPool(3).imap_unordered(_square, payloads)) == serial
    assert sorted(WorkerPool(1).imap_unordered(_square, iter(payloads))) == serial  # any iterable


def test_a_worker_killed_mid_task_is_replaced_and_the_task_rerun(tmp_path):
    marker = tmp_path / "kill-me"
    marker.write_text("")
    payloads = [(i, str(marker)) for i in range(8)]
    pool = WorkerPool(2)
    got = sorted(pool.imap_unordered(_die_once, payloads))
    assert not marker.exists()  # the worker did die on task 3 ...
    assert got == sorted(map(_square, payloads))  # ... and every result is there, once
    assert pool.procs == {}  # closed: no workers left behind


def test_a_task_that_kills_every_worker_fails_after_the_retries():
    with pytest.raises(RuntimeError, match="died 3 times"):
        list(WorkerPool(2, retries=2).imap_unordered(_always_die, [(0, None), (1, None)]))


def test_an_exception_in_a_worker_reaches_the_parent():
    with pytest.raises(InputError, match="bad record 2"):
        list(WorkerPool(2).imap_unordered(_raise, [(i, None) for i in range(5)]))


# ----------------------------------------------------------------------------
# run_jobs


def _records(n=5):
    rng = np.random.default_rng(2)
    out = []
    for i in range(n):
        X = rng.uniform(-2, 2, size=(20, 1))
        out.append({"id": 50 + i, "expression": f"p{i}", "X": X, "y": X[:, 0] ** 3 + i * X[:, 0]})
    return out


EVO = EvolutionConfig(population_size=10, num_generations=5, early_stop=False, collect_trajectory=True)


_KILL_MARKER = {}


def _collect_killing_once(searcher, job, problem, seconds):
    """trace_result, but the worker computing job 2 is SIGKILLed once (after its work, before its reply)."""
    marker = _KILL_MARKER.get("path")
    if job.index == 2 and marker and os.path.exists(marker):
        os.unlink(marker)
        os.kill(os.getpid(), signal.SIGKILL)
    return trace_result(searcher, job, problem, seconds)


def test_run_jobs_in_workers_equals_the_serial_run_even_when_a_worker_is_killed(tmp_path):
    jobs = file_jobs(_records(), seed=11)
    serial = {j.index: r for j, r in run_jobs(Searcher(EVO), jobs, trace_result, num_workers=1)}
    assert sorted(serial) == [0, 1, 2, 3, 4]
    marker = tmp_path / "kill"
    marker.write_text("")
    _KILL_MARKER["path"] = str(marker)
    try:
        counted = []
        parallel = {j.index: r for j, r in run_jobs(Searcher(EVO), jobs, _collect_killing_once, num_workers=2,
                                                     progress=counted.append)}
    finally:
        _KILL_MARKER.clear()
    assert not marker.exists() and sum(counted) == 5
    for i in range(5):
        assert_same_data(without_timing(parallel[i]), without_timing(serial[i]), f"record {i}")


def test_jobs_fix_the_generator_whatever_the_order_and_grouping():
    recs = _records(4)
    jobs = file_jobs(recs, seed=7)
    assert [j.index for j in jobs] == [0, 1, 2, 3] and jobs[0].problem_id == 50
    alone = {j.index: r for j, r in run_jobs(Searcher(EVO), jobs, trace_result)}
    picked = {j.index: r for j, r in run_jobs(Searcher(EVO), [jobs[3], jobs[1]], trace_result)}
    for i in (1, 3):
        assert_same_data(without_timing(picked[i]), without_timing(alone[i]))
    # a job's index (its position in the file), not its position in the list, seeds it
    moved = {j.index: r for j, r in run_jobs(Searcher(EVO), [Job(1, recs[3], 7)], trace_result)}
    assert moved[1]["trajectory"]["generations"][1]["expressions"] != alone[3]["trajectory"]["generations"][1][
        "expressions"]


# ----------------------------------------------------------------------------
# write_traces: outputs and partial stores are never replaced unless asked


def _write(output, **kw):
    jobs = file_jobs(_records(3), seed=3)
    return write_traces(Searcher(EVO), jobs, str(output), {"command": "test"}, RunConfig(seed=3, quiet=True,
                                                                                        num_workers=1), **kw)


def test_write_traces_refuses_an_existing_output_without_overwrite(tmp_path):
    out = tmp_path / "t.pkl.gz"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match="--overwrite"):
        _write(out)
    assert out.read_bytes() == b"precious" and tree_listing(tmp_path) == {"t.pkl.gz"}  # no partial store either
    records, meta = _write(out, overwrite=True)
    assert len(load_traces(str(out))["records"]) == 3 == meta["num_records"]
    assert tree_listing(tmp_path) == {"t.pkl.gz"}


def test_write_traces_refuses_a_partial_store_without_resume_or_overwrite(tmp_path):
    out = tmp_path / "t.pkl.gz"
    full, _ = _write(tmp_path / "ref.pkl.gz")
    part = tmp_path / "t.pkl.gz.partial" / "part-00000.pkl.gz"
    fingerprint = load_traces(str(tmp_path / "ref.pkl.gz"))["metadata"]["fingerprint"]
    safe_io.save(str(part), "partial_traces", {"fingerprint": fingerprint}, full[:1])
    before = part.read_bytes()
    with pytest.raises(InputError, match="--resume") as e:
        _write(out)
    assert "--overwrite" in str(e.value)
    assert part.read_bytes() == before and not out.exists()
    # --resume continues it (the finished record is taken as it is) ...
    resumed, _ = _write(out, resume=True)
    for a, b in zip(resumed, full):
        assert_same_data(without_timing(a), without_timing(b))
    assert not part.parent.exists()  # the store is removed once the output is written
    # ... and --overwrite discards it
    safe_io.save(str(part), "partial_traces", {"fingerprint": fingerprint}, full[:1])
    out.unlink()
    _write(out, overwrite=True)
    assert not part.parent.exists() and out.exists()


def test_write_traces_refuses_an_output_that_is_an_input(tmp_path):
    inp = write_expressions(tmp_path / "in.pkl.gz", _records(2))
    before = open(inp, "rb").read()
    with pytest.raises(InputError, match="also an input"):
        _write(inp, overwrite=True, inputs=[inp])
    assert open(inp, "rb").read() == before


def test_an_interrupted_run_keeps_its_finished_results_for_resume(tmp_path, monkeypatch):
    """SIGINT in the middle: finished records are saved to OUTPUT.partial/, nothing at OUTPUT; --resume
    finishes the run with the same records as an uninterrupted one."""
    import nsr.drivers as drivers

    out = tmp_path / "t.pkl.gz"
    calls = []
    orig = drivers.trace_result

    def interrupt_on_the_third(searcher, job, problem, seconds):
        calls.append(job.index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return orig(searcher, job, problem, seconds)

    monkeypatch.setattr(drivers, "trace_result", interrupt_on_the_third)
    with pytest.raises(KeyboardInterrupt) as e:
        _write(out)
    assert "--resume" in e.value.nsr_note
    assert not out.exists()
    saved = [f for f in os.listdir(tmp_path / "t.pkl.gz.partial") if f.endswith(".pkl.gz")]
    assert saved
    monkeypatch.setattr(drivers, "trace_result", orig)
    resumed, _ = _write(out, resume=True)
    reference, _ = _write(tmp_path / "ref.pkl.gz")
    for a, b in zip(resumed, reference):
        assert_same_data(without_timing(a), without_timing(b))


def test_generate_traces_cli_needs_overwrite_to_replace_its_output(tmp_path, capsys):
    src = write_expressions(tmp_path / "in" / "easy.pkl.gz", [simple_record(0), simple_record(1, seed=1)])
    out = tmp_path / "out"
    args = ["--expressions_file", src, "--output_dir", out, "--num_generations", 3, "--population_size", 6,
            "--num_workers", 1, "--quiet"]
    assert run_in_process("generate_traces", args, capsys).returncode == 0
    first = (out / "gen3_easy.pkl.gz").read_bytes()
    proc = run_in_process("generate_traces", args, capsys)
    assert_one_line_error(proc, "--overwrite")
    assert (out / "gen3_easy.pkl.gz").read_bytes() == first and os.listdir(out) == ["gen3_easy.pkl.gz"]
    proc = run_in_process("generate_traces", args + ["--overwrite", "--seed", 5], capsys)
    assert proc.returncode == 0, proc.stderr
    assert load_traces(str(out / "gen3_easy.pkl.gz"))["metadata"]["seed"] == 5


def test_no_early_stop_through_generate_traces(tmp_path, capsys):
    """simple_record's target is a seed of the initial population: solved at generation 0."""
    src = write_expressions(tmp_path / "easy.pkl.gz", [simple_record(0)])
    lengths = {}
    for extra in ([], ["--no_early_stop"]):
        out = tmp_path / f"out{len(extra)}"
        proc = run_in_process("generate_traces", ["--expressions_file", src, "--output_dir", out, "--num_generations",
                                                  4, "--population_size", 6, "--quiet"] + extra, capsys)
        assert proc.returncode == 0, proc.stderr
        (rec,) = load_traces(str(out / "gen4_easy.pkl.gz"))["records"]
        assert rec["solved"] and rec["basicsr_params"]["early_stop"] == (not extra)
        lengths[bool(extra)] = len(rec["trajectory"]["generations"])
    assert lengths == {False: 1, True: 4}


@pytest.mark.parametrize("signal_exc,code,name", [("Terminated", 143, "SIGTERM"), ("KeyboardInterrupt", 130, "SIGINT")])
def test_a_signal_inside_compiled_code_is_still_a_clean_stop(capsys, signal_exc, code, name):
    """A signal handled while a numba kernel runs surfaces as SystemError("... returned a result with an
    exception set") chained to the interrupt (seen in the signals benchmark): still exit 130/143, one line, the
    driver's note kept."""
    from nsr import cli

    def main(argv):
        try:
            raise getattr(cli, signal_exc, None) or KeyboardInterrupt()
        except BaseException as inner:
            err = SystemError("CPUDispatcher(<function breed>) returned a result with an exception set")
            err.nsr_note = "3 finished results are in OUT.partial; rerun with --resume"
            raise err from inner

    assert cli.run_main(main, []) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"interrupted by {name}" in err and "rerun with --resume" in err

    def broken(argv):
        raise SystemError("a real bug")

    with pytest.raises(SystemError):
        cli.run_main(broken, [])
