"""Helpers for the tests of the neural parts: tiny checkpoints, problem sets, trace
files, in-process CLI runs and record comparison."""
from __future__ import annotations

import hashlib
import os

import numpy as np
from helpers import (ROOT, assert_same_data, load_module, run_cli, run_in_process, tree_listing,  # noqa: F401
                     without_timing, write_expressions)  # (re-exported)

from nsr.expressions import evaluate, parse

# One torch thread per process: the models are tiny, and two OpenMP threads per
# process thrash when several test processes share the two cores.
NEURAL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

# Targets no seed of the initial population solves at once (so runs last several generations).
HARD_EXPRESSIONS = [
    "(((x0 * x0) * x0) + (x0 + 1.0))",
    "((x0 * x1) + ((x0 * x0) * x1))",
    "((x0 * x1) - (x2 * (x2 + x0)))",
    "((x0 * x0) - ((x0 * x0) * (x0 * x0)))",
    "(((x0 - x1) * (x0 + x1)) * x1)",
    "(((x0 + x2) * x1) * (x1 - x2))",
    "(((x0 + 1.0) * (x0 + 1.0)) * x0)",
    "((x1 * x1) - (x0 * (x1 + 1.0)))",
]


def n_vars_of(expr):
    toks = parse(expr)
    return 1 + max(int(t[1:]) for t in toks if t.startswith("x"))


def hard_records(n, seed=0, n_points=20, start=0):
    """``n`` expressions-file records (1 to 3 variables), none solved by the initial population."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        expr = HARD_EXPRESSIONS[i % len(HARD_EXPRESSIONS)]
        nv = n_vars_of(expr)
        X = rng.uniform(-2.0, 2.0, size=(n_points, nv))
        y = evaluate(parse(expr), X)
        out.append({"id": 300 + i, "expression": expr, "X": X, "y": y, "num_vars": nv, "x_range": (-2.0, 2.0)})
    return out


def write_hard_expressions(path, n, seed=0, start=0):
    return write_expressions(path, hard_records(n, seed, start=start), {"operator_set": "arith", "constants": [1.0]})


def make_tiny_checkpoint(folder, autoregressive=False, seed=0):
    """A randomly initialised tiny checkpoint (config, safetensors weights, tokenizer)."""
    from nsr.model import make_config, new_model, save_checkpoint
    from nsr.tokenizer import Vocab

    model = new_model(make_config(Vocab(), "tiny", autoregressive=autoregressive), seed=seed)
    save_checkpoint(model, str(folder))
    return str(folder)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_neural_cli(script, args, timeout=300):
    """A repository script in a fresh interpreter, one torch thread."""
    return run_cli(script, args, timeout=timeout, env=NEURAL_ENV)


def snapshot(folder):
    """{relative path: sha256 or 'dir'} of everything below ``folder``."""
    out = {}
    for rel in tree_listing(folder):
        full = os.path.join(folder, rel)
        out[rel] = "dir" if os.path.isdir(full) else file_sha256(full)
    return out


def prefix_tokens_of(proposal, problem):
    """The children of a Proposal as token tuples."""
    return [problem.primitives.decode(proposal.codes[k, : proposal.lengths[k]]) for k in range(len(proposal.lengths))]


def started_problems(sr, X_list, y_list, seed_base=0):
    """Problems of a BatchedNeuralSR with their initial population scored (generation 0)."""
    from nsr.proposers import initial_population
    from nsr.traces import seed_for

    problems = sr.make_problems(X_list, y_list, rngs=[seed_for(seed_base, i) for i in range(len(X_list))])
    for p in problems:
        p.start(*initial_population(p))
    return problems


__all__ = ["ROOT", "NEURAL_ENV", "HARD_EXPRESSIONS", "hard_records", "write_hard_expressions", "make_tiny_checkpoint",
           "file_sha256", "run_neural_cli", "run_in_process", "without_timing", "assert_same_data", "snapshot",
           "prefix_tokens_of", "started_problems", "tree_listing", "write_expressions", "load_module"]


# (a tokenizer of the same tokens in another order is no longer a broken checkpoint: the tokenizer defines the ids)
BROKEN_KINDS = ("garbage_config", "missing_weights", "corrupt_weights", "missing_tokenizer", "tokenizer_other_vocab",
                "empty_folder", "config_shape_mismatch", "config_not_an_object")


def other_vocab_tokenizer(folder, n_tokens=50):
    """Save (over ``folder``'s tokenizer files) a word-level tokenizer of another vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = ["<pad>", "<unk>", "<bos>", "<eos>"] + [f"w{i}" for i in range(n_tokens - 4)]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                 unk_token="<unk>")
    hf.save_pretrained(str(folder))


def broken_checkpoint(src, dst, kind):
    """A copy of checkpoint ``src`` at ``dst``, damaged as ``kind`` says."""
    import json
    import shutil

    dst = str(dst)
    if kind == "empty_folder":
        os.makedirs(dst)
        return dst
    shutil.copytree(src, dst)
    if kind == "garbage_config":
        with open(os.path.join(dst, "config.json"), "w") as f:
            f.write("{this is not json")
    elif kind == "config_not_an_object":  # valid JSON, but not a model configuration
        with open(os.path.join(dst, "config.json"), "w") as f:
            f.write("[1, 2, 3]")
    elif kind == "config_shape_mismatch":  # a config that does not fit the weights
        path = os.path.join(dst, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["hidden_size"] = cfg["hidden_size"] * 2
        cfg["intermediate_size"] = cfg["intermediate_size"] * 2
        with open(path, "w") as f:
            json.dump(cfg, f)
    elif kind == "missing_weights":
        os.unlink(os.path.join(dst, "model.safetensors"))
    elif kind == "corrupt_weights":
        with open(os.path.join(dst, "model.safetensors"), "wb") as f:
            f.write(b"\x00\x01garbage, not safetensors" * 10)
    elif kind == "missing_tokenizer":
        os.unlink(os.path.join(dst, "tokenizer.json"))
    elif kind == "tokenizer_other_vocab":
        other_vocab_tokenizer(dst, 50)
    else:
        raise ValueError(kind)
    return dst


# words one of which the error about each kind of damage must contain
BROKEN_WORDS = {
    "garbage_config": ("config.json",),
    "config_shape_mismatch": ("cannot load model", "size", "shape"),
    "missing_weights": ("safetensors", "weights"),
    "corrupt_weights": ("cannot load model", "safetensors", "weights"),
    "missing_tokenizer": ("tokenizer",),
    "tokenizer_other_vocab": ("tokenizer",),
    "config_not_an_object": ("config.json",),
    "empty_folder": ("config.json", "checkpoint"),
}
