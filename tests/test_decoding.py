"""Grammar-constrained decoding: every proposal of a randomly initialised model is a
well-formed expression within max_size and the problem's own primitives (thousands of
samples, one-step and autoregressive), the grammar mask on its own, unconstrained sampling
and the inverse-CDF sampler."""
import numpy as np
import pytest
import torch
from neural_helpers import started_problems

from nsr.config import SamplingConfig
from nsr.decoding import GrammarMask, sample_from_logits
from nsr.estimators import BatchedNeuralSR
from nsr.expressions import VARIABLES, is_valid
from nsr.neural import NeuralProposer
from nsr.tokenizer import Vocab


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


def _data(n_vars, seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(16, n_vars))
    return X, X[:, 0] ** 3 - X[:, -1] * X[:, 0] + 0.5


def _spy_raw(monkeypatch, proposer):
    """Record the sampled rows and the raw token-id lists they hold (before any fallback for invalid ones)."""
    from nsr.children import split_rows

    raw, rows = [], []
    orig = proposer.sample

    def spy(problems, prompts, counts, *rest):
        out = orig(problems, prompts, counts, *rest)
        v = proposer.load().vocab
        for seq, c in zip(out, counts):
            rows.append(np.array(seq))
            ids, lengths = split_rows(np.asarray(seq, dtype=np.int64), c, v.eos, v.pad, v.sep, 4096)
            raw.append([ids[k, : lengths[k]].tolist() for k in range(c)])
        return out

    monkeypatch.setattr(proposer, "sample", spy)
    return raw, rows


def _mixed_problems(checkpoint, max_size, n_arith, n_full, autoregressive=False, constrained=True):
    """1-variable arith problems (constant 1.0) and 2-variable full problems (constants 1.0, 2.0),
    all sampled by one proposer in one batch."""
    arith = BatchedNeuralSR(checkpoint, population_size=10, num_generations=2, operator_set="arith", max_size=max_size,
                            max_depth=3, autoregressive=autoregressive, constrained=constrained, seed=0)
    full = BatchedNeuralSR(checkpoint, population_size=10, num_generations=2, operator_set="full",
                           constants=(1.0, 2.0), max_size=max_size, max_depth=3, seed=1)
    pa = started_problems(arith, *zip(*[_data(1, i) for i in range(n_arith)]))
    pf = started_problems(full, *zip(*[_data(2, 100 + i) for i in range(n_full)]), seed_base=1)
    return arith.neural, pa + pf


def _allowed_tokens(problem):
    return set(problem.primitives.tokens)


def _check_samples(problems, raw, counts, max_size, vocab):
    assert len(raw) == len(problems)
    n = 0
    for p, exprs, c in zip(problems, raw, counts):
        assert len(exprs) == c
        allowed = _allowed_tokens(p)
        for ids in exprs:
            toks = tuple(vocab.tokens[i] for i in ids)
            assert is_valid(toks), toks
            assert 1 <= len(toks) <= max_size, toks
            assert set(toks) <= allowed, (toks, allowed)
            n += 1
    return n


@pytest.mark.parametrize("max_size", [25, 7])
def test_constrained_one_step_samples_are_all_well_formed(monkeypatch, tiny_checkpoint, max_size):
    proposer, problems = _mixed_problems(tiny_checkpoint, max_size, n_arith=60, n_full=40)
    raw, _ = _spy_raw(monkeypatch, proposer)
    props = proposer.propose(problems, 32)  # 100 problems x 32 children = 3200 samples
    vocab = proposer.load().vocab
    n = _check_samples(problems, raw, [32] * len(problems), max_size, vocab)
    assert n == 3200
    # the proposals the loop receives are those very expressions, and the statistics say 100%
    for p, prop, exprs in zip(problems, props, raw):
        got = [p.primitives.decode(prop.codes[k, : prop.lengths[k]]) for k in range(len(prop.lengths))]
        assert got == [tuple(vocab.tokens[i] for i in ids) for ids in exprs]
        assert p.stats["neural_proposals"] == 32 and p.stats["well_formed"] == 32
        assert p.stats["well_formed_pct"] == 100.0
        assert set(prop.operators.tolist()) == {4}  # NEURAL
    assert proposer.stats["proposals"] == proposer.stats["well_formed"] == 3200
    # a 1-variable arith problem never sees x1, sin, '/' or the constant 2.0 ...
    arith_tokens = {vocab.tokens[i] for exprs in raw[:60] for ids in exprs for i in ids}
    assert not arith_tokens & {"x1", "sin", "/", "2.0", "exp", "^"}
    assert arith_tokens <= {"+", "-", "*", "x0", "1.0"}
    # ... while the full problems do use operators beyond arith (the model is random, not restricted)
    full_tokens = {vocab.tokens[i] for exprs in raw[60:] for ids in exprs for i in ids}
    assert full_tokens & {"sin", "cos", "exp", "log", "sqrt", "/", "^"} and "x1" in full_tokens
    assert not full_tokens & set(VARIABLES[2:])
    if max_size == 7:  # small budgets are used up to the limit, never beyond
        assert max(len(ids) for exprs in raw for ids in exprs) == 7


def test_sampling_options_keep_the_grammar(monkeypatch, tiny_checkpoint):
    """High temperature, top-k and top-p change the distribution, not the guarantees."""
    for kw in ({"temperature": 3.0}, {"top_k": 3}, {"top_p": 0.5, "temperature": 0.5}):
        _, problems = _mixed_problems(tiny_checkpoint, 9, n_arith=10, n_full=10)
        proposer = NeuralProposer(SamplingConfig(checkpoint=tiny_checkpoint, device="cpu", **kw))
        raw, _ = _spy_raw(monkeypatch, proposer)
        proposer.propose(problems, 20)
        assert _check_samples(problems, raw, [20] * 20, 9, proposer.load().vocab) == 400


def test_problems_with_different_child_counts_in_one_call(monkeypatch, tiny_checkpoint):
    proposer, problems = _mixed_problems(tiny_checkpoint, 11, n_arith=3, n_full=2)
    raw, _ = _spy_raw(monkeypatch, proposer)
    counts = [5, 0, 12, 1, 7]
    props = proposer.propose(problems, counts)
    assert [len(p.lengths) for p in props] == counts
    _check_samples(problems, raw, counts, 11, proposer.load().vocab)


def test_autoregressive_samples_are_all_well_formed(monkeypatch, tiny_ar_checkpoint):
    proposer, problems = _mixed_problems(tiny_ar_checkpoint, 8, n_arith=30, n_full=20)
    assert proposer.load().mode == "autoregressive"
    raw, rows = _spy_raw(monkeypatch, proposer)
    counts = [60] * 50
    proposer.propose(problems, counts)  # 3000 expressions, 50 sequences of 60 each
    vocab = proposer.load().vocab
    assert _check_samples(problems, raw, counts, 8, vocab) == 3000
    arith_tokens = {vocab.tokens[i] for exprs in raw[:30] for ids in exprs for i in ids}
    assert arith_tokens <= {"+", "-", "*", "x0", "1.0"}
    for r in rows:  # one row per problem: c1 <sep> c2 ... c60 <eos>, then padding
        (row,) = r
        toks = row.tolist()
        end = toks.index(vocab.eos)
        assert toks[:end].count(vocab.sep) == 59
        assert all(t == vocab.pad for t in toks[end + 1:])
    for p in problems:
        assert p.stats["well_formed_pct"] == 100.0 and p.stats["neural_proposals"] == 60


def test_autoregressive_neural_sr_runs_with_the_ar_checkpoint(tiny_ar_checkpoint):
    sr = BatchedNeuralSR(tiny_ar_checkpoint, population_size=8, num_generations=3, autoregressive=True, seed=0,
                         max_size=12)
    models, mses, trajs = sr.batched_fit(*zip(*[_data(1, 0), _data(2, 1)]))
    assert len(models) == 2 and all(np.isfinite(mses))
    for t in trajs:
        assert t["stats"]["well_formed_pct"] == 100.0 and t["stats"]["neural_proposals"] == 14
        assert t["generations"][1]["operators"] == ["elite"] + ["neural"] * 7


# ----------------------------------------------------------------------------
# the grammar mask on its own


def _ids(v, toks):
    return torch.tensor([v.ids[t] for t in toks])


def test_processor_masks_step_by_step():
    v = Vocab()
    allowed = torch.from_numpy(v.allowed_mask(["+", "-", "*"], 1, ["1.0"]))[None]
    proc = GrammarMask(v, allowed, max_size=3)

    def admitted():
        return {v.tokens[i] for i in proc.mask()[0].nonzero()[:, 0].tolist()}

    assert admitted() == {"+", "-", "*", "x0", "1.0"}
    proc.update(_ids(v, ["+"]))
    assert admitted() == {"x0", "1.0"}  # another operator would need 5 nodes > 3
    proc.update(_ids(v, ["x0"]))
    assert admitted() == {"x0", "1.0"}
    proc.update(_ids(v, ["1.0"]))
    assert admitted() == {"<eos>"}  # complete: only the end
    proc.update(_ids(v, ["<eos>"]))
    assert admitted() == {"<pad>"}  # finished rows only pad


def test_processor_sequences_of_expressions_and_row_selection():
    v = Vocab()
    allowed = torch.from_numpy(np.stack([v.allowed_mask(["*", "sin"], 2, ["1.0"]),
                                         v.allowed_mask(["+"], 1, ["2.0"])]))
    proc = GrammarMask(v, allowed, max_size=4, n_expressions=[2, 1])
    proc.update(_ids(v, ["x1", "2.0"]))
    m = proc.mask()
    assert m[0].nonzero()[:, 0].tolist() == [v.sep]  # row 0 owes a second expression
    assert m[1].nonzero()[:, 0].tolist() == [v.eos]
    proc.update(_ids(v, ["<sep>", "<eos>"]))
    assert {v.tokens[i] for i in proc.mask()[0].nonzero()[:, 0].tolist()} == {"*", "sin", "x0", "x1", "1.0"}
    proc.select(torch.tensor([0]))
    assert proc.rows == 1 and proc.mask().shape == (1, len(v))
    proc.update(_ids(v, ["sin"]))
    proc.update(_ids(v, ["sin"]))
    proc.update(_ids(v, ["sin"]))
    assert {v.tokens[i] for i in proc.mask()[0].nonzero()[:, 0].tolist()} == {"x0", "x1", "1.0"}  # size 4 reached


def test_unconstrained_processor_only_stops_rows():
    v = Vocab()
    allowed = torch.from_numpy(v.allowed_mask(["+"], 1, ["1.0"]))[None]
    proc = GrammarMask(v, allowed, max_size=2, constrained=False)
    m = proc.mask()[0]
    assert m.sum() == len(v) - 1 and not m[v.pad]  # anything but padding, even tokens the grammar forbids
    for t in ["sin", "x5", "x0"]:
        proc.update(_ids(v, [t]))
    assert proc.finished.all()  # ran past max_size: stopped (and invalid)
    assert proc.mask()[0].nonzero()[:, 0].tolist() == [v.pad]


def test_unconstrained_sampling_yields_invalid_proposals_and_the_loop_still_runs(tiny_checkpoint):
    sr = BatchedNeuralSR(tiny_checkpoint, population_size=10, num_generations=3, constrained=False, seed=0,
                         max_size=15, early_stop=False)
    X, y = _data(1, 0)
    X2, y2 = _data(2, 1)
    models, mses, trajs = sr.batched_fit([X, X2], [y, y2])
    for t, m in zip(trajs, models):
        st = t["stats"]
        assert st["neural_proposals"] == 18
        assert st["well_formed"] < st["neural_proposals"]  # a random model is mostly malformed on its own
        assert st["well_formed_pct"] == pytest.approx(100.0 * st["well_formed"] / st["neural_proposals"])
        assert st["well_formed_pct"] < 100
        assert len(t["generations"]) == 3
        # invalid proposals never enter the population: everything recorded parses
        from nsr.expressions import parse

        for g in t["generations"]:
            for e in g["expressions"]:
                assert is_valid(parse(e))
        assert is_valid(m.tokens)
    assert sr.neural.stats["well_formed"] < sr.neural.stats["proposals"] == 36


# ----------------------------------------------------------------------------
# the sampler


def test_sample_from_logits_never_draws_masked_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 20, generator=g)
    mask = torch.rand(500, 20, generator=g) < 0.6
    mask[:, 3] = True  # at least one token per row
    logits = logits.masked_fill(~mask, float("-inf"))
    for kw in ({}, {"temperature": 5.0}, {"top_k": 2}, {"top_p": 0.3}, {"temperature": 0.05}):
        u = torch.rand(500, generator=g)
        u[:5] = torch.tensor([0.0, 1.0 - 1e-9, 0.5, 1e-12, 0.999999])
        idx = sample_from_logits(logits, u, **kw)
        assert mask[torch.arange(500), idx].all(), kw


def test_sample_from_logits_is_inverse_cdf_sampling():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    logits = probs.log()[None].repeat(1000, 1)
    u = (torch.arange(1000) + 0.5) / 1000
    idx = sample_from_logits(logits, u)
    counts = torch.bincount(idx, minlength=4).tolist()
    assert counts == [100, 0, 600, 300]
    assert idx.tolist() == sorted(idx.tolist())  # monotone in the uniform
    # top_k=1 is greedy; top_p keeps the smallest prefix reaching p
    assert set(sample_from_logits(logits, u, top_k=1).tolist()) == {2}
    assert set(sample_from_logits(logits, u, top_p=0.6).tolist()) == {2}
    assert set(sample_from_logits(logits, u, top_p=0.7).tolist()) == {2, 3}


@pytest.mark.parametrize("kw", [{"temperature": 0}, {"temperature": -1}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}])
def test_bad_sampling_parameters(tiny_checkpoint, kw):
    from nsr.safe_io import InputError

    with pytest.raises(InputError, match=next(iter(kw))):  # the message names the parameter
        NeuralProposer(SamplingConfig(checkpoint=tiny_checkpoint, **kw))
    with pytest.raises(InputError, match=next(iter(kw))):
        BatchedNeuralSR(tiny_checkpoint, **kw)
