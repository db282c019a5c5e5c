"""The fixed vocabulary and its Hugging Face tokenizer, error/generation tokens, checkpoints
(save, reload with the Auto classes, refusal of broken ones) and the shared-prefix
attention used in training (PackedPrefixLoss) and decoding (owner_mask)."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from neural_helpers import BROKEN_KINDS, BROKEN_WORDS, broken_checkpoint, other_vocab_tokenizer

from nsr.config import SamplingConfig
from nsr.expressions import VARIABLES
from nsr.model import (PackedPrefixLoss, find_checkpoint, load_checkpoint, make_config, new_model, prefill,
                       resolve_device, run, save_checkpoint, segment_mask, owner_mask, PROMPT, NOBODY, DUMMY)
from nsr.operators import BINARY, UNARY
from nsr.prompt import encode_prompt, error_token, generation_token
from nsr.safe_io import InputError
from nsr.tokenizer import GEN_TOKENS, N_ERR, VOCAB, Vocab, build_hf_tokenizer, vocab_tokens


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


# ----------------------------------------------------------------------------
# vocabulary and tokenizer


def test_vocabulary_is_small_and_holds_the_expression_language():
    v = Vocab()
    assert len(v) == len(VOCAB) < 200
    assert len(set(v.tokens)) == len(v.tokens)
    assert sorted(v.ids.values()) == list(range(len(v)))
    for t in list(BINARY) + list(UNARY) + list(VARIABLES) + ["1.0", "<einf>", "<e0>"]:
        assert t in v.ids, t
    # arities drive the grammar: operators 2/1, leaves 0, structure tokens -1
    assert v.arity[v.ids["+"]] == 2 and v.arity[v.ids["sin"]] == 1
    assert v.arity[v.ids["x9"]] == 0 and v.arity[v.ids["1.0"]] == 0
    assert v.arity[v.sep] == -1 and v.arity[v.ids["<e3>"]] == -1 and v.arity[v.ids["<nv1>"]] == -1


def test_tokenizer_saves_and_reloads_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    folder = tmp_path / "tok"
    build_hf_tokenizer().save_pretrained(str(folder))
    path = folder / "tokenizer.json"
    assert os.path.exists(path) and os.path.getsize(path) < 50_000  # a word list, not a 50k BPE vocabulary
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert isinstance(tok, PreTrainedTokenizerBase)
    v = Vocab()
    assert len(tok) == len(v)
    assert tok.get_vocab() == v.ids
    assert Vocab(vocab_tokens(tok)).tokens == v.tokens
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.sep_token) == ("<bos>", "<eos>", "<pad>", "<sep>")
    assert tok.unk_token_id == v.unk
    assert tok.convert_tokens_to_ids(["banana"]) == [v.unk]


def test_prompt_round_trip_through_the_reloaded_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    build_hf_tokenizer().save_pretrained(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    v = Vocab()
    members = [("<e7>", ("+", "x0", "1.0")), ("<e9>", ("x1",)), ("<einf>", ("sin", "/", "x1", "x0"))]
    ids = encode_prompt(v, 2, ["+", "-", "*", "/", "sin"], ["1.0"], 3, members)
    text = " ".join(v.decode(ids))
    assert text == "<bos> <nv2> + - * / sin 1.0 <g3> <pop> <e7> + x0 1.0 <sep> <e9> x1 <sep> <einf> sin / x1 x0 <child>"
    enc = tok(text)["input_ids"]
    assert enc == ids  # no extra special tokens, no splitting of '1.0' or '<e7>'
    assert tok.decode(enc) == text
    assert tok.convert_ids_to_tokens(enc) == text.split()
    ar = encode_prompt(v, 2, ["+"], ["1.0"], 0, members[:1], autoregressive=True)
    assert v.decode(ar)[-1] == "<children>" and v.decode(ar)[-2:-1] == ["1.0"]


def test_reloaded_tokenizer_keeps_left_padding(tmp_path):
    from transformers import AutoTokenizer

    assert build_hf_tokenizer().padding_side == "left"
    build_hf_tokenizer().save_pretrained(str(tmp_path))
    assert AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True).padding_side == "left"


def _err_index(tok):
    return N_ERR if tok == "<einf>" else int(tok[2:-1])


def test_error_token_is_monotone_in_mse():
    v = Vocab()
    mses = np.concatenate(([0.0, 1e-300], np.logspace(-20, 8, 1500)))
    toks = [error_token(float(m), 1.0) for m in mses]
    idx = [_err_index(t) for t in toks]
    assert all(t in v.ids for t in toks)
    assert all(a <= b for a, b in zip(idx, idx[1:])), "error buckets must not decrease as the MSE grows"
    assert toks[0] == "<e0>" and toks[-1] == f"<e{N_ERR - 1}>"
    assert len(set(idx)) == N_ERR  # every finite bucket is used across the range
    # half-decade bins: each step of 10^0.5 (in the bins' middle) moves exactly one bucket
    mids = [10 ** (-11.75 + 0.5 * k) for k in range(28)]
    steps = np.diff([_err_index(error_token(m, 1.0)) for m in mids])
    assert set(steps.tolist()) == {1}


def test_error_token_is_relative_to_the_target_scale_and_maps_non_finite_to_einf():
    assert error_token(1.0, 100.0) == error_token(0.01, 1.0)
    assert error_token(3.0, 1.0) != error_token(3.0, 1e4)
    assert error_token(math.inf, 1.0) == "<einf>"
    assert error_token(float("nan"), 1.0) == "<einf>"
    assert error_token(-math.inf, 1.0) == "<einf>"
    assert error_token(1e-13, 1.0) == "<e0>"  # solved
    assert error_token(1e30, 1.0) == f"<e{N_ERR - 1}>"  # huge finite errors clip to the last finite bucket


def test_error_token_of_a_huge_finite_relative_error():
    # e.g. a candidate with '^' reaching 1e153 on a target of variance 0.01: finite MSE, infinite ratio
    assert error_token(1e307, 0.01) == f"<e{N_ERR - 1}>"


def test_generation_token_is_monotone():
    toks = [generation_token(g) for g in range(0, 2000, 3)]
    idx = [GEN_TOKENS.index(t) for t in toks]
    assert all(a <= b for a, b in zip(idx, idx[1:]))
    assert generation_token(0) == "<g0>" and generation_token(10**6) == GEN_TOKENS[-1]


def test_check_supports_names_what_the_vocabulary_lacks():
    v = Vocab()
    v.check_supports(10, ["+", "sin"], ["1.0", "3.141592653589793"])  # all known
    with pytest.raises(ValueError, match="x0..x9"):
        v.check_supports(11, ["+"], ["1.0"])
    with pytest.raises(ValueError, match="7.0"):
        v.check_supports(1, ["+"], ["1.0", "7.0"])
    without_sin = Vocab([t for t in VOCAB if t != "sin"])  # e.g. a checkpoint from before an operator existed
    without_sin.check_supports(3, ["+", "cos"], ["1.0"])
    with pytest.raises(ValueError, match="sin"):
        without_sin.check_supports(1, ["+", "sin"], ["1.0"])


# ----------------------------------------------------------------------------
# checkpoints


def test_checkpoint_folder_holds_safetensors_config_and_tokenizer(tiny_checkpoint):
    files = set(os.listdir(tiny_checkpoint))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert "pytorch_model.bin" not in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    with open(os.path.join(tiny_checkpoint, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["vocab_size"] == len(Vocab())
    assert cfg["nsr"]["mode"] == "one_step"
    from nsr.model import MODEL_SIZES

    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == MODEL_SIZES["tiny"][0]  # the preset it was made with
    total = sum(os.path.getsize(os.path.join(tiny_checkpoint, f)) for f in files)
    assert total < 20 * 2 ** 20


def test_checkpoint_reloads_with_the_auto_classes(tiny_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint, local_files_only=True)
    assert model.config.vocab_size == len(tok) == len(Vocab())
    assert model.config.nsr["mode"] == "one_step"
    # the weights are the ones saved: a fresh model from the same config and seed
    ref = new_model(make_config(Vocab(), "tiny"), seed=0)
    ids = torch.tensor([tok("<bos> <nv1> + 1.0 <g0> <pop> <e5> x0 <child>")["input_ids"]])
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = ref(input_ids=ids).logits
    torch.testing.assert_close(a, b)
    assert a.shape == (1, ids.shape[1], len(Vocab()))


def test_reloaded_checkpoint_samples_through_the_neural_proposer(tiny_checkpoint):
    from neural_helpers import prefix_tokens_of, started_problems

    from nsr.expressions import is_valid
    from nsr.estimators import BatchedNeuralSR

    sr = BatchedNeuralSR(tiny_checkpoint, population_size=6, num_generations=2, seed=0)
    X = np.linspace(-1, 1, 12)[:, None]
    problems = started_problems(sr, [X], [X[:, 0] ** 3])
    (prop,) = sr.neural.propose(problems, 5)
    children = prefix_tokens_of(prop, problems[0])
    assert len(children) == 5 and all(is_valid(c) for c in children)
    assert sr.neural.load().mode == "one_step" and sr.neural.load().path == tiny_checkpoint


def test_find_checkpoint_takes_the_latest_step_of_a_run_folder(tmp_path, tiny_checkpoint):
    run_dir = tmp_path / "run"
    for step in (5, 20, 7):
        shutil.copytree(tiny_checkpoint, run_dir / f"checkpoint-{step}")
    (run_dir / "checkpoint-99").mkdir()  # no config.json: not a checkpoint
    (run_dir / "notes").mkdir()
    assert find_checkpoint(str(run_dir)) == str(run_dir / "checkpoint-20")
    assert load_checkpoint(str(run_dir), "cpu").path == str(run_dir / "checkpoint-20")
    assert find_checkpoint(tiny_checkpoint) == tiny_checkpoint


def test_load_checkpoint_dtype_and_mode(tiny_checkpoint, tiny_ar_checkpoint):
    ck = load_checkpoint(tiny_checkpoint, "cpu", torch.float64)
    assert ck.dtype == torch.float64 and next(ck.model.parameters()).dtype == torch.float64
    assert ck.mode == "one_step" and ck.device.type == "cpu" and not ck.model.training
    assert load_checkpoint(tiny_ar_checkpoint, "cpu").mode == "autoregressive"


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_checkpoints_are_refused_with_an_input_error(tmp_path, tiny_checkpoint, kind):
    path = broken_checkpoint(tiny_checkpoint, tmp_path / kind, kind)
    before = sorted(os.listdir(path))
    with pytest.raises(InputError) as e:
        load_checkpoint(path, "cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert path in msg  # names the checkpoint
    assert any(w.lower() in msg.lower() for w in BROKEN_WORDS[kind]), msg
    assert sorted(os.listdir(path)) == before


def test_tokenizer_of_another_size_is_reported_as_not_matching_the_model(tmp_path, tiny_checkpoint):
    """A tokenizer that is a superset of the vocabulary (so it loads) but has more tokens than the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = tmp_path / "bigger_tok"
    shutil.copytree(tiny_checkpoint, path)
    tokens = list(Vocab().tokens) + ["<extra1>", "<extra2>"]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>").save_pretrained(str(path))
    with pytest.raises(InputError, match=rf"{len(tokens)} tokens but the model expects {len(Vocab())}"):
        load_checkpoint(str(path), "cpu")


def _save_word_tokenizer(folder, tokens):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(str(folder))


def test_the_tokenizer_defines_the_ids_another_order_of_known_tokens_loads(tmp_path, tiny_checkpoint):
    """A checkpoint's vocabulary is its own tokenizer's: known tokens in another order load, with the ids
    the tokenizer gives them (not the toolkit's default order)."""
    path = tmp_path / "permuted"
    shutil.copytree(tiny_checkpoint, path)
    tokens = list(Vocab().tokens)
    i, j = tokens.index("x0"), tokens.index("x1")
    tokens[i], tokens[j] = tokens[j], tokens[i]
    _save_word_tokenizer(path, tokens)
    ck = load_checkpoint(str(path), "cpu")
    assert ck.vocab.tokens == tuple(tokens) or list(ck.vocab.tokens) == tokens
    assert ck.vocab.ids["x0"] == j and ck.vocab.ids["x1"] == i
    assert ck.vocab.arity[j] == 0 and ck.vocab.arity[ck.vocab.ids["+"]] == 2


def test_a_tokenizer_with_a_token_the_toolkit_does_not_know_is_refused(tmp_path, tiny_checkpoint):
    path = tmp_path / "unknown_token"
    shutil.copytree(tiny_checkpoint, path)
    tokens = list(Vocab().tokens)
    tokens[tokens.index("x9")] = "x99"  # same size, one token this toolkit cannot read
    _save_word_tokenizer(path, tokens)
    with pytest.raises(InputError, match="x99") as e:
        load_checkpoint(str(path), "cpu")
    assert str(path) in str(e.value)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(str(tmp_path / "nope"), "cpu")


def test_autoregressive_mode_mismatch_is_refused(tiny_checkpoint, tiny_ar_checkpoint):
    from nsr.neural import NeuralProposer

    def proposer(ck, **kw):
        return NeuralProposer(SamplingConfig(checkpoint=ck, device="cpu", **kw))

    with pytest.raises(InputError, match="one_step mode"):
        proposer(tiny_checkpoint, autoregressive=True).load()
    # autoregressive=False means "the checkpoint's own mode": an autoregressive checkpoint loads as such
    assert proposer(tiny_ar_checkpoint, autoregressive=False).load().mode == "autoregressive"
    assert proposer(tiny_ar_checkpoint).autoregressive and not proposer(tiny_checkpoint).autoregressive


def test_missing_and_bad_devices_are_input_errors():
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(InputError, match="cuda"):
            resolve_device("cuda:3")
    with pytest.raises(InputError, match="bad device"):
        resolve_device("quantum9")
    assert resolve_device("cpu").type == "cpu"


def test_other_vocab_tokenizer_helper_really_differs(tmp_path):
    """Guard for the bad-input fixtures: the replacement tokenizer is a different, smaller vocabulary."""
    from transformers import AutoTokenizer

    other_vocab_tokenizer(tmp_path, 50)
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(tok) == 50 and "<pop>" not in tok.get_vocab()


# ----------------------------------------------------------------------------
# shared-prefix attention


@pytest.fixture(scope="module")
def model64(tiny_checkpoint):
    ck = load_checkpoint(tiny_checkpoint, "cpu", torch.float64)
    return ck.model, ck.vocab


def _toy_batch(v):
    ids = v.ids
    p1 = [v.bos, ids["<nv1>"], ids["+"], ids["*"], ids["1.0"], ids["<g0>"], v.pop, ids["<e5>"], ids["x0"], v.child]
    p2 = [v.bos, ids["<nv2>"], ids["+"], ids["1.0"], ids["<g1>"], v.pop, ids["<e3>"], ids["+"], ids["x0"],
          ids["x1"], v.sep, ids["<e7>"], ids["x1"], v.sep, ids["<e9>"], ids["1.0"], v.child]
    t1 = [[ids["+"], ids["x0"], ids["1.0"], v.eos], [ids["x0"], v.eos]]
    t2 = [[ids["*"], ids["x1"], ids["x0"], v.eos], [ids["1.0"], v.eos], [ids["-"], ids["x1"], ids["x1"], v.eos]]
    return [p1, p2], [t1, t2]


def test_packed_prefix_loss_equals_separate_sequences(model64):
    """Rows [prompt][child 1][child 2]... give exactly the mean cross-entropy of running
    each prompt+child sequence on its own."""
    from nsr.examples import pack_batch

    model, v = model64
    prompts, targets = _toy_batch(v)
    batch = pack_batch([np.array(p) for p in prompts], [[np.array(t) for t in ts] for ts in targets], v.pad)
    with torch.no_grad():
        packed = float(PackedPrefixLoss(model)(*[torch.from_numpy(a) for a in batch]))
        total, n = 0.0, 0
        for p, ts in zip(prompts, targets):
            for t in ts:
                logits = model(input_ids=torch.tensor([p + t])).logits[0]
                T = len(p)
                total += float(torch.nn.functional.cross_entropy(logits[T - 1:T - 1 + len(t)], torch.tensor(t),
                                                                 reduction="sum"))
                n += len(t)
    assert n == len(batch[5])  # every target token, and only those, is a label
    assert packed == pytest.approx(total / n, rel=1e-6)
    # and it is not what one plain causal sequence (children seeing each other) would give
    with torch.no_grad():
        leaky = 0.0
        for p, ts in zip(prompts, targets):
            seq = p + [tok for t in ts for tok in t]
            logits = model(input_ids=torch.tensor([seq])).logits[0]
            o = len(p)
            for t in ts:
                leaky += float(torch.nn.functional.cross_entropy(logits[o - 1:o - 1 + len(t)], torch.tensor(t),
                                                                 reduction="sum"))
                o += len(t)
    assert abs(leaky / n - packed) > 1e-4


def test_segment_mask_semantics():
    seg = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    m = segment_mask(seg)[0, 0]
    assert m.shape == (7, 7)
    for q in range(7):
        for k in range(7):
            sq, sk = int(seg[0, q]), int(seg[0, k])
            expected = (k <= q and ((sk == 0 and sq >= 0) or (sk == sq and sq > 0))) or k == q
            assert bool(m[q, k]) == expected, (q, k)


def test_owner_mask_semantics():
    # row 0: a left pad, two prompt tokens, then child 1's and child 0's tokens
    owner = torch.tensor([[NOBODY, PROMPT, PROMPT, 1, 0], [PROMPT, PROMPT, PROMPT, 0, 1]])
    slots = torch.tensor([[1, DUMMY], [0, 1]])
    m = owner_mask(owner, slots)
    assert m.shape == (2, 1, 2, 5)
    assert m[0, 0, 0].tolist() == [False, True, True, True, False]  # child 1: the prompt and its own token
    assert m[0, 0, 1].tolist() == [False, True, True, False, False]  # an unused slot sees only the prompt
    assert m[1, 0, 0].tolist() == [True, True, True, True, False]
    assert m[1, 0, 1].tolist() == [True, True, True, False, True]


def test_tree_decoding_matches_full_sequence_forwards(model64):
    """Prompts of different lengths (left-padded) prefilled once; children decoded side by side
    in the prompt's row, a finished child giving up its slot (ragged rows): every step's logits
    equal those of running the child's whole sequence through the model."""
    model, v = model64
    prompts, _ = _toy_batch(v)
    ids = v.ids
    children = [[[ids["+"], ids["x0"], ids["1.0"]], [ids["x0"]]],                 # child 1 of row 0 stops after t=0
                [[ids["*"], ids["x1"], ids["x0"]], [ids["1.0"], ids["-"], ids["x1"]]]]
    with torch.inference_mode():
        cache, last, pmask, plen = prefill(model, prompts, v.pad, torch.device("cpu"))
        for b, p in enumerate(prompts):
            ref = model(input_ids=torch.tensor([p])).logits[0, -1]
            torch.testing.assert_close(last[b], ref, rtol=0, atol=1e-10)
        owner = torch.where(pmask.bool(), PROMPT, NOBODY)
        for t in range(3):
            writing = [[c for c in range(2) if t < len(children[b][c])] for b in range(2)]
            S = max(len(w) for w in writing)
            slots = torch.tensor([w + [DUMMY] * (S - len(w)) for w in writing])
            tok = torch.tensor([[children[b][c][t] for c in w] + [v.pad] * (S - len(w)) for b, w in enumerate(writing)])
            owner = torch.cat([owner, torch.where(slots >= 0, slots, NOBODY)], dim=1)
            logits = run(model, cache, input_ids=tok, attention_mask=owner_mask(owner, slots),
                         position_ids=(plen[:, None] + t).expand(2, S)).logits
            for b, p in enumerate(prompts):
                for j, c in enumerate(writing[b]):
                    ref = model(input_ids=torch.tensor([p + children[b][c][:t + 1]])).logits[0, -1]
                    torch.testing.assert_close(logits[b, j], ref, rtol=0, atol=1e-10)


def test_save_checkpoint_writes_extra_json(tmp_path):
    model = new_model(make_config(Vocab(), "tiny"), seed=3)
    save_checkpoint(model, str(tmp_path / "ck"), {"metrics.json": {"loss": 1.5}})
    with open(tmp_path / "ck" / "metrics.json") as f:
        assert json.load(f) == {"loss": 1.5}
    assert load_checkpoint(str(tmp_path / "ck"), "cpu").mode == "one_step"
