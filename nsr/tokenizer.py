"""A fixed, tiny vocabulary for population states, and prompt encoding.

The language has ~20 expression symbols, so the tokenizer is a word-level
Hugging Face ``PreTrainedTokenizerFast`` over a fixed list (no 50k-token text
vocabulary). Text form is whitespace-separated tokens; the hot paths encode
with the plain dict :attr:`Vocab.ids` instead of going through text.

One-step prompt (the model proposes one child per sequence)::

    <bos> <nv2> + - * 1.0 <g3> <pop> <e7> + x0 1.0 <sep> <e9> x1 <sep> ... <child>
    target: * x0 x1 <eos>

Population members are unique expressions, best fitness first, each with its
quantised error ``<eK>`` (log10 of MSE / var(y) in half-decade bins).
Autoregressive mode ends the prompt with ``<children>`` and the target is the
whole next population: ``c1 <sep> c2 <sep> ... cN <eos>``.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from .expressions import BINARY_OPERATORS, UNARY_OPERATORS, VARIABLES, const_token

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<pop>", "<sep>", "<child>", "<children>"]
MAX_VARS = len(VARIABLES)
NV_TOKENS = [f"<nv{i}>" for i in range(1, MAX_VARS + 1)]
# generation buckets: upper bounds (inclusive)
GEN_BOUNDS = [0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 10**9]
GEN_TOKENS = [f"<g{i}>" for i in range(len(GEN_BOUNDS))]
# error buckets over log10(MSE / var(y)): <e0> solved (<= 1e-12), then half decades up to 1e2, <einf> non-finite
ERR_LO, ERR_HI, ERR_STEP = -12.0, 2.0, 0.5
N_ERR = int(round((ERR_HI - ERR_LO) / ERR_STEP)) + 2
ERR_TOKENS = [f"<e{i}>" for i in range(N_ERR)] + ["<einf>"]
KNOWN_CONSTANTS = [const_token(c) for c in (1.0, 2.0, 3.0, 0.5, -1.0, 0.1, 5.0, 10.0, 0.0, math.pi, math.e)]
EXPRESSION_TOKENS = list(BINARY_OPERATORS) + list(UNARY_OPERATORS) + list(VARIABLES) + KNOWN_CONSTANTS
VOCAB = SPECIALS + NV_TOKENS + GEN_TOKENS + ERR_TOKENS + EXPRESSION_TOKENS
VOCAB_VERSION = 1


def error_token(mse: float, scale: float) -> str:
    if not np.isfinite(mse):
        return "<einf>"
    with np.errstate(over="ignore"):
        nmse = float(np.float64(mse) / scale)
    if not np.isfinite(nmse):  # finite but beyond float range once normalised: the top bin
        return ERR_TOKENS[N_ERR - 1]
    if nmse <= 10 ** ERR_LO:
        return "<e0>"
    b = int(math.floor((math.log10(nmse) - ERR_LO) / ERR_STEP)) + 1
    return f"<e{min(max(b, 1), N_ERR - 1)}>"


def generation_token(gen: int) -> str:
    for i, bound in enumerate(GEN_BOUNDS):
        if gen <= bound:
            return GEN_TOKENS[i]
    return GEN_TOKENS[-1]


class Vocab:
    """Token <-> id maps and per-token tables used by encoding and constrained decoding."""

    def __init__(self, tokens: Sequence[str] = VOCAB):
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            raise ValueError("duplicate tokens in vocabulary")
        from .expressions import ARITY, is_constant

        # arity per id: -1 for tokens that cannot appear inside an expression
        self.arity = np.full(len(self.tokens), -1, dtype=np.int64)
        for t, i in self.ids.items():
            if t in ARITY:
                self.arity[i] = ARITY[t]
            elif t in VARIABLES or (not t.startswith("<") and is_constant(t)):
                self.arity[i] = 0
        for name in ("pad", "bos", "eos", "pop", "sep", "child", "children", "unk"):
            setattr(self, name, self.ids[f"<{name}>"])

    def __len__(self):
        return len(self.tokens)

    def encode_tokens(self, tokens: Sequence[str]) -> list:
        ids = self.ids
        try:
            return [ids[t] for t in tokens]
        except KeyError as e:
            raise KeyError(f"token {e.args[0]!r} is not in the model's vocabulary") from None

    def decode(self, ids) -> list:
        return [self.tokens[i] for i in ids]

    def prompt(self, n_vars, operators, constants, generation, members, autoregressive=False) -> list:
        """Token ids of a state. ``members`` are (error_token, expression tokens) pairs, best first."""
        ids = self.ids
        out = [self.bos, ids[NV_TOKENS[n_vars - 1]]]
        out += [ids[o] for o in operators]
        out += [ids[c] for c in constants]
        out += [ids[generation_token(generation)], self.pop]
        for k, (err, toks) in enumerate(members):
            if k:
                out.append(self.sep)
            out.append(ids[err])
            out += [ids[t] for t in toks]
        out.append(self.children if autoregressive else self.child)
        return out

    def allowed_mask(self, operators, n_vars, constants) -> np.ndarray:
        """Boolean mask of the expression tokens a problem may use."""
        m = np.zeros(len(self.tokens), dtype=bool)
        for t in list(operators) + list(VARIABLES[:n_vars]) + list(constants):
            m[self.ids[t]] = True
        return m

    def check_supports(self, n_vars, operators, constants):
        """Raise ValueError naming what the vocabulary lacks."""
        if n_vars > MAX_VARS:
            raise ValueError(f"{n_vars} variables, but the checkpoint's vocabulary knows only x0..x{MAX_VARS - 1}")
        missing = [t for t in list(operators) + list(VARIABLES[:n_vars]) + list(constants) if t not in self.ids]
        if missing:
            raise ValueError(f"the checkpoint's vocabulary lacks {' '.join(missing)}")


def vocab_from_hf(tokenizer) -> Vocab:
    """The Vocab of a loaded tokenizer (ids as the tokenizer assigns them)."""
    return Vocab(vocab_tokens(tokenizer))


def build_hf_tokenizer(vocab: Vocab = None):
    """A word-level PreTrainedTokenizerFast over the fixed vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = vocab or Vocab()
    tok = Tokenizer(models.WordLevel(vocab=dict(vocab.ids), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", sep_token="<sep>", model_max_length=4096, padding_side="left")


def vocab_tokens(tokenizer) -> list:
    """A loaded tokenizer's tokens in id order."""
    v = tokenizer.get_vocab()
    tokens = [None] * len(v)
    for t, i in v.items():
        if i >= len(tokens) or tokens[i] is not None:
            raise ValueError("tokenizer ids are not a dense range")
        tokens[i] = t
    return tokens


def save_tokenizer(folder: str):
    build_hf_tokenizer().save_pretrained(folder)
    return os.path.join(folder, "tokenizer.json")
