"""The neural command-line scripts: generate_traces.py --checkpoint (batched, --beta,
--autoregressive, --resume), the test_batched_sr.py and batched_neural_sr.py smoke runs, and
bad input for every neural CLI (generate_traces.py --checkpoint, test_batched_sr.py,
batched_neural_sr.py, training/train.py, training/prepare_data.py): exit status 2, a
one-line error naming the problem, no traceback, nothing written, inputs untouched.

Most bad-input cases run in-process through each script's main() (same code path as
``__main__``); a representative subset runs as real subprocesses, in parallel."""
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import assert_one_line_error
from neural_helpers import (BROKEN_KINDS, BROKEN_WORDS, NEURAL_ENV, assert_same_data, broken_checkpoint, run_cli,
                            run_in_process, run_neural_cli, snapshot, without_timing)

from nsr import safe_io
from nsr.model import checkpoint_hash
from nsr.traces import load_traces


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


# ----------------------------------------------------------------------------
# generate_traces.py --checkpoint

GEN_ARGS = ["--max_expressions", 3, "--population_size", 6, "--num_generations", 3, "--seed", 5, "--no_early_stop",
            "--batch_size", 2, "--device", "cpu"]


@pytest.fixture(scope="module")
def neural_run(tmp_path_factory, hard_expressions_file, tiny_checkpoint):
    out = tmp_path_factory.mktemp("gen_neural") / "a"
    proc = run_neural_cli("generate_traces.py", ["--expressions_file", hard_expressions_file, "--output_dir", out,
                                                 "--checkpoint", tiny_checkpoint] + GEN_ARGS)
    assert proc.returncode == 0, proc.stderr
    return out, proc, load_traces(str(out / "gen3_hard_c05_neural.pkl.gz"))


def test_neural_traces_metadata_and_records(neural_run, tiny_checkpoint, hard_expressions_file):
    out, proc, data = neural_run
    assert os.listdir(out) == ["gen3_hard_c05_neural.pkl.gz"]  # the .partial is gone
    meta = data["metadata"]
    assert meta["source"] == "neural_sr"
    assert meta["checkpoint"] == os.path.abspath(tiny_checkpoint)
    assert meta["checkpoint_hash"] == checkpoint_hash(tiny_checkpoint) and len(meta["checkpoint_hash"]) == 16
    assert meta["checkpoint_mode"] == "one_step" and meta["batch_size"] == 2 and meta["device"] == "cpu"
    assert meta["sampling_params"]["beta"] == 0.0 and "generate_traces.py" in meta["command"]
    assert meta["sampling_params"]["temperature"] == 1.0 and meta["seed"] == 5
    assert meta["params"]["population_size"] == 6 and meta["params"]["early_stop"] is False
    assert meta["model_stats"]["proposals"] == meta["model_stats"]["well_formed"] == 3 * 2 * 5
    assert meta["input_file"] == os.path.abspath(hard_expressions_file)
    recs = data["records"]
    assert [r["index"] for r in recs] == [0, 1, 2] and [r["num_vars"] for r in recs] == [1, 2, 3]
    for r in recs:
        assert r["source"] == "neural_sr"
        # each record says how it was sampled, from which checkpoint
        assert r["sampling_params"] == meta["sampling_params"] and r["seed"] == 5
        assert os.path.abspath(r["sampling_params"]["checkpoint"]) == meta["checkpoint"]
        assert r["basicsr_params"] == meta["params"]
        gens = r["trajectory"]["generations"]
        assert len(gens) == 3
        assert all(g["operators"] == ["elite"] + ["neural"] * 5 for g in gens[1:])
        assert r["trajectory"]["stats"]["well_formed_pct"] == 100.0
        assert r["final_expression"] == gens[-1]["best_expression"]
    assert "well-formed proposals: 100.00%" in proc.stdout and "solved " in proc.stdout


def test_resume_finishes_an_interrupted_run_without_redoing_finished_problems(tmp_path, capsys, neural_run,
                                                                               hard_expressions_file, tiny_checkpoint):
    """The first batch (problems 0 and 1) finished before the interruption: its records are taken
    from the partial file as they are; the final file equals the uninterrupted run's."""
    _, _, full = neural_run
    out = tmp_path / "b"
    out.mkdir()
    output = str(out / "gen3_hard_c05_neural.pkl.gz")
    done = [dict(r) for r in full["records"][:2]]
    done[0]["time"] = 12345.0  # a marker: a redone problem would get its own time
    # the partial folder holds append-only chunks; two chunks as two periodic saves would leave them
    safe_io.save(output + ".partial/part-00000.pkl.gz", "partial_traces",
                 {"fingerprint": full["metadata"]["fingerprint"]}, done[:1])
    safe_io.save(output + ".partial/part-00001.pkl.gz", "partial_traces",
                 {"fingerprint": full["metadata"]["fingerprint"]}, done[1:])
    proc = run_in_process("generate_traces", ["--expressions_file", hard_expressions_file, "--output_dir", out,
                                              "--checkpoint", tiny_checkpoint, "--resume"] + GEN_ARGS, capsys)
    assert proc.returncode == 0, proc.stderr
    assert "resuming: 2 of 3 expressions already done" in proc.stdout
    assert os.listdir(out) == ["gen3_hard_c05_neural.pkl.gz"]
    resumed = load_traces(output)
    assert resumed["records"][0]["time"] == 12345.0
    assert resumed["metadata"]["fingerprint"] == full["metadata"]["fingerprint"]
    for a, b in zip(full["records"], resumed["records"]):
        assert_same_data(without_timing(a), without_timing(b))


def test_resume_refuses_a_partial_file_of_other_parameters(tmp_path, capsys, neural_run, hard_expressions_file,
                                                            tiny_checkpoint):
    _, _, full = neural_run
    out = tmp_path / "c"
    out.mkdir()
    partial = out / "gen3_hard_c05_neural.pkl.gz.partial" / "part-00000.pkl.gz"
    safe_io.save(str(partial), "partial_traces", {"fingerprint": "0123456789abcdef"}, full["records"][:1])
    before = snapshot(tmp_path)
    proc = run_in_process("generate_traces", ["--expressions_file", hard_expressions_file, "--output_dir", out,
                                              "--checkpoint", tiny_checkpoint, "--resume", "--quiet"] + GEN_ARGS,
                          capsys)
    assert_one_line_error(proc, "other parameters")
    assert snapshot(tmp_path) == before


def test_beta_mixes_expert_and_neural_children(tmp_path, capsys, hard_expressions_file, tiny_checkpoint):
    proc = run_in_process("generate_traces", ["--expressions_file", hard_expressions_file, "--output_dir", tmp_path,
                                              "--checkpoint", tiny_checkpoint, "--beta", 0.5, "--quiet"] + GEN_ARGS,
                          capsys)
    assert proc.returncode == 0, proc.stderr
    data = load_traces(str(tmp_path / "gen3_hard_c05_neural_beta0.5.pkl.gz"))
    assert data["metadata"]["sampling_params"]["beta"] == 0.5
    assert all(r["sampling_params"]["beta"] == 0.5 for r in data["records"])
    ops = [op for r in data["records"] for g in r["trajectory"]["generations"][1:] for op in g["operators"][1:]]
    assert "neural" in ops and ({"crossover", "mutation"} & set(ops))
    assert set(ops) <= {"neural", "crossover", "mutation"}


def test_autoregressive_checkpoint_through_generate_traces(tmp_path, capsys, hard_expressions_file,
                                                           tiny_ar_checkpoint):
    proc = run_in_process("generate_traces", ["--expressions_file", hard_expressions_file, "--output_dir", tmp_path,
                                              "--checkpoint", tiny_ar_checkpoint, "--autoregressive", "--quiet",
                                              "--max_size", 10] + GEN_ARGS, capsys)
    assert proc.returncode == 0, proc.stderr
    data = load_traces(str(tmp_path / "gen3_hard_c05_neural.pkl.gz"))
    assert data["metadata"]["checkpoint_mode"] == "autoregressive"
    assert all(r["trajectory"]["stats"]["well_formed_pct"] == 100.0 for r in data["records"])


# ----------------------------------------------------------------------------
# smoke scripts


def test_test_batched_sr_smoke_run(capsys, tiny_checkpoint):
    proc = run_in_process("test_batched_sr", ["--checkpoint", tiny_checkpoint, "--num_problems", 2,
                                              "--population_size", 6, "--num_generations", 3, "--seed", 1], capsys)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["target", "method", "found", "(simplified)", "MSE", "solved", "time/expr", "s"]
    assert sum(" neural " in ln for ln in lines) == 2 and sum(" basic " in ln for ln in lines) == 2
    assert any(ln.startswith("neural: solved ") and "well-formed 100.0% of 20 proposals" in ln for ln in lines)
    assert any(ln.startswith("basic:  solved ") for ln in lines)


def test_test_batched_sr_autoregressive(capsys, tiny_ar_checkpoint):
    proc = run_in_process("test_batched_sr", ["--checkpoint", tiny_ar_checkpoint, "--autoregressive",
                                              "--num_problems", 2, "--population_size", 5, "--num_generations", 2],
                          capsys)
    assert proc.returncode == 0, proc.stderr
    assert "well-formed 100.0% of 8 proposals" in proc.stdout


def test_batched_neural_sr_cli(capsys, tiny_checkpoint, hard_expressions_file):
    proc = run_in_process("batched_neural_sr", ["--expressions_file", hard_expressions_file, "--checkpoint",
                                                tiny_checkpoint, "--max_expressions", 3, "--batch_size", 2,
                                                "--population_size", 6, "--num_generations", 3], capsys)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["target", "found", "MSE", "solved", "R2", "(fresh", "points)", "generations"]
    assert len([ln for ln in lines[2:] if ln.strip() and not ln.startswith("solved")]) == 3
    assert any("well-formed 100.0% of 30 proposals" in ln and "batch 2" in ln for ln in lines)


# ----------------------------------------------------------------------------
# bad input

SCRIPTS = {
    "G": "generate_traces.py",
    "T": "test_batched_sr.py",
    "B": "batched_neural_sr.py",
    "R": os.path.join("training", "train.py"),
    "P": os.path.join("training", "prepare_data.py"),
}
MODULES = {"G": "generate_traces", "T": "test_batched_sr", "B": "batched_neural_sr", "R": "training.train",
           "P": "training.prepare_data"}


def _base_args(script, root):
    inp, out, ck, traces = root / "in" / "hard.pkl.gz", root / "out", root / "ck", root / "in" / "trace.pkl.gz"
    return {
        "G": ["--expressions_file", inp, "--output_dir", out, "--checkpoint", ck, "--population_size", 6,
              "--num_generations", 2, "--max_expressions", 2, "--quiet"],
        "T": ["--checkpoint", ck, "--expressions_file", inp, "--num_problems", 2, "--population_size", 6,
              "--num_generations", 2],
        "B": ["--expressions_file", inp, "--checkpoint", ck, "--max_expressions", 2, "--population_size", 6,
              "--num_generations", 2],
        "R": ["--traces", traces, "--init_from", ck, "--model_size", "tiny", "--steps", 2, "--batch_size", 2,
              "--output_dir", out, "--name", "r", "--quiet", "--num_threads", 1],
        "P": ["--traces", traces, "--output", out / "ex.pkl.gz", "--quiet"],
    }[script]


def _no_trajectories(src, dst):
    obj = load_traces(src)
    recs = [dict(r, trajectory=dict(r["trajectory"], generations=[], ancestors_of_best=[])) for r in obj["records"]]
    safe_io.save(str(dst), "traces", obj["metadata"], recs)


# case -> (checkpoint kind, extra args, words one of which the error names, known to print more than one line)
# checkpoint kind: a BROKEN_KINDS entry, 'missing_folder', 'good' or 'ar' (the autoregressive checkpoint)
CASES = {}
for _s in "GTBR":
    for _k in BROKEN_KINDS:
        CASES[(_s, _k)] = (_k, [], BROKEN_WORDS[_k], False)
    CASES[(_s, "missing_folder")] = ("missing_folder", [], ("not found",), False)
    CASES[(_s, "device_cuda")] = ("good", ["--device", "cuda"], ("cuda",), False)
    CASES[(_s, "batch_size_0")] = ("good", ["--batch_size", 0], ("batch_size",), False)
for _s in "GTB":
    CASES[(_s, "ar_mismatch")] = ("good", ["--autoregressive"], ("autoregressive",), False)
for _s in "GB":
    CASES[(_s, "constant_not_in_vocabulary")] = ("good", ["--constants", 1.0, 7.0], ("7.0",), False)
CASES[("R", "ar_checkpoint")] = ("ar", [], ("autoregressive",), False)
for _s in "RP":
    CASES[(_s, "no_trajectories")] = ("good", ["TRACES_NO_TRAJ"], ("trajectory",), False)
    CASES[(_s, "empty_training_set")] = ("good", ["--val_fraction", 1.0], ("training set is empty",), False)
    CASES[(_s, "missing_traces")] = ("good", ["TRACES_MISSING"], ("no such file",), False)
    CASES[(_s, "expressions_as_traces")] = ("good", ["TRACES_EXPR"], ("expressions", "traces"), False)
CASES[("P", "output_is_input")] = ("good", ["OUTPUT_IS_INPUT"], ("input",), False)
CASES[("G", "not_quiet_missing_folder")] = ("missing_folder", ["NOT_QUIET"], ("not found",), False)

# run as real subprocesses (the rest in-process)
SUBPROCESS_CASES = [("G", "missing_folder"), ("T", "garbage_config"), ("B", "tokenizer_other_vocab"),
                    ("R", "device_cuda"), ("B", "batch_size_0"), ("P", "empty_training_set"),
                    ("G", "constant_not_in_vocabulary"), ("G", "config_shape_mismatch"),
                    ("G", "not_quiet_missing_folder")]
INPROCESS_CASES = [k for k in CASES if k not in SUBPROCESS_CASES]


def _setup_case(root, key, tiny_checkpoint, tiny_ar_checkpoint, hard_expressions_file, expert_trace):
    script, case = key
    ck_kind, extra, _words, _leaky = CASES[key]
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    shutil.copy(hard_expressions_file, root / "in" / "hard.pkl.gz")
    shutil.copy(expert_trace, root / "in" / "trace.pkl.gz")
    if ck_kind == "good":
        shutil.copytree(tiny_checkpoint, root / "ck")
    elif ck_kind == "ar":
        shutil.copytree(tiny_ar_checkpoint, root / "ck")
    elif ck_kind != "missing_folder":
        broken_checkpoint(tiny_checkpoint, root / "ck", ck_kind)
    args = [str(a) for a in _base_args(script, root)]
    out_args = []
    for a in extra:
        a = str(a)
        if a == "TRACES_NO_TRAJ":
            _no_trajectories(expert_trace, root / "in" / "trace.pkl.gz")
        elif a == "TRACES_MISSING":
            os.unlink(root / "in" / "trace.pkl.gz")
        elif a == "TRACES_EXPR":
            shutil.copy(hard_expressions_file, root / "in" / "trace.pkl.gz")
        elif a == "OUTPUT_IS_INPUT":
            out_args += ["--output", str(root / "in" / "trace.pkl.gz")]
        elif a == "NOT_QUIET":
            args.remove("--quiet")
        else:
            out_args.append(a)
    return args + out_args


def _skip_cuda(key):
    if key[1] == "device_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here: --device cuda is not a missing device")


def _check(proc, key, root, before, one_line):
    words = CASES[key][2]
    if one_line:
        line = assert_one_line_error(proc, *words)
    else:  # everything but the single line
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
        line = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
        assert "error" in line.lower() and any(w.lower() in line.lower() for w in words), line
    after = snapshot(root)
    assert after == before, f"files changed, appeared or vanished: {set(after.items()) ^ set(before.items())}"
    return line


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_checkpoint, tiny_ar_checkpoint, hard_expressions_file, expert_trace):
    """Every subprocess case at once, two at a time; tests read the results."""
    jobs = {}
    for key in SUBPROCESS_CASES:
        if key[1] == "device_cuda" and torch.cuda.is_available():
            continue
        root = tmp_path_factory.mktemp(f"{key[0]}-{key[1]}")
        args = _setup_case(root, key, tiny_checkpoint, tiny_ar_checkpoint, hard_expressions_file, expert_trace)
        jobs[key] = (root, args, snapshot(root))
    with ThreadPoolExecutor(2) as pool:
        futures = {k: pool.submit(run_cli, SCRIPTS[k[0]], a, 240, env=NEURAL_ENV) for k, (_r, a, _s) in jobs.items()}
        return {k: (f.result(), jobs[k][0], jobs[k][2]) for k, f in futures.items()}


def _ids(keys):
    return [f"{s}-{c}" for s, c in keys]


@pytest.mark.parametrize("key", SUBPROCESS_CASES, ids=_ids(SUBPROCESS_CASES))
def test_bad_input_subprocess(launched, key):
    _skip_cuda(key)
    proc, root, before = launched[key]
    _check(proc, key, root, before, one_line=not CASES[key][3])


@pytest.mark.parametrize("key", INPROCESS_CASES, ids=_ids(INPROCESS_CASES))
def test_bad_input_in_process(tmp_path, capsys, key, tiny_checkpoint, tiny_ar_checkpoint, hard_expressions_file,
                              expert_trace):
    _skip_cuda(key)
    root = tmp_path / "case"
    args = _setup_case(root, key, tiny_checkpoint, tiny_ar_checkpoint, hard_expressions_file, expert_trace)
    before = snapshot(root)
    proc = run_in_process(MODULES[key[0]], args, capsys)
    line = _check(proc, key, root, before, one_line=not CASES[key][3])
    if CASES[key][0] in BROKEN_KINDS or CASES[key][0] == "missing_folder":
        assert str(root / "ck") in line  # names the checkpoint
