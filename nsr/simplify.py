"""The reported model made simple (``polish``), on the training data alone.

A search with fitted constants reaches the right function carrying dead weight: a term fitted to almost
zero, a factor to almost one, a protected operator that is constant over the data (``asin`` of values >= 1
is pi/2 there), constants one Levenberg-Marquardt step short of their values. The error hides it; the
formula does not, and a reader or SRBench's symbolic criterion sees the formula. So, after the search, the
reported individual is rewritten in moves that each keep its training error:

1. fold every subtree that is constant over the training points into one fitted constant;
2. refit all constants with ``iterations`` LM iterations (the search uses a few per child);
3. prune greedily, the largest subtree first: replace a subtree by one fitted constant, or an operator by
   one of its operands, refitting the constants each time; keep a move when the normalized error stays
   within the tolerance of where polishing started.

Every move makes the program shorter, so it ends; every evaluation is counted against the run's budget.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .expressions import FIT_CODE

# A move is kept when the normalized MSE (MSE / var(y)) stays within REL_TOL of the start, or below
# ABS_TOL: 1e-10 is far inside SRBench's accuracy criterion (R^2 >= 0.99999, i.e. 1e-5), so pruning may
# drop a term worth a millionth of the signal, never one worth a measurable part of it.
REL_TOL = 1e-6
ABS_TOL = 1e-10
# A subtree is constant over the data when its spread is this small against its size.
FLAT = 1e-12


class _Fitter:
    """Fits and scores candidate programs over one problem's data, counting model evaluations."""

    def __init__(self, Xt, y, consts, width, iterations, scaled):
        self.Xt, self.y, self.consts, self.iterations, self.scaled = Xt, y, consts, iterations, scaled
        npts = Xt.shape[1]
        self.stack = np.empty((width + 1, npts))
        self.tstack = np.empty((width + 1, width, npts))
        self.evals = 0

    def values(self, codes, length, cvals):
        self.evals += 1
        return kernels.eval_program(codes, length, self.Xt, self.consts, cvals, self.stack).copy()

    def fit(self, codes, length, cvals):
        """Fits ``cvals`` in place; returns (SSE, (a, b))."""
        ab = np.empty(2)
        sse, n = kernels.fit_constants(codes, length, self.Xt, self.y, self.consts, cvals, self.iterations,
                                       self.stack, self.tstack, self.scaled, ab)
        self.evals += int(n)
        return float(sse), ab


def _splice(codes, cvals, length, i, e, piece_codes, piece_vals):
    """The program with ``[i, e)`` replaced by the given piece, padded to the row's width."""
    width = len(codes)
    c = np.concatenate((codes[:i], piece_codes, codes[e:length]))
    v = np.concatenate((cvals[:i], piece_vals, cvals[e:length]))
    n = len(c)
    return (np.concatenate((c, np.zeros(width - n, codes.dtype))), np.concatenate((v, np.zeros(width - n))), n)


def _fold_constant_subtrees(f, codes, cvals, length):
    """Step 1: every subtree (of more than one node) whose values are finite and constant over the data
    becomes one fitted constant of that value, the outermost first."""
    ends = np.empty(length, dtype=np.int64)
    kernels.subtree_ends(codes, length, ends)
    i = 0
    while i < length:
        e = int(ends[i])
        if e - i > 1:
            v = f.values(codes[i:e], e - i, cvals[i:e])
            if np.all(np.isfinite(v)) and np.ptp(v) <= FLAT * max(float(np.abs(v).max()), 1e-300):
                codes, cvals, length = _splice(codes, cvals, length, i, e, np.array([FIT_CODE], codes.dtype),
                                               np.array([float(v.mean())]))
                ends = np.empty(length, dtype=np.int64)  # positions after i moved
                kernels.subtree_ends(codes, length, ends)
        i += 1
    return codes, cvals, length


def _moves(f, codes, cvals, length):
    """Step 3's candidates, the largest reduction first: (codes, cvals, length) of each."""
    ends = np.empty(length, dtype=np.int64)
    kernels.subtree_ends(codes, length, ends)
    out = []
    for i in range(length):
        e = int(ends[i])
        if e - i < 2:
            continue
        v = f.values(codes[i:e], e - i, cvals[i:e])
        start = float(v.mean()) if np.all(np.isfinite(v)) else 1.0
        out.append((e - i - 1, i, e, np.array([FIT_CODE], codes.dtype), np.array([start])))
        j = i + 1  # each operand in turn takes the operator's place
        while j < e:
            k = int(ends[j])
            out.append((e - i - (k - j), i, e, codes[j:k], cvals[j:k]))
            j = k
    out.sort(key=lambda m: -m[0])
    return [_splice(codes, cvals, length, i, e, pc, pv) for _, i, e, pc, pv in out]


def polish(codes, length, cvals, Xt, y, consts, iterations, scaled=False, budget=None):
    """Simplify one program (a padded ``int16`` code row, its length and fitted values) over ``Xt``/``y``.

    Returns ``(codes, length, cvals, ab, sse, evaluations)``: the simplified row, its fitted values, its
    linear scaling (``(1, 0)`` without ``scaled``), its SSE and the model evaluations spent. ``budget``
    caps the evaluations (moves stop once it is spent; the start's refit always runs)."""
    codes = np.array(codes, dtype=np.int16)
    cvals = np.array(cvals, dtype=np.float64)
    length = int(length)
    y = np.asarray(y, dtype=np.float64)
    f = _Fitter(Xt, y, consts, len(codes), iterations, scaled)
    scale = float(np.var(y)) * len(y)
    scale = scale if scale > 1e-300 else float(len(y))

    start_sse, start_ab = f.fit(codes, length, cvals)
    best = (codes, length, cvals, start_ab, start_sse)
    if not np.isfinite(start_sse):
        return (*best, f.evals)
    limit = max(start_sse / scale * (1 + REL_TOL), ABS_TOL) * scale

    if budget is not None and f.evals >= budget:
        return (*best, f.evals)
    fc, fv, fl = _fold_constant_subtrees(f, codes.copy(), cvals.copy(), length)
    if fl < length:
        sse, ab = f.fit(fc, fl, fv)
        if sse <= limit:
            best = (fc, fl, fv, ab, sse)
    improved = True
    while improved and (budget is None or f.evals < budget):
        improved = False
        for mc, mv, ml in _moves(f, best[0], best[2], best[1]):
            if budget is not None and f.evals >= budget:
                break
            sse, ab = f.fit(mc, ml, mv)
            if sse <= limit:
                best = (mc, ml, mv, ab, sse)
                improved = True
                break
    return (*best, f.evals)
