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


def test_every_model_forward_runs_without_cudnn_attention(tmp_path, capsys, expert_trace, tiny_checkpoint,
                                                          hard_expressions_file, monkeypatch):
    """On Hopper, torch 2.11 makes attention prefer cuDNN's kernel, which builds a graph for every new shape:
    training and sampling must run each forward with it off (nsr.model.attention_backends), and leave the
    process's setting as they found it."""
    import functools

    import torch
    from transformers import LlamaForCausalLM

    from nsr.config import EvolutionConfig, SamplingConfig
    from nsr.datasets import load_expressions
    from nsr.search import Searcher

    seen = {"train": [], "sample": []}
    phase = ["train"]
    orig = LlamaForCausalLM.forward

    @functools.wraps(orig)
    def spy(self, *a, **kw):
        seen[phase[0]].append(torch.backends.cuda.cudnn_sdp_enabled())
        return orig(self, *a, **kw)

    monkeypatch.setattr(LlamaForCausalLM, "forward", spy)
    import nsr.forward as forward_mod

    for name in ("prefill", "step"):  # the written-out forward calls torch's attention directly
        def tree_spy(self, *a, _orig=getattr(forward_mod.TreeDecoder, name)):
            seen[phase[0]].append(torch.backends.cuda.cudnn_sdp_enabled())
            return _orig(self, *a)

        monkeypatch.setattr(forward_mod.TreeDecoder, name, tree_spy)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    proc = run_in_process("training.train", ["--traces", expert_trace, "--steps", 3, "--output_dir", tmp_path,
                                             "--name", "sdpa"] + TRAIN_ARGS + ["--eval_every", 3], capsys)
    assert proc.returncode == 0, proc.stderr
    phase[0] = "sample"
    recs = load_expressions(hard_expressions_file)["records"][:2]
    searcher = Searcher(EvolutionConfig(population_size=6, num_generations=2, early_stop=False),
                        SamplingConfig(checkpoint=tiny_checkpoint, device="cpu"))
    searcher.run([searcher.problem(r["X"], r["y"], np.random.default_rng(i), i) for i, r in enumerate(recs)])
    assert len(seen["train"]) >= 4 and len(seen["sample"]) >= 2  # 3 steps + validation; prefill + decoding
    assert not any(seen["train"]) and not any(seen["sample"])
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored


def test_the_gpu_bench_script_runs_every_part_as_a_cpu_smoke_run(tmp_path):
    """bench/bench_gpu.py is run as is on a lent GPU: its --device cpu --quick smoke run keeps every part working."""
    from helpers import run_cli

    out = tmp_path / "gpu.json"
    proc = run_cli(os.path.join("bench", "bench_gpu.py"), ["--device", "cpu", "--quick", "--json", out], timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        res = json.load(f)
    assert not [k for k in res if k.endswith("_error")], res
    assert res["train_bf16"]["bf16"] is True and np.isfinite(res["train_bf16"]["final_val_loss"])
    speed = res["batched_speed"]
    assert [(r["batch_size"], r["constant_fitting"]) for r in speed] == [(1, 0), (4, 0), (4, 10)]
    assert all(r["s_per_expression"] > 0 and 0 < r["model_share"] <= 1 for r in speed)
    assert {k: v["exit"] for k, v in res["end_to_end"].items()} == {"neural_trace": 0, "relabel": 0}
    assert res["stand_in_cpu_side"]["ms_per_problem_generation"] > 0
