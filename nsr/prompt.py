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

from dataclasses import asdict, dataclass
from typing import Sequence

import numba as nb
import numpy as np

from .tokenizer import ERR_LO, ERR_STEP, GEN_BOUNDS, GEN_TOKENS, N_ERR, NV_TOKENS, Vocab


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


_LOG_SOLVED = 10 ** ERR_LO


@nb.njit(cache=True)
def _bucket(mse, scale):
    """Error bucket of one MSE: 0 solved (MSE / var(y) <= 1e-12), then half decades, ``N_ERR`` non-finite."""
    if not np.isfinite(mse):
        return N_ERR
    nmse = mse / scale
    if not np.isfinite(nmse):  # finite but beyond float range once normalised: the top bin
        return N_ERR - 1
    if nmse <= _LOG_SOLVED:
        return 0
    b = int(np.floor((np.log10(nmse) - ERR_LO) / ERR_STEP)) + 1
    return min(max(b, 1), N_ERR - 1)


@nb.njit(cache=True)
def _buckets(mses, scale):
    out = np.empty(mses.shape[0], dtype=np.int64)
    for i in range(mses.shape[0]):
        out[i] = _bucket(mses[i], scale)
    return out


def error_buckets(mses, scale) -> np.ndarray:
    return _buckets(np.asarray(mses, dtype=np.float64), float(scale))


def error_token(mse: float, scale: float) -> str:
    """``<eK>``: the error bucket of an MSE relative to var(y) (``<einf>`` non-finite)."""
    b = int(_bucket(float(mse), float(scale)))
    return "<einf>" if b == N_ERR else f"<e{b}>"


def generation_token(gen: int) -> str:
    for i, bound in enumerate(GEN_BOUNDS):
        if gen <= bound:
            return GEN_TOKENS[i]
    return GEN_TOKENS[-1]


@nb.njit(cache=True)
def _rank(fitness32, keys, max_members):
    """Members shown: best float32 fitness first (stable), unique by ``keys`` (ints), at most ``max_members``."""
    order = np.argsort(-fitness32, kind="mergesort")
    out = np.empty(min(max_members, order.shape[0]), dtype=np.int64)
    n = 0
    for i in order:
        dup = False
        for j in range(n):
            if keys[out[j]] == keys[i]:
                dup = True
                break
        if not dup:
            out[n] = i
            n += 1
            if n == out.shape[0]:
                break
    return out[:n]


def rank_members(fitness, keys: Sequence, max_members: int) -> list:
    """Indices of the members shown: unique by ``keys``, best float32 fitness first (stable), at most ``max_members``."""
    ids = {}
    dense = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    with np.errstate(over="ignore"):  # beyond float32 range is -inf there too
        f32 = np.asarray(fitness).astype(np.float32)
    return _rank(f32, dense, max_members).tolist()


@nb.njit(cache=True)
def _assemble(header, err_ids, member_ids, member_lengths, sep, end):
    """The prompt's layout, the one place it is written: header, then each member's error token and
    tokens, members separated by ``<sep>``, then ``<child>``/``<children>``."""
    n = header.shape[0] + 1
    for k in range(member_lengths.shape[0]):
        n += 1 + member_lengths[k] + (1 if k else 0)
    out = np.empty(n, dtype=np.int64)
    j = 0
    for t in header:
        out[j] = t
        j += 1
    for k in range(member_lengths.shape[0]):
        if k:
            out[j] = sep
            j += 1
        out[j] = err_ids[k]
        j += 1
        for t in range(member_lengths[k]):
            out[j] = member_ids[k, t]
            j += 1
    out[j] = end
    return out


def header_ids(vocab: Vocab, n_vars, operators, constants, generation) -> np.ndarray:
    ids = vocab.ids
    return np.array([vocab.bos, ids[NV_TOKENS[n_vars - 1]]] + [ids[o] for o in operators] + [ids[c] for c in constants]
                    + [ids[generation_token(generation)], vocab.pop], dtype=np.int64)


def encode_prompt(vocab: Vocab, n_vars, operators, constants, generation, members, autoregressive=False) -> list:
    """Token ids of a state. ``members`` are (error token, expression tokens) pairs, best first."""
    width = max((len(t) for _, t in members), default=0)
    ids = np.zeros((len(members), width), dtype=np.int64)
    for k, (_, toks) in enumerate(members):
        ids[k, : len(toks)] = vocab.encode_tokens(toks)
    errs = np.array([vocab.ids[e] for e, _ in members], dtype=np.int64)
    lengths = np.array([len(t) for _, t in members], dtype=np.int64)
    return _assemble(header_ids(vocab, n_vars, operators, constants, generation), errs, ids, lengths, vocab.sep,
                     vocab.children if autoregressive else vocab.child).tolist()


@nb.njit(cache=True)
def _encode_rows(members, codes, lengths, mses32, scale, code_ids, header, err_table, sep, end):
    n = members.shape[0]
    ids = np.empty((n, codes.shape[1]), dtype=np.int64)
    errs = np.empty(n, dtype=np.int64)
    for k in range(n):
        m = members[k]
        errs[k] = err_table[_bucket(mses32[m], scale)]
        for t in range(lengths[m]):
            ids[k, t] = code_ids[codes[m, t]]
    return _assemble(header, errs, ids, lengths[members], sep, end)


@nb.njit(cache=True)
def _encode_state(fitness32, hashes, codes, lengths, mses32, scale, code_ids, max_members, header, err_table, sep, end):
    members = _rank(fitness32, hashes, max_members)
    return members, _encode_rows(members, codes, lengths, mses32, scale, code_ids, header, err_table, sep, end)


class StateEncoder:
    """Prompts straight from integer-coded populations (one vocabulary): what sampling and training call.

    The codes of a run's primitives map to vocabulary ids through one lookup table per primitives, and
    ranking, error buckets and layout run compiled, so a prompt costs one call, not a loop per token."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self._tables: dict = {}
        self.err_table = np.array([vocab.ids[f"<e{b}>"] for b in range(N_ERR)] + [vocab.ids["<einf>"]], dtype=np.int64)

    def code_ids(self, prims) -> np.ndarray:
        """Vocabulary id of each code of ``prims`` (-1 where the vocabulary lacks the token)."""
        key = (prims.operators, prims.n_vars, prims.constant_leaves)
        t = self._tables.get(key)
        if t is None:
            t = np.full(max(prims._token) + 1, -1, dtype=np.int64)
            for code, tok in prims._token.items():
                t[code] = self.vocab.ids.get(tok, -1)
            self._tables[key] = t
        return t

    def code_of_id(self, prims) -> np.ndarray:
        """The inverse of :meth:`code_ids`: each vocabulary id's code in ``prims`` (-1: not one of its tokens)."""
        key = ("inverse", prims.operators, prims.n_vars, prims.constant_leaves)
        t = self._tables.get(key)
        if t is None:
            ids = self.code_ids(prims)
            t = np.full(len(self.vocab), -1, dtype=np.int64)
            t[ids[ids >= 0]] = np.flatnonzero(ids >= 0)
            self._tables[key] = t
        return t

    def encode(self, prims, generation, fitness, keys, codes, lengths, mses, scale, max_members,
               autoregressive=False):
        """(members shown, prompt ids) of a population: rows ``codes`` (skeleton codes), ``lengths``, with
        their fitness and MSE (both ranked and bucketed in float32, as traces record them) and a key per row
        (equal keys: the same expression, shown once)."""
        v = self.vocab
        with np.errstate(over="ignore"):
            f32 = np.asarray(fitness).astype(np.float32)
            m32 = np.asarray(mses).astype(np.float32).astype(np.float64)
        return _encode_state(f32, np.asarray(keys, dtype=np.int64), codes, np.asarray(lengths, dtype=np.int64), m32,
                             float(scale), self.code_ids(prims), max_members,
                             header_ids(v, prims.n_vars, prims.operators, prims.constant_leaves, generation),
                             self.err_table, v.sep, v.children if autoregressive else v.child)

    def encode_members(self, prims, generation, codes, lengths, mses, scale, autoregressive=False) -> np.ndarray:
        """Prompt ids for members already ranked (training ranks recorded populations by their text)."""
        v = self.vocab
        with np.errstate(over="ignore"):
            m32 = np.asarray(mses).astype(np.float32).astype(np.float64)
        return _encode_rows(np.arange(len(lengths)), codes, np.asarray(lengths, dtype=np.int64), m32, float(scale),
                            self.code_ids(prims), header_ids(v, prims.n_vars, prims.operators, prims.constant_leaves,
                                                             generation),
                            self.err_table, v.sep, v.children if autoregressive else v.child)


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
