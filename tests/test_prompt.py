"""nsr/prompt.py: which members a prompt shows (rank_members: ties, duplicates, -inf, the float32 ranking),
the encoded prompt and targets, and the prompt settings travelling in the checkpoint (max_members)."""
import json
import shutil

import numpy as np
import pytest

from nsr.prompt import PromptConfig, encode_prompt, encode_target, rank_members
from nsr.tokenizer import Vocab


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


def test_best_first_and_capped():
    assert rank_members([-3.0, -1.0, -2.0, -0.5], list("abcd"), 10) == [3, 1, 2, 0]
    assert rank_members([-3.0, -1.0, -2.0, -0.5], list("abcd"), 2) == [3, 1]
    assert rank_members([-1.0], ["a"], 1) == [0]
    assert rank_members([], [], 5) == []


def test_ties_keep_population_order():
    assert rank_members([-1.0, -2.0, -1.0, -1.0], list("abcd"), 10) == [0, 2, 3, 1]
    assert rank_members([-1.0] * 5, list("abcde"), 3) == [0, 1, 2]


def test_duplicates_are_shown_once_at_their_best_position():
    keys = ["x0", "x1", "x0", "x2", "x1"]
    fit = [-2.0, -1.0, -0.5, -3.0, -1.0]
    assert rank_members(fit, keys, 10) == [2, 1, 3]  # x0 (its better copy), x1 (first of the tie), x2
    # duplicates do not use up the cap: max_members unique members
    assert rank_members([-1.0, -1.0, -1.0, -2.0, -3.0], ["a", "a", "a", "b", "c"], 2) == [0, 3]


def test_minus_inf_members_come_last_and_keep_their_order():
    inf = -np.inf
    assert rank_members([inf, -5.0, inf, -1.0], list("abcd"), 10) == [3, 1, 0, 2]
    assert rank_members([inf, -5.0, inf, -1.0], list("abcd"), 3) == [3, 1, 0]
    assert rank_members([inf, inf], list("ab"), 10) == [0, 1]
    # finite beyond float32's range is -inf there too: a tie with the non-finite members, in population order
    assert rank_members([-1e300, inf, -1.0], list("abc"), 10) == [2, 0, 1]


def test_ranking_is_on_float32_so_a_trace_ranks_as_the_live_population():
    f64 = np.array([-0.5, -0.5 + 1e-12, -0.25])
    assert int(np.argsort(-f64, kind="stable")[1]) == 1  # float64 would put member 1 before member 0
    assert rank_members(f64, list("abc"), 10) == [2, 0, 1]
    assert rank_members(f64.astype(np.float32), list("abc"), 10) == [2, 0, 1]


def test_encode_prompt_and_targets():
    v = Vocab()
    members = [("<e3>", ("+", "x0", "1.0")), ("<einf>", ("x1",))]
    ids = encode_prompt(v, 2, ["+", "*"], ["1.0"], 4, members)
    assert " ".join(v.decode(ids)) == "<bos> <nv2> + * 1.0 <g4> <pop> <e3> + x0 1.0 <sep> <einf> x1 <child>"
    ar = encode_prompt(v, 2, ["+", "*"], ["1.0"], 4, members, autoregressive=True)
    assert ar[:-1] == ids[:-1] and v.decode(ar)[-1] == "<children>"
    children = [("*", "x0", "x1"), ("1.0",)]
    assert [v.decode(t) for t in encode_target(v, children)] == [["*", "x0", "x1", "<eos>"], ["1.0", "<eos>"]]
    (whole,) = encode_target(v, children, autoregressive=True)
    assert v.decode(whole) == ["*", "x0", "x1", "<sep>", "1.0", "<eos>"]


def test_prompt_config_from_a_checkpoint_config():
    assert PromptConfig.from_checkpoint({}).max_members == 32  # saved before it was recorded: the default
    assert PromptConfig.from_checkpoint(None).max_members == 32
    assert PromptConfig.from_checkpoint({"prompt": {"max_members": 5}}) == PromptConfig(5)
    for bad in (0, -1, 5000, 2.5, True, "8", None):
        with pytest.raises(ValueError, match="max_members"):
            PromptConfig.from_checkpoint({"prompt": {"max_members": bad}})


def test_the_proposer_shows_the_checkpoints_number_of_members(tmp_path, tiny_checkpoint):
    """max_members is read from the checkpoint's config.json, so sampling shows what training showed."""
    from neural_helpers import started_problems

    from nsr.estimators import BatchedNeuralSR
    from nsr.model import load_checkpoint

    path = tmp_path / "ck3"
    shutil.copytree(tiny_checkpoint, path)
    with open(path / "config.json") as f:
        cfg = json.load(f)
    assert cfg["nsr"]["prompt"] == {"max_members": 32}  # make_config records the default
    cfg["nsr"]["prompt"] = {"max_members": 3}
    with open(path / "config.json", "w") as f:
        json.dump(cfg, f)
    assert load_checkpoint(str(path), "cpu").prompt.max_members == 3
    X = np.linspace(-1, 1, 12)[:, None]
    for ck, shown in ((str(path), 3), (tiny_checkpoint, 10)):
        sr = BatchedNeuralSR(ck, population_size=10, num_generations=2, seed=0, device="cpu")
        (p,) = started_problems(sr, [X], [X[:, 0] ** 3])
        members, prompt = sr.neural.state(p)
        assert len(members) == min(shown, len(set(map(tuple, (p.tokens(i) for i in range(10))))))
        assert sr.neural.load().vocab.decode(prompt.tolist()).count("<sep>") == len(members) - 1
    cfg["nsr"]["prompt"] = {"max_members": 0}
    with open(path / "config.json", "w") as f:
        json.dump(cfg, f)
    from nsr.safe_io import InputError

    with pytest.raises(InputError, match="max_members"):
        load_checkpoint(str(path), "cpu")
