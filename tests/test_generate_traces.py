"""generate_traces.py in expert mode: the default run, file naming, the record format,
sharding and worker-count independence."""
import os

import numpy as np
import pytest
from helpers import assert_same_data, run_cli, simple_record, without_timing, write_expressions

from nsr.datasets import DEFAULT_EXPRESSIONS, count_label, load_expressions
from nsr.evolution import OPERATOR_NAMES
from nsr.expressions import evaluate, parse
from nsr.traces import SOLVED_MSE, load_traces

RECORD_KEYS = {"expression_id", "index", "seed", "target_expression", "final_expression", "final_mse", "solved", "time",
               "trajectory", "basicsr_params", "binary_operators", "unary_operators", "constants", "num_vars",
               "X", "y", "source"}
GEN_KEYS = {"generation", "population_size", "expressions", "fitnesses", "mses", "heritages", "operators",
            "best_fitness", "best_mse", "best_expression"}
def run_ok(args, **kw):
    proc = run_cli("generate_traces", args, **kw)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def five_expressions(tmp_path_factory):
    """Five arith problems of one or two variables, not all solvable at once."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(5):
        nv = 1 + i % 2
        X = rng.uniform(-2, 2, size=(25, nv))
        y = X[:, 0] ** 2 + X[:, 0] * (i + 1) if nv == 1 else X[:, 0] * X[:, 1] - X[:, 1] * i
        expr = f"x0**2 + x0*{i + 1}" if nv == 1 else f"x0*x1 - x1*{i}"
        recs.append({"id": 100 + i, "expression": expr, "X": X, "y": y, "num_vars": nv})
    folder = tmp_path_factory.mktemp("in")
    return write_expressions(folder / "five_c05.pkl.gz", recs, {"operator_set": "arith", "constants": [1.0]})


# ----------------------------------------------------------------------------
# the default run


def test_default_flags_are_the_config_defaults_with_the_rollout_and_file_overrides():
    """Every flag of a config field defaults to the field's default, except the documented overrides
    (population 20 for rollouts; operator set and constants from the input file)."""
    import dataclasses

    import generate_traces
    from nsr.config import FILE_DEFAULTS, ROLLOUT_DEFAULTS, EvolutionConfig, RunConfig, SamplingConfig

    args = generate_traces.parse_args([])
    assert os.path.abspath(args.expressions_file) == os.path.abspath(DEFAULT_EXPRESSIONS)
    overrides = {**ROLLOUT_DEFAULTS, **FILE_DEFAULTS}
    checked = 0
    for cls in (EvolutionConfig, SamplingConfig, RunConfig):
        for f in dataclasses.fields(cls):
            if not f.metadata["cli"]:
                assert not hasattr(args, f.name), f.name
                continue
            assert getattr(args, f.name) == overrides.get(f.name, f.default), f.name
            checked += 1
    assert checked >= 20
    assert args.shard is None and args.max_expressions is None and not args.resume and not args.overwrite


def test_no_argument_run_on_the_shipped_default_file(tmp_path):
    """``python generate_traces.py`` with only the output folder redirected (to keep the repository clean)."""
    src_before = open(DEFAULT_EXPRESSIONS, "rb").read()
    proc = run_ok(["--output_dir", tmp_path])
    name = "gen50_arith_10_c05_default.pkl.gz"
    assert os.listdir(tmp_path) == [name]
    data = load_traces(str(tmp_path / name))
    src = load_expressions(DEFAULT_EXPRESSIONS)
    recs = data["records"]
    assert len(recs) == 10
    meta = data["metadata"]
    assert "generate_traces.py" in meta["command"]
    assert meta["parameters"]["population_size"] == 20 and meta["parameters"]["num_generations"] == 50
    assert {"package_versions", "created"} <= set(meta) and "numpy" in meta["package_versions"]
    assert meta["input_file"] == os.path.abspath(DEFAULT_EXPRESSIONS)
    assert meta["seed"] == 42 and meta["params"] == recs[0]["basicsr_params"]
    for rec, s in zip(recs, src["records"]):
        assert rec["expression_id"] == s["id"] and rec["target_expression"] == s["expression"]
        assert rec["basicsr_params"]["population_size"] == 20 and rec["seed"] == 42
        assert rec["trajectory"]["generations"][0]["population_size"] == 20
        assert len(rec["trajectory"]["generations"]) <= 50
    solved = sum(r["final_mse"] <= SOLVED_MSE for r in recs)
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith("solved")]
    assert summary and f"solved {solved}/10" in summary[0] and "mean time per expression" in summary[0]
    assert "expressions" in proc.stderr and "10/10" in proc.stderr  # the progress bar
    assert open(DEFAULT_EXPRESSIONS, "rb").read() == src_before


# ----------------------------------------------------------------------------
# records


@pytest.fixture(scope="module")
def traced(tmp_path_factory, five_expressions):
    out = tmp_path_factory.mktemp("traced") / "out"
    proc = run_ok(["--expressions_file", five_expressions, "--output_dir", out, "--num_generations", 10,
                   "--population_size", 15, "--num_workers", 1, "--seed", 7])
    return proc, out, five_expressions


def test_output_name_and_summary(traced):
    proc, out, src = traced
    assert os.listdir(out) == ["gen10_five_c05.pkl.gz"]
    assert f"wrote {os.path.join(out, 'gen10_five_c05.pkl.gz')}" in proc.stdout
    assert any(ln.startswith("solved ") and "/5 " in ln for ln in proc.stdout.splitlines())


def test_record_format(traced):
    _, out, src = traced
    data = load_traces(str(out / "gen10_five_c05.pkl.gz"))
    source = load_expressions(src)["records"]
    assert data["format"] == "traces" and len(data["records"]) == 5
    for rec, s in zip(data["records"], source):
        assert RECORD_KEYS <= set(rec)
        assert rec["expression_id"] == s["id"] and rec["target_expression"] == s["expression"]
        assert rec["X"].dtype == np.float32 and rec["y"].dtype == np.float32
        np.testing.assert_array_equal(rec["X"], s["X"].astype(np.float32))
        np.testing.assert_array_equal(rec["y"], s["y"].astype(np.float32))
        assert rec["num_vars"] == s["X"].shape[1]
        assert rec["binary_operators"] == ["+", "-", "*"] and rec["unary_operators"] == []
        assert rec["constants"] == [1.0] and rec["source"] == "basic_sr"
        params = rec["basicsr_params"]
        assert params["population_size"] == 15 and params["num_generations"] == 10 and rec["seed"] == 7
        assert "seed" not in params and "sampling_params" not in rec  # an expert run: evolution parameters only
        # the final expression is the trajectory's last best, and its MSE is what it scores on the data
        gens = rec["trajectory"]["generations"]
        assert rec["final_expression"] == gens[-1]["best_expression"]
        mse = float(np.mean((evaluate(parse(rec["final_expression"]), s["X"]) - s["y"]) ** 2))
        assert rec["final_mse"] == pytest.approx(mse, rel=1e-9, abs=1e-12)
        assert rec["solved"] == (rec["final_mse"] <= SOLVED_MSE)
        assert 1 <= len(gens) <= 10
        for i, g in enumerate(gens):
            assert GEN_KEYS <= set(g) and g["generation"] == i
            assert g["population_size"] == 15 == len(g["expressions"]) == len(g["fitnesses"])
            assert g["fitnesses"].dtype == np.float32
            assert set(g["operators"]) <= set(OPERATOR_NAMES)
        assert len(rec["trajectory"]["ancestors_of_best"]) == len(gens)
        assert len(rec["trajectory"]["best_progression"]) == len(gens)


def test_max_expressions_and_quiet(tmp_path, five_expressions):
    out = tmp_path / "out"
    proc = run_ok(["--expressions_file", five_expressions, "--output_dir", out, "--num_generations", 5,
            "--population_size", 10, "--max_expressions", 2, "--quiet"])
    recs = load_traces(str(out / "gen5_five_c05.pkl.gz"))["records"]
    assert [r["expression_id"] for r in recs] == [100, 101]
    assert proc.stdout == "" and proc.stderr == ""  # --quiet


def test_generation_count_label_in_the_name(tmp_path):
    """1000 generations are written gen1k (the problem is solved at once, so early stop keeps it short)."""
    src = write_expressions(tmp_path / "easy.pkl.gz", [simple_record(0)])
    out = tmp_path / "out"
    run_ok(["--expressions_file", src, "--output_dir", out, "--num_generations", 1000, "--population_size", 10,
            "--quiet"])
    assert count_label(1000) == "1k"
    assert os.listdir(out) == ["gen1k_easy.pkl.gz"]
    rec = load_traces(str(out / "gen1k_easy.pkl.gz"))["records"][0]
    assert rec["solved"] and len(rec["trajectory"]["generations"]) < 1000


def test_explicit_output_path(tmp_path, small_expressions_file):
    path = tmp_path / "custom.pkl.gz"
    run_ok(["--expressions_file", small_expressions_file, "--output", path, "--num_generations", 3,
            "--population_size", 6, "--quiet"])
    assert len(load_traces(str(path))["records"]) == 4


# ----------------------------------------------------------------------------
# reproducibility: shards and workers


def test_shards_together_equal_the_unsharded_run(tmp_path, five_expressions):
    out = tmp_path / "out"
    common = ["--expressions_file", five_expressions, "--output_dir", out, "--num_generations", 8,
              "--population_size", 12, "--num_workers", 1, "--quiet"]
    run_ok(common)
    run_ok(common + ["--shard", "0/2"])
    run_ok(common + ["--shard", "1/2"])
    assert sorted(os.listdir(out)) == ["gen8_five_c05.pkl.gz", "gen8_five_c05_shard0of2.pkl.gz",
                                       "gen8_five_c05_shard1of2.pkl.gz"]
    full = load_traces(str(out / "gen8_five_c05.pkl.gz"))["records"]
    s0 = load_traces(str(out / "gen8_five_c05_shard0of2.pkl.gz"))["records"]
    s1 = load_traces(str(out / "gen8_five_c05_shard1of2.pkl.gz"))["records"]
    assert [r["expression_id"] for r in s0] == [100, 102, 104]
    assert [r["expression_id"] for r in s1] == [101, 103]
    merged = sorted(s0 + s1, key=lambda r: r["expression_id"])
    assert len(merged) == len(full)
    for a, b in zip(full, merged):
        assert a["final_expression"] == b["final_expression"]
        assert_same_data(without_timing(a), without_timing(b))


def test_worker_count_does_not_change_the_records(tmp_path, five_expressions):
    out1, out2 = tmp_path / "w1", tmp_path / "w2"
    common = ["--expressions_file", five_expressions, "--num_generations", 8, "--population_size", 12, "--quiet"]
    run_ok(common + ["--output_dir", out1, "--num_workers", 1])
    run_ok(common + ["--output_dir", out2, "--num_workers", 2])
    r1 = load_traces(str(out1 / "gen8_five_c05.pkl.gz"))["records"]
    r2 = load_traces(str(out2 / "gen8_five_c05.pkl.gz"))["records"]
    assert len(r1) == len(r2) == 5
    for a, b in zip(r1, r2):
        assert_same_data(without_timing(a), without_timing(b))


def test_seed_changes_the_records(tmp_path, five_expressions):
    out1, out2 = tmp_path / "s1", tmp_path / "s2"
    common = ["--expressions_file", five_expressions, "--num_generations", 6, "--population_size", 12,
              "--num_workers", 1, "--no_early_stop", "--quiet"]
    run_ok(common + ["--output_dir", out1, "--seed", 1])
    run_ok(common + ["--output_dir", out2, "--seed", 2])
    last = [[r["trajectory"]["generations"][-1]["expressions"] for r in load_traces(str(o / "gen6_five_c05.pkl.gz"))
             ["records"]] for o in (out1, out2)]
    assert last[0] != last[1]
