"""Compiled (numba) kernels over integer-coded prefix programs.

A population is a 2-D ``int16`` array (one padded row per program) plus a
length per row; codes are laid out as in :mod:`nsr.expressions` (operators in
the registry's order, then variables, then indices into the run's constant
table). The kernels take an explicit ``numpy.random.Generator``, so a run's
randomness is one stream however it is scheduled.

Opcodes and arities come from the operator registry (:mod:`nsr.operators`);
this module implements each operator once, in :func:`eval_program`, and
refuses to import if the registry names one it does not implement.
"""
from __future__ import annotations

import zlib

import numba as nb
import numpy as np
from numba.core.registry import CPUDispatcher

from .expressions import CONST_CODE0, FIT_CODE, FIT_INIT, VAR_CODE0
from .operators import ARITY, EXP_CLIP, OPCODE, OPERATORS, PROTECT_EPS

CROSSOVER, MUTATION = 1, 2
_P_INTERNAL = 0.9  # Koza's bias: crossover points favour internal nodes
_P_OPERATOR = 0.5  # grow method: chance of an operator where one fits

# The operators eval_program implements, by name: a registry entry without a kernel is an import error,
# never a program silently evaluated as some other operator.
_IMPLEMENTED = ("+", "-", "*", "/", "^", "sin", "cos", "exp", "log", "sqrt", "tanh", "asin")
_missing = [op.name for op in OPERATORS if op.name not in _IMPLEMENTED]
if _missing:
    raise ImportError(f"nsr.kernels has no implementation of operator(s) {_missing}: add them to eval_program")
ADD, SUB, MUL, DIV, POW = (OPCODE[o] for o in ("+", "-", "*", "/", "^"))
SIN, COS, EXP, LOG, SQRT, TANH, ASIN = (OPCODE[o] for o in ("sin", "cos", "exp", "log", "sqrt", "tanh", "asin"))
ARITIES = np.array([ARITY[op.name] for op in OPERATORS], dtype=np.int64)
N_OPERATORS = len(OPERATORS)

_jit = nb.njit(cache=True, nogil=True)


@nb.njit(cache=True, nogil=True, inline="always")
def _arity(c):
    return ARITIES[c] if c < N_OPERATORS else 0


# ----------------------------------------------------------------------------
# evaluation


@_jit
def eval_program(codes, length, Xt, consts, cvals, stack):
    """Evaluate one program over ``Xt`` (n_vars x n_points); returns a view of ``stack[0]``.

    ``cvals[i]`` is the value of a fitted constant (code ``FIT_CODE``) at position ``i``."""
    npts = Xt.shape[1]
    sp = 0
    for i in range(length - 1, -1, -1):
        c = codes[i]
        if c >= VAR_CODE0:
            if c >= CONST_CODE0:
                v = consts[c - CONST_CODE0]
                for k in range(npts):
                    stack[sp, k] = v
            elif c == FIT_CODE:
                v = cvals[i]
                for k in range(npts):
                    stack[sp, k] = v
            else:
                row = Xt[c - VAR_CODE0]
                for k in range(npts):
                    stack[sp, k] = row[k]
            sp += 1
        elif ARITIES[c] == 1:
            a = stack[sp - 1]
            if c == SIN:
                for k in range(npts):
                    a[k] = np.sin(a[k])
            elif c == COS:
                for k in range(npts):
                    a[k] = np.cos(a[k])
            elif c == EXP:
                for k in range(npts):
                    a[k] = np.exp(min(a[k], EXP_CLIP))
            elif c == LOG:
                for k in range(npts):
                    v = abs(a[k])
                    a[k] = np.log(v) if v >= PROTECT_EPS else 0.0
            elif c == SQRT:
                for k in range(npts):
                    a[k] = np.sqrt(abs(a[k]))
            elif c == TANH:
                for k in range(npts):
                    a[k] = np.tanh(a[k])
            elif c == ASIN:
                for k in range(npts):
                    a[k] = np.arcsin(min(max(a[k], -1.0), 1.0))
        else:
            a = stack[sp - 1]  # first operand (pushed last)
            b = stack[sp - 2]
            if c == ADD:
                for k in range(npts):
                    b[k] = a[k] + b[k]
            elif c == SUB:
                for k in range(npts):
                    b[k] = a[k] - b[k]
            elif c == MUL:
                for k in range(npts):
                    b[k] = a[k] * b[k]
            elif c == DIV:
                for k in range(npts):
                    b[k] = a[k] / b[k] if abs(b[k]) >= PROTECT_EPS else 1.0
            elif c == POW:
                for k in range(npts):
                    e = b[k]
                    if e == np.floor(e):
                        b[k] = a[k] ** e
                    else:
                        b[k] = abs(a[k]) ** e
            sp -= 1
    return stack[0]


@_jit
def residual_sse(pred, y, scaled, ab):
    """Sum of squared errors of ``pred``, or with ``scaled`` of its least-squares rescaling
    ``a * pred + b`` (linear scaling: a and b are free, in closed form; written to ``ab``)."""
    n = y.shape[0]
    s = 0.0
    if not scaled:
        for k in range(n):
            d = pred[k] - y[k]
            s += d * d
        ab[0], ab[1] = 1.0, 0.0
    else:
        mp = 0.0
        my = 0.0
        for k in range(n):
            mp += pred[k]
            my += y[k]
        mp /= n
        my /= n
        sxy = 0.0
        sxx = 0.0
        for k in range(n):
            sxy += (pred[k] - mp) * (y[k] - my)
            sxx += (pred[k] - mp) * (pred[k] - mp)
        a = sxy / sxx if sxx > 0.0 and np.isfinite(sxx) and np.isfinite(sxy) else 0.0
        b = my - a * mp
        for k in range(n):
            d = a * pred[k] + b - y[k]
            s += d * d
        ab[0], ab[1] = a, b
    # Any non-finite prediction makes the whole candidate non-finite: it is
    # masked (inf), never scored on the points where it happens to be defined.
    return s if np.isfinite(s) else np.inf


@_jit
def _sse(codes, length, Xt, y, consts, cvals, stack, scaled, ab):
    return residual_sse(eval_program(codes, length, Xt, consts, cvals, stack), y, scaled, ab)


# ----------------------------------------------------------------------------
# fitted constants: exact derivatives (forward mode) and Levenberg-Marquardt


@_jit
def _d(x):
    """A derivative factor, zero where it is not finite (a kink or pole: no useful direction there)."""
    return x if np.isfinite(x) else 0.0


@_jit
def eval_jacobian(codes, length, Xt, consts, cvals, pos, kc, stack, tstack):
    """Value and derivatives with respect to the ``kc`` fitted constants at positions ``pos``:
    returns (value view, tangent view (kc x n_points)). The derivative of each operator sits next to
    its value, with the operator's protection (a clipped or protected region has derivative 0)."""
    npts = Xt.shape[1]
    sp = 0
    for i in range(length - 1, -1, -1):
        c = codes[i]
        if c >= VAR_CODE0:
            v = 0.0
            if c >= CONST_CODE0:
                v = consts[c - CONST_CODE0]
            elif c == FIT_CODE:
                v = cvals[i]
            for k in range(npts):
                stack[sp, k] = Xt[c - VAR_CODE0, k] if c < FIT_CODE else v
            for j in range(kc):
                seed = 1.0 if (c == FIT_CODE and pos[j] == i) else 0.0
                for k in range(npts):
                    tstack[sp, j, k] = seed
            sp += 1
        elif ARITIES[c] == 1:
            a = stack[sp - 1]
            ta = tstack[sp - 1]
            for k in range(npts):
                x = a[k]
                if c == SIN:
                    v, dv = np.sin(x), np.cos(x)
                elif c == COS:
                    v, dv = np.cos(x), -np.sin(x)
                elif c == EXP:
                    v = np.exp(min(x, EXP_CLIP))
                    dv = v if x < EXP_CLIP else 0.0
                elif c == LOG:
                    ax = abs(x)
                    v, dv = (np.log(ax), 1.0 / x) if ax >= PROTECT_EPS else (0.0, 0.0)
                elif c == SQRT:
                    v = np.sqrt(abs(x))
                    dv = (1.0 if x > 0 else -1.0) * 0.5 / v if v > 0 else 0.0
                elif c == TANH:
                    v = np.tanh(x)
                    dv = 1.0 - v * v
                else:  # ASIN
                    v = np.arcsin(min(max(x, -1.0), 1.0))
                    dv = 1.0 / np.sqrt(1.0 - x * x) if abs(x) < 1.0 else 0.0
                a[k] = v
                dv = _d(dv)
                for j in range(kc):
                    ta[j, k] *= dv
        else:
            a, b = stack[sp - 1], stack[sp - 2]
            ta, tb = tstack[sp - 1], tstack[sp - 2]
            for k in range(npts):
                x, z = a[k], b[k]
                if c == ADD:
                    v, dx, dz = x + z, 1.0, 1.0
                elif c == SUB:
                    v, dx, dz = x - z, 1.0, -1.0
                elif c == MUL:
                    v, dx, dz = x * z, z, x
                elif c == DIV:
                    if abs(z) >= PROTECT_EPS:
                        v = x / z
                        dx, dz = 1.0 / z, -v / z
                    else:
                        v, dx, dz = 1.0, 0.0, 0.0
                else:  # POW: the real power for an integer exponent, |x|^z otherwise
                    if z == np.floor(z):
                        v = x ** z
                        dx = z * x ** (z - 1.0)
                    else:
                        v = abs(x) ** z
                        dx = (1.0 if x > 0 else -1.0) * z * abs(x) ** (z - 1.0)
                    dz = v * np.log(abs(x)) if x != 0 else 0.0
                b[k] = v
                dx, dz = _d(dx), _d(dz)
                for j in range(kc):
                    tb[j, k] = dx * ta[j, k] + dz * tb[j, k]
            sp -= 1
    return stack[0], tstack[0]


@_jit
def _solve(A, g, out):
    """``out = A^-1 g`` by Gaussian elimination with partial pivoting (A, g destroyed); False if singular."""
    n = A.shape[0]
    for col in range(n):
        piv = col
        for r in range(col + 1, n):
            if abs(A[r, col]) > abs(A[piv, col]):
                piv = r
        if not abs(A[piv, col]) > 1e-300:
            return False
        if piv != col:
            for q in range(n):
                A[col, q], A[piv, q] = A[piv, q], A[col, q]
            g[col], g[piv] = g[piv], g[col]
        for r in range(col + 1, n):
            f = A[r, col] / A[col, col]
            for q in range(col, n):
                A[r, q] -= f * A[col, q]
            g[r] -= f * g[col]
    for r in range(n - 1, -1, -1):
        s = g[r]
        for q in range(r + 1, n):
            s -= A[r, q] * out[q]
        out[r] = s / A[r, r]
        if not np.isfinite(out[r]):
            return False
    return True


@_jit
def fit_constants(codes, length, Xt, y, consts, cvals, iterations, stack, tstack, scaled, ab):
    """Levenberg-Marquardt over the program's fitted constants, from their current values (the
    parent's, for an inherited subtree). ``cvals`` ends at the best values seen, so a fit never makes
    the program worse than its starting constants; singular systems, overflow and divergence only end
    the fit early. With ``scaled`` the residual is that of the linearly scaled program (a and b solved
    in closed form at each point, the Jacobian scaled by a). Returns (SSE, model evaluations: residual
    and Jacobian passes, the first included); ``ab`` holds the scaling of the best values."""
    kc = 0
    for i in range(length):
        if codes[i] == FIT_CODE:
            kc += 1
    pos = np.empty(kc, dtype=np.int64)
    kc = 0
    for i in range(length):
        if codes[i] == FIT_CODE:
            pos[kc] = i
            kc += 1
    best = _sse(codes, length, Xt, y, consts, cvals, stack, scaled, ab)
    evals = 1
    if kc == 0 or iterations <= 0 or not np.isfinite(best):
        return best, evals
    npts = y.shape[0]
    theta = np.empty(kc)
    for j in range(kc):
        theta[j] = cvals[pos[j]]
    best_ab = np.empty(2)
    best_ab[0], best_ab[1] = ab[0], ab[1]
    H = np.empty((kc, kc))
    g = np.empty(kc)
    A = np.empty((kc, kc))
    rhs = np.empty(kc)
    step = np.empty(kc)
    lam = 1e-3
    for _ in range(iterations):
        pred, J = eval_jacobian(codes, length, Xt, consts, cvals, pos, kc, stack, tstack)
        evals += 1
        a, b = best_ab[0], best_ab[1]
        for j in range(kc):
            s = 0.0
            for k in range(npts):
                s += a * J[j, k] * (a * pred[k] + b - y[k])
            g[j] = s
            for q in range(j + 1):
                s = 0.0
                for k in range(npts):
                    s += J[j, k] * J[q, k]
                H[j, q] = a * a * s
                H[q, j] = a * a * s
        improved = False
        while lam < 1e12:
            for j in range(kc):
                for q in range(kc):
                    A[j, q] = H[j, q]
                A[j, j] += lam * (H[j, j] + 1e-12)
                rhs[j] = -g[j]
            if _solve(A, rhs, step):
                for j in range(kc):
                    cvals[pos[j]] = theta[j] + step[j]
                trial = _sse(codes, length, Xt, y, consts, cvals, stack, scaled, ab)
                evals += 1
                if trial < best:
                    gain = best - trial
                    best = trial
                    for j in range(kc):
                        theta[j] = cvals[pos[j]]
                    best_ab[0], best_ab[1] = ab[0], ab[1]
                    lam = max(lam * 0.1, 1e-12)
                    improved = gain > 1e-12 * best
                    break
            lam *= 10.0
        for j in range(kc):
            cvals[pos[j]] = theta[j]
        if not improved or best == 0.0:
            break
    ab[0], ab[1] = best_ab[0], best_ab[1]
    return best, evals


@nb.njit(cache=True, nogil=True, inline="always")
def span_hash(codes, s, e):
    """64-bit FNV-1a hash of ``codes[s:e]`` (and its length)."""
    h = np.uint64(14695981039346656037)
    for i in range(s, e):
        h = (h ^ np.uint64(codes[i] + 1)) * np.uint64(1099511628211)
    return h ^ np.uint64(e - s)


@_jit
def hash_rows(codes2d, lengths):
    """Each program's :func:`span_hash` (the fitness-cache key: fitted constants are keyed by their
    skeleton, so an identical skeleton is fitted once per run)."""
    n = codes2d.shape[0]
    out = np.empty(n, dtype=np.uint64)
    for p in range(n):
        out[p] = span_hash(codes2d[p], 0, lengths[p])
    return out


@_jit
def mse_cached(codes2d, lengths, cvals2d, ab2d, hashes, Xt, y, consts, keys, vals, used, cache_cv, cache_ab,
               iterations, scaled, max_len):
    """MSE of each program; programs whose hash is in the table are not evaluated again.

    With ``iterations`` > 0 a new program's fitted constants are fitted first and kept in ``cache_cv``;
    a program whose skeleton is in the table takes its fitted values from there. With ``scaled`` the MSE
    is that of the linearly scaled program, its (a, b) in ``ab2d``. The table is open addressing over
    plain arrays (power-of-two size, linear probing); :class:`FitnessCache` grows it.
    Returns (mse array, new programs, model evaluations)."""
    n = codes2d.shape[0]
    out = np.empty(n, dtype=np.float64)
    npts = Xt.shape[1]
    stack = np.empty((max_len + 1, npts), dtype=np.float64)
    kmax = max_len if iterations > 0 else 0
    tstack = np.empty((max_len + 1, kmax, npts), dtype=np.float64)
    width = cache_cv.shape[1]
    mask = np.uint64(keys.shape[0] - 1)
    new = 0
    evals = 0
    for p in range(n):
        h = hashes[p]
        slot = h & mask
        while used[slot] and keys[slot] != h:
            slot = (slot + np.uint64(1)) & mask
        L = lengths[p]
        if used[slot]:
            out[p] = vals[slot]
            if iterations > 0 and L <= width:
                for i in range(L):
                    cvals2d[p, i] = cache_cv[slot, i]
            ab2d[p, 0], ab2d[p, 1] = cache_ab[slot, 0], cache_ab[slot, 1]
        else:
            if iterations > 0:
                sse, ne = fit_constants(codes2d[p], L, Xt, y, consts, cvals2d[p], iterations, stack, tstack,
                                        scaled, ab2d[p])
                evals += ne
                if L <= width:
                    for i in range(L):
                        cache_cv[slot, i] = cvals2d[p, i]
            else:
                sse = _sse(codes2d[p], L, Xt, y, consts, cvals2d[p], stack, scaled, ab2d[p])
                evals += 1
            v = sse / npts
            keys[slot] = h
            vals[slot] = v
            used[slot] = True
            cache_ab[slot, 0], cache_ab[slot, 1] = ab2d[p, 0], ab2d[p, 1]
            out[p] = v
            new += 1
    return out, new, evals


@_jit
def _rehash(keys, vals, used, cache_cv, cache_ab, new_keys, new_vals, new_used, new_cv, new_ab):
    mask = np.uint64(new_keys.shape[0] - 1)
    for i in range(keys.shape[0]):
        if used[i]:
            slot = keys[i] & mask
            while new_used[slot]:
                slot = (slot + np.uint64(1)) & mask
            new_keys[slot] = keys[i]
            new_vals[slot] = vals[i]
            new_used[slot] = True
            new_ab[slot, 0], new_ab[slot, 1] = cache_ab[i, 0], cache_ab[i, 1]
            for q in range(cache_cv.shape[1]):
                new_cv[slot, q] = cache_cv[i, q]


class FitnessCache:
    """hash -> MSE (and fitted constants, linear scaling) for one run, in plain arrays so the kernels
    cache to disk and start fast."""

    def __init__(self, capacity=1024, fitted_width=0):
        size = 1 << max(4, int(capacity - 1).bit_length())
        self.keys = np.zeros(size, dtype=np.uint64)
        self.vals = np.zeros(size, dtype=np.float64)
        self.used = np.zeros(size, dtype=np.bool_)
        self.cv = np.zeros((size, fitted_width), dtype=np.float64)
        self.ab = np.zeros((size, 2), dtype=np.float64)
        self.count = 0

    def __len__(self):
        return self.count

    def mse(self, codes2d, lengths, cvals2d, ab2d, hashes, Xt, y, consts, max_len, iterations=0, scaled=False):
        """(MSE per program, new programs, model evaluations); fits ``cvals2d`` and fills ``ab2d`` in place."""
        while 2 * (self.count + len(hashes)) > self.keys.shape[0]:  # keep the load under 1/2
            size = 2 * self.keys.shape[0]
            k, v, u = np.zeros(size, np.uint64), np.zeros(size, np.float64), np.zeros(size, np.bool_)
            cv, ab = np.zeros((size, self.cv.shape[1]), np.float64), np.zeros((size, 2), np.float64)
            _rehash(self.keys, self.vals, self.used, self.cv, self.ab, k, v, u, cv, ab)
            self.keys, self.vals, self.used, self.cv, self.ab = k, v, u, cv, ab
        out, new, evals = mse_cached(codes2d, lengths, cvals2d, ab2d, hashes, Xt, y, consts, self.keys, self.vals,
                                     self.used, self.cv, self.ab, iterations, scaled, max_len)
        self.count += int(new)
        return out, int(new), int(evals)


@_jit
def predict_batch(codes2d, lengths, cvals2d, Xt, consts, max_len):
    n = codes2d.shape[0]
    out = np.empty((n, Xt.shape[1]), dtype=np.float64)
    stack = np.empty((max_len + 1, Xt.shape[1]), dtype=np.float64)
    for p in range(n):
        out[p] = eval_program(codes2d[p], lengths[p], Xt, consts, cvals2d[p], stack)
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
def _point_mutate(child, cv, length, rng, op_codes, leaf_codes):
    """Replace one node by another of the same arity (an operator by an operator, a leaf by a leaf)."""
    i = rng.integers(0, length)
    a = _arity(child[i])
    n = 0
    for c in (leaf_codes if a == 0 else op_codes):
        if c != child[i] and _arity(c) == a:
            n += 1
    if n == 0:
        return
    r = rng.integers(0, n)
    for c in (leaf_codes if a == 0 else op_codes):
        if c != child[i] and _arity(c) == a:
            if r == 0:
                child[i] = c
                cv[i] = FIT_INIT if c == FIT_CODE else 0.0
                return
            r -= 1


@_jit
def breed(pop, lens, pop_cv, fitness, n_children, rng, tournament_size, crossover_prob, max_depth, max_size,
          op_codes, leaf_codes, point_mutation_prob=0.0):
    """The expert's operators: each child by crossover of two tournament winners
    (probability ``crossover_prob``) or mutation of one: a point mutation (one node
    changed; probability ``point_mutation_prob`` of the mutations) or subtree
    mutation. Every child has at most ``max_size`` nodes. Fitted constants travel
    with their subtree (the fit starts from the parent's values); new ones start
    at ``FIT_INIT``.

    Returns (children, lengths, children's constants, parents (n x 2, -1 = none), operator codes).
    """
    L = pop.shape[1]
    width = max(L, max_size)
    children = np.zeros((n_children, width), dtype=np.int16)
    child_cv = np.zeros((n_children, width), dtype=np.float64)
    clens = np.zeros(n_children, dtype=np.int64)
    parents = np.full((n_children, 2), -1, dtype=np.int64)
    ops = np.zeros(n_children, dtype=np.int8)
    ends_a = np.empty(width + 1, dtype=np.int64)
    ends_b = np.empty(width + 1, dtype=np.int64)
    scratch = np.empty(width + 2, dtype=np.int16)
    scratch_cv = np.empty(width + 2, dtype=np.float64)
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
            _splice(child_cv[k], pop_cv[a], i, ea, la, pop_cv[b], j, ends_b[j])
            parents[k, 0] = a
            parents[k, 1] = b
            ops[k] = CROSSOVER
        elif point_mutation_prob > 0.0 and rng.random() < point_mutation_prob and la <= width:
            for t in range(la):
                child[t] = pa[t]
                child_cv[k, t] = pop_cv[a, t]
            clens[k] = la
            _point_mutate(child, child_cv[k], la, rng, op_codes, leaf_codes)
            parents[k, 0] = a
            ops[k] = MUTATION
        else:
            i = rng.integers(0, la)
            ea = ends_a[i]
            budget = max_size - (la - (ea - i))
            if budget < 1:
                i, ea, budget = 0, la, max_size
            m = random_tree(scratch, 0, budget, max_depth, rng, op_codes, leaf_codes, False)
            for t in range(m):
                scratch_cv[t] = FIT_INIT if scratch[t] == FIT_CODE else 0.0
            clens[k] = _splice(child, pa, i, ea, la, scratch, 0, m)
            _splice(child_cv[k], pop_cv[a], i, ea, la, scratch_cv, 0, m)
            parents[k, 0] = a
            ops[k] = MUTATION
    return children, clens, child_cv, parents, ops


@_jit
def random_population(n, rng, max_depth, max_size, op_codes, leaf_codes):
    """``n`` random trees, depth limits ramped over 2..max_depth, an operator at the root."""
    out = np.zeros((n, max_size), dtype=np.int16)
    lens = np.zeros(n, dtype=np.int64)
    for k in range(n):
        d = 2 + rng.integers(0, max(1, max_depth - 1)) if max_depth >= 2 else 1
        lens[k] = random_tree(out[k], 0, max_size, d, rng, op_codes, leaf_codes, True)
    return out, lens


# ----------------------------------------------------------------------------
# numba's on-disk cache keeps module globals (the opcode tables above) as they were at compile time: if the
# registry changed since, recompile everything instead of running stale machine code.

_FINGERPRINT = zlib.crc32(repr([(op.name, op.arity) for op in OPERATORS]
                               + [VAR_CODE0, FIT_CODE, CONST_CODE0, FIT_INIT, EXP_CLIP, PROTECT_EPS]).encode())


@_jit
def _compiled_fingerprint():
    return _FINGERPRINT


if _compiled_fingerprint() != _FINGERPRINT:
    for _f in list(globals().values()):
        if isinstance(_f, CPUDispatcher):
            _f._cache.flush()
    _compiled_fingerprint.recompile()


# ----------------------------------------------------------------------------
# population bookkeeping (one call each instead of a dozen array operations: the loop runs them per problem
# per generation, thousands of times a second in batched neural runs)


@_jit
def fitness_of(mse, lengths, scale, parsimony):
    """``-(MSE / var(y)) - parsimony * size``; ``-inf`` where the MSE is not finite."""
    out = np.empty(mse.shape[0], dtype=np.float64)
    for i in range(mse.shape[0]):
        out[i] = (-mse[i]) / scale - parsimony * lengths[i] if np.isfinite(mse[i]) else -np.inf
    return out


@_jit
def best_index(mse, fitness):
    """The lowest MSE; ties: the fittest (the first of equals)."""
    best = 0
    for i in range(1, mse.shape[0]):
        if mse[i] < mse[best] or (mse[i] == mse[best] and fitness[i] > fitness[best]):
            best = i
    return best


@_jit
def front_improvements(mse, sizes, kept):
    """Indices of the individuals that beat ``kept[size]`` (the front's MSE per size), the first lowest of each
    size; ``kept`` is updated in place. One pass: the front is offered every generation of every run."""
    best = np.full(kept.shape[0], -1, dtype=np.int64)
    for i in range(mse.shape[0]):
        k = sizes[i]
        if mse[i] < kept[k] and (best[k] < 0 or mse[i] < mse[best[k]]):  # NaN and inf never beat it
            best[k] = i
    n = 0
    for k in range(kept.shape[0]):
        if best[k] >= 0:
            kept[k] = mse[best[k]]
            best[n] = best[k]
            n += 1
    return best[:n]


@_jit
def next_generation(codes, lengths, cvals, ab, elite, pcodes, plengths, pcvals):
    """The new population's arrays: the elite (copied with its constants and scaling) at index 0, then the
    children; rows as wide as the wider of the two."""
    n = 1 + plengths.shape[0]
    width = max(codes.shape[1], pcodes.shape[1])
    new = np.zeros((n, width), dtype=np.int16)
    ncv = np.zeros((n, width), dtype=np.float64)
    nlen = np.empty(n, dtype=np.int64)
    nab = np.empty((n, 2), dtype=np.float64)
    for t in range(codes.shape[1]):
        new[0, t] = codes[elite, t]
        ncv[0, t] = cvals[elite, t]
    nlen[0] = lengths[elite]
    nab[0, 0], nab[0, 1] = ab[elite, 0], ab[elite, 1]
    for k in range(plengths.shape[0]):
        for t in range(pcodes.shape[1]):
            new[k + 1, t] = pcodes[k, t]
            ncv[k + 1, t] = pcvals[k, t]
        nlen[k + 1] = plengths[k]
    return new, nlen, ncv, nab


# ----------------------------------------------------------------------------
# infix text, compiled: traces format every new individual of every generation


FIT_MARK = 1  # byte written where a fitted constant's value goes (Python inserts its exact repr)


@nb.njit(cache=True, nogil=True, inline="always")
def _emit(buf, j, c, tok_bytes, tok_start, tok_len):
    for q in range(tok_len[c]):
        buf[j + q] = tok_bytes[tok_start[c] + q]
    return j + tok_len[c]


@_jit
def format_rows(codes2d, lengths, rows, tok_bytes, tok_start, tok_len):
    """Canonical infix of the programs ``rows`` as one byte buffer and offsets (``nsr.expressions.format_infix``'s
    text, with a ``FIT_MARK`` byte for each fitted constant). ``tok_bytes[tok_start[c]:+tok_len[c]]`` is code
    ``c``'s text: a leaf as it prints, an operator by name."""
    total = 0
    for r in rows:
        for t in range(lengths[r]):
            total += tok_len[codes2d[r, t]] + 6
    buf = np.empty(total, dtype=np.uint8)
    offsets = np.empty(rows.shape[0] + 1, dtype=np.int64)
    ends = np.empty(codes2d.shape[1] + 1, dtype=np.int64)
    node = np.empty(codes2d.shape[1] + 1, dtype=np.int64)
    phase = np.empty(codes2d.shape[1] + 1, dtype=np.int64)
    j = 0
    for k in range(rows.shape[0]):
        offsets[k] = j
        r = rows[k]
        prog = codes2d[r]
        subtree_ends(prog, lengths[r], ends)
        sp = 1
        node[0], phase[0] = 0, 0
        while sp > 0:  # in-order walk: (left op right), name(arg), leaves as they print
            i, ph = node[sp - 1], phase[sp - 1]
            c = prog[i]
            a = _arity(c)
            if a == 0:
                if c == FIT_CODE:
                    buf[j] = FIT_MARK
                    j += 1
                else:
                    j = _emit(buf, j, c, tok_bytes, tok_start, tok_len)
                sp -= 1
            elif ph == 0:
                if a == 1:
                    j = _emit(buf, j, c, tok_bytes, tok_start, tok_len)
                buf[j] = 40  # (
                j += 1
                phase[sp - 1] = 1
                node[sp], phase[sp] = i + 1, 0
                sp += 1
            elif ph == 1 and a == 2:
                buf[j] = 32
                j = _emit(buf, j + 1, c, tok_bytes, tok_start, tok_len)
                buf[j] = 32
                j += 1
                phase[sp - 1] = 2
                node[sp], phase[sp] = ends[i + 1], 0
                sp += 1
            else:
                buf[j] = 41  # )
                j += 1
                sp -= 1
    offsets[rows.shape[0]] = j
    return buf, offsets
