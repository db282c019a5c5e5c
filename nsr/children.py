"""The model's sampled token rows -> children: codes, validity, inferred parents, warm-started constants.

Compiled, because on a GPU this is CPU-side work the device waits for, once per child per generation.

Heritage of a neural child (documented in README): the model does not say which members it used, so
parents are inferred: the first is the population member (best first) holding the child's largest
subtree found in the population; the second, if any, holds the largest subtree of size >= 2 outside
that one, from a different member. A child sharing no subtree with the population has no parents.
Subtrees are compared as skeletons (fitted constants as ``C``); a child's fitted constant starts from
the value the first member holding its largest enclosing subtree has there.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .expressions import FIT_CODE, FIT_INIT
from .kernels import _arity, span_hash, subtree_ends

_jit = nb.njit(cache=True, nogil=True)


@_jit
def split_rows(rows, count, eos, pad, sep, width):
    """Token-id rows -> ``count`` expressions (one per row in one-step mode; split at ``<sep>`` in
    autoregressive mode, a missing one empty). Returns (ids (count x width), lengths; -1 = too long)."""
    ids = np.zeros((count, width), dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    k = 0
    for r in range(rows.shape[0]):
        if k >= count:
            break
        n = 0
        for t in range(rows.shape[1]):
            tok = rows[r, t]
            if tok == eos or tok == pad:
                break
            if tok == sep:
                lengths[k] = n
                k += 1
                n = 0
                if k >= count:
                    break
                continue
            if n < width:
                ids[k, n] = tok
                n += 1
            else:
                n = width + 1  # over-long: invalid
        if k < count and (n > 0 or rows.shape[0] > 1):
            lengths[k] = n if n <= width else -1
            k += 1
    return ids, lengths


@_jit
def decode(ids, lengths, code_of_id, max_size, width):
    """Ids -> codes; ``valid[k]`` when row k is a complete prefix expression of at most ``max_size``
    tokens, all among the problem's primitives."""
    n = ids.shape[0]
    codes = np.zeros((n, width), dtype=np.int16)
    valid = np.zeros(n, dtype=np.bool_)
    for k in range(n):
        L = lengths[k]
        if L < 1 or L > max_size:
            continue
        need = 1
        ok = True
        for t in range(L):
            c = code_of_id[ids[k, t]]
            if c < 0 or need == 0:
                ok = False
                break
            codes[k, t] = c
            need += _arity(c) - 1
        valid[k] = ok and need == 0
    return codes, valid


@_jit
def _member_table(mcodes, mlengths):
    """Every subtree of every member: (hash, member rank, start, length), sorted by hash, then rank, then start."""
    total = 0
    for m in range(mlengths.shape[0]):
        total += mlengths[m]
    hashes = np.empty(total, dtype=np.uint64)
    info = np.empty((total, 3), dtype=np.int64)
    ends = np.empty(mcodes.shape[1] + 1, dtype=np.int64)
    j = 0
    for m in range(mlengths.shape[0]):
        subtree_ends(mcodes[m], mlengths[m], ends)
        for s in range(mlengths[m]):
            hashes[j] = span_hash(mcodes[m], s, ends[s])
            info[j, 0], info[j, 1], info[j, 2] = m, s, ends[s] - s
            j += 1
    # stable: equal hashes keep (rank, start) order, the order "best member first" needs
    order = np.argsort(hashes, kind="mergesort")
    return hashes[order], info[order]


@_jit
def _holder(child, s, e, hashes, info, mcodes, skip_rank):
    """(rank, start) of the best-ranked member holding child[s:e] as a subtree (rank != skip_rank), or (-1, -1)."""
    h = span_hash(child, s, e)
    lo = np.searchsorted(hashes, h)
    n = e - s
    while lo < hashes.shape[0] and hashes[lo] == h:
        m, ms, ml = info[lo, 0], info[lo, 1], info[lo, 2]
        if ml == n and m != skip_rank:
            same = True
            for t in range(n):
                if mcodes[m, ms + t] != child[s + t]:
                    same = False
                    break
            if same:
                return m, ms
        lo += 1
    return -1, -1


@_jit
def infer(codes, lengths, valid, mcodes, mlengths, mcvals, member_index, fit):
    """Parents (n x 2 population indices, -1 = none) and starting values of fitted constants (n x width)
    for the valid children, from the members (rank order; ``member_index`` maps rank -> population index)."""
    n, width = codes.shape
    parents = np.full((n, 2), -1, dtype=np.int64)
    cvals = np.zeros((n, width), dtype=np.float64)
    hashes, info = _member_table(mcodes, mlengths)
    ends = np.empty(width + 1, dtype=np.int64)
    for k in range(n):
        if not valid[k]:
            continue
        L = lengths[k]
        child = codes[k]
        subtree_ends(child, L, ends)
        sizes = np.empty(L, dtype=np.int64)
        for s in range(L):
            sizes[s] = ends[s] - s
        order = np.argsort(-sizes * (width + 1) + np.arange(L), kind="mergesort")  # largest first, then leftmost
        # first parent: the best member holding the child's largest shared subtree
        p1, s1, e1 = -1, 0, 0
        for s in order:
            m, ms = _holder(child, s, ends[s], hashes, info, mcodes, -1)
            if m >= 0:
                p1, s1, e1 = m, s, ends[s]
                break
        if p1 >= 0:
            parents[k, 0] = member_index[p1]
            for s in order:  # second: the largest subtree (size >= 2) outside the first one, another member
                e = ends[s]
                if e - s < 2 or (s >= s1 and e <= e1) or (s <= s1 and e >= e1):
                    continue
                m, ms = _holder(child, s, e, hashes, info, mcodes, p1)
                if m >= 0:
                    parents[k, 1] = member_index[m]
                    break
        if fit:
            covered = np.zeros(L, dtype=np.bool_)
            for t in range(L):
                if child[t] == FIT_CODE:
                    cvals[k, t] = FIT_INIT
            for s in order:  # each C from the largest enclosing subtree some member holds
                e = ends[s]
                pending = False
                for t in range(s, e):
                    if child[t] == FIT_CODE and not covered[t]:
                        pending = True
                        break
                if not pending:
                    continue
                m, ms = _holder(child, s, e, hashes, info, mcodes, -1)
                if m >= 0:
                    for t in range(s, e):
                        if child[t] == FIT_CODE and not covered[t]:
                            cvals[k, t] = mcvals[m, ms + t - s]
                            covered[t] = True
    return parents, cvals


@_jit
def to_children(rows, count, eos, pad, sep, max_size, width, code_of_id, pop_codes, pop_lengths, pop_cvals, members,
                fit):
    """Sampled rows -> (codes, lengths (0 where invalid), valid, parents, fitted constants' starting values)."""
    ids, lengths = split_rows(rows, count, eos, pad, sep, max_size)
    codes, valid = decode(ids, lengths, code_of_id, max_size, width)
    for k in range(count):
        if not valid[k]:
            lengths[k] = 0
    parents, cvals = infer(codes, lengths, valid, pop_codes[members], pop_lengths[members], pop_cvals[members],
                           members, fit)
    return codes, lengths, valid, parents, cvals
