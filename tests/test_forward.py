"""The written-out sampling forward (nsr/forward.py) against the transformers forward it replaces."""
import numpy as np
import pytest
import torch

from nsr.config import EvolutionConfig, SamplingConfig
from nsr.forward import TransformersDecoder, TreeDecoder, make_decoder, unsupported
from nsr.model import make_config, new_model
from nsr.search import Searcher
from nsr.tokenizer import Vocab


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


def _model(kv_heads=None, dtype=torch.float64):
    cfg = make_config(Vocab(), "tiny")
    if kv_heads:
        cfg.num_key_value_heads = kv_heads
    return new_model(cfg, seed=1).to(dtype).eval()


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_tree_decoder_logits_equal_the_transformers_forward(kv_heads):
    """Prompts of different lengths, children finishing at different steps, a problem leaving the batch:
    every logit the tree decoder returns equals the transformers decoder's (float64, with grouped heads too) to
    float32 rounding: LlamaRMSNorm normalises in float32 whatever the dtype, and the tree decoder folds the norm's
    weight into the next matrix, so the two round differently there."""
    model = _model(kv_heads)
    v = Vocab()
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(4, len(v), n)) for n in (7, 12, 3)]
    C, steps = 3, 5
    ref, new = TransformersDecoder(model).session(), TreeDecoder(model).session()
    with torch.inference_mode():
        a = ref.prefill(prompts, v.pad, torch.device("cpu"), C, steps)
        b = new.prefill(prompts, v.pad, torch.device("cpu"), C, steps)
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
        alive = torch.arange(3)
        for t in range(4):
            if t == 2:  # problem 1 finished: both drop it
                keep = torch.tensor([0, 2])
                ref.keep(keep), new.keep(keep)
                alive = alive[keep]
            nb = len(alive)
            tokens = torch.as_tensor(rng.integers(4, len(v), (nb, C)))
            order = torch.arange(C).expand(nb, C)
            used = torch.ones((nb, C), dtype=torch.bool)
            torch.testing.assert_close(new.step(tokens, order, used, t), ref.step(tokens, order, used, t),
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_runs_with_either_forward_give_the_same_populations(tiny_checkpoint, hard_expressions_file, dtype):
    from nsr.datasets import load_expressions

    recs = load_expressions(hard_expressions_file)["records"][:3]
    finals = {}
    for forward in ("transformers", "tree"):
        s = Searcher(EvolutionConfig(population_size=8, num_generations=3, early_stop=False),
                     SamplingConfig(checkpoint=tiny_checkpoint, device="cpu", dtype=dtype, forward=forward))
        assert type(s.neural.decoder()) is (TreeDecoder if forward == "tree" else TransformersDecoder)
        problems = [s.problem(r["X"], r["y"], np.random.default_rng(i), i) for i, r in enumerate(recs)]
        s.run(problems)
        finals[forward] = [p.codes[:, :p.lengths.max()].tolist() for p in problems]
    assert finals["tree"] == finals["transformers"]


def test_a_model_the_tree_decoder_cannot_run_falls_back_or_is_refused():
    model = _model(dtype=torch.float32)
    model.config.hidden_act = "gelu"
    assert "activation" in unsupported(model)
    assert isinstance(make_decoder(model, "auto"), TransformersDecoder)
    with pytest.raises(ValueError, match="activation"):
        make_decoder(model, "tree")
    model.config.hidden_act = "silu"
    assert unsupported(model) is None and isinstance(make_decoder(model, "auto"), TreeDecoder)


def test_without_the_private_flash_op_the_matmul_path_gives_the_same_logits():
    model = _model()
    v = Vocab()
    prompts = [[5, 6, 7, 8], [9, 10]]
    out = []
    for flash in (True, False):
        dec = TreeDecoder(model).session()
        if not flash:
            dec.flash = None
        with torch.inference_mode():
            dec.prefill(prompts, v.pad, torch.device("cpu"), 2, 3)
            out.append(dec.step(torch.tensor([[11, 12], [13, 14]]), torch.arange(2).expand(2, 2),
                                torch.ones((2, 2), dtype=torch.bool), 0))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-10)
