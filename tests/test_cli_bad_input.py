"""Bad input for the three command-line scripts.

Every case must give exit status 2 and a one-line error naming the problem (no
traceback), leave no output file behind (no temporary or partial file either)
and leave the input file byte-identical."""
import gzip
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import (ROOT, SCRIPTS, assert_one_line_error, denied_prefix, run_cli, run_in_process, simple_record,
                     tree_listing)

from nsr import safe_io
from nsr.safe_io import FORMAT_VERSION

FILE_SCRIPTS = ("generate_traces", "basic_sr", "generate_expressions")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _expressions(records, metadata=None):
    return safe_io.dumps("expressions", {"operator_set": "arith"} if metadata is None else metadata, records)


def _raw(obj):
    return gzip.compress(pickle.dumps(obj))


def _rec(**changes):
    r = simple_record(0, n=12)
    r.update(changes)
    return r


# name -> (bytes of the file, or None for no file; words one of which the error must contain)
BAD_FILES = {
    "missing": (lambda t: None, ("no such file", "not found", "does not exist")),
    "not_gzip": (lambda t: pickle.dumps({"format": "expressions"}), ("gzip",)),
    "empty_file": (lambda t: b"", ("gzip", "empty")),
    "truncated_gzip": (lambda t: _expressions([_rec()])[:60], ("truncated", "corrupt")),
    "gzip_of_garbage": (lambda t: gzip.compress(b"\x80\x04not a pickle"), ("pickle", "corrupt")),
    "plain_list": (lambda t: _raw([1, 2, 3]), ("not a", "expected")),
    "wrong_format": (lambda t: _raw({"format": "traces", "format_version": FORMAT_VERSION, "metadata": {},
                                     "records": [_rec()]}), ("traces", "format")),
    "unknown_format": (lambda t: _raw({"format": "weights", "format_version": FORMAT_VERSION, "metadata": {},
                                       "records": []}), ("weights", "format")),
    "wrong_version": (lambda t: _raw({"format": "expressions", "format_version": 999, "metadata": {},
                                      "records": [_rec()]}), ("version",)),
    "disallowed_pickle": (lambda t: _raw(_Evil(t / "pwned")), ("refus", "not allowed", "unsafe")),
    "disallowed_inside": (lambda t: _raw({"format": "expressions", "format_version": FORMAT_VERSION,
                                          "metadata": {}, "records": [_Evil(t / "pwned")]}),
                          ("refus", "not allowed", "unsafe")),
    # (safe_io no longer writes object arrays at all: the bad file is a plain pickle of the format-1 layout)
    "object_array": (lambda t: _raw({"format": "expressions", "format_version": 1, "metadata": {"operator_set": "arith"},
                                     "records": [_rec(X=np.array([[1.0], [2.0]], dtype=object))]}), ("object",)),
    "records_not_list": (lambda t: _raw({"format": "expressions", "format_version": FORMAT_VERSION,
                                         "metadata": {}, "records": {"a": 1}}), ("records",)),
    "record_not_dict": (lambda t: _expressions([[1, 2]]), ("record",)),
    "record_without_y": (lambda t: _expressions([{"id": 0, "X": np.zeros((3, 1))}]), ("lacks", "missing", "y")),
    "xy_shape_mismatch": (lambda t: _expressions([_rec(y=np.zeros(5))]), ("points", "shape", "mismatch")),
    "X_3d": (lambda t: _expressions([_rec(X=np.zeros((12, 1, 1)))]), ("2-d", "shape", "dimension")),
    "X_not_array": (lambda t: _expressions([_rec(X=[[1.0]] * 12)]), ("array",)),
    "y_strings": (lambda t: _expressions([_rec(y=np.array(["a"] * 12))]), ("numeric",)),
    "nan_in_y": (lambda t: _expressions([_rec(y=np.where(np.arange(12) == 3, np.nan, 1.0))]), ("nan",)),
    "inf_in_X": (lambda t: _expressions([_rec(X=np.where(np.arange(12)[:, None] == 5, np.inf, 1.0))]), ("inf",)),
    "nan_in_second_record": (lambda t: _expressions([_rec(), dict(_rec(y=np.full(12, np.nan)), id=1)]),
                             ("nan",)),
    "empty_dataset": (lambda t: _expressions([]), ("no expressions", "empty", "no records")),
    "no_points": (lambda t: _expressions([_rec(X=np.zeros((0, 1)), y=np.zeros(0))]), ("no data", "empty",
                                                                                     "no points")),
    "num_vars_mismatch": (lambda t: _expressions([_rec(num_vars=3)]), ("num_vars",)),
    "too_many_variables": (lambda t: _expressions([_rec(X=np.zeros((12, 11)), num_vars=11)]), ("variables",)),
}

# whether an empty --exclude file is an error is not specified, so generate_expressions skips that case
NOT_FOR_EXCLUDE = {"empty_dataset"}


def _file_args(script, path, out):
    if script == "generate_traces":
        return ["--expressions_file", path, "--output_dir", out, "--num_generations", 2, "--population_size", 4,
                "--num_workers", 1, "--quiet"]
    if script == "basic_sr":
        return ["--expressions_file", path, "--num_generations", 2, "--population_size", 4]
    return ["--exclude", path, "--output_dir", out, "--num_expressions", 1, "--num_points", 10, "--quiet"]


def _setup(tmp_path, content):
    inp = tmp_path / "input"
    inp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    path = inp / "bad.pkl.gz"
    if content is not None:
        path.write_bytes(content)
    return path, out


def check_bad_run(tmp_path, proc, words, path=None, before_bytes=None, before_tree=None):
    line = assert_one_line_error(proc, *words)
    if before_tree is not None:
        after = tree_listing(tmp_path)
        assert after == before_tree, f"files appeared or vanished: {after ^ before_tree}"
        assert not [f for f in after if f.endswith((".tmp", ".partial"))]
    if before_bytes is not None:
        assert path.read_bytes() == before_bytes, "the input file was changed"
    assert not (tmp_path / "pwned").exists(), "code from the pickle ran"
    return line


# The categories the issue names run as real subprocesses for every script; the
# remaining variants of a damaged file take the same code path and run in-process
# through each script's main() (same checks, a fraction of the time).
SUBPROCESS_FILE_CASES = ("missing", "not_gzip", "truncated_gzip", "plain_list", "wrong_format", "wrong_version",
                         "disallowed_pickle", "xy_shape_mismatch", "nan_in_y", "inf_in_X", "empty_dataset")


def _file_cases(names):
    return [(s, c) for s in FILE_SCRIPTS for c in names if not (s == "generate_expressions" and c in NOT_FOR_EXCLUDE)]


SUB_CASES = _file_cases(SUBPROCESS_FILE_CASES)
INPROC_CASES = _file_cases([c for c in BAD_FILES if c not in SUBPROCESS_FILE_CASES])


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Start every subprocess case of this module at once, a few at a time; tests read the results."""
    jobs = {}
    for script, case in SUB_CASES:
        tmp = tmp_path_factory.mktemp(f"{script}-{case}")
        path, out = _setup(tmp, BAD_FILES[case][0](tmp))
        jobs[("file", script, case)] = (tmp, path, _file_args(script, path, out))
    for script, cases in ARG_CASES.items():
        for i, (extra, _words) in enumerate(cases):
            tmp = tmp_path_factory.mktemp(f"{script}-arg{i}")
            path, out = _setup(tmp, None)
            path.write_bytes(_valid_file_bytes())
            jobs[("arg", script, i)] = (tmp, path, _base_args(script, path, out) + extra)
    for script in ("generate_traces", "basic_sr"):
        tmp = tmp_path_factory.mktemp(f"{script}-opset")
        path, out = _setup(tmp, _expressions([_rec()], {"operator_set": "quantum"}))
        jobs[("opset", script, 0)] = (tmp, path, _file_args(script, path, out))
    snap = {k: (tmp, path, path.read_bytes() if path.is_file() else None, tree_listing(tmp))
            for k, (tmp, path, _a) in jobs.items()}
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {k: pool.submit(run_cli, k[1], args) for k, (_t, _p, args) in jobs.items()}
        return {k: (f.result(),) + snap[k] for k, f in futures.items()}


def _check_launched(launched, key, words):
    proc, tmp, path, content, before_tree = launched[key]
    return check_bad_run(tmp, proc, words, path if content is not None else None, content, before_tree)


@pytest.mark.parametrize("script,case", SUB_CASES, ids=[f"{s}-{c}" for s, c in SUB_CASES])
def test_bad_input_file(launched, script, case):
    line = _check_launched(launched, ("file", script, case), BAD_FILES[case][1])
    assert "bad.pkl.gz" in line  # names the file


@pytest.mark.parametrize("script,case", INPROC_CASES, ids=[f"{s}-{c}" for s, c in INPROC_CASES])
def test_bad_input_file_in_process(tmp_path, capsys, script, case):
    make, words = BAD_FILES[case]
    content = make(tmp_path)
    path, out = _setup(tmp_path, content)
    before_tree = tree_listing(tmp_path)
    proc = run_in_process(script, _file_args(script, path, out), capsys)
    line = check_bad_run(tmp_path, proc, words, path, content, before_tree)
    assert "bad.pkl.gz" in line


@pytest.mark.parametrize("script", FILE_SCRIPTS)
def test_folder_instead_of_a_file(tmp_path, capsys, script):
    path, out = _setup(tmp_path, None)
    path.mkdir()
    before_tree = tree_listing(tmp_path)
    proc = run_in_process(script, _file_args(script, path, out), capsys)
    check_bad_run(tmp_path, proc, ("folder", "directory"), before_tree=before_tree)


@pytest.mark.parametrize("script", FILE_SCRIPTS)
def test_unreadable_file(tmp_path, script):
    content = _expressions([_rec()])
    path, out = _setup(tmp_path, content)
    os.chmod(path, 0)
    try:
        prefix = denied_prefix(path, "rb")  # a file of mode 000
        before_tree = tree_listing(tmp_path)
        cmd = prefix + [sys.executable, SCRIPTS[script]] + [str(a) for a in _file_args(script, path, out)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        check_bad_run(tmp_path, proc, ("permission", "cannot read", "unreadable"), before_tree=before_tree)
    finally:
        os.chmod(path, 0o644)
    assert path.read_bytes() == content


# ----------------------------------------------------------------------------
# metadata of an expressions file


@pytest.mark.parametrize("script", ["generate_traces", "basic_sr"])
def test_unknown_operator_set_in_the_file_metadata(launched, script):
    _check_launched(launched, ("opset", script, 0), ("quantum",))


def _metadata_case(tmp_path, capsys, script, metadata, words):
    content = _expressions([_rec()], metadata)
    path, out = _setup(tmp_path, content)
    before_tree = tree_listing(tmp_path)
    proc = run_in_process(script, _file_args(script, path, out), capsys)
    check_bad_run(tmp_path, proc, words, path, content, before_tree)


@pytest.mark.parametrize("script", ["generate_traces", "basic_sr"])
def test_non_string_operator_set_in_the_file_metadata(tmp_path, capsys, script):
    _metadata_case(tmp_path, capsys, script, {"operator_set": ["arith"]}, ("operator",))


@pytest.mark.parametrize("script", ["generate_traces", "basic_sr"])
@pytest.mark.parametrize("constants", [["abc"], 2.0], ids=["string", "scalar"])
def test_malformed_constants_in_the_file_metadata(tmp_path, capsys, script, constants):
    _metadata_case(tmp_path, capsys, script, {"operator_set": "arith", "constants": constants}, ("constant",))


@pytest.mark.parametrize("script", ["generate_traces", "basic_sr"])
def test_non_finite_constant_in_the_file_metadata(tmp_path, capsys, script):
    _metadata_case(tmp_path, capsys, script, {"operator_set": "arith", "constants": [float("nan")]},
                   ("constant",))


# ----------------------------------------------------------------------------
# bad arguments (with a valid input file, so the argument is what is wrong)


# Bad arguments, with a valid input file so that the argument is what is wrong.
# ARG_CASES (zero or negative sizes, unknown operator set, malformed --shard) run as
# subprocesses; MORE_ARG_CASES run in-process through main().
ARG_CASES = {
    "generate_traces": [
        (["--population_size", 0], ("population_size",)),
        (["--num_generations", -1], ("num_generations",)),
        (["--operator_set", "bogus"], ("operator_set",)),
        (["--shard", "3"], ("shard",)),
        (["--shard", "2/2"], ("shard",)),
        (["--shard", "a/b"], ("shard",)),
    ],
    "basic_sr": [
        (["--population_size", 0], ("population_size",)),
        (["--num_generations", -1], ("num_generations",)),
        (["--operator_set", "bogus"], ("operator_set",)),
    ],
    "generate_expressions": [
        (["--num_expressions", 0], ("num_expressions",)),
        (["--num_points", -1], ("num_points",)),
        (["--operator_set", "bogus"], ("operator_set",)),
    ],
}
MORE_ARG_CASES = {
    "generate_traces": [
        (["--population_size", 1], ("population_size",)),
        (["--population_size", -3], ("population_size",)),
        (["--population_size", "ten"], ("population_size",)),
        (["--num_generations", 0], ("num_generations",)),
        (["--max_size", 0], ("max_size",)),
        (["--max_depth", -2], ("max_depth",)),
        (["--tournament_size", 0], ("tournament_size",)),
        (["--max_expressions", 0], ("max_expressions",)),
        (["--num_workers", 0], ("num_workers",)),
        (["--crossover_prob", 1.5], ("crossover_prob",)),
        (["--parsimony", -1], ("parsimony",)),
        (["--constants", "nan"], ("constants",)),
        (["--shard", "1/0"], ("shard",)),
        (["--shard", "-1/2"], ("shard",)),
        (["--shard", "0/2/4"], ("shard",)),
        (["--shard", "/"], ("shard",)),
        (["--shard", "7/8"], ("shard",)),  # well formed, but it selects none of the 4 expressions
        (["--batch_size", 4], ("batch_size",)),  # the expert runs in processes, not batches
        (["--beta", 0.5], ("--beta", "checkpoint")),  # mixing needs a model
        (["--autoregressive"], ("--autoregressive", "checkpoint")),
        (["--save_every", 0], ("save_every",)),
        (["--time_limit", -1], ("time_limit",)),
        (["--mse_threshold", "nan"], ("mse_threshold",)),
        (["--unknown_flag"], ("unknown_flag", "unrecognized")),
    ],
    "basic_sr": [
        (["--population_size", 1], ("population_size",)),
        (["--num_generations", 0], ("num_generations",)),
        (["--max_size", 0], ("max_size",)),
        (["--num_points", 0], ("num_points",)),
        (["--max_expressions", -2], ("max_expressions",)),
        (["--seed", -1], ("seed",)),
        (["--x_range", 0, "inf"], ("x_range",)),
    ],
    "generate_expressions": [
        (["--num_expressions", -5], ("num_expressions",)),
        (["--num_points", 0], ("num_points",)),
        (["--complexity", 1.5], ("complexity",)),
        (["--complexity", -0.1], ("complexity",)),
        (["--min_vars", 0], ("min_vars",)),
        (["--max_vars", 11], ("max_vars",)),
        (["--min_vars", 3, "--max_vars", 2], ("min_vars", "max_vars")),
        (["--x_min", 1, "--x_max", 1], ("x_min", "x_max")),
        (["--noise", -0.5], ("noise",)),
        (["--constants", "inf"], ("constants",)),
    ],
}


def _valid_file_bytes():
    return _expressions([simple_record(i, n=20, nv=1 + i % 2, seed=i) for i in range(4)],
                        {"operator_set": "arith", "constants": [1.0]})


def _base_args(script, path, out):
    if script == "generate_traces":
        return ["--expressions_file", path, "--output_dir", out, "--num_generations", 2, "--population_size", 4,
                "--quiet"]
    if script == "basic_sr":
        return ["--expressions_file", path, "--num_generations", 2, "--population_size", 4]
    return ["--output_dir", out, "--num_expressions", 1, "--num_points", 10, "--quiet"]


def _ids(cases):
    return [(s, i) for s, lst in cases.items() for i in range(len(lst))], \
        [f"{s}-{'_'.join(str(a) for a in lst[i][0])}" for s, lst in cases.items() for i in range(len(lst))]


ARGS, ARG_IDS = _ids(ARG_CASES)
MORE_ARGS, MORE_ARG_IDS = _ids(MORE_ARG_CASES)


@pytest.mark.parametrize("script,i", ARGS, ids=ARG_IDS)
def test_bad_arguments(launched, script, i):
    _check_launched(launched, ("arg", script, i), ARG_CASES[script][i][1])


@pytest.mark.parametrize("script,i", MORE_ARGS, ids=MORE_ARG_IDS)
def test_more_bad_arguments(tmp_path, capsys, script, i):
    extra, words = MORE_ARG_CASES[script][i]
    path, out = _setup(tmp_path, _valid_file_bytes())
    content = path.read_bytes()
    before_tree = tree_listing(tmp_path)
    proc = run_in_process(script, _base_args(script, path, out) + extra, capsys)
    check_bad_run(tmp_path, proc, words, path, content, before_tree)


@pytest.mark.parametrize("script", ["generate_traces", "generate_expressions"])
def test_output_path_that_is_a_folder(tmp_path, capsys, script):
    path, out = _setup(tmp_path, _valid_file_bytes())
    content = path.read_bytes()
    target = tmp_path / "taken"
    target.mkdir()
    before_tree = tree_listing(tmp_path)
    if script == "generate_traces":
        args = ["--expressions_file", path, "--output", target, "--num_generations", 2, "--population_size", 4,
                "--max_expressions", 1, "--num_workers", 1, "--quiet"]
    else:
        args = ["--output", target, "--num_expressions", 1, "--num_points", 10, "--quiet"]
    proc = run_in_process(script, args, capsys)
    check_bad_run(tmp_path, proc, ("taken",), path, content, before_tree)


def test_traces_output_path_equal_to_the_input(tmp_path, small_expressions_file):
    path = Path(small_expressions_file)
    content = path.read_bytes()
    before_tree = tree_listing(tmp_path)
    proc = run_cli("generate_traces", ["--expressions_file", path, "--output", path, "--num_generations", 2,
                                       "--population_size", 4, "--quiet"])
    check_bad_run(tmp_path, proc, ("input",), path, content, before_tree)


@pytest.mark.parametrize("target,words", [
    ("x0 +", ("x0 +", "end", "parse")),
    ("foo(x0)", ("foo",)),
    ("x0 ; import os", ("parse", "position", ";")),
    ("(x0 * 0.0) ^ -1.0", ("finite",)),
])
def test_basic_sr_bad_target(tmp_path, target, words):
    before_tree = tree_listing(tmp_path)
    proc = run_cli("basic_sr", ["--target", target, "--num_generations", 2, "--population_size", 4])
    check_bad_run(tmp_path, proc, words, before_tree=before_tree)


def test_basic_sr_target_and_file_are_exclusive(tmp_path, small_expressions_file):
    proc = run_cli("basic_sr", ["--target", "x0", "--expressions_file", small_expressions_file])
    assert_one_line_error(proc, "not allowed", "expressions_file")
