"""The checkpoints shipped in training/checkpoints/: each loads as a plain Hugging Face model and tokenizer from
its local folder, matches this toolkit's vocabulary, stays small, documents how it was made, and runs."""
import json
import os

import numpy as np
import pytest
from helpers import ROOT

CHECKPOINTS = os.path.join(ROOT, "training", "checkpoints")
SHIPPED = sorted(n for n in os.listdir(CHECKPOINTS) if os.path.isdir(os.path.join(CHECKPOINTS, n)))


def _folder(name):
    from nsr.model import find_checkpoint

    return find_checkpoint(os.path.join(CHECKPOINTS, name))


def test_the_default_checkpoints_are_shipped():
    assert {"default", "default_ar", "dagger"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_is_a_small_documented_hf_folder(name, torch_single_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nsr.tokenizer import VOCAB, vocab_tokens

    path = _folder(name)
    files = os.listdir(path)
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, fs in os.walk(os.path.join(CHECKPOINTS, name))
                for f in fs)
    assert total <= 20 * 2**20
    with open(os.path.join(CHECKPOINTS, name, "README.md")) as f:
        readme = f.read()
    assert "python " in readme  # the exact commands
    with open(os.path.join(path, "metrics.json")) as f:
        metrics = json.load(f)
    assert np.isfinite(metrics["final_val_loss"]) and metrics["step"] == int(os.path.basename(path)[11:])
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert vocab_tokens(tok) == VOCAB and model.config.vocab_size == len(VOCAB)
    assert len(tok) < 200  # a tiny fixed vocabulary, not a text tokenizer


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_runs_neural_sr(name, torch_single_thread):
    from nsr.model import load_checkpoint
    from nsr.neural_sr import BatchedNeuralSR

    path = _folder(name)
    ar = load_checkpoint(path).mode == "autoregressive"
    rng = np.random.default_rng(0)
    X = [rng.uniform(-2, 2, (30, 1)), rng.uniform(-2, 2, (30, 2))]
    y = [X[0][:, 0] * X[0][:, 0] + 1.0, X[1][:, 0] * X[1][:, 1] - X[1][:, 1]]
    sr = BatchedNeuralSR(path, population_size=8, num_generations=3, autoregressive=ar, seed=0)
    models, mses, trajs = sr.batched_fit(X, y)
    assert len(models) == 2 and all(np.isfinite(m) for m in mses)
    for t in trajs:
        assert t["stats"]["well_formed_pct"] == 100.0
        assert t["stats"]["neural_proposals"] > 0
