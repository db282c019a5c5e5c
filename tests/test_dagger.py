"""DAgger: dagger_relabel.py (expert labels for every state a neural rollout visited, best-of-k,
bad input) and the training/dagger.py loop (one tiny iteration end to end, --resume)."""
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import assert_one_line_error, denied_prefix, load_module
from neural_helpers import (ROOT, assert_same_data, file_sha256, run_neural_cli, snapshot,
                            tree_listing, write_hard_expressions)

from nsr import safe_io
from nsr.relabel import Relabeler
from nsr.expressions import evaluate, is_valid, parse
from nsr.safe_io import InputError
from nsr.traces import load_traces
from helpers import heritage_lists as _her


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


def _relabel(args):
    return run_neural_cli("dagger_relabel.py", args, timeout=120)


@pytest.fixture(scope="module")
def relabeled(tmp_path_factory, neural_trace):
    """The neural trace relabeled three ways (expert, best_of_k with the same seed, expert with another seed)."""
    folder = tmp_path_factory.mktemp("relabel")
    inp = folder / "gen5_neural.pkl.gz"
    shutil.copy(neural_trace, inp)
    before = file_sha256(inp)
    jobs = {"expert": ["--input", inp],
            "best_of_k": ["--input", inp, "--output", folder / "bok.pkl.gz", "--label", "best_of_k", "--k", 4],
            "seed1": ["--input", inp, "--output", folder / "seed1.pkl.gz", "--seed", 1, "--quiet"]}
    with ThreadPoolExecutor(3) as pool:
        procs = dict(zip(jobs, pool.map(_relabel, jobs.values())))
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr)
    return {"folder": folder, "input": inp, "hash_before": before, "procs": procs,
            "expert": load_traces(str(folder / "gen5_neural_dagger.pkl.gz")),
            "best_of_k": load_traces(str(folder / "bok.pkl.gz")),
            "seed1": load_traces(str(folder / "seed1.pkl.gz")),
            "original": load_traces(str(inp))}


def test_default_output_name_input_untouched_and_summary(relabeled):
    folder = relabeled["folder"]
    assert file_sha256(relabeled["input"]) == relabeled["hash_before"]
    assert sorted(os.listdir(folder)) == ["bok.pkl.gz", "gen5_neural.pkl.gz", "gen5_neural_dagger.pkl.gz",
                                          "seed1.pkl.gz"]
    n_states = sum(len(r["trajectory"]["generations"]) for r in relabeled["original"]["records"])
    out = relabeled["procs"]["expert"].stdout
    assert f"relabeled {n_states} states of 3 trajectories" in out and "gen5_neural_dagger.pkl.gz" in out
    assert "relabel" in relabeled["procs"]["expert"].stderr  # the progress bar
    assert relabeled["procs"]["seed1"].stdout == ""  # --quiet


def test_records_and_metadata_are_marked_and_the_neural_data_kept(relabeled):
    data, orig = relabeled["expert"], relabeled["original"]
    meta = data["metadata"]
    assert meta["dagger"] is True and meta["original_source"] == "neural_sr"
    assert meta["relabel_params"] == {"label": "expert", "k": 1, "seed": 42}  # the default --seed
    assert meta["relabeled_from"] == os.path.abspath(relabeled["input"])
    assert meta["states"] == sum(len(r["trajectory"]["generations"]) for r in orig["records"])
    assert meta["checkpoint_hash"] == orig["metadata"]["checkpoint_hash"] and meta["source"] == "neural_sr"
    assert "dagger_relabel.py" in meta["relabel"]["command"]
    assert len(data["records"]) == len(orig["records"]) == 3
    for r, o in zip(data["records"], orig["records"]):
        assert r["dagger"] is True and r["original_source"] == "neural_sr"
        for k in o:
            if k != "trajectory":
                assert_same_data(r[k], o[k], k)
        for k in ("ancestors_of_best", "best_progression", "stats"):
            assert_same_data(r["trajectory"][k], o["trajectory"][k], k)
        assert len(r["trajectory"]["generations"]) == len(o["trajectory"]["generations"])
        for g, go in zip(r["trajectory"]["generations"], o["trajectory"]["generations"]):
            for k in go:
                assert_same_data(g[k], go[k], k)


def _fitness(expr, X, y, parsimony=1e-3):
    toks = parse(expr)
    with np.errstate(all="ignore"):
        pred = evaluate(toks, X)
        mse = float(np.mean((pred - y) ** 2))
    if not np.isfinite(mse):
        return -np.inf
    var = float(np.var(y))
    return -mse / (var if var > 1e-300 else 1.0) - parsimony * len(toks)


def test_expert_labels_are_valid_and_index_the_recorded_population(relabeled):
    n_labels = 0
    for r in relabeled["expert"]["records"]:
        X, y = r["X"].astype(np.float64), r["y"].astype(np.float64)
        allowed = set(r["binary_operators"]) | set(r["unary_operators"]) | {f"x{i}" for i in range(r["num_vars"])} \
            | {repr(float(c)) for c in r["constants"]}
        max_size = r["basicsr_params"]["max_size"]
        for g in r["trajectory"]["generations"]:
            n = g["population_size"]
            exprs, her, ops, fits = (g["expert_expressions"], _her(g, "expert_heritages"), g["expert_operators"],
                                     g["expert_fitnesses"])
            assert len(exprs) == len(her) == len(ops) == len(fits) == n
            assert fits.dtype == np.float32
            best = int(np.argmax(g["fitnesses"]))
            assert exprs[0] == g["expressions"][best] and her[0] == [best] and ops[0] == "elite"
            for e, h, op, f in zip(exprs[1:], her[1:], ops[1:], fits[1:]):
                toks = parse(e)
                assert is_valid(toks) and len(toks) <= max_size and set(toks) <= allowed, e
                assert all(0 <= a < n for a in h), h
                assert (op, len(h)) in {("crossover", 2), ("mutation", 1)}, (op, h)
                ref = _fitness(e, X, y)
                if np.isfinite(ref):
                    assert float(f) == pytest.approx(ref, rel=1e-5, abs=1e-6)
                else:
                    assert f == -np.inf
                n_labels += 1
    assert n_labels > 50


def test_seed_changes_the_labels_and_best_of_k_is_marked(relabeled):
    a = [g["expert_expressions"] for r in relabeled["expert"]["records"] for g in r["trajectory"]["generations"]]
    b = [g["expert_expressions"] for r in relabeled["seed1"]["records"] for g in r["trajectory"]["generations"]]
    assert a != b
    bok = relabeled["best_of_k"]
    assert bok["metadata"]["relabel_params"] == {"label": "best_of_k", "k": 4, "seed": 42}
    assert all(r["dagger_label"] == "best_of_k" and r["dagger_k"] == 4 for r in bok["records"])


def _pairs(relabeled, first_generation_only):
    for re, rb in zip(relabeled["expert"]["records"], relabeled["best_of_k"]["records"]):
        gens = list(zip(re["trajectory"]["generations"], rb["trajectory"]["generations"]))
        for ge, gb in gens[:1] if first_generation_only else gens:
            yield ge, gb


def test_best_of_k_labels_are_never_worse_from_the_same_state_stream(relabeled):
    """From the first state of each record (where both labelings start from the same random
    stream), every best-of-k slot is at least as fit as the expert's, and the fitter ones differ."""
    better = 0
    for ge, gb in _pairs(relabeled, True):
        fe, fb = ge["expert_fitnesses"], gb["expert_fitnesses"]
        assert np.all(fb >= fe)
        for i in range(1, len(fe)):
            if fb[i] == fe[i]:
                continue
            better += 1
            assert gb["expert_expressions"][i] != ge["expert_expressions"][i]
    assert better > 0


def test_best_of_k_labels_are_never_worse_slot_by_slot_in_every_state(relabeled):
    for ge, gb in _pairs(relabeled, False):
        assert np.all(gb["expert_fitnesses"] >= ge["expert_fitnesses"]), ge["generation"]


def test_relabeler_parameters_and_memo(neural_trace):
    with pytest.raises(InputError, match="unknown label"):
        Relabeler("oracle")
    with pytest.raises(InputError, match=r"\bk must"):
        Relabeler("best_of_k", 0)
    rec = load_traces(neural_trace)["records"][0]
    rl = Relabeler("expert", seed=0)
    a = rl.relabel_record(rec, 0)
    b = Relabeler("expert", seed=0).relabel_record(rec, 0)
    assert rl.states == len(rec["trajectory"]["generations"])
    assert [g["expert_expressions"] for g in a["trajectory"]["generations"]] == \
        [g["expert_expressions"] for g in b["trajectory"]["generations"]]  # same seed, same labels
    assert "expert_expressions" not in rec["trajectory"]["generations"][0]  # the input record is not modified


def test_force_relabels_an_expert_trace(tmp_path, expert_trace):
    inp = tmp_path / "expert.pkl.gz"
    shutil.copy(expert_trace, inp)
    proc = _relabel(["--input", inp, "--force", "--quiet"])
    assert proc.returncode == 0, proc.stderr
    data = load_traces(str(tmp_path / "expert_dagger.pkl.gz"))
    assert data["metadata"]["original_source"] == "basic_sr" and data["metadata"]["dagger"] is True


# ----------------------------------------------------------------------------
# bad input


def _strip_generation_key(key, value=None):
    """Generation 2 of record 1 without KEY (or with KEY set to value(old))."""
    def make(src, dst):
        obj = load_traces(src)
        recs = [dict(r) for r in obj["records"]]
        traj = dict(recs[1]["trajectory"])
        gens = [dict(g) for g in traj["generations"]]
        if value is None:
            del gens[2][key]
        else:
            gens[2][key] = value(gens[2][key])
        traj["generations"] = gens
        recs[1]["trajectory"] = traj
        safe_io.save(str(dst), "traces", obj["metadata"], recs)
    return make


def _copy(src, dst):
    shutil.copy(src, dst)


def _copy_and_block_the_output_folder(src, dst):
    """The input, and a FILE where the output folder would be (OUT/afile)."""
    shutil.copy(src, dst)
    (dst.parent.parent / "out" / "afile").write_bytes(b"not a folder")


def _already_dagger(src, dst):
    obj = load_traces(src)
    safe_io.save(str(dst), "traces", dict(obj["metadata"], dagger=True), obj["records"])


# name -> (how to make the input from the neural trace, extra args (IN, OUT placeholders), words)
BAD = {
    "expert_trace_without_force": (None, [], ("not a neural", "--force")),
    "missing_expressions": (_strip_generation_key("expressions"), [], ("expressions",)),
    "missing_fitnesses": (_strip_generation_key("fitnesses"), [], ("fitnesses",)),
    # parent indices past the previous population, operators that are not names: found by the fuzzer in the
    # consumers (training examples) before the validator checked them
    "parent_index_out_of_range": (_strip_generation_key("heritages", lambda h: h + 10_000), [], ("heritages",)),
    "operators_not_strings": (_strip_generation_key("operators", lambda ops: [np.zeros(2)] * len(ops)), [],
                              ("operators",)),
    "output_is_input": (_copy, ["--output", "IN"], ("input",)),
    "output_folder_is_a_file": (_copy_and_block_the_output_folder, ["--output", "OUT/afile/x.pkl.gz"],
                                ("is a file", "folder")),
    "already_dagger": (_already_dagger, [], ("dagger",)),
    "missing_input": ("missing", [], ("no such file",)),
    "bad_k": (_copy, ["--label", "best_of_k", "--k", "0"], ("--k", "positive")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_relabel_bad_input(tmp_path, case, neural_trace, expert_trace):
    make, extra, words = BAD[case]
    inp = tmp_path / "in" / "trace.pkl.gz"
    inp.parent.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if make is None:
        shutil.copy(expert_trace, inp)
    elif make != "missing":
        make(neural_trace, inp)
    content = inp.read_bytes() if inp.exists() else None
    before = tree_listing(tmp_path)
    args = ["--input", inp] + [str(a).replace("IN", str(inp)).replace("OUT", str(out_dir)) for a in extra]
    proc = _relabel(args)
    line = assert_one_line_error(proc, *words)
    assert tree_listing(tmp_path) == before, tree_listing(tmp_path) ^ before  # no output, no temporary file
    if content is not None:
        assert inp.read_bytes() == content
    if case not in ("bad_k",):
        assert "trace.pkl.gz" in line or "afile" in line


@pytest.mark.parametrize("key,change", [("expert_heritages", None), ("expert_operators", lambda o: o[:-1]),
                                        ("expert_heritages", lambda h: h - 5), ("expert_fitnesses", lambda f: f * np.nan)])
def test_a_dagger_file_with_broken_labels_is_refused_on_load(tmp_path, relabeled, key, change):
    """Labels are checked as training indexes them (found by the fuzzer: a missing key or an out-of-range
    parent reached the example builder)."""
    src = relabeled["folder"] / "gen5_neural_dagger.pkl.gz"
    dst = tmp_path / "broken.pkl.gz"
    _strip_generation_key(key, change)(str(src), dst)
    with pytest.raises(InputError, match=key) as info:
        load_traces(str(dst))
    assert "\n" not in str(info.value)


def test_relabel_creates_a_missing_output_folder(tmp_path, capsys, neural_trace):
    """Every writing script creates a missing output folder (only one that cannot be made is an error)."""
    from neural_helpers import run_in_process

    inp = tmp_path / "trace.pkl.gz"
    shutil.copy(neural_trace, inp)
    out = tmp_path / "new" / "sub" / "x.pkl.gz"
    proc = run_in_process("dagger_relabel", ["--input", inp, "--output", out, "--quiet"], capsys)
    assert proc.returncode == 0, proc.stderr
    assert tree_listing(tmp_path) == {"trace.pkl.gz", "new", os.path.join("new", "sub"),
                                      os.path.join("new", "sub", "x.pkl.gz")}
    assert load_traces(str(out))["metadata"]["dagger"] is True


def test_relabel_refuses_an_existing_output_without_overwrite(tmp_path, capsys, neural_trace):
    from neural_helpers import run_in_process

    inp = tmp_path / "trace.pkl.gz"
    shutil.copy(neural_trace, inp)
    out = tmp_path / "x.pkl.gz"
    out.write_bytes(b"precious")
    proc = run_in_process("dagger_relabel", ["--input", inp, "--output", out, "--quiet"], capsys)
    assert_one_line_error(proc, "--overwrite")
    assert out.read_bytes() == b"precious" and tree_listing(tmp_path) == {"trace.pkl.gz", "x.pkl.gz"}
    proc = run_in_process("dagger_relabel", ["--input", inp, "--output", out, "--quiet", "--overwrite"], capsys)
    assert proc.returncode == 0, proc.stderr
    assert load_traces(str(out))["metadata"]["dagger"] is True


def test_relabel_unwritable_output_folder(tmp_path, neural_trace):
    inp = tmp_path / "trace.pkl.gz"
    shutil.copy(neural_trace, inp)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        prefix = denied_prefix(ro / "probe", "wb")  # a folder of mode 555
        content = inp.read_bytes()
        before = tree_listing(tmp_path)
        cmd = prefix + [sys.executable, "dagger_relabel.py", "--input", str(inp), "--output", str(ro / "x.pkl.gz")]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert_one_line_error(proc, "not writable", "permission")
        assert tree_listing(tmp_path) == before
        assert inp.read_bytes() == content
    finally:
        os.chmod(ro, 0o755)


# ----------------------------------------------------------------------------
# training/dagger.py


def _dagger_args(folder, expert_trace, inputs):
    return ["--name", "d", "--output_dir", folder, "--expert_traces", expert_trace, "--train_expressions",
            inputs["train"], "--eval_expressions", inputs["eval"], "--iterations", 1, "--rollout_problems", 2,
            "--eval_problems", 2, "--population_size", 6, "--num_generations", 3, "--finetune_steps", 5,
            "--bc_steps", 5, "--train_batch_size", 4, "--batch_size", 2, "--label", "best_of_k", "--k", 2,
            "--quiet"]


@pytest.fixture(scope="module")
def dagger_run(tmp_path_factory, expert_trace):
    folder = tmp_path_factory.mktemp("dagger")
    inputs = {"train": write_hard_expressions(folder / "train_c05.pkl.gz", 4, seed=21, start=2),
              "eval": write_hard_expressions(folder / "eval_c05.pkl.gz", 3, seed=22)}
    from nsr.cli import run_main

    dagger = load_module("training.dagger")
    args = _dagger_args(folder / "runs", expert_trace, inputs)
    rc = run_main(dagger.main, [str(a) for a in args])
    assert rc == 0
    return folder / "runs" / "d", args, inputs


def _results(run):
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_dagger_iteration_writes_results_and_a_plot(dagger_run):
    run, _, _ = dagger_run
    rows = _results(run)
    assert [(r["iteration"], r["method"]) for r in rows] == [("expert", "basic_sr"), ("0", "neural"),
                                                             ("1", "neural")]
    from nsr.dagger import CSV_FIELDS

    with open(run / "results.csv") as f:
        assert f.readline().strip().split(",") == CSV_FIELDS
    for r in rows:
        assert r["eval_set"] == "eval_c05" and r["runs"] == "2"
        assert 0.0 <= float(r["solve_rate"]) <= 1.0 and float(r["time_per_expression"]) > 0
    it1 = rows[2]
    assert float(it1["beta"]) == 0.5  # default schedule: 0.5 halving
    assert int(it1["dagger_states"]) > 0
    assert float(rows[1]["well_formed_pct"]) == 100.0
    assert it1["checkpoint"].endswith(os.path.join("checkpoints", "iter1", "checkpoint-5"))
    with open(run / "solve_rate.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tree_listing(run) if p.endswith(".tmp")]


def test_dagger_iteration_data(dagger_run):
    run, _, _ = dagger_run
    with open(run / "state.json") as f:
        state = json.load(f)
    assert set(state["done"]) == {"bc", "eval_expert", "eval_0", "rollout_1", "relabel_1", "finetune_1", "eval_1"}
    (rollout_path,) = [p for p in glob.glob(str(run / "iter1" / "rollout_*.pkl.gz")) if not p.endswith("_dagger.pkl.gz")]
    assert state["done"]["rollout_1"] == [rollout_path]
    rollout = load_traces(rollout_path)
    assert rollout["metadata"]["source"] == "neural_sr" and rollout["metadata"]["sampling_params"]["beta"] == 0.5
    assert len(rollout["records"]) == 2
    labeled_path = rollout_path.replace(".pkl.gz", "_dagger.pkl.gz")
    assert state["done"]["relabel_1"] == [labeled_path]
    labeled = load_traces(labeled_path)
    assert labeled["metadata"]["dagger"] is True and labeled["metadata"]["original_source"] == "neural_sr"
    n_states = sum(len(r["trajectory"]["generations"]) for r in labeled["records"])
    assert labeled["metadata"]["states"] == n_states == int(_results(run)[2]["dagger_states"])
    assert all("expert_expressions" in g for r in labeled["records"] for g in r["trajectory"]["generations"])
    # behaviour cloning trained from scratch (no --init_checkpoint), then fine-tuned on expert + DAgger data
    assert os.listdir(run / "checkpoints" / "bc") == ["checkpoint-5"]
    with open(run / "checkpoints" / "iter1" / "checkpoint-5" / "training_state.json") as f:
        ts = json.load(f)
    assert ts["config"]["init_from"] == state["done"]["bc"]
    assert ts["config"]["traces"][-1] == labeled_path
    assert ts["config"]["trace_weights"] == [1.0, 4.0]


def test_dagger_resume_after_completion_redoes_nothing(dagger_run, monkeypatch):
    import nsr.drivers
    import nsr.evaluation
    import nsr.relabel
    import nsr.trainer
    from nsr.cli import run_main

    dagger = load_module("training.dagger")
    run, args, _ = dagger_run
    before = {k: v for k, v in snapshot(run).items() if k != "solve_rate.png"}
    with open(run / "state.json") as f:
        state_before = json.load(f)

    def forbidden(*a, **kw):
        raise AssertionError("work was redone")

    for mod, name in ((nsr.trainer, "train"), (nsr.evaluation, "evaluate"), (nsr.drivers, "write_traces"),
                      (nsr.relabel, "relabel_file")):
        monkeypatch.setattr(mod, name, forbidden)
    assert run_main(dagger.main, [str(a) for a in args] + ["--resume"]) == 0
    after = {k: v for k, v in snapshot(run).items() if k != "solve_rate.png"}
    assert after == before
    with open(run / "state.json") as f:
        state_after = json.load(f)
    assert state_after["done"] == state_before["done"] and state_after["results"] == state_before["results"]
    # the same name without --resume is refused
    with pytest.raises(InputError, match="--resume"):
        dagger.main([str(a) for a in args])


def _copy_run(tmp_path, dagger_run, drop=()):
    """A copy of the finished run (its state pointing at the copy) with the steps in ``drop`` undone;
    returns (folder, arguments that run there, state)."""
    run, args, _ = dagger_run
    out = tmp_path / "runs"
    shutil.copytree(run, out / "d")
    copy = out / "d"
    with open(copy / "state.json") as f:
        state = json.load(f)
    def moved(v):
        if isinstance(v, list):
            return [moved(x) for x in v]
        return v.replace(str(run), str(copy)) if isinstance(v, str) else v

    done = {k: moved(v) for k, v in state["done"].items() if k not in drop}
    dropped_iters = {int(k.split("_")[-1]) for k in drop if k.startswith("eval_")}
    state = {"done": done, "results": [r for r in state["results"] if r["iteration"] not in dropped_iters]}
    with open(copy / "state.json", "w") as f:
        json.dump(state, f)
    new_args = [str(a) for a in args]
    new_args[new_args.index("--output_dir") + 1] = str(out)
    return copy, new_args, state


def test_dagger_resume_after_an_interruption_continues(tmp_path, dagger_run, monkeypatch):
    """Interrupted after relabeling: the rollout is not redone, the fine-tune and evaluation are."""
    import nsr.drivers
    import nsr.relabel
    import nsr.trainer
    from nsr.cli import run_main

    dagger = load_module("training.dagger")
    run, args, _ = dagger_run
    copy, new_args, _ = _copy_run(tmp_path, dagger_run, drop=("finetune_1", "eval_1"))
    shutil.rmtree(copy / "checkpoints" / "iter1")
    os.unlink(copy / "results.csv")

    calls = []
    orig_train = nsr.trainer.train
    monkeypatch.setattr(nsr.trainer, "train", lambda cfg: calls.append(cfg) or orig_train(cfg))
    monkeypatch.setattr(nsr.drivers, "write_traces", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rollout")))
    monkeypatch.setattr(nsr.relabel, "relabel_file", lambda *a, **k: (_ for _ in ()).throw(AssertionError("relabel")))
    assert run_main(dagger.main, new_args + ["--resume", "--rename_variables", "0.5"]) == 0
    assert len(calls) == 1 and calls[0].init_from is not None  # only the fine-tune
    assert calls[0].rename_variables == 0.5  # the training flag reaches the fine-tune
    rows = _results(copy)
    assert [(r["iteration"], r["method"]) for r in rows] == [("expert", "basic_sr"), ("0", "neural"),
                                                             ("1", "neural")]
    assert os.listdir(copy / "checkpoints" / "iter1") == ["checkpoint-5"]


def test_dagger_control_adds_an_expert_only_fine_tune_without_redoing_the_run(tmp_path, dagger_run, monkeypatch):
    """--control on a finished run: only the control is trained (expert traces alone, from the BC checkpoint,
    same steps and learning rate as the DAgger fine-tune) and evaluated; no rollout is redone."""
    import nsr.drivers
    from nsr.cli import run_main

    dagger = load_module("training.dagger")
    run, _, _ = dagger_run
    copy, new_args, state = _copy_run(tmp_path, dagger_run)
    monkeypatch.setattr(nsr.drivers, "write_traces", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rollout")))
    assert run_main(dagger.main, new_args + ["--resume", "--control"]) == 0
    rows = _results(copy)
    assert [(r["iteration"], r["method"]) for r in rows] == [("expert", "basic_sr"), ("0", "neural"),
                                                             ("1", "neural"), ("1", "control")]
    assert rows[3]["checkpoint"].endswith(os.path.join("checkpoints", "control1", "checkpoint-5"))
    with open(copy / "checkpoints" / "control1" / "checkpoint-5" / "training_state.json") as f:
        ctl = json.load(f)["config"]
    with open(copy / "checkpoints" / "iter1" / "checkpoint-5" / "training_state.json") as f:
        it1 = json.load(f)["config"]
    assert ctl["traces"] == it1["traces"][:1] and ctl["trace_weights"] == [1.0]
    assert ctl["init_from"] == state["done"]["bc"]  # the copy's BC checkpoint, as iter1 started from the original's
    assert os.path.relpath(ctl["init_from"], copy) == os.path.relpath(it1["init_from"], run)
    assert (ctl["steps"], ctl["lr"], ctl["seed"]) == (it1["steps"], it1["lr"], it1["seed"])


def test_dagger_traces_of_an_earlier_run_join_the_aggregate(tmp_path, dagger_run):
    """--dagger_traces: an earlier run's labeled states are fine-tuned on beside this run's, at the DAgger weight,
    and counted in the results; a file that is not DAgger output is refused before any work."""
    from nsr.cli import run_main

    dagger = load_module("training.dagger")
    run, args, _ = dagger_run
    with open(run / "state.json") as f:
        earlier = json.load(f)["done"]
    (prior,) = earlier["relabel_1"]
    args = [str(a) for a in args]
    args[args.index("--output_dir") + 1] = str(tmp_path / "runs")
    args += ["--init_checkpoint", earlier["finetune_1"], "--dagger_traces", prior]
    assert run_main(dagger.main, args) == 0
    new = tmp_path / "runs" / "d"
    with open(new / "state.json") as f:
        (own,) = json.load(f)["done"]["relabel_1"]
    with open(new / "checkpoints" / "iter1" / "checkpoint-5" / "training_state.json") as f:
        ts = json.load(f)["config"]
    expert = args[args.index("--expert_traces") + 1]
    assert ts["traces"] == [expert, prior, own] and ts["trace_weights"] == [1.0, 4.0, 4.0]
    states = sum(load_traces(p)["metadata"]["states"] for p in (prior, own))
    assert int(_results(new)[2]["dagger_states"]) == states

    # an expert trace is not DAgger data: refused, nothing written
    args[args.index("--output_dir") + 1] = str(tmp_path / "refused")
    args[args.index("--dagger_traces") + 1] = expert
    with pytest.raises(InputError, match="not a DAgger file"):
        dagger.main(args)
    assert not (tmp_path / "refused").exists()
