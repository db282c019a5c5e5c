"""NeuralSR / BatchedNeuralSR / batched_fit: results and trajectory format, batches of problems
with different numbers of variables, early stop, the checkpoint loaded once, batch-size
invariance, mixed rollouts (--beta), heritage of neural children, and bad input."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from neural_helpers import hard_records

import nsr.neural as neural_mod
from nsr.config import SamplingConfig
from nsr.estimators import BasicSR, BatchedNeuralSR, NeuralSR
from nsr.evolution import NEURAL, OPERATOR_NAMES
from nsr.expressions import Expression, evaluate, is_valid, parse, subtrees
from nsr.neural import NeuralProposer, infer_parents
from nsr.proposers import MixedProposer
from nsr.safe_io import InputError
from nsr.traces import seed_for
from helpers import heritage_lists as _her


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


@pytest.fixture(scope="module")
def problems3():
    """Three problems with 1, 2 and 3 variables."""
    recs = hard_records(3, seed=11)
    assert [r["num_vars"] for r in recs] == [1, 2, 3]
    return [r["X"] for r in recs], [r["y"] for r in recs]


def _exprs(traj):
    return [g["expressions"] for g in traj["generations"]]


@pytest.fixture(scope="module")
def fitted(tiny_checkpoint, problems3):
    X_list, y_list = problems3
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=10, num_generations=5, seed=2, early_stop=False)
    return sr, sr.batched_fit(X_list, y_list)


def test_batched_fit_returns_models_mses_and_trajectories(fitted, problems3):
    _, (models, mses, trajs) = fitted
    X_list, y_list = problems3
    assert len(models) == len(mses) == len(trajs) == 3
    for m, mse, X, y in zip(models, mses, X_list, y_list):
        assert isinstance(m, Expression) and is_valid(m.tokens)
        assert isinstance(mse, float)
        assert mse == pytest.approx(float(np.mean((evaluate(m.tokens, X) - y) ** 2)), rel=1e-9, abs=1e-12)


def test_trajectories_have_the_basic_sr_format_plus_neural_stats(fitted, problems3):
    _, (_, mses, trajs) = fitted
    X_list, y_list = problems3
    basic = BasicSR(population_size=10, num_generations=3, collect_trajectory=True, seed=0).fit(X_list[0], y_list[0])
    bt = basic.trajectory
    for t, mse, X in zip(trajs, mses, X_list):
        assert set(t.keys()) == set(bt.keys())
        assert set(t["stats"]) >= set(bt["stats"]) | {"well_formed_pct", "model_time", "neural_proposals",
                                                      "well_formed"}
        assert t["stats"]["well_formed_pct"] == 100.0 and t["stats"]["model_time"] > 0
        assert t["stats"]["neural_proposals"] == 4 * 9
        gens = t["generations"]
        assert len(gens) == 5 and len(t["ancestors_of_best"]) == 5 and len(t["best_progression"]) == 5
        assert t["best_progression"][-1] == mse
        nv = X.shape[1]
        for i, g in enumerate(gens):
            assert set(g) == set(bt["generations"][0]), set(g) ^ set(bt["generations"][0])
            assert g["generation"] == i and g["population_size"] == 10 == len(g["expressions"])
            assert g["fitnesses"].dtype == np.float32 and g["mses"].dtype == np.float32
            assert len(_her(g, "heritages")) == len(g["operators"]) == 10
            assert set(g["operators"]) <= set(OPERATOR_NAMES)
            for e in g["expressions"]:
                used = {tok for tok in parse(e) if tok.startswith("x")}
                assert used <= {f"x{k}" for k in range(nv)}, (e, nv)  # each problem its own variables
            if i == 0:
                assert g["operators"] == ["initial"] * 10 and _her(g, "heritages") == [[]] * 10
                continue
            prev = gens[i - 1]
            assert g["operators"] == ["elite"] + ["neural"] * 9
            assert _her(g, "heritages")[0] == [int(np.argmax(prev["fitnesses"]))]
            assert g["expressions"][0] == prev["expressions"][int(np.argmax(prev["fitnesses"]))]
            for h in _her(g, "heritages"):
                assert len(h) <= 2 and all(0 <= a < prev["population_size"] for a in h)
            assert g["best_fitness"] >= prev["best_fitness"]  # elitism


@pytest.mark.parametrize("seed", [2, 4, 7])
def test_the_elite_is_the_previous_generations_fittest_individual(tiny_checkpoint, problems3, seed):
    """Generation g starts with the fittest individual of generation g-1 (np.argmax: the first of
    equal maxima), carried over with its fitness. (Not ``best_expression``, the lowest-MSE one: with
    parsimony the two differ.)"""
    X_list, y_list = problems3
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=10, num_generations=5, seed=seed, early_stop=False)
    _, _, trajs = sr.batched_fit(X_list, y_list)
    checked = 0
    for t in trajs:
        gens = list(t)  # a Trajectory iterates generation by generation
        assert len(gens) == 5
        for prev, g in zip(gens, gens[1:]):
            j = int(np.argmax(prev["fitnesses"]))
            assert g["operators"][0] == "elite" and _her(g, "heritages")[0] == [j]
            assert g["expressions"][0] == prev["expressions"][j]
            assert g["fitnesses"][0] == prev["fitnesses"].max() == np.float32(prev["best_fitness"])
            assert g["mses"][0] == prev["mses"][j]
            checked += 1
    assert checked == 3 * 4


def test_neural_children_heritage_follows_the_documented_inference(fitted):
    """First parent: a member holding the child's largest subtree found in the population;
    second: another member holding a subtree of size >= 2; no shared subtree: []."""
    _, (_, _, trajs) = fitted
    checked = 0
    for t in trajs:
        gens = t["generations"]
        for prev, g in zip(gens, gens[1:]):
            member_subs = [{tuple(toks[s:e]) for s, e in subtrees(toks)} for toks in map(parse, prev["expressions"])]
            everything = set().union(*member_subs)
            for k in range(1, len(g["expressions"])):
                child = parse(g["expressions"][k])
                spans = [tuple(child[s:e]) for s, e in subtrees(child)]
                shared = [s for s in spans if s in everything]
                h = _her(g, "heritages")[k]
                if not shared:
                    assert h == []
                    continue
                largest = max(len(s) for s in shared)
                assert h, (child, shared)
                assert any(len(s) == largest and s in member_subs[h[0]] for s in spans), (child, h)
                if len(h) == 2:
                    assert h[1] != h[0]
                    assert any(len(s) >= 2 and s in member_subs[h[1]] for s in spans)
                checked += 1
    assert checked > 50


def test_infer_parents_unit():
    members = [(0, {("x0",), ("1.0",), ("*", "x0", "1.0")}),
               (1, {("x0",), ("x1",), ("+", "x0", "x1")}),
               (2, {("x1",), ("sin", "x1"), ("cos", "sin", "x1")})]
    # the whole (x0 + x1) lives in member 1; nothing of size >= 2 elsewhere
    assert infer_parents(("+", "x0", "x1"), members) == [1]
    # largest found subtree (* x0 1.0) from member 0, then (sin x1) from member 2
    assert infer_parents(("-", "*", "x0", "1.0", "sin", "x1"), members) == [0, 2]
    # only a leaf shared: the best member holding it
    assert infer_parents(("exp", "x1"), members) == [1]
    assert infer_parents(("2.0",), members) == []
    assert subtrees(("+", "x0", "sin", "x1")) == [(1, 2), (3, 4), (2, 4), (0, 4)]


def test_problems_finished_early_drop_out_of_the_batch(tiny_checkpoint, monkeypatch):
    """A problem the initial population solves stops at generation 0; the others go on, and
    every generation is one model call (one prefill) serving only the problems still running."""
    recs = hard_records(2, seed=5)
    X0 = np.linspace(-1, 1, 15)[:, None]
    X_list = [recs[0]["X"], X0, recs[1]["X"]]
    y_list = [recs[0]["y"], X0[:, 0] * X0[:, 0], recs[1]["y"]]  # x0*x0 is a seed of the initial population
    import nsr.forward as forward_mod

    calls = []
    for cls in (forward_mod.TreeDecoder, forward_mod.TransformersDecoder):
        def spy(self, prompts, *a, _orig=cls.prefill):
            calls.append(len(prompts))
            return _orig(self, prompts, *a)

        monkeypatch.setattr(cls, "prefill", spy)
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=8, num_generations=4, seed=0)
    models, mses, trajs = sr.batched_fit(X_list, y_list)
    assert mses[1] <= 1e-10 and len(trajs[1]["generations"]) == 1 and str(models[1]) == "(x0 * x0)"
    assert "neural_proposals" not in trajs[1]["stats"] or trajs[1]["stats"]["neural_proposals"] == 0
    assert [len(t["generations"]) for t in (trajs[0], trajs[2])] == [4, 4]
    assert calls == [2, 2, 2]


def test_checkpoint_is_loaded_lazily_once_and_shared(tiny_checkpoint, problems3, monkeypatch):
    loads = []
    orig = neural_mod.load_checkpoint

    def counting(*a, **kw):
        loads.append(a)
        return orig(*a, **kw)

    monkeypatch.setattr(neural_mod, "load_checkpoint", counting)
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=6, num_generations=2, seed=0)
    assert loads == []  # lazily, on first use
    X_list, y_list = problems3
    sr.batched_fit(X_list[:2], y_list[:2])
    ck1, model1 = sr.neural.load(), sr.neural.load().model
    sr.batched_fit(X_list[2:], y_list[2:])
    assert len(loads) == 1
    assert sr.neural.load() is ck1 and sr.neural.load().model is model1
    assert sr.neural.stats["calls"] == 2


def test_module_level_batched_fit_and_the_class_agree(tiny_checkpoint, problems3):
    from batched_neural_sr import BatchedNeuralSR as Exported
    from batched_neural_sr import batched_fit

    assert Exported is BatchedNeuralSR
    X_list, y_list = problems3
    kw = dict(population_size=8, num_generations=3, seed=9)
    m1, e1, t1 = batched_fit(X_list, y_list, checkpoint=tiny_checkpoint, **kw)
    m2, e2, t2 = BatchedNeuralSR(tiny_checkpoint, **kw).batched_fit(X_list, y_list)
    assert [str(m) for m in m1] == [str(m) for m in m2] and e1 == e2
    assert [_exprs(t) for t in t1] == [_exprs(t) for t in t2]


def test_neural_sr_fit_is_the_batch_of_one(tiny_checkpoint, problems3):
    X_list, y_list = problems3
    kw = dict(population_size=8, num_generations=4, seed=4)
    sr = NeuralSR(tiny_checkpoint, **kw).fit(X_list[1], y_list[1])
    models, mses, trajs = BatchedNeuralSR(tiny_checkpoint, **kw).batched_fit([X_list[1]], [y_list[1]])
    assert str(sr.best_model_) == str(models[0])
    assert sr.get_final_mse() == mses[0]
    assert sr.best_progression == trajs[0]["best_progression"]
    assert _exprs(sr.trajectory) == _exprs(trajs[0])
    np.testing.assert_allclose(sr.predict(X_list[1]), evaluate(models[0].tokens, X_list[1]))
    assert sr.n_features_in_ == 2


def test_same_seed_same_result_other_seed_other_result(tiny_checkpoint, problems3):
    X_list, y_list = problems3
    run = lambda seed: BatchedNeuralSR(tiny_checkpoint, population_size=8, num_generations=3, seed=seed,  # noqa: E731
                                       early_stop=False).batched_fit(X_list, y_list)[2]
    a, b, c = run(1), run(1), run(2)
    assert [_exprs(t) for t in a] == [_exprs(t) for t in b]
    assert [_exprs(t) for t in a] != [_exprs(t) for t in c]


@pytest.mark.parametrize("fit", [0, 5])
def test_float64_results_do_not_depend_on_the_batch_size(tiny_checkpoint, problems3, fit):
    """With a float64 model a problem's run is identical whether it shares the model call with
    others or not (its samples come from its own generator), with constant fitting too."""
    from nsr.evolution import evolve
    from nsr.proposers import initial_population
    from nsr.traces import seed_for

    X_list, y_list = problems3
    proposer = NeuralProposer(SamplingConfig(checkpoint=tiny_checkpoint, device="cpu", dtype="float64"))
    assert proposer.load().dtype == torch.float64

    def run(batch_size, order, workers=1):
        sr = BatchedNeuralSR(tiny_checkpoint, population_size=10, num_generations=5, seed=6, early_stop=False,
                             constant_fitting=fit)
        problems = sr.make_problems([X_list[i] for i in order], [y_list[i] for i in order],
                                    rngs=[seed_for(6, i) for i in order])
        for start in range(0, len(problems), batch_size):
            evolve(problems[start:start + batch_size], proposer, initial_population, workers=workers)
        return {i: (p.trajectory(), float(p.mse[p.best_index()])) for i, p in zip(order, problems)}

    one = run(1, [0, 1, 2])
    three = run(3, [0, 1, 2])
    shuffled = run(2, [2, 0, 1])
    threaded = run(3, [0, 1, 2], workers=3)  # the children of each problem scored in its own thread
    for i in range(3):
        for other in (three, shuffled, threaded):
            assert _exprs(other[i][0]) == _exprs(one[i][0])
            assert other[i][1] == one[i][1]
            for ga, gb in zip(one[i][0]["generations"], other[i][0]["generations"]):
                np.testing.assert_array_equal(ga["fitnesses"], gb["fitnesses"])
                assert _her(ga, "heritages") == _her(gb, "heritages")
    assert proposer.stats["calls"] == 3 * 4 + 1 * 4 + 2 * 4 + 1 * 4  # one model call per generation per batch


@pytest.mark.parametrize("fit", [0, 5])
def test_neural_runs_score_in_the_models_threads_when_fitting(tiny_checkpoint, problems3, monkeypatch, fit):
    """Fitting dominates a neural batch's CPU side, so the scoring runs in as many threads as the model has;
    without fitting the scoring is too short for threads to pay."""
    import nsr.search as search_mod

    seen = []
    real = search_mod.evolve
    monkeypatch.setattr(search_mod, "evolve", lambda *a, **k: seen.append(k["workers"]) or real(*a, **k))
    monkeypatch.setattr(NeuralProposer, "threads", property(lambda self: 3))
    X_list, y_list = problems3
    BatchedNeuralSR(tiny_checkpoint, population_size=8, num_generations=3, seed=1, constant_fitting=fit,
                    early_stop=False).batched_fit(X_list, y_list)
    assert seen == [3 if fit else 1]


# ----------------------------------------------------------------------------
# mixed rollouts


def _child_ops(trajs):
    return [op for t in trajs for g in t["generations"][1:] for op in g["operators"][1:]]


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_beta_decides_who_makes_the_children(tiny_checkpoint, problems3, beta):
    X_list, y_list = problems3
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=10, num_generations=4, beta=beta, seed=3, early_stop=False)
    _, _, trajs = sr.batched_fit(X_list, y_list)
    ops = _child_ops(trajs)
    assert len(ops) == 3 * 3 * 9
    if beta == 0.0:
        assert set(ops) == {"neural"}
    elif beta == 1.0:
        assert set(ops) <= {"crossover", "mutation"} and "crossover" in ops
    else:
        assert {"neural", "crossover"} <= set(ops) and set(ops) <= {"neural", "crossover", "mutation"}
        assert 0.25 < ops.count("neural") / len(ops) < 0.75
    for t in trajs:
        gens = t["generations"]
        for prev, g in zip(gens, gens[1:]):
            assert g["operators"][0] == "elite"
            for op, h in zip(g["operators"][1:], _her(g, "heritages")[1:]):
                assert all(0 <= a < prev["population_size"] for a in h)
                if op == "crossover":
                    assert len(h) == 2
                elif op == "mutation":
                    assert len(h) == 1
                else:
                    assert len(h) <= 2
        st = t["stats"]
        if beta < 1.0:  # neural proposals were made, and all were well formed
            assert st["neural_proposals"] == sum(o == "neural" for g in gens[1:] for o in g["operators"]) > 0
            assert st["well_formed_pct"] == 100.0
        else:
            assert st.get("neural_proposals", 0) == 0 and st.get("well_formed", 0) == 0
    if beta < 1.0:
        assert sr.neural.stats["proposals"] == sr.neural.stats["well_formed"] == ops.count("neural") > 0
    else:  # the model proposed nothing
        assert sr.neural.stats["proposals"] == 0 and sr.neural.stats["well_formed"] == 0


def test_beta_one_is_exactly_the_expert(tiny_checkpoint, problems3):
    """beta = 1: every child comes from the expert, so the run is the expert's run with the same generators."""
    X_list, y_list = problems3
    kw = dict(population_size=10, num_generations=4, early_stop=False)
    sr = BatchedNeuralSR(tiny_checkpoint, beta=1.0, seed=3, **kw)
    _, mses, trajs = sr.batched_fit(X_list, y_list)
    for i, (X, y) in enumerate(zip(X_list, y_list)):
        expert = BasicSR(collect_trajectory=True, **kw).fit(X, y, rng=seed_for(3, i))  # problem i's generator
        assert _exprs(trajs[i]) == _exprs(expert.trajectory)
        assert [_her(g) for g in trajs[i]] == [_her(g) for g in expert.trajectory]
        assert mses[i] == expert.get_final_mse()
    assert sr.neural.stats["calls"] == 0 and sr.neural.stats["proposals"] == 0  # and no model work was done


def test_well_formed_pct_is_not_zero_without_neural_proposals(tiny_checkpoint, problems3):
    X_list, y_list = problems3
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=6, num_generations=3, beta=1.0, seed=3, early_stop=False)
    _, _, trajs = sr.batched_fit(X_list, y_list)
    assert set(_child_ops(trajs)) <= {"crossover", "mutation"}
    for t in trajs:  # nothing was proposed by the model: no percentage at all (not 0%, not 100%)
        st = t["stats"]
        assert st.get("neural_proposals", 0) == 0 and st.get("well_formed", 0) == 0
        assert "well_formed_pct" not in st
    assert sr.neural.stats["proposals"] == 0
    from nsr.evaluation import summarize

    rows = [{"solved": False, "train_mse": 1.0, "time": 0.0, "well_formed_pct": t["stats"].get("well_formed_pct")}
            for t in trajs]
    assert summarize(rows)["well_formed_pct"] is None  # and reports do not average in a 0


def test_mixed_proposer_share_follows_beta(tiny_checkpoint):
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=201, num_generations=2, seed=0, max_size=9)
    from neural_helpers import started_problems

    X = np.linspace(-1, 1, 10)[:, None]
    problems = started_problems(sr, [X, X], [X[:, 0] ** 3, X[:, 0] ** 4])
    mixed = MixedProposer(sr.neural, 0.25)
    props = mixed.propose(problems, 200)
    for p, prop in zip(problems, props):
        assert len(prop.lengths) == 200 and prop.codes.shape[0] == 200
        expert = prop.operators != NEURAL
        assert 0.15 < expert.mean() < 0.35
        assert set(prop.operators[expert].tolist()) <= {1, 2}  # crossover, mutation
        for k in range(200):
            assert is_valid(p.primitives.decode(prop.codes[k, : prop.lengths[k]]))
    for bad in (-0.1, 1.5, float("nan")):  # beta is checked where it is given (SamplingConfig)
        with pytest.raises(InputError, match="beta"):
            BatchedNeuralSR(tiny_checkpoint, beta=bad)
        with pytest.raises(InputError, match="beta"):
            SamplingConfig(checkpoint=tiny_checkpoint, beta=bad)


# ----------------------------------------------------------------------------
# bad input


def test_mismatched_and_empty_batches_are_refused(tiny_checkpoint, problems3):
    X_list, y_list = problems3
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=6, num_generations=2)
    with pytest.raises(InputError, match="3 problems but y_list has 2"):
        sr.batched_fit(X_list, y_list[:2])
    with pytest.raises(InputError, match="empty batch"):
        sr.batched_fit([], [])
    with pytest.raises(InputError, match="lists"):
        sr.batched_fit(X_list[0], y_list[0])
    bad_y = [y_list[0], np.where(np.arange(len(y_list[1])) == 2, np.nan, y_list[1])]
    with pytest.raises(InputError, match="problem 1: y contains NaN"):
        sr.batched_fit(X_list[:2], bad_y)
    with pytest.raises(InputError, match="problem 0"):
        sr.batched_fit([X_list[0]], [y_list[0][:-1]])


def test_a_constant_the_vocabulary_lacks_is_an_input_error(tiny_checkpoint, problems3):
    X_list, y_list = problems3
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=6, num_generations=2, constants=(1.0, 7.0))
    problems = sr.make_problems(X_list[:1], y_list[:1])
    with pytest.raises(InputError, match=r"problem 0: .*lacks 7\.0"):
        sr.neural.check(problems)
    with pytest.raises(InputError, match="7.0"):
        sr.batched_fit(X_list[:1], y_list[:1])
    assert problems[0].generation == 0 and problems[0].codes is None  # refused before any work


def test_more_variables_than_the_vocabulary_knows_is_an_input_error(tiny_checkpoint):
    prims = SimpleNamespace(n_vars=11, operators=("+",), constant_tokens=("1.0",), constant_leaves=("1.0",))
    fake = SimpleNamespace(primitives=prims, problem_id="wide")
    with pytest.raises(InputError, match="problem wide: 11 variables"):
        NeuralProposer(SamplingConfig(checkpoint=tiny_checkpoint, device="cpu")).check([fake])
