"""The GPU's dtype path, run on CPU (CPUs do bf16 too): training under bf16 autocast and sampling from a bf16
model, so that dtype mistakes show without a GPU."""
import json
import os

import numpy as np
import pytest
from helpers import run_in_process
from test_training import TRAIN_ARGS


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    pass


def test_bf16_training_runs_lowers_the_loss_and_saves_fp32_weights(tmp_path, capsys, expert_trace):
    import torch
    from safetensors.torch import load_file

    from nsr.model import load_checkpoint

    proc = run_in_process("training.train", ["--traces", expert_trace, "--steps", 20, "--precision", "bf16",
                                             "--output_dir", tmp_path, "--name", "bf"] + TRAIN_ARGS, capsys)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "bf" / "checkpoint-20"
    with open(folder / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["bf16"] is True
    losses = [h["train_loss"] for h in metrics["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # autocast computes in bf16 but keeps the master weights (and so the saved checkpoint) in fp32
    weights = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert load_checkpoint(str(folder), "cpu").model.dtype == torch.float32


def test_a_bf16_model_samples_well_formed_children(tiny_checkpoint, hard_expressions_file):
    import torch

    from nsr.config import EvolutionConfig, SamplingConfig
    from nsr.datasets import load_expressions
    from nsr.search import Searcher

    recs = load_expressions(hard_expressions_file)["records"][:3]
    evo = EvolutionConfig(population_size=8, num_generations=3, early_stop=False)
    searcher = Searcher(evo, SamplingConfig(checkpoint=tiny_checkpoint, device="cpu", dtype="bfloat16"))
    assert searcher.load().model.dtype == torch.bfloat16
    problems = [searcher.problem(r["X"], r["y"], np.random.default_rng(i), i) for i, r in enumerate(recs)]
    searcher.run(problems)
    for p in problems:
        assert len(p.best_progression) == 3 and np.all(np.isfinite(p.best_progression))
        assert p.stats["neural_proposals"] > 0 and p.stats["well_formed_pct"] == 100.0
