"""bench/bench_neural.py's compare mode: the one-command evaluation of issue 12."""
import json
import os


def test_compare_reuses_recorded_expert_runs_and_refuses_missing_ones(tmp_path, tiny_checkpoint):
    """bench_neural.py compare --expert_runs (how GPU time goes to the models only): the expert's rows and the
    paired table equal a run that ran the expert; runs the file lacks are a one-line error, exit 2."""
    from helpers import run_cli

    args = ["compare", "--checkpoints", f"tiny={tiny_checkpoint}", "--sets", "arith", "--heldout_problems", "3",
            "--generations", "3", "--seeds", "0", "--device", "cpu"]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    proc = run_cli(os.path.join("bench", "bench_neural.py"), args + ["--json", first], timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(os.path.join("bench", "bench_neural.py"), args + ["--json", second, "--expert_runs", first],
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(first) as f:
        a = json.load(f)
    with open(second) as f:
        b = json.load(f)
    assert b["runs"]["arith/expert"] == a["runs"]["arith/expert"]
    assert [{k: v for k, v in t.items() if k != "s_per_expr"} for t in b["table"]] == \
        [{k: v for k, v in t.items() if k != "s_per_expr"} for t in a["table"]]
    proc = run_cli(os.path.join("bench", "bench_neural.py"), args[:-4] + ["--seeds", "1", "--device", "cpu",
                                                                         "--expert_runs", first], timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --expert_runs lack 3 expert runs of arith (first: seed 1, problem 0)"]
