"""Compiled (numba) kernels over integer-coded prefix programs.

A population is a 2-D ``int16`` array (one padded row per program) plus a
length per row; codes are laid out as in :mod:`nsr.expressions` (operators
0..9, variables 10..19, constants 20+ index the run's constant table). The
kernels take an explicit ``numpy.random.Generator``, so a run's randomness is
one stream however it is scheduled.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .expressions import CONST_CODE0, EXP_CLIP, PROTECT_EPS, VAR_CODE0

CROSSOVER, MUTATION = 1, 2
_P_INTERNAL = 0.9  # Koza's bias: crossover points favour internal nodes
_P_OPERATOR = 0.5  # grow method: chance of an operator where one fits

_jit = nb.njit(cache=True, nogil=True)


@nb.njit(cache=True, nogil=True, inline="always")
def _arity(c):
    if c < 5:
        return 2
    if c < VAR_CODE0:
        return 1
    return 0


# ----------------------------------------------------------------------------
# evaluation


@_jit
def eval_program(codes, length, Xt, consts, stack):
    """Evaluate one program over ``Xt`` (n_vars x n_points); returns a view of ``stack[0]``."""
    npts = Xt.shape[1]
    sp = 0
    for i in range(length - 1, -1, -1):
        c = codes[i]
        if c >= CONST_CODE0:
            v = consts[c - CONST_CODE0]
            for k in range(npts):
                stack[sp, k] = v
            sp += 1
        elif c >= VAR_CODE0:
            row = Xt[c - VAR_CODE0]
            for k in range(npts):
                stack[sp, k] = row[k]
            sp += 1
        elif c >= 5:
            a = stack[sp - 1]
            if c == 5:
                for k in range(npts):
                    a[k] = np.sin(a[k])
            elif c == 6:
                for k in range(npts):
                    a[k] = np.cos(a[k])
            elif c == 7:
                for k in range(npts):
                    a[k] = np.exp(min(a[k], EXP_CLIP))
            elif c == 8:
                for k in range(npts):
                    v = abs(a[k])
                    a[k] = np.log(v) if v >= PROTECT_EPS else 0.0
            else:
                for k in range(npts):
                    a[k] = np.sqrt(abs(a[k]))
        else:
            a = stack[sp - 1]  # first operand (pushed last)
            b = stack[sp - 2]
            if c == 0:
                for k in range(npts):
                    b[k] = a[k] + b[k]
            elif c == 1:
                for k in range(npts):
                    b[k] = a[k] - b[k]
            elif c == 2:
                for k in range(npts):
                    b[k] = a[k] * b[k]
            elif c == 3:
                for k in range(npts):
                    b[k] = a[k] / b[k] if abs(b[k]) >= PROTECT_EPS else 1.0
            else:
                for k in range(npts):
                    e = b[k]
                    if e == np.floor(e):
                        b[k] = a[k] ** e
                    else:
                        b[k] = abs(a[k]) ** e
            sp -= 1
    return stack[0]


@_jit
def _mse(codes, length, Xt, y, consts, stack):
    pred = eval_program(codes, length, Xt, consts, stack)
    s = 0.0
    for k in range(y.shape[0]):
        d = pred[k] - y[k]
        s += d * d
    # Any non-finite prediction makes the whole candidate non-finite: it is
    # masked (inf), never scored on the points where it happens to be defined.
    if not np.isfinite(s):
        return np.inf
    return s / y.shape[0]


@_jit
def hash_rows(codes2d, lengths):
    """64-bit FNV-1a hash of each program's codes (the fitness-cache key)."""
    n = codes2d.shape[0]
    out = np.empty(n, dtype=np.uint64)
    for p in range(n):
        h = np.uint64(14695981039346656037)
        for i in range(lengths[p]):
            h = (h ^ np.uint64(codes2d[p, i] + 1)) * np.uint64(1099511628211)
        out[p] = h ^ np.uint64(lengths[p])
    return out


@_jit
def mse_cached(codes2d, lengths, hashes, Xt, y, consts, keys, vals, used, max_len):
    """MSE of each program; programs whose hash is in the table are not evaluated again.

    The table is open addressing over three arrays (power-of-two size, linear
    probing); :class:`FitnessCache` grows it. Returns (mse array, number evaluated)."""
    n = codes2d.shape[0]
    out = np.empty(n, dtype=np.float64)
    stack = np.empty((max_len + 1, Xt.shape[1]), dtype=np.float64)
    mask = np.uint64(keys.shape[0] - 1)
    evaluated = 0
    for p in range(n):
        h = hashes[p]
        slot = h & mask
        while used[slot] and keys[slot] != h:
            slot = (slot + np.uint64(1)) & mask
        if used[slot]:
            out[p] = vals[slot]
        else:
            v = _mse(codes2d[p], lengths[p], Xt, y, consts, stack)
            keys[slot] = h
            vals[slot] = v
            used[slot] = True
            out[p] = v
            evaluated += 1
    return out, evaluated


@_jit
def _rehash(keys, vals, used, new_keys, new_vals, new_used):
    mask = np.uint64(new_keys.shape[0] - 1)
    for i in range(keys.shape[0]):
        if used[i]:
            slot = keys[i] & mask
            while new_used[slot]:
                slot = (slot + np.uint64(1)) & mask
            new_keys[slot] = keys[i]
            new_vals[slot] = vals[i]
            new_used[slot] = True


class FitnessCache:
    """hash -> MSE for one run (plain arrays, so the kernels cache to disk and start fast)."""

    def __init__(self, capacity=1024):
        size = 1 << max(4, int(capacity - 1).bit_length())
        self.keys = np.zeros(size, dtype=np.uint64)
        self.vals = np.zeros(size, dtype=np.float64)
        self.used = np.zeros(size, dtype=np.bool_)
        self.count = 0

    def __len__(self):
        return self.count

    def mse(self, codes2d, lengths, hashes, Xt, y, consts, max_len):
        # keep the load under 1/2 even if every program is new
        while 2 * (self.count + len(hashes)) > self.keys.shape[0]:
            size = 2 * self.keys.shape[0]
            k, v, u = np.zeros(size, np.uint64), np.zeros(size, np.float64), np.zeros(size, np.bool_)
            _rehash(self.keys, self.vals, self.used, k, v, u)
            self.keys, self.vals, self.used = k, v, u
        out, n_eval = mse_cached(codes2d, lengths, hashes, Xt, y, consts, self.keys, self.vals, self.used, max_len)
        self.count += int(n_eval)
        return out, int(n_eval)


@_jit
def predict_batch(codes2d, lengths, Xt, consts, max_len):
    n = codes2d.shape[0]
    out = np.empty((n, Xt.shape[1]), dtype=np.float64)
    stack = np.empty((max_len + 1, Xt.shape[1]), dtype=np.float64)
    for p in range(n):
        out[p] = eval_program(codes2d[p], lengths[p], Xt, consts, stack)
    return out


# ----------------------------------------------------------------------------
# structure


@_jit
def subtree_ends(codes, length, ends):
    """ends[i] = index one past the subtree rooted at i."""
    stack = np.empty(length + 1, dtype=np.int64)
    sp = 0
    for i in range(length - 1, -1, -1):
        a = _arity(codes[i])
        if a == 0:
            ends[i] = i + 1
        else:
            e = 0
            for _ in range(a):
                sp -= 1
                e = stack[sp]
            ends[i] = e
        stack[sp] = ends[i]
        sp += 1


@_jit
def random_tree(out, start, budget, max_depth, rng, op_codes, leaf_codes, root_op):
    """Grow a random tree into ``out[start:]`` using at most ``budget`` nodes and
    depth ``max_depth`` (root depth 1); returns the end index."""
    depths = np.empty(budget + 2, dtype=np.int64)  # pending slots (LIFO) with their depths
    sp = 1
    depths[0] = 1
    pos = start
    n_ops = op_codes.shape[0]
    while sp > 0:
        sp -= 1
        d = depths[sp]
        used = pos - start
        pending_after = sp  # slots still open besides this one
        # An operator of arity a fits if the tree can still be closed with leaves.
        fits1 = d < max_depth and used + 1 + pending_after + 1 <= budget
        fits2 = d < max_depth and used + 1 + pending_after + 2 <= budget
        choose_op = False
        if fits1 and n_ops > 0:
            if root_op and pos == start:
                choose_op = True
            else:
                choose_op = rng.random() < _P_OPERATOR
        if choose_op:
            # pick uniformly among operators that fit
            n_fit = 0
            for j in range(n_ops):
                a = _arity(op_codes[j])
                if a == 1 or fits2:
                    n_fit += 1
            if n_fit == 0:
                choose_op = False
            else:
                r = rng.integers(0, n_fit)
                c = op_codes[0]
                for j in range(n_ops):
                    a = _arity(op_codes[j])
                    if a == 1 or fits2:
                        if r == 0:
                            c = op_codes[j]
                            break
                        r -= 1
                out[pos] = c
                pos += 1
                for _ in range(_arity(c)):
                    depths[sp] = d + 1
                    sp += 1
        if not choose_op:
            out[pos] = leaf_codes[rng.integers(0, leaf_codes.shape[0])]
            pos += 1
    return pos


@_jit
def _pick_node(codes, ends, length, rng, max_sub, p_internal):
    """A random node whose subtree has at most ``max_sub`` nodes, internal nodes
    preferred with probability ``p_internal``; -1 if none fits."""
    n_int = 0
    n_leaf = 0
    for i in range(length):
        if ends[i] - i <= max_sub:
            if ends[i] - i > 1:
                n_int += 1
            else:
                n_leaf += 1
    if n_int + n_leaf == 0:
        return -1
    want_internal = n_int > 0 and (n_leaf == 0 or rng.random() < p_internal)
    r = rng.integers(0, n_int if want_internal else n_leaf)
    for i in range(length):
        s = ends[i] - i
        if s <= max_sub and (s > 1) == want_internal:
            if r == 0:
                return i
            r -= 1
    return -1


@_jit
def _tournament(fitness, k, rng):
    n = fitness.shape[0]
    best = rng.integers(0, n)
    for _ in range(k - 1):
        j = rng.integers(0, n)
        if fitness[j] > fitness[best]:
            best = j
    return best


@_jit
def _splice(child, pa, i, ea, la, donor, ds, de):
    """child = pa[:i] + donor[ds:de] + pa[ea:la]; returns its length."""
    n = 0
    for t in range(i):
        child[n] = pa[t]
        n += 1
    for t in range(ds, de):
        child[n] = donor[t]
        n += 1
    for t in range(ea, la):
        child[n] = pa[t]
        n += 1
    return n


@_jit
def breed(pop, lens, fitness, n_children, rng, tournament_size, crossover_prob, max_depth, max_size,
          op_codes, leaf_codes):
    """The expert's operators: each child by crossover of two tournament winners
    (probability ``crossover_prob``) or subtree mutation of one. Every child has
    at most ``max_size`` nodes.

    Returns (children, lengths, parents (n x 2, -1 = none), operator codes).
    """
    L = pop.shape[1]
    width = max(L, max_size)
    children = np.zeros((n_children, width), dtype=np.int16)
    clens = np.zeros(n_children, dtype=np.int64)
    parents = np.full((n_children, 2), -1, dtype=np.int64)
    ops = np.zeros(n_children, dtype=np.int8)
    ends_a = np.empty(width + 1, dtype=np.int64)
    ends_b = np.empty(width + 1, dtype=np.int64)
    scratch = np.empty(width + 2, dtype=np.int16)
    for k in range(n_children):
        a = _tournament(fitness, tournament_size, rng)
        pa = pop[a]
        la = lens[a]
        subtree_ends(pa, la, ends_a)
        child = children[k]
        if rng.random() < crossover_prob:
            b = _tournament(fitness, tournament_size, rng)
            pb = pop[b]
            lb = lens[b]
            subtree_ends(pb, lb, ends_b)
            i = _pick_node(pa, ends_a, la, rng, la, _P_INTERNAL)
            ea = ends_a[i]
            budget = max_size - (la - (ea - i))
            if budget < 1:  # an oversized parent (e.g. a recorded state): replace it whole
                i, ea, budget = 0, la, max_size
            j = _pick_node(pb, ends_b, lb, rng, budget, _P_INTERNAL)
            clens[k] = _splice(child, pa, i, ea, la, pb, j, ends_b[j])
            parents[k, 0] = a
            parents[k, 1] = b
            ops[k] = CROSSOVER
        else:
            i = rng.integers(0, la)
            ea = ends_a[i]
            budget = max_size - (la - (ea - i))
            if budget < 1:
                i, ea, budget = 0, la, max_size
            m = random_tree(scratch, 0, budget, max_depth, rng, op_codes, leaf_codes, False)
            clens[k] = _splice(child, pa, i, ea, la, scratch, 0, m)
            parents[k, 0] = a
            ops[k] = MUTATION
    return children, clens, parents, ops


@_jit
def random_population(n, rng, max_depth, max_size, op_codes, leaf_codes):
    """``n`` random trees, depth limits ramped over 2..max_depth, an operator at the root."""
    out = np.zeros((n, max_size), dtype=np.int16)
    lens = np.zeros(n, dtype=np.int64)
    for k in range(n):
        d = 2 + rng.integers(0, max(1, max_depth - 1)) if max_depth >= 2 else 1
        lens[k] = random_tree(out[k], 0, max_size, d, rng, op_codes, leaf_codes, True)
    return out, lens
