"""The checkpoints shipped in training/checkpoints/: each loads as a plain Hugging Face model and tokenizer from
its local folder, matches this toolkit's vocabulary, stays small, documents exactly how it was made (the
README's commands parse with the scripts' own argument parsers, name this checkpoint, and are the command
recorded in its metrics.json; the numbers it states are the model's), and runs."""
import json
import os
import re
import shlex

import numpy as np
import pytest
from helpers import ROOT, load_module

CHECKPOINTS = os.path.join(ROOT, "training", "checkpoints")
SHIPPED = sorted(n for n in os.listdir(CHECKPOINTS) if os.path.isdir(os.path.join(CHECKPOINTS, n)))


def _folder(name):
    from nsr.model import find_checkpoint

    return find_checkpoint(os.path.join(CHECKPOINTS, name))


def _readme(name):
    with open(os.path.join(CHECKPOINTS, name, "README.md")) as f:
        return f.read()


def _metrics(name):
    with open(os.path.join(_folder(name), "metrics.json")) as f:
        return json.load(f)


def readme_commands(text):
    """The ``python SCRIPT ARGS`` commands of a README's code blocks, as argv lists (continuation lines
    joined, comments dropped)."""
    out = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "python":
                out.append(argv[1:])
    return out


def parse_with_the_script(argv, monkeypatch, capsys):
    """(script, parsed result) for ``[script, *flags]``, through the script's own argument parser: the
    config objects it would run with (nothing is run), or the parsed namespace."""
    script, flags = argv[0], argv[1:]
    captured = {}
    try:
        if script == "training/train.py":
            mod = load_module("training.train")
            monkeypatch.setattr(mod, "train", lambda cfg: captured.setdefault("cfg", cfg))
            assert mod.main(flags) == 0
            return captured["cfg"]
        if script == "training/dagger.py":
            mod = load_module("training.dagger")
            monkeypatch.setattr(mod, "run_dagger", lambda cfg, evo, meta=None: captured.setdefault("cfg", cfg))
            assert mod.main(flags) == 0
            return captured["cfg"]
        if script == "generate_traces.py":
            return load_module("generate_traces").parse_args(flags)
        if script == "training/prepare_data.py":
            return load_module("training.prepare_data").parse_args(flags)[1]
        if script == "datasets/generate_expressions.py":
            return load_module("generate_expressions").parse_args(flags)
    except SystemExit:
        pytest.fail(f"{' '.join(argv)}: its flags do not parse: {capsys.readouterr().err.strip()}")
    pytest.fail(f"the README runs a script this test does not know: {script}")


def test_the_estimators_default_checkpoints_are_the_shipped_ones(torch_single_thread):
    from nsr.estimators import DEFAULT_AR_CHECKPOINT, DEFAULT_CHECKPOINT
    from nsr.model import load_checkpoint

    for path, mode in ((DEFAULT_CHECKPOINT, "one_step"), (DEFAULT_AR_CHECKPOINT, "autoregressive")):
        assert os.path.basename(path) in SHIPPED
        assert load_checkpoint(_folder(os.path.basename(path)), device="cpu").mode == mode
    assert "dagger" in SHIPPED  # the README's best model


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_is_a_small_hf_folder(name, torch_single_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nsr.operators import OPERATOR_SETS
    from nsr.tokenizer import VOCAB, Vocab, vocab_tokens

    path = _folder(name)
    files = os.listdir(path)
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, fs in os.walk(os.path.join(CHECKPOINTS, name))
                for f in fs)
    assert total <= 20 * 2**20
    metrics = _metrics(name)
    assert np.isfinite(metrics["final_val_loss"]) and metrics["step"] == int(os.path.basename(path)[11:])
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # the checkpoint's own vocabulary (it may predate operators added since): tokens this toolkit knows, one
    # per model row, covering the shipped operator sets, every variable and the default constant
    tokens = vocab_tokens(tok)
    vocab = Vocab(tokens)
    assert set(tokens) <= set(VOCAB) and model.config.vocab_size == len(tokens) == len(vocab)
    for name in ("arith", "full"):
        vocab.check_supports(10, OPERATOR_SETS[name], ("1.0",))
    assert len(tok) < 200  # a tiny fixed vocabulary, not a text tokenizer


@pytest.mark.parametrize("name", SHIPPED)
def test_readme_commands_parse_and_are_the_recorded_training_command(name, monkeypatch, capsys):
    """Every command of the README parses with its script's real argument parser; one of them is exactly the
    command metrics.json recorded, and it makes this step (a run stopped before the end of its schedule says
    so)."""
    readme = _readme(name)
    commands = readme_commands(readme)
    assert commands, "the README names no command"
    step = int(os.path.basename(_folder(name))[11:])
    assert f"checkpoint-{step}" in readme  # the README is about the shipped step
    parsed = {}
    for argv in commands:
        parsed[tuple(argv)] = parse_with_the_script(argv, monkeypatch, capsys)
    recorded = shlex.split(_metrics(name)["command"])
    assert recorded[0].startswith("python")
    recorded = tuple(a for a in recorded[1:] if a != "--resume")  # a resumed run records --resume too
    assert recorded in parsed, "the README does not give the command that made the checkpoint"
    cfg = parsed[recorded]
    if recorded[0] == "training/train.py":
        from nsr.trainer import TrainConfig

        assert isinstance(cfg, TrainConfig)
        assert cfg.steps == step or (cfg.steps > step and f"stopped at step {step}" in readme), \
            "the command trains a different number of steps"
    else:
        from nsr.dagger import DAggerConfig

        assert recorded[0] == "training/dagger.py" and isinstance(cfg, DAggerConfig)
        assert cfg.finetune_steps == step and cfg.iterations == len(cfg.betas)


@pytest.mark.parametrize("name", SHIPPED)
def test_readme_numbers_are_the_checkpoints(name, torch_single_thread):
    from nsr.model import load_checkpoint

    readme = _readme(name)
    ck = load_checkpoint(_folder(name), device="cpu")
    n_params = sum(p.numel() for p in ck.model.parameters())
    stated = {int(m.replace(",", "")) for m in re.findall(r"([\d,]+) parameters", readme)}
    assert stated == {n_params}, f"README states {stated} parameters, the model has {n_params}"
    assert _metrics(name)["n_params"] == n_params
    cfg = ck.model.config
    shapes = re.findall(r"hidden (\d+), (\d+) layers, (\d+) heads", readme)
    for hidden, layers, heads in shapes:
        assert (int(hidden), int(layers), int(heads)) == (cfg.hidden_size, cfg.num_hidden_layers,
                                                          cfg.num_attention_heads)
    for inter in re.findall(r"intermediate (\d+)", readme):
        assert int(inter) == cfg.intermediate_size
    for n_tokens in re.findall(r"(\d+)-token", readme):
        assert int(n_tokens) == len(ck.vocab) == cfg.vocab_size
    assert shapes or "same architecture" in readme  # every README states the shape, or refers to one that does
    mode = "autoregressive" if "autoregressive" in readme.split("\n", 1)[0] else "one_step"
    assert ck.mode == mode  # the title says the mode


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_runs_neural_sr(name, torch_single_thread):
    from nsr.estimators import BatchedNeuralSR
    from nsr.model import load_checkpoint

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
