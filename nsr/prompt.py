"""The prompt: how a population state is shown to the model, in one place for training and sampling.

One-step mode (the model proposes one child per sequence)::

    <bos> <nv2> + - * 1.0 <g3> <pop> <e7> + x0 1.0 <sep> <e9> x1 <sep> ... <child>
    target: * x0 x1 <eos>

Population members are unique expressions, best fitness first (ranked on
float32 fitness, as traces record it, so that a live population and its
recorded trace give the same prompt), at most ``max_members`` of them, each
with its quantised error ``<eK>`` (log10 of MSE / var(y) in half-decade bins;
``<e0>`` solved, ``<einf>`` non-finite). The generation is bucketed
(``<g0>..<g12>``). Autoregressive mode ends the prompt with ``<children>`` and
the target is the whole next population ``c1 <sep> c2 <sep> ... cN <eos>``.

The prompt settings (:class:`PromptConfig`) are saved in each checkpoint's
``config.json`` and read back from it, so training and sampling cannot
disagree.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .tokenizer import ERR_HI, ERR_LO, ERR_STEP, GEN_BOUNDS, GEN_TOKENS, N_ERR, NV_TOKENS, Vocab


@dataclass(frozen=True)
class PromptConfig:
    max_members: int = 32  # population members shown (unique, best first)

    @classmethod
    def from_checkpoint(cls, nsr_config: dict) -> "PromptConfig":
        """From ``config.json``'s ``nsr`` entry; checkpoints saved before it was recorded used the defaults."""
        d = (nsr_config or {}).get("prompt") or {}
        mm = d.get("max_members", cls.max_members)
        if isinstance(mm, bool) or not isinstance(mm, int) or not 1 <= mm <= 4096:
            raise ValueError(f"prompt max_members must be an integer in [1, 4096], got {mm!r}")
        return cls(max_members=mm)

    def to_dict(self) -> dict:
        return asdict(self)


def error_token(mse: float, scale: float) -> str:
    """``<eK>``: the error bucket of an MSE relative to var(y)."""
    if not np.isfinite(mse):
        return "<einf>"
    with np.errstate(over="ignore"):
        nmse = float(np.float64(mse) / scale)
    if not np.isfinite(nmse):  # finite but beyond float range once normalised: the top bin
        return f"<e{N_ERR - 1}>"
    if nmse <= 10 ** ERR_LO:
        return "<e0>"
    b = int(math.floor((math.log10(nmse) - ERR_LO) / ERR_STEP)) + 1
    return f"<e{min(max(b, 1), N_ERR - 1)}>"


def generation_token(gen: int) -> str:
    for i, bound in enumerate(GEN_BOUNDS):
        if gen <= bound:
            return GEN_TOKENS[i]
    return GEN_TOKENS[-1]


def rank_members(fitness, keys: Sequence, max_members: int) -> list:
    """Indices of the members shown: unique by ``keys``, best float32 fitness first (stable), at most ``max_members``."""
    with np.errstate(over="ignore"):  # beyond float32 range is -inf there too
        order = np.argsort(-np.asarray(fitness).astype(np.float32), kind="stable")
    seen, out = set(), []
    for i in order.tolist():
        k = keys[i]
        if k in seen:
            continue
        seen.add(k)
        out.append(i)
        if len(out) >= max_members:
            break
    return out


def encode_prompt(vocab: Vocab, n_vars, operators, constants, generation, members, autoregressive=False) -> list:
    """Token ids of a state. ``members`` are (error token, expression tokens) pairs, best first."""
    ids = vocab.ids
    out = [vocab.bos, ids[NV_TOKENS[n_vars - 1]]]
    out += [ids[o] for o in operators]
    out += [ids[c] for c in constants]
    out += [ids[generation_token(generation)], vocab.pop]
    for k, (err, toks) in enumerate(members):
        if k:
            out.append(vocab.sep)
        out.append(ids[err])
        out += [ids[t] for t in toks]
    out.append(vocab.children if autoregressive else vocab.child)
    return out


def encode_target(vocab: Vocab, children: Sequence, autoregressive=False) -> list:
    """Target id lists: one per child (``tokens <eos>``), or one whole population (``c1 <sep> c2 ... <eos>``)."""
    child_ids = [vocab.encode_tokens(c) for c in children]
    if not autoregressive:
        return [c + [vocab.eos] for c in child_ids]
    seq = []
    for k, c in enumerate(child_ids):
        if k:
            seq.append(vocab.sep)
        seq += c
    return [seq + [vocab.eos]]
