"""Traces -> supervised examples (nsr/examples.py, prepare_data.py) and training/train.py (nsr/trainer.py):
examples decode back to the trace's expressions, target selection, the split by problem,
autoregressive targets, DAgger traces, refusal of empty data; a tiny training run lowers
the loss, writes checkpoint-<step> folders, resumes and fine-tunes."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from neural_helpers import run_in_process, run_neural_cli

from nsr import safe_io
from nsr.config import SamplingConfig
from nsr.examples import (BatchSampler, Examples, convert_files, convert_record, is_validation, load_examples,
                          pack_batch, save_examples)
from nsr.expressions import parse
from nsr.prompt import error_token, generation_token
from nsr.safe_io import InputError
from nsr.tokenizer import Vocab
from nsr.traces import load_traces
from helpers import heritage_lists as _her


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


@pytest.fixture(scope="module")
def vocab():
    return Vocab()


@pytest.fixture(scope="module")
def expert_records(expert_trace):
    return load_traces(expert_trace)["records"]


def _target_tokens(vocab, ids):
    toks = vocab.decode(np.asarray(ids).tolist())
    assert toks[-1] == "<eos>" and "<eos>" not in toks[:-1]
    return tuple(toks[:-1])


def _children(gen):
    return [i for i, op in enumerate(gen["operators"]) if op != "elite"]


# ----------------------------------------------------------------------------
# conversion


def test_all_targets_decode_to_the_next_generation(vocab, expert_records):
    n_states = 0
    for r in expert_records:
        gens = r["trajectory"]["generations"]
        out = list(convert_record(r, vocab, "one_step", "all"))
        assert len(out) == len(gens) - 1
        for g, (prompt, tgts, key) in enumerate(out):
            assert key == r["target_expression"]
            nxt = gens[g + 1]
            expected = [parse(nxt["expressions"][i]) for i in _children(nxt)]
            assert len(expected) == len(nxt["expressions"]) - 1  # all but the elite
            assert [_target_tokens(vocab, t) for t in tgts] == expected
            n_states += 1
    assert n_states == sum(len(r["trajectory"]["generations"]) - 1 for r in expert_records)


def test_prompt_encodes_the_state(vocab, expert_records):
    r = expert_records[2]
    gens = r["trajectory"]["generations"]
    y = np.asarray(r["y"], dtype=np.float64)
    for g, (prompt, _, _) in enumerate(convert_record(r, vocab, "one_step", "all")):
        toks = vocab.decode(np.asarray(prompt).tolist())
        state = gens[g]
        head = ["<bos>", f"<nv{r['num_vars']}>", "+", "-", "*", "1.0", generation_token(g), "<pop>"]
        assert toks[: len(head)] == head and toks[-1] == "<child>"
        members = " ".join(toks[len(head):-1]).split(" <sep> ")
        order = np.argsort(-np.asarray(state["fitnesses"], dtype=np.float64), kind="stable")
        uniq = list(dict.fromkeys(state["expressions"][i] for i in order))
        assert len(members) == len(uniq)  # unique members, best first
        for m, text in zip(members, uniq):
            err, *expr = m.split()
            assert tuple(expr) == parse(text)
            i = state["expressions"].index(text)
            assert err == error_token(float(state["mses"][i]), float(np.var(y)))
        assert uniq[0] == state["best_expression"]


def test_ancestors_and_improved_select_consistent_subsets(vocab, expert_records):
    totals = {"all": 0, "ancestors": 0, "improved": 0}
    for r in expert_records:
        gens = r["trajectory"]["generations"]
        anc = r["trajectory"]["ancestors_of_best"]
        full = list(convert_record(r, vocab, "one_step", "all"))
        totals["all"] += sum(len(t) for _, t, _ in full)
        prompts_by_state = {bytes(np.asarray(p, np.int16)): g for g, (p, _, _) in enumerate(full)}
        for mode in ("ancestors", "improved"):
            for prompt, tgts, _ in convert_record(r, vocab, "one_step", mode):
                g = prompts_by_state[bytes(np.asarray(prompt, np.int16))]
                nxt, prev = gens[g + 1], gens[g]
                if mode == "ancestors":
                    keep = [i for i in _children(nxt) if i in set(anc[g + 1])]
                else:
                    keep = [i for i in _children(nxt) if _her(nxt, "heritages")[i] and all(
                        float(nxt["fitnesses"][i]) > float(prev["fitnesses"][h]) for h in _her(nxt, "heritages")[i])]
                assert keep, "states without selected targets are skipped"
                assert [_target_tokens(vocab, t) for t in tgts] == [parse(nxt["expressions"][i]) for i in keep]
                totals[mode] += len(tgts)
    # the final best's lineage runs through every generation; improvements are rarer than children
    assert 0 < totals["ancestors"] < totals["all"]
    assert 0 < totals["improved"] < totals["all"]


def test_autoregressive_target_is_the_whole_next_population(vocab, expert_records):
    r = expert_records[0]
    gens = r["trajectory"]["generations"]
    out = list(convert_record(r, vocab, "autoregressive", "all"))
    assert len(out) == len(gens) - 1
    for g, (prompt, tgts, _) in enumerate(out):
        assert vocab.decode(np.asarray(prompt).tolist())[-1] == "<children>"
        assert len(tgts) == 1
        toks = _target_tokens(vocab, tgts[0])
        exprs = [tuple(e.split()) for e in " ".join(toks).split(" <sep> ")]
        nxt = gens[g + 1]
        assert exprs == [parse(nxt["expressions"][i]) for i in _children(nxt)]
        assert len(exprs) == nxt["population_size"] - 1
    with pytest.raises(InputError, match="targets all"):
        list(convert_record(r, vocab, "autoregressive", "ancestors"))
    with pytest.raises(InputError, match="unknown"):
        list(convert_record(r, vocab, "sideways", "all"))


def test_split_is_by_problem(expert_trace, expert_records):
    train, val, stats = convert_files([expert_trace], val_fraction=0.5)
    tk, vk = set(train.problems), set(val.problems)
    assert tk and vk and not tk & vk
    assert tk | vk == {r["target_expression"] for r in expert_records}
    for k in tk | vk:
        assert is_validation(k, 0.5) == (k in vk)
    per_problem = {r["target_expression"]: len(r["trajectory"]["generations"]) - 1 for r in expert_records}
    for ex in (train, val):
        for k in set(ex.problems):
            assert ex.problems.count(k) == per_problem[k]  # all states of a problem on one side
    assert stats["records"] == len(expert_records) and stats["states"] == len(train) + len(val)
    assert stats["files"][0]["source"] == "basic_sr" and not stats["files"][0]["dagger"]
    # the split is the same whichever other files come along
    train2, val2, _ = convert_files([expert_trace, expert_trace], val_fraction=0.5)
    assert set(train2.problems) == tk and set(val2.problems) == vk


def test_empty_training_set_is_refused(expert_trace):
    with pytest.raises(InputError, match="training set is empty"):
        convert_files([expert_trace], val_fraction=1.0)


def _no_trajectory_trace(path, expert_trace):
    obj = load_traces(expert_trace)
    recs = []
    for r in obj["records"]:
        r = dict(r)
        r["trajectory"] = dict(r["trajectory"], generations=[], ancestors_of_best=[])
        recs.append(r)
    safe_io.save(str(path), "traces", obj["metadata"], recs)
    return str(path)


def test_trace_without_trajectories_is_refused(tmp_path, expert_trace):
    path = _no_trajectory_trace(tmp_path / "flat.pkl.gz", expert_trace)
    with pytest.raises(InputError, match="empty trajectory"):
        convert_files([path])
    obj = load_traces(expert_trace)
    recs = [{k: v for k, v in r.items() if k != "trajectory"} for r in obj["records"]]
    safe_io.save(str(tmp_path / "none.pkl.gz"), "traces", obj["metadata"], recs)
    with pytest.raises(InputError, match="trajectory"):
        convert_files([str(tmp_path / "none.pkl.gz")])


def test_examples_round_trip_through_a_file(tmp_path, expert_trace):
    train, val, _ = convert_files([expert_trace], weights=[2.0])
    path = str(tmp_path / "ex.pkl.gz")
    save_examples(path, train, val, {"mode": "one_step"})
    tr, va, meta = load_examples(path)
    assert meta["mode"] == "one_step"
    for a, b in ((train, tr), (val, va)):
        assert len(a) == len(b) and a.problems == b.problems and a.weights == b.weights
        for pa, pb in zip(a.prompts, b.prompts):
            np.testing.assert_array_equal(pa, pb)
        for ta, tb in zip(a.targets, b.targets):
            assert [t.tolist() for t in ta] == [t.tolist() for t in tb]
    assert set(train.weights) == {2.0}


def test_a_trace_file_is_converted_once_per_process(tmp_path, expert_trace, monkeypatch):
    """The DAgger loop fine-tunes on the same expert traces every iteration (and again for its control): the
    second conversion reuses the first, with its own weights, and a rewritten file is converted afresh."""
    import nsr.examples as examples_mod

    path = str(tmp_path / "t.pkl.gz")
    shutil.copy(expert_trace, path)
    reads = []
    real = examples_mod.load_traces
    monkeypatch.setattr(examples_mod, "load_traces", lambda p: reads.append(p) or real(p))
    a_train, a_val, a_stats = convert_files([path], targets="improved")
    b_train, b_val, b_stats = convert_files([path], targets="improved", weights=[4.0])
    assert reads == [path]
    assert b_train.problems == a_train.problems and b_val.problems == a_val.problems
    assert set(a_train.weights) == {1.0} and set(b_train.weights) == {4.0}  # the cached copy kept weight 1
    assert a_stats == b_stats and a_stats["states"] == len(a_train) + len(a_val)
    convert_files([path], targets="all")  # other settings: another conversion
    assert reads == [path, path]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten
    c_train, _, _ = convert_files([path], targets="improved")
    assert reads == [path, path, path] and c_train.problems == a_train.problems


def test_renamed_states_use_other_variables_consistently(vocab, expert_trace):
    """--rename_variables: a state shown as a problem of m >= n variables, its own renamed injectively, the same
    way in the prompt (its <nv> token too) and the targets; everything else untouched; reproducible."""
    from nsr.examples import VariableRenamer
    from nsr.expressions import VARIABLES

    train, _, _ = convert_files([expert_trace], vocab, val_fraction=0.0)
    renamer = VariableRenamer(vocab)
    var_ids = {vocab.ids[v]: k for k, v in enumerate(VARIABLES)}
    nv_of = {vocab.ids[f"<nv{k}>"]: k for k in range(1, len(VARIABLES) + 1)}
    rng = np.random.default_rng(3)
    seen_m = set()
    for i in range(0, len(train), max(1, len(train) // 40)):
        prompt, targets = train.prompts[i], train.targets[i]
        new_prompt, new_targets = renamer(prompt, targets, rng)
        n, m = nv_of[int(prompt[1])], nv_of[int(new_prompt[1])]
        assert n <= m <= len(VARIABLES)
        seen_m.add(m)
        mapping = {}
        for old, new in zip(np.concatenate([prompt[2:]] + targets), np.concatenate([new_prompt[2:]] + new_targets)):
            if int(old) in var_ids:
                assert int(new) in var_ids and var_ids[int(new)] < m
                assert mapping.setdefault(int(old), int(new)) == int(new)  # one name per variable
            else:
                assert old == new  # operators, constants, errors, structure
        assert len(set(mapping.values())) == len(mapping)  # injective
        assert [len(t) for t in new_targets] == [len(t) for t in targets] and new_prompt.dtype == prompt.dtype
    assert len(seen_m) > 1
    a = renamer(train.prompts[0], train.targets[0], np.random.default_rng(5))
    b = renamer(train.prompts[0], train.targets[0], np.random.default_rng(5))
    assert a[0].tolist() == b[0].tolist() and [t.tolist() for t in a[1]] == [t.tolist() for t in b[1]]


def test_batch_sampler_renames_about_the_share_asked_and_not_at_zero(vocab, expert_trace):
    from nsr.examples import VariableRenamer

    train, _, _ = convert_files([expert_trace], vocab, val_fraction=0.0)
    plain = BatchSampler(train, 400, 6, np.random.default_rng(0)).sample()
    off = BatchSampler(train, 400, 6, np.random.default_rng(0), VariableRenamer(vocab), 0.0).sample()
    assert [p.tolist() for p in off[0]] == [p.tolist() for p in plain[0]]
    on = BatchSampler(train, 400, 6, np.random.default_rng(0), VariableRenamer(vocab), 0.5).sample()
    changed = sum(p[1] != q[1] or p.tolist() != q.tolist() for p, q in zip(on[0], plain[0]))
    assert 0.2 * 400 < changed <= 0.6 * 400  # renamed with chance 0.5 (a renaming can be the identity)


def test_pack_batch_layout(vocab):
    prompts = [np.array([2, 9, 62, 6]), np.array([2, 10, 6])]
    targets = [[np.array([72, 3]), np.array([62, 72, 82, 3])], [np.array([73, 3])]]
    ids, pos, seg, rows, at, labels = pack_batch(prompts, targets, vocab.pad)
    assert ids.shape == (2, 10)
    assert ids[0].tolist() == [2, 9, 62, 6, 72, 3, 62, 72, 82, 3]
    assert seg[0].tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 5, 4, 5, 6, 7]  # each child continues from the prompt
    assert seg[1].tolist() == [0, 0, 0, 1, 1] + [-1] * 5 and ids[1, 5:].tolist() == [vocab.pad] * 5
    assert labels.tolist() == [72, 3, 62, 72, 82, 3, 73, 3]
    assert rows.tolist() == [0] * 6 + [1] * 2
    # each label is predicted from the position before it: the prompt's last for a child's first token
    assert at.tolist() == [3, 4, 3, 6, 7, 8, 2, 3]


def test_batch_sampler_is_reproducible_and_respects_weights():
    ex = Examples()
    for i in range(4):
        ex.add([2, 3], [[i, 3], [i, i, 3], [5, 3]], f"p{i}", weight=100.0 if i == 3 else 1.0)
    a = BatchSampler(ex, 50, 2, np.random.default_rng(0)).sample()
    b = BatchSampler(ex, 50, 2, np.random.default_rng(0)).sample()
    assert [t.tolist() for ts in a[1] for t in ts] == [t.tolist() for ts in b[1] for t in ts]
    assert all(len(ts) == 2 for ts in a[1])  # at most `children` targets per state
    firsts = [int(ts[0][0]) if int(ts[0][0]) != 5 else int(ts[1][0]) for ts in a[1]]
    assert firsts.count(3) > 40  # the heavy state dominates


# ----------------------------------------------------------------------------
# DAgger traces as training data


def test_dagger_traces_give_neural_states_with_expert_targets(tmp_path, vocab, neural_trace):
    from nsr.relabel import Relabeler

    obj = load_traces(neural_trace)
    rl = Relabeler("expert", seed=0)
    recs = [rl.relabel_record(r, i) for i, r in enumerate(obj["records"])]
    path = str(tmp_path / "d.pkl.gz")
    safe_io.save(path, "traces", dict(obj["metadata"], dagger=True, original_source="neural_sr"), recs)
    for orig, r in zip(obj["records"], recs):
        gens = r["trajectory"]["generations"]
        out = list(convert_record(r, vocab, "one_step", "all"))
        assert len(out) == len(gens)  # every visited state, the last included
        plain = list(convert_record(orig, vocab, "one_step", "all"))
        for g, (prompt, tgts, _) in enumerate(out):
            labels = [parse(gens[g]["expert_expressions"][i]) for i, op in enumerate(gens[g]["expert_operators"])
                      if op != "elite"]
            assert [_target_tokens(vocab, t) for t in tgts] == labels
            if g < len(plain):  # the state is the model's own population, as in the rollout's conversion
                np.testing.assert_array_equal(np.asarray(prompt), np.asarray(plain[g][0]))
    # aggregation with expert data, DAgger states weighted
    train, val, stats = convert_files([neural_trace, path], val_fraction=0.0, weights=[1.0, 4.0])
    assert [f["dagger"] for f in stats["files"]] == [False, True]
    n_plain = sum(len(r["trajectory"]["generations"]) - 1 for r in obj["records"])
    assert len(train) == n_plain + sum(len(r["trajectory"]["generations"]) for r in recs) and len(val) == 0
    assert train.weights.count(4.0) == len(train) - n_plain


def test_prepare_data_cli_writes_an_examples_file(tmp_path, capsys, expert_trace):
    out = tmp_path / "sub" / "ex.pkl.gz"
    proc = run_in_process("training.prepare_data", ["--traces", expert_trace, "--output", out, "--mode",
                                                    "autoregressive", "--quiet"], capsys)
    assert proc.returncode == 0, proc.stderr
    train, val, meta = load_examples(str(out))
    ref_train, ref_val, _ = convert_files([expert_trace], mode="autoregressive")
    assert len(train) == len(ref_train) and len(val) == len(ref_val)
    assert meta["mode"] == "autoregressive" and meta["targets"] == "all"
    assert meta["train_states"] == len(train) and meta["val_targets"] == val.n_targets
    assert "command" in meta and "package_versions" in meta
    assert os.listdir(tmp_path / "sub") == ["ex.pkl.gz"]


def test_prepare_data_trace_weights_are_the_sampling_weights_train_py_would_use(tmp_path, capsys, expert_trace,
                                                                               neural_trace):
    dagger = str(tmp_path / "n_dagger.pkl.gz")
    proc = run_in_process("dagger_relabel", ["--input", neural_trace, "--output", dagger, "--quiet"], capsys)
    assert proc.returncode == 0, proc.stderr
    out = str(tmp_path / "ex.pkl.gz")
    proc = run_in_process("training.prepare_data", ["--traces", expert_trace, dagger, "--trace_weights", 1, 4,
                                                    "--output", out, "--quiet"], capsys)
    assert proc.returncode == 0, proc.stderr
    train, val, meta = load_examples(out)
    ref_train, ref_val, _ = convert_files([expert_trace, dagger], weights=[1.0, 4.0])
    assert train.weights == ref_train.weights and val.weights == ref_val.weights
    assert set(train.weights) == {1.0, 4.0} and list(meta["trace_weights"]) == [1.0, 4.0]
    proc = run_in_process("training.prepare_data", ["--traces", expert_trace, "--trace_weights", 1, 4,
                                                    "--output", str(tmp_path / "bad.pkl.gz"), "--quiet"], capsys)
    assert proc.returncode == 2 and "trace_weights has 2 values for 1 trace files" in proc.stderr
    assert not os.path.exists(tmp_path / "bad.pkl.gz")


# ----------------------------------------------------------------------------
# train.py

TRAIN_ARGS = ["--model_size", "tiny", "--batch_size", "4", "--children_per_state", "4", "--warmup_steps", "3",
              "--lr", "3e-3", "--eval_every", "10", "--num_threads", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, expert_trace):
    out = tmp_path_factory.mktemp("train")
    proc = run_neural_cli("training/train.py", ["--traces", expert_trace, "--steps", 30, "--save_every", 15,
                                                "--output_dir", out, "--name", "run"] + TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr
    return out / "run", proc


CHECKPOINT_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json",
                    "training_state.json", "optimizer.safetensors"}


def _metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def test_train_writes_checkpoint_folders(trained):
    run_dir, proc = trained
    assert proc.stdout == "" and "Traceback" not in proc.stderr  # --quiet: no progress bar, no summary
    assert "train:" not in proc.stderr and "done:" not in proc.stdout
    assert sorted(os.listdir(run_dir)) == ["checkpoint-15", "checkpoint-30"]
    for step in (15, 30):
        files = set(os.listdir(run_dir / f"checkpoint-{step}"))
        assert CHECKPOINT_FILES <= files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    m = _metrics(run_dir / "checkpoint-30")
    assert "train.py" in m["command"] and "--steps 30" in m["command"]
    assert m["step"] == 30 and m["n_params"] > 0 and m["device"] == "cpu"
    assert [h["step"] for h in m["history"]] == [10, 20, 30]
    assert all("train_loss" in h and "val_loss" in h for h in m["history"])
    assert m["final_val_loss"] == m["history"][-1]["val_loss"]
    assert m["data"]["train_states"] > 0 and m["data"]["val_problems"] >= 1
    with open(run_dir / "checkpoint-30" / "config.json") as f:
        assert json.load(f)["nsr"]["mode"] == "one_step"


def test_train_quiet_writes_nothing_to_stderr(trained):
    _, proc = trained
    assert proc.stderr == ""


def _val_loss(model, val, vocab):
    from nsr.model import PackedPrefixLoss
    from nsr.trainer import to_tensors

    tot, n = 0.0, 0
    with torch.no_grad():
        for batch in BatchSampler(val, 8, 10**9, None).iterate_all():
            t = to_tensors(batch, vocab.pad, "cpu")
            tot += float(PackedPrefixLoss(model)(*t)) * len(t[5])
            n += len(t[5])
    return tot / n


def test_training_lowers_the_loss(trained, expert_trace, vocab):
    from nsr.model import load_checkpoint, make_config, new_model

    run_dir, _ = trained
    hist = _metrics(run_dir / "checkpoint-30")["history"]
    assert hist[0]["train_loss"] > hist[-1]["train_loss"]
    assert hist[0]["val_loss"] > hist[-1]["val_loss"]
    # independently: the validation loss of the model train.py starts from (seed 0) vs the trained one
    _, val, _ = convert_files([expert_trace])
    initial = _val_loss(new_model(make_config(vocab, "tiny"), seed=0).eval(), val, vocab)
    final = _val_loss(load_checkpoint(str(run_dir / "checkpoint-30"), "cpu").model, val, vocab)
    assert final < initial - 0.5
    assert final == pytest.approx(hist[-1]["val_loss"], rel=1e-4)


def test_trained_checkpoint_samples(trained):
    from nsr.estimators import NeuralSR

    run_dir, _ = trained
    X = np.linspace(-2, 2, 20)[:, None]
    sr = NeuralSR(str(run_dir), population_size=8, num_generations=3, seed=0).fit(X, X[:, 0] ** 3)
    assert sr.neural.load().path == str(run_dir / "checkpoint-30")
    assert sr.trajectory["stats"]["well_formed_pct"] == 100.0


def _copy_run(trained, tmp_path):
    run_dir, _ = trained
    out = tmp_path / "ckpts"
    shutil.copytree(run_dir, out / "run")
    return out


def test_resume_continues_to_more_steps(tmp_path, capsys, trained, expert_trace):
    out = _copy_run(trained, tmp_path)
    before = _metrics(out / "run" / "checkpoint-30")
    proc = run_in_process("training.train", ["--resume", "--steps", 40, "--save_every", 15, "--output_dir", out,
                                             "--name", "run"] + TRAIN_ARGS, capsys)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out / "run")) == ["checkpoint-30", "checkpoint-40"]  # save_total_limit 2
    after = _metrics(out / "run" / "checkpoint-40")
    assert after["step"] == 40
    assert after["history"][:3] == before["history"]  # continued, not restarted
    assert [h["step"] for h in after["history"]] == [10, 20, 30, 40]
    assert after["history"][-1]["train_loss"] < before["history"][0]["train_loss"]
    with open(out / "run" / "checkpoint-40" / "training_state.json") as f:
        state = json.load(f)
    assert state["step"] == 40 and state["config"]["traces"] == [expert_trace]  # data settings come from the run
    # nothing to resume is an input error
    proc = run_in_process("training.train", ["--resume", "--steps", 5, "--output_dir", out, "--name", "other"]
                          + TRAIN_ARGS, capsys)
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


def test_train_refuses_an_existing_run_without_overwrite_or_resume(tmp_path, capsys, trained, expert_trace):
    from neural_helpers import snapshot

    out = _copy_run(trained, tmp_path)
    before = snapshot(out)
    args = ["--traces", expert_trace, "--steps", 2, "--save_every", 2, "--output_dir", out, "--name", "run"] + TRAIN_ARGS
    proc = run_in_process("training.train", args, capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error" in last and "--resume" in last and "--overwrite" in last
    assert snapshot(out) == before  # the run is untouched
    proc = run_in_process("training.train", args + ["--overwrite"], capsys)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(out / "run") == ["checkpoint-2"]  # replaced, not mixed with the old checkpoints


def test_init_from_fine_tunes_a_checkpoint(tmp_path, capsys, trained, expert_trace):
    from nsr.model import load_checkpoint

    run_dir, _ = trained
    proc = run_in_process("training.train", ["--traces", expert_trace, "--init_from", run_dir, "--steps", 5,
                                             "--output_dir", tmp_path, "--name", "ft"] + TRAIN_ARGS
                          + ["--eval_every", 5], capsys)  # the last --eval_every wins
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "ft") == ["checkpoint-5"]
    ft = _metrics(tmp_path / "ft" / "checkpoint-5")["history"]
    base = _metrics(run_dir / "checkpoint-30")["history"]
    assert ft[0]["train_loss"] < base[0]["train_loss"] - 0.5  # starts from the trained model, not from scratch
    a = load_checkpoint(str(run_dir / "checkpoint-30"), "cpu").model.state_dict()
    b = load_checkpoint(str(tmp_path / "ft" / "checkpoint-5"), "cpu").model.state_dict()
    assert set(a) == set(b) and any(not torch.equal(a[k], b[k]) for k in a)


def test_init_from_a_checkpoint_of_the_other_mode_is_refused(tmp_path, capsys, tiny_ar_checkpoint, expert_trace):
    proc = run_in_process("training.train", ["--traces", expert_trace, "--init_from", tiny_ar_checkpoint, "--steps",
                                             3, "--output_dir", tmp_path, "--name", "x"] + TRAIN_ARGS, capsys)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error" in last and "autoregressive" in last  # (one line apart from HF's progress bar: see test_neural_cli)
    assert os.listdir(tmp_path) == []


def test_autoregressive_training_and_training_from_an_examples_file(tmp_path, capsys, expert_trace):
    from nsr.neural import NeuralProposer

    ex = tmp_path / "ex.pkl.gz"
    assert run_in_process("training.prepare_data", ["--traces", expert_trace, "--output", ex, "--mode",
                                                    "autoregressive", "--quiet"], capsys).returncode == 0
    proc = run_in_process("training.train", ["--data", ex, "--mode", "autoregressive", "--steps", 4, "--output_dir",
                                             tmp_path / "out", "--name", "ar"] + TRAIN_ARGS, capsys)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "out" / "ar" / "checkpoint-4"
    with open(folder / "config.json") as f:
        assert json.load(f)["nsr"]["mode"] == "autoregressive"
    assert NeuralProposer(SamplingConfig(checkpoint=str(folder), device="cpu")).load().mode == "autoregressive"
    # examples of one mode cannot train the other
    proc = run_in_process("training.train", ["--data", ex, "--mode", "one_step", "--steps", 2, "--output_dir",
                                             tmp_path / "out2", "--name", "x"] + TRAIN_ARGS, capsys)
    assert proc.returncode == 2 and "autoregressive" in proc.stderr
    assert not (tmp_path / "out2").exists()


# ----------------------------------------------------------------------------
# training prompts are what the proposer sees


def _state_prompts(checkpoint, X, y, exprs, fitness=None):
    """(the proposer's prompt for the initial state, the training conversion's prompt for the same state, the
    live problem). ``fitness`` replaces the scored fitnesses of that state (float64; the trace records float32)."""
    from nsr.estimators import BatchedNeuralSR
    from nsr.proposers import ExpertProposer
    from nsr.traces import trace_record

    sr = BatchedNeuralSR(checkpoint, population_size=len(exprs), num_generations=2, early_stop=False, seed=0)

    def start(p):
        codes = np.zeros((len(exprs), 25), np.int16)
        lengths = np.zeros(len(exprs), np.int64)
        for i, e in enumerate(exprs):
            t = parse(e)
            codes[i, : len(t)] = p.primitives.encode(t)
            lengths[i] = len(t)
        p.start(codes, lengths)
        if fitness is not None:
            p.fitness = np.asarray(fitness, dtype=np.float64)
            p.generations[0]["fitnesses"] = p.fitness.astype(np.float32)  # what the trace records
        return p

    (p,) = sr.make_problems([X], [y])
    start(p)
    inference = sr.neural.state(p)[1].tolist()
    (q,) = sr.make_problems([X], [y])  # an expert run from the same state, recorded as a trace
    start(q)
    q.advance(ExpertProposer.propose_one(q, len(exprs) - 1))
    assert q.done and len(q.generations) == 2
    rec = trace_record(q, {"id": 0, "expression": "t"}, 0, 0, 0.0, "neural_sr")
    training = list(next(iter(convert_record(rec, sr.neural.load().vocab, "one_step", "all")))[0])
    return inference, training, p


def test_training_prompt_equals_the_proposers_prompt(tiny_checkpoint):
    X = np.random.default_rng(3).uniform(-2, 2, (20, 2))
    y = 3 * X[:, 0] - X[:, 1]
    inference, training, _ = _state_prompts(tiny_checkpoint, X, y, ["x0", "(x1 * x0)", "(x0 - x1)", "x0", "1.0"])
    assert training == inference


def test_training_prompt_equals_the_proposers_prompt_for_near_ties(tiny_checkpoint):
    """Two members whose float64 fitnesses differ but whose float32 fitnesses (what traces record) are equal:
    both sides rank on float32 with a stable sort, so the prompts agree (a float64 ranking would swap them)."""
    X = np.random.default_rng(17).uniform(-2, 2, (20, 2))
    y = 3 * X[:, 0] - X[:, 1]
    fitness = [-0.5, -0.5 + 1e-12, -2.0]  # the state is set, not searched for: the tie always exists
    assert fitness[0] < fitness[1] and np.float32(fitness[0]) == np.float32(fitness[1])
    inference, training, p = _state_prompts(tiny_checkpoint, X, y, ["(x0 * (x0 * x1))", "((x0 * x0) * x1)", "x0"],
                                            fitness=fitness)
    from nsr.prompt import rank_members

    assert int(np.argmax(p.fitness)) == 1  # float64 puts member 1 first (it is the elite) ...
    assert rank_members(p.fitness, list(range(3)), 32) == [0, 1, 2]  # ... the prompt, on float32, member 0
    assert training == inference
