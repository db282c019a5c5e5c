"""A fixed, tiny vocabulary for population states.

The language has ~20 expression symbols, so the tokenizer is a word-level
Hugging Face ``PreTrainedTokenizerFast`` over a fixed list (no 50k-token text
vocabulary). Text form is whitespace-separated tokens; the hot paths encode
with the plain dict :attr:`Vocab.ids` instead of going through text. How a
state becomes tokens is :mod:`nsr.prompt`.

A checkpoint's vocabulary is its own tokenizer's (:class:`Vocab` is built
from it on load), so checkpoints trained before an operator was added keep
working on the problems their vocabulary can express.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .expressions import FIT_TOKEN, VARIABLES, const_token, is_constant
from .operators import ARITY, BINARY, UNARY

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
EXPRESSION_TOKENS = list(BINARY) + list(UNARY) + list(VARIABLES) + KNOWN_CONSTANTS + [FIT_TOKEN]
VOCAB = SPECIALS + NV_TOKENS + GEN_TOKENS + ERR_TOKENS + EXPRESSION_TOKENS
# 1: the first 93 tokens (no tanh, asin, C); 2: adds the physics operators and the fitted-constant placeholder
VOCAB_VERSION = 2
_STRUCTURE = set(SPECIALS + NV_TOKENS + GEN_TOKENS + ERR_TOKENS)


class Vocab:
    """Token <-> id maps and per-token tables used by encoding and constrained decoding."""

    def __init__(self, tokens: Sequence[str] = VOCAB):
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            raise ValueError("duplicate tokens in vocabulary")
        unknown = [t for t in self.tokens if t not in _STRUCTURE and t not in ARITY and t not in VARIABLES
                   and t != FIT_TOKEN and not is_constant(t)]
        if unknown:
            raise ValueError(f"vocabulary has tokens this toolkit does not know: {' '.join(unknown[:10])}")
        missing = [t for t in SPECIALS + NV_TOKENS + GEN_TOKENS + ERR_TOKENS if t not in self.ids]
        if missing:
            raise ValueError(f"vocabulary lacks structure tokens: {' '.join(missing[:10])}")
        # arity per id: -1 for tokens that cannot appear inside an expression
        self.arity = np.full(len(self.tokens), -1, dtype=np.int64)
        for t, i in self.ids.items():
            if t in ARITY:
                self.arity[i] = ARITY[t]
            elif t not in _STRUCTURE:
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
