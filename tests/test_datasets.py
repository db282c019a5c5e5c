"""Expression datasets: the sampler, the shipped files and datasets/generate_expressions.py."""
import os
import re

import numpy as np
import pytest
from helpers import run_cli

from nsr import datasets
from nsr.datasets import (DEFAULT_EXPRESSIONS, NGUYEN, NGUYEN_EXPRESSIONS, DatasetConfig, count_label,
                          degenerate_reason, function_signature, load_expressions, nguyen_records,
                          operators_for_complexity)
from nsr.expressions import evaluate, format_infix, is_constant, parse, variables_used
from nsr.operators import ARITY, OPERATOR_SETS

RECORD_KEYS = {"id", "expression", "X", "y", "num_vars"}


def generate_dataset(n, operator_set="arith", complexity=0.5, num_vars=(1, 3), constants=(1.0,), n_points=100,
                     x_range=(-2.0, 2.0), noise=0.0, seed=0, exclude=()):
    """nsr.datasets.generate_dataset through its DatasetConfig (the tests' short positional form)."""
    cfg = DatasetConfig(operator_set=operator_set, num_expressions=n, complexity=complexity, min_vars=num_vars[0],
                        max_vars=num_vars[1], constants=tuple(constants), num_points=n_points, x_min=x_range[0],
                        x_max=x_range[1], noise=noise, seed=seed)
    return datasets.generate_dataset(cfg, exclude=exclude)
NAME_RE = r"(?P<opset>[a-z]+)_(?P<n>[0-9.]+k?)_c(?P<c>\d\d)_(?P<stamp>\d[\d_T\-]*\d)\.pkl\.gz"


def assert_good_record(r, opset, constants, n_points=None, x_range=None):
    assert RECORD_KEYS <= set(r)
    X, y = r["X"], r["y"]
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert X.ndim == 2 and y.shape == (X.shape[0],)
    if n_points is not None:
        assert X.shape[0] == n_points
    assert 1 <= r["num_vars"] == X.shape[1] <= 3
    if x_range is not None:
        assert X.min() >= x_range[0] and X.max() <= x_range[1]
    tokens = parse(r["expression"])
    assert format_infix(tokens) == r["expression"]  # canonical text
    assert variables_used(tokens) == {f"x{i}" for i in range(r["num_vars"])}  # every variable matters
    allowed = set(OPERATOR_SETS[opset])
    assert {t for t in tokens if ARITY.get(t)} <= allowed
    assert {float(t) for t in tokens if is_constant(t)} <= {float(c) for c in constants}
    # not degenerate: finite, not huge, not constant
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1e6
    assert np.std(y) > 1e-6 * (1 + abs(np.mean(y)))


# ----------------------------------------------------------------------------
# the library


@pytest.mark.parametrize("n,label", [(1, "1"), (10, "10"), (50, "50"), (999, "999"), (1000, "1k"),
                                     (1500, "1.5k"), (2000, "2k"), (10000, "10k"), (100000, "100k")])
def test_count_label(n, label):
    assert count_label(n) == label


def test_operators_grow_with_complexity():
    counts = [operators_for_complexity(c / 10) for c in range(11)]
    assert counts[0] >= 1
    assert all(b >= a for a, b in zip(counts, counts[1:])) and counts[-1] > counts[0]


def test_degenerate_reason():
    x = np.linspace(-1, 1, 50)
    assert degenerate_reason(x) is None
    assert degenerate_reason(np.full(50, 3.0)) == "constant"
    assert degenerate_reason(np.where(x > 0, np.nan, x)) == "non-finite"
    assert degenerate_reason(np.where(x > 0, np.inf, x)) == "non-finite"
    assert degenerate_reason(x * 1e9) == "huge"


@pytest.mark.parametrize("opset,complexity", [("arith", 0.5), ("full", 0.5), ("arith", 0.2)])
def test_generate_dataset_records_are_valid(opset, complexity):
    recs = generate_dataset(8, opset, complexity, num_vars=(1, 3), constants=(1.0, 2.0), n_points=30,
                            x_range=(-2.0, 2.0), seed=3)
    assert [r["id"] for r in recs] == list(range(8))
    for r in recs:
        assert_good_record(r, opset, (1.0, 2.0), n_points=30, x_range=(-2.0, 2.0))
        np.testing.assert_array_equal(r["y"], evaluate(parse(r["expression"]), r["X"]))  # no noise
    assert len({r["expression"] for r in recs}) == 8
    assert len({function_signature(parse(r["expression"]), r["num_vars"]) for r in recs}) == 8


def test_complexity_drives_the_number_of_operators():
    def mean_ops(c):
        recs = generate_dataset(8, "arith", c, num_vars=(1, 2), n_points=20, seed=4)
        return np.mean([sum(1 for t in parse(r["expression"]) if ARITY.get(t)) for r in recs])

    assert mean_ops(0.1) < mean_ops(0.6)


def test_same_seed_same_dataset_and_different_seed_different():
    a = generate_dataset(4, "arith", 0.3, n_points=20, seed=5)
    b = generate_dataset(4, "arith", 0.3, n_points=20, seed=5)
    c = generate_dataset(4, "arith", 0.3, n_points=20, seed=6)
    assert [r["expression"] for r in a] == [r["expression"] for r in b]
    assert all(np.array_equal(r["X"], s["X"]) for r, s in zip(a, b))
    assert [r["expression"] for r in a] != [r["expression"] for r in c]


def test_degenerate_targets_are_rejected(monkeypatch):
    candidates = iter([
        ("-", "x0", "x0"),                    # constant
        ("*", "x0", "0.0"),                   # constant
        ("^", "exp", "x0", "1000.0"),         # inf for x0 > 0.71
        ("*", "x0", "1e9"),                   # huge
        ("+", "x0", "1.0"),                   # fine
    ])
    calls = []

    def fake_sample_tree(*a, **kw):
        calls.append(1)
        return next(candidates)

    monkeypatch.setattr(datasets, "sample_tree", fake_sample_tree)
    recs = generate_dataset(1, "arith", 0.5, num_vars=(1, 1), n_points=30, seed=0)
    assert [r["expression"] for r in recs] == ["(x0 + 1.0)"]
    assert len(calls) == 5


def test_targets_that_ignore_a_declared_variable_are_rejected(monkeypatch):
    candidates = iter([
        ("+", "x0", "1.0"),                          # x1 unused
        ("+", "+", "x0", "-", "1.0", "x0", "x1"),    # (x0 + (1 - x0)) + x1: x0 cancels
        ("+", "x0", "x1"),                           # fine
    ])
    monkeypatch.setattr(datasets, "sample_tree", lambda *a, **kw: next(candidates))
    recs = generate_dataset(1, "arith", 0.5, num_vars=(2, 2), n_points=30, seed=0)
    assert [r["expression"] for r in recs] == ["(x0 + x1)"]


def test_exclude_keeps_sets_disjoint():
    first = generate_dataset(6, "arith", 0.3, num_vars=(1, 2), n_points=20, seed=7)
    exclude = set()
    for r in first:
        exclude.add(r["expression"])
        exclude.add(function_signature(parse(r["expression"]), r["num_vars"]))
    again = generate_dataset(6, "arith", 0.3, num_vars=(1, 2), n_points=20, seed=7)
    assert {r["expression"] for r in again} == {r["expression"] for r in first}  # the control: same seed overlaps
    second = generate_dataset(6, "arith", 0.3, num_vars=(1, 2), n_points=20, seed=7, exclude=exclude)
    assert not {r["expression"] for r in second} & {r["expression"] for r in first}
    sig = {function_signature(parse(r["expression"]), r["num_vars"]) for r in first}
    assert not {function_signature(parse(r["expression"]), r["num_vars"]) for r in second} & sig


def test_function_signature_identifies_equal_functions():
    assert function_signature(parse("x0*2"), 1) == function_signature(parse("x0 + x0"), 1)
    assert function_signature(parse("(x0 + 1.0) * x1"), 2) == function_signature(parse("x0*x1 + x1"), 2)
    assert function_signature(parse("x0*2"), 1) != function_signature(parse("x0*3"), 1)
    assert function_signature(parse("x0"), 1) != function_signature(parse("x0"), 2)


def test_noise_is_a_fraction_of_the_target_spread():
    clean = generate_dataset(3, "arith", 0.4, n_points=400, seed=8)
    noisy = generate_dataset(3, "arith", 0.4, n_points=400, seed=8, noise=0.1)
    for c, r in zip(clean, noisy):
        f = evaluate(parse(r["expression"]), r["X"])
        ratio = np.std(r["y"] - f) / np.std(f)
        assert 0.05 < ratio < 0.2
    assert clean[0]["expression"] == noisy[0]["expression"]
    assert not np.array_equal(clean[0]["y"], noisy[0]["y"])


# ----------------------------------------------------------------------------
# the shipped files


def test_shipped_default_file():
    data = load_expressions(DEFAULT_EXPRESSIONS)
    assert os.path.basename(DEFAULT_EXPRESSIONS) == "arith_10_c05_default.pkl.gz"
    recs = data["records"]
    assert len(recs) == 10
    meta = data["metadata"]
    assert meta["operator_set"] == "arith" and meta["complexity"] == 0.5
    assert "generate_expressions.py" in meta["command"]
    for r in recs:
        assert_good_record(r, "arith", meta["constants"])
        np.testing.assert_allclose(r["y"], evaluate(parse(r["expression"]), r["X"]), rtol=1e-12)
    assert len({r["id"] for r in recs}) == 10


def test_shipped_nguyen_file():
    data = load_expressions(NGUYEN_EXPRESSIONS)
    recs = data["records"]
    assert len(recs) == 12
    for i, (r, (name, text, nv, (lo, hi), n)) in enumerate(zip(recs, NGUYEN), start=1):
        assert r["name"] == name == f"Nguyen-{i}"
        assert r["X"].shape == (n, nv) and r["num_vars"] == nv
        assert r["X"].min() >= lo and r["X"].max() <= hi
        np.testing.assert_allclose(r["y"], evaluate(parse(r["expression"]), r["X"]), rtol=1e-12)
        np.testing.assert_allclose(r["y"], evaluate(parse(text), r["X"]), rtol=1e-12)


NGUYEN_FORMULAS = {
    1: lambda x, z: x ** 3 + x ** 2 + x,
    2: lambda x, z: x ** 4 + x ** 3 + x ** 2 + x,
    3: lambda x, z: x ** 5 + x ** 4 + x ** 3 + x ** 2 + x,
    4: lambda x, z: x ** 6 + x ** 5 + x ** 4 + x ** 3 + x ** 2 + x,
    5: lambda x, z: np.sin(x ** 2) * np.cos(x) - 1,
    6: lambda x, z: np.sin(x) + np.sin(x + x ** 2),
    7: lambda x, z: np.log(x + 1) + np.log(x ** 2 + 1),
    8: lambda x, z: np.sqrt(x),
    9: lambda x, z: np.sin(x) + np.sin(z ** 2),
    10: lambda x, z: 2 * np.sin(x) * np.cos(z),
    11: lambda x, z: x ** z,
    12: lambda x, z: x ** 4 - x ** 3 + 0.5 * z ** 2 - z,
}


def test_nguyen_targets_are_the_published_formulas():
    for r in load_expressions(NGUYEN_EXPRESSIONS)["records"]:
        X = r["X"]
        z = X[:, 1] if X.shape[1] > 1 else None
        np.testing.assert_allclose(r["y"], NGUYEN_FORMULAS[r["id"]](X[:, 0], z), rtol=1e-10, atol=1e-12)


def test_nguyen_records_are_reproducible_from_the_seed():
    shipped = load_expressions(NGUYEN_EXPRESSIONS)
    again = nguyen_records(shipped["metadata"].get("seed", 0))
    for a, b in zip(shipped["records"], again):
        np.testing.assert_array_equal(a["X"], b["X"])
        np.testing.assert_array_equal(a["y"], b["y"])
        assert a["expression"] == b["expression"]


# ----------------------------------------------------------------------------
# the command line


def _only_new_file(folder):
    files = os.listdir(folder)
    assert len(files) == 1, files
    return files[0]


def test_cli_writes_the_documented_name_and_contents(tmp_path):
    out = tmp_path / "out"
    args = ["--num_expressions", 4, "--complexity", 0.3, "--num_points", 25, "--seed", 3, "--constants", 1.0, 2.0,
            "--output_dir", out, "--quiet"]
    proc = run_cli("generate_expressions", args)
    assert proc.returncode == 0, proc.stderr
    name = _only_new_file(out)
    m = re.fullmatch(NAME_RE, name)
    assert m, name
    assert m["opset"] == "arith" and m["n"] == count_label(4) and m["c"] == "03"
    data = load_expressions(str(out / name))
    meta = data["metadata"]
    cmd = meta["command"]
    assert "generate_expressions.py" in cmd and "--num_expressions 4" in cmd and "--complexity 0.3" in cmd
    assert meta["operator_set"] == "arith" and meta["complexity"] == 0.3 and meta["seed"] == 3
    assert meta["num_points"] == 25 and meta["constants"] == [1.0, 2.0]
    assert "package_versions" in meta and "created" in meta
    recs = data["records"]
    assert len(recs) == 4
    for r in recs:
        assert_good_record(r, "arith", (1.0, 2.0), n_points=25, x_range=(-2.0, 2.0))
        np.testing.assert_array_equal(r["y"], evaluate(parse(r["expression"]), r["X"]))
    assert proc.stdout == ""  # --quiet


def test_cli_full_set_and_complexity_label(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("generate_expressions", ["--operator_set", "full", "--num_expressions", 3, "--complexity", 0.5,
                                            "--num_points", 30, "--x_min", 0.5, "--x_max", 3, "--max_vars", 2,
                                            "--output_dir", out, "--quiet"])
    assert proc.returncode == 0, proc.stderr
    name = _only_new_file(out)
    m = re.fullmatch(NAME_RE, name)
    assert m and m["opset"] == "full" and m["c"] == "05", name
    for r in load_expressions(str(out / name))["records"]:
        assert_good_record(r, "full", (1.0,), n_points=30, x_range=(0.5, 3.0))


def test_cli_output_flag_and_summary_line(tmp_path):
    path = tmp_path / "chosen.pkl.gz"
    proc = run_cli("generate_expressions", ["--num_expressions", 2, "--num_points", 10, "--output", path])
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path) == ["chosen.pkl.gz"]
    assert "2 expressions" in proc.stdout and str(path) in proc.stdout
    assert len(load_expressions(str(path))["records"]) == 2


def test_cli_exclude_keeps_files_disjoint(tmp_path):
    a = tmp_path / "a.pkl.gz"
    common = ["--num_expressions", 5, "--complexity", 0.3, "--num_points", 20, "--seed", 11, "--quiet"]
    assert run_cli("generate_expressions", common + ["--output", a]).returncode == 0
    same = tmp_path / "same.pkl.gz"
    assert run_cli("generate_expressions", common + ["--output", same]).returncode == 0
    b = tmp_path / "b.pkl.gz"
    proc = run_cli("generate_expressions", common + ["--output", b, "--exclude", a])
    assert proc.returncode == 0, proc.stderr
    ra, rs, rb = (load_expressions(str(p))["records"] for p in (a, same, b))
    ea, eb = {r["expression"] for r in ra}, {r["expression"] for r in rb}
    assert {r["expression"] for r in rs} == ea  # control: without --exclude the same seed repeats
    assert len(eb) == 5 and not ea & eb
    sig = lambda recs: {function_signature(parse(r["expression"]), r["num_vars"]) for r in recs}  # noqa: E731
    assert not sig(ra) & sig(rb)
    assert load_expressions(str(b))["metadata"]["excluded_files"] == ["a.pkl.gz"]


def test_cli_nguyen(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("generate_expressions", ["--nguyen", "--output_dir", out, "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(out) == ["nguyen_12.pkl.gz"]
    data = load_expressions(str(out / "nguyen_12.pkl.gz"))
    assert len(data["records"]) == 12 and data["metadata"]["operator_set"] == "full"
    for r in data["records"]:
        np.testing.assert_allclose(r["y"], evaluate(parse(r["expression"]), r["X"]), rtol=1e-12)
