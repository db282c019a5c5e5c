"""The estimators (nsr/estimators.py) and the searcher under them (nsr/search.py): parameters from the configs
(get_params / set_params, clone-like reconstruction), the model_path alias, batched_fit keywords, Trajectory,
and the expert proposer reproduced from a recorded state (Problem.load_state)."""
import pickle

import numpy as np
import pytest
from helpers import heritage_lists as _her
from neural_helpers import hard_records

from nsr.config import ConfigError, EvolutionConfig, SamplingConfig
from nsr.estimators import BasicSR, BatchedNeuralSR, NeuralSR, Trajectory, batched_fit
from nsr.evolution import Problem
from nsr.proposers import ExpertProposer, MixedProposer
from nsr.safe_io import InputError
from nsr.search import Searcher


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


@pytest.fixture(scope="module")
def problems():
    recs = hard_records(2, seed=31)
    return [r["X"] for r in recs], [r["y"] for r in recs]


def _exprs(traj):
    return [g["expressions"] for g in traj]


# ----------------------------------------------------------------------------
# parameters


def _estimators(checkpoint):
    kw = dict(population_size=8, num_generations=3, early_stop=False, seed=5)
    return [BasicSR(collect_trajectory=True, **kw), NeuralSR(checkpoint, collect_trajectory=True, **kw),
            BatchedNeuralSR(checkpoint, **kw)]


def test_get_params_are_the_config_fields_and_set_params_round_trips(tiny_checkpoint):
    for e in _estimators(tiny_checkpoint):
        params = e.get_params()
        names = set(EvolutionConfig.__dataclass_fields__) | {"seed"}
        if isinstance(e, BatchedNeuralSR):
            names |= set(SamplingConfig.__dataclass_fields__) | {"batch_size"}
        assert set(params) == names, type(e).__name__
        assert e.set_params(**params) is e and e.get_params() == params
        e.set_params(population_size=11, max_size=9)
        assert e.get_params() == {**params, "population_size": 11, "max_size": 9}
        assert e.evolution_config().population_size == 11 and e.evolution_config().max_size == 9
        with pytest.raises(ConfigError, match="population_size"):
            e.set_params(population_size=1)
        with pytest.raises(TypeError, match="no_such_parameter"):
            type(e)(no_such_parameter=3)
        with pytest.raises(ConfigError, match="seed"):
            type(e)(seed=-1)


def test_reconstruction_from_get_params_gives_identical_results(tiny_checkpoint, problems):
    """``type(e)(**e.get_params())`` (what scikit-learn's clone does) is the same estimator: same results."""
    X_list, y_list = problems
    for e in _estimators(tiny_checkpoint):
        twin = type(e)(**e.get_params())
        assert twin.get_params() == e.get_params()
        if isinstance(e, NeuralSR) or not isinstance(e, BatchedNeuralSR):
            a, b = e.fit(X_list[1], y_list[1]), twin.fit(X_list[1], y_list[1])
            assert str(a.best_model_) == str(b.best_model_) and a.get_final_mse() == b.get_final_mse()
            assert _exprs(a.trajectory) == _exprs(b.trajectory)
        else:
            ra, rb = e.batched_fit(X_list, y_list), twin.batched_fit(X_list, y_list)
            assert [str(m) for m in ra[0]] == [str(m) for m in rb[0]] and ra[1] == rb[1]
            assert [_exprs(t) for t in ra[2]] == [_exprs(t) for t in rb[2]]


def test_model_path_is_another_name_for_checkpoint(tiny_checkpoint, problems, tmp_path):
    X_list, y_list = problems
    kw = dict(population_size=6, num_generations=2, seed=1)
    a = BatchedNeuralSR(model_path=tiny_checkpoint, **kw)
    b = BatchedNeuralSR(tiny_checkpoint, **kw)
    c = BatchedNeuralSR(checkpoint=tiny_checkpoint, model_path=tiny_checkpoint, **kw)  # the same one twice is fine
    assert a.get_params() == b.get_params() == c.get_params() and a.checkpoint == tiny_checkpoint
    assert "model_path" not in a.get_params()
    assert [str(m) for m in a.batched_fit(X_list, y_list)[0]] == [str(m) for m in b.batched_fit(X_list, y_list)[0]]
    with pytest.raises(InputError, match="checkpoint or model_path"):
        BatchedNeuralSR(tiny_checkpoint, model_path=str(tmp_path / "other"))
    assert NeuralSR(model_path=tiny_checkpoint).checkpoint == tiny_checkpoint


def test_batched_fit_keywords(tiny_checkpoint, problems):
    X_list, y_list = problems
    kw = dict(population_size=6, num_generations=3, seed=2, early_stop=False)
    sr = BatchedNeuralSR(tiny_checkpoint, **kw)
    ref = sr.batched_fit(X_list, y_list)
    for call in (dict(X_batch=X_list, y_batch=y_list), dict(X_list=X_list, y_list=y_list)):
        got = BatchedNeuralSR(tiny_checkpoint, **kw).batched_fit(**call)
        assert [str(m) for m in got[0]] == [str(m) for m in ref[0]] and got[1] == ref[1]
        assert [_exprs(t) for t in got[2]] == [_exprs(t) for t in ref[2]]
    mod = batched_fit(X_batch=X_list, y_batch=y_list, checkpoint=tiny_checkpoint, **kw)
    assert [_exprs(t) for t in mod[2]] == [_exprs(t) for t in ref[2]]
    # batch_size only groups the model calls: a float32 model may differ in the last bits across
    # groupings, so only the shape of the result is checked here (float64 invariance: test_neural_sr)
    models, mses, trajs = sr.batched_fit(X_list, y_list, batch_size=1)
    assert len(models) == len(mses) == len(trajs) == 2


# ----------------------------------------------------------------------------
# Trajectory


def test_trajectory_iterates_generation_by_generation(tiny_checkpoint, problems):
    X_list, y_list = problems
    _, mses, trajs = BatchedNeuralSR(tiny_checkpoint, population_size=6, num_generations=4, seed=3,
                                     early_stop=False).batched_fit(X_list, y_list)
    for t, mse in zip(trajs, mses):
        assert isinstance(t, Trajectory) and len(t) == 4
        gens = list(t)
        assert gens == t["generations"] == t.to_dict()["generations"]
        assert [g["generation"] for g in t] == [0, 1, 2, 3]
        assert t[0] is gens[0] and t[-1] is gens[-1] and t[1:3] == gens[1:3]
        assert set(t.keys()) == {"generations", "ancestors_of_best", "best_progression", "stats"}
        assert t["best_progression"][-1] == mse and len(t["ancestors_of_best"]) == 4
        assert t["stats"]["neural_proposals"] == 3 * 5
    basic = BasicSR(population_size=6, num_generations=3, collect_trajectory=True, early_stop=False,
                    seed=0).fit(X_list[0], y_list[0])
    assert isinstance(basic.trajectory, Trajectory) and len(list(basic.trajectory)) == 3


# ----------------------------------------------------------------------------
# the searcher


def test_searcher_chooses_the_proposer(tiny_checkpoint):
    evo = EvolutionConfig(population_size=6, num_generations=2)
    expert = Searcher(evo)
    assert expert.source == "basic_sr" and expert.neural is None and expert.load() is None
    assert isinstance(expert.proposer(), ExpertProposer)
    assert Searcher(evo, SamplingConfig()).source == "basic_sr"  # no checkpoint: the expert
    neural = Searcher(evo, SamplingConfig(checkpoint=tiny_checkpoint, device="cpu"))
    assert neural.source == "neural_sr" and neural.proposer() is neural.neural
    mixed = Searcher(evo, SamplingConfig(checkpoint=tiny_checkpoint, device="cpu", beta=0.5))
    assert isinstance(mixed.proposer(), MixedProposer) and mixed.proposer().beta == 0.5
    ck = neural.load()
    assert neural.load() is ck and neural.neural.load() is ck  # loaded once
    # sent to worker processes without the loaded model
    clone = pickle.loads(pickle.dumps(neural))
    assert clone._neural is None and clone.sampling == neural.sampling and clone.evolution == evo
    with pytest.raises(ValueError, match="y contains NaN"):
        expert.problem(np.zeros((3, 1)), np.array([0.0, np.nan, 1.0]), None)


def test_searcher_refuses_a_checkpoint_that_cannot_express_the_operators(tiny_checkpoint):
    evo = EvolutionConfig(constants=(1.0, 7.0))
    with pytest.raises(InputError, match="7.0") as e:
        Searcher(evo, SamplingConfig(checkpoint=tiny_checkpoint, device="cpu")).load()
    assert tiny_checkpoint in str(e.value)


def test_load_state_reproduces_the_expert_proposal_from_a_recorded_state():
    """A population recorded at generation g, loaded into a fresh Problem with the same generator state,
    gives exactly the children the live run's expert proposed from it (what DAgger relabeling relies on)."""
    rec = hard_records(1, seed=4)[0]
    evo = EvolutionConfig(population_size=12, num_generations=6, early_stop=False)
    live = Problem(rec["X"], rec["y"], evo, np.random.default_rng(9))
    searcher = Searcher(evo)
    from nsr.proposers import initial_population

    live.start(*initial_population(live))
    for _ in range(3):
        live.advance(ExpertProposer.propose_one(live, 11))
    state = (live.codes.copy(), live.lengths.copy(), live.fitness.copy(), live.generation)
    rng_state = live.rng.bit_generator.state
    want = ExpertProposer.propose_one(live, 11)
    fresh = searcher.problem(rec["X"], rec["y"], None)
    fresh.rng = np.random.default_rng(0)
    fresh.rng.bit_generator.state = rng_state
    fresh.load_state(*state)
    assert fresh.generation == 3 and fresh.generations == [] and fresh.best_progression == []  # nothing recorded
    got = ExpertProposer.propose_one(fresh, 11)
    for a, b in ((want.codes, got.codes), (want.lengths, got.lengths), (want.parents, got.parents),
                 (want.operators, got.operators)):
        np.testing.assert_array_equal(a, b)
    # and it is the state that matters: another recorded generation gives other children
    other = searcher.problem(rec["X"], rec["y"], None)
    other.rng = np.random.default_rng(0)
    other.rng.bit_generator.state = rng_state
    other.load_state(state[0][::-1].copy(), state[1][::-1].copy(), state[2][::-1].copy(), 3)
    assert not np.array_equal(ExpertProposer.propose_one(other, 11).parents, want.parents)


def test_basic_sr_is_the_searcher_on_the_problem_generator():
    rec = hard_records(1, seed=6)[0]
    kw = dict(population_size=10, num_generations=4, early_stop=False)
    m = BasicSR(collect_trajectory=True, seed=8, **kw).fit(rec["X"], rec["y"])
    s = Searcher(EvolutionConfig(collect_trajectory=True, **kw))
    (p,) = s.run([s.problem(rec["X"], rec["y"], np.random.default_rng(8))])
    assert [g["expressions"] for g in p.generations] == _exprs(m.trajectory)
    assert [_her(g) for g in p.generations] == [_her(g) for g in m.trajectory]
