"""Expressions: one representation, a flat prefix token sequence (gplearn style).

A program is a tuple of string tokens in prefix (Polish) order, e.g.
``('+', 'x0', '1.0')`` for ``(x0 + 1.0)``. Tokens are operators (see
:mod:`nsr.operators`), variables ``x0..x9``, constants written as
``repr(float(c))``, and the placeholder ``C`` of a fitted constant. A run with
constant fitting keeps each individual's fitted values beside its codes; its
tokens show them as numbers at full precision (:meth:`Primitives.decode`),
while the *skeleton* (``C`` in their place) is what the fitness cache and the
model see. Everything else (infix text, sympy, integer codes for the compiled
kernels) is converted at the edges by the functions below.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Iterable, Sequence

import numpy as np

from .operators import ARITY, BINARY, BY_NAME, OPCODE, OPERATOR_SETS, OPERATORS, SPELLINGS, UNARY, apply
from .safe_io import InputError

MAX_VARIABLES = 10
VARIABLES = tuple(f"x{i}" for i in range(MAX_VARIABLES))
DEFAULT_CONSTANTS = (1.0,)

FIT_TOKEN = "C"  # a fitted constant's placeholder
# A new fitted constant's starting value: not a round number, so that a fit that leaves it unchanged still reads
# back from text as a fitted constant (a number outside the constants list), never as a listed constant.
FIT_INIT = 0.7

# Integer codes for the compiled kernels: operators first (registry order),
# then variables, the fitted-constant placeholder, then indices into the run's
# constant table.
VAR_CODE0 = len(OPERATORS)
FIT_CODE = VAR_CODE0 + MAX_VARIABLES
CONST_CODE0 = FIT_CODE + 1

# Bounds on text the parser accepts: expressions also come from files, and an
# over-deep one must be a clear error, not a RecursionError.
MAX_TEXT = 100_000
MAX_NESTING = 200


class ExpressionError(InputError):
    """A string or token sequence that is not a valid expression (bad input, like every InputError)."""


def shorten(text, limit: int = 80) -> str:
    """``repr(text)``, cut to ``limit`` characters for error messages."""
    r = repr(text)
    return r if len(r) <= limit else f"{r[: limit - 3]}... ({len(text)} characters)"


def const_token(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise ExpressionError(f"constant {value!r} is not finite")
    return repr(value)


_VAR_INDEX = {v: i for i, v in enumerate(VARIABLES)}


def is_constant(tok: str) -> bool:
    """A numeric literal (not the placeholder ``C``)."""
    if tok in ARITY or tok in _VAR_INDEX or tok == FIT_TOKEN:
        return False
    try:
        return math.isfinite(float(tok))
    except (ValueError, TypeError):
        return False


def arity(tok: str) -> int:
    """Arity of a token (0 for leaves); raises for unknown tokens."""
    a = ARITY.get(tok)
    if a is not None:
        return a
    if tok in _VAR_INDEX or tok == FIT_TOKEN or is_constant(tok):
        return 0
    raise ExpressionError(f"unknown token {shorten(tok)}")


def resolve_operators(operator_set: str | None = "arith", binary_operators=None, unary_operators=None):
    """(binary, unary) operator tuples from a set name or explicit lists."""
    if binary_operators is None and unary_operators is None:
        if operator_set not in OPERATOR_SETS:
            raise ExpressionError(f"unknown operator set {operator_set!r} (choose from {', '.join(OPERATOR_SETS)})")
        ops = OPERATOR_SETS[operator_set]
        return tuple(o for o in ops if ARITY[o] == 2), tuple(o for o in ops if ARITY[o] == 1)
    binary = tuple(binary_operators or ())
    unary = tuple(unary_operators or ())
    for op in binary:
        if ARITY.get(op) != 2:
            raise ExpressionError(f"unknown binary operator {op!r} (choose from {' '.join(BINARY)})")
    for op in unary:
        if ARITY.get(op) != 1:
            raise ExpressionError(f"unknown unary operator {op!r} (choose from {' '.join(UNARY)})")
    if not binary and not unary:
        raise ExpressionError("no operators given")
    return binary, unary


# ----------------------------------------------------------------------------
# structure


def is_valid(tokens: Sequence[str]) -> bool:
    need = 1
    for tok in tokens:
        if need == 0:
            return False
        try:
            need += arity(tok) - 1
        except ExpressionError:
            return False
    return need == 0 and len(tokens) > 0


def check(tokens: Sequence[str]) -> tuple:
    tokens = tuple(tokens)
    if not is_valid(tokens):
        raise ExpressionError(f"not a well-formed prefix expression: {shorten(' '.join(map(str, tokens)))}")
    return tokens


def depth(tokens: Sequence[str]) -> int:
    """Depth in edges+1: a leaf has depth 1."""
    best, stack = 0, []  # stack of remaining-children counts with their depths
    for tok in tokens:
        d = len(stack) + 1
        best = max(best, d)
        a = arity(tok)
        if a:
            stack.append(a)
        else:
            while stack:
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
    return best


def subtrees(tokens: Sequence[str]) -> list:
    """(start, end) of every subtree, in the order their ends are reached."""
    out = []
    stack = []  # open nodes: [start, remaining children]
    for i, t in enumerate(tokens):
        a = arity(t)
        if a == 0:
            end = i + 1
            out.append((i, end))
            while stack:
                stack[-1][1] -= 1
                if stack[-1][1]:
                    break
                s, _ = stack.pop()
                out.append((s, end))
        else:
            stack.append([i, a])
    return out


def variables_used(tokens: Sequence[str]) -> set:
    return {t for t in tokens if t in _VAR_INDEX}


# ----------------------------------------------------------------------------
# infix text


def format_infix(tokens: Sequence[str], names: Sequence[str] | None = None) -> str:
    """Parenthesised infix: ``(x0 + 1.0)``, ``sin(x0)``, ``(x0 * (-1.0))``; exact inverse of :func:`parse`.
    ``names[i]`` is shown for ``xi`` (a table's column names; :func:`parse` reads them back with ``names``)."""
    stack = []
    for tok in reversed(tokens):
        a = ARITY.get(tok)
        if a is None:
            if tok in _VAR_INDEX:
                stack.append(names[_VAR_INDEX[tok]] if names is not None else tok)
                continue
            if tok != FIT_TOKEN and not is_constant(tok):
                raise ExpressionError(f"unknown token {shorten(tok)}")
            # negative constants in parentheses: "(-1.0) ^ 2.0" must not read as -(1.0 ^ 2.0)
            stack.append(f"({tok})" if tok[0] == "-" else tok)
        elif len(stack) < a:
            raise ExpressionError(f"not a well-formed prefix expression: {shorten(' '.join(tokens))}")
        elif a == 1:
            stack.append(f"{tok}({stack.pop()})")
        else:
            left = stack.pop()
            stack.append(f"({left} {tok} {stack.pop()})")
    if len(stack) != 1:
        raise ExpressionError(f"not a well-formed prefix expression: {shorten(' '.join(tokens))}")
    return stack[0]


def _parse_canonical(text: str):
    """Fast path for the canonical format of :func:`format_infix` (None if the text is not in it).

    Iterative: nesting depth costs nothing here."""
    ops, out = [], []
    for t in text.replace("(", " ( ").replace(")", " ) ").split():
        if t == "(" or t in _UNARY_SET or t in _BINARY_SET:
            ops.append(t)
        elif t == ")":
            if not ops:
                return None
            top = ops.pop()
            if top in _BINARY_SET:
                if len(out) < 2 or not ops or ops.pop() != "(":
                    return None
                right = out.pop()
                out[-1] = [top] + out[-1] + right
            elif top != "(" or not out:
                return None
            if ops and ops[-1] in _UNARY_SET:
                out[-1] = [ops.pop()] + out[-1]
        elif t in _VAR_INDEX or t == FIT_TOKEN:
            out.append([t])
        else:
            try:
                v = float(t)
            except ValueError:
                return None
            if v != v or v in (math.inf, -math.inf):
                return None
            out.append([repr(v)])
    if len(out) != 1 or ops:
        return None
    return tuple(out[0])


_UNARY_SET = frozenset(UNARY)
_BINARY_SET = frozenset(BINARY)
# binary spellings -> (operator, precedence, right associative); '**' is '^'
_BINARY_SPELLINGS = {s: (n, BY_NAME[n].precedence, BY_NAME[n].right_assoc)
                     for s, n in SPELLINGS.items() if ARITY[n] == 2}
_FUNCTION_SPELLINGS = {s: n for s, n in SPELLINGS.items() if ARITY[n] == 1}
_SYMBOLS = sorted(set(_BINARY_SPELLINGS) | {"(", ")", "+", "-"}, key=len, reverse=True)
_TOKEN_RE = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|("
                       + "|".join(re.escape(s) for s in _SYMBOLS) + r")|([A-Za-z_][A-Za-z_0-9]*))")
_NAMED_CONSTANTS = {"pi": math.pi, "E": math.e}
# unary minus binds looser than '^' but tighter than '*' and '/'
_UNARY_MINUS_PRECEDENCE = 3


def parse(text: str, names: Sequence[str] | None = None) -> tuple:
    """Parse infix text into prefix tokens.

    Accepts the canonical parenthesised format of :func:`format_infix` (exact
    round trip) and ordinary sympy-style strings: ``x0**2 + sin(x1)``,
    ``2*x0 - x1/3``, unary minus, ``^`` or ``**`` for powers, ``ln`` for
    ``log``, ``pi``. Integers become float constants (``2`` -> ``'2.0'``).
    With ``names`` (a table's variable names), ``names[i]`` reads as ``xi`` and
    no other variable name is accepted.
    No code is executed; over-long or over-deep text is an ExpressionError.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"expression of {len(text)} characters is too long (at most {MAX_TEXT})")
    fast = _parse_canonical(text) if names is None else None
    if fast is not None and is_valid(fast):
        return fast
    named = None if names is None else {n: VARIABLES[i] for i, n in enumerate(names)}
    lexemes = []
    pos = 0
    text_stripped = text.rstrip()
    while pos < len(text_stripped):
        m = _TOKEN_RE.match(text_stripped, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse {shorten(text)} at position {pos}")
        num, op, name = m.groups()
        if num is not None:
            lexemes.append(("num", num))
        elif op is not None:
            lexemes.append(("op", op))
        elif named is not None and name in named:
            lexemes.append(("var", named[name]))
        elif named is not None and name in _VAR_INDEX:
            raise ExpressionError(f"unknown variable {name!r} in {shorten(text)} (the variables are "
                                  f"{', '.join(names)})")
        else:
            lexemes.append(("name", name))
        pos = m.end()
    if not lexemes:
        raise ExpressionError("empty expression")
    parser = _Parser(lexemes, text)
    tree = parser.expression(0)
    if parser.i != len(lexemes):
        raise ExpressionError(f"unexpected {lexemes[parser.i][1]!r} in {shorten(text)}")
    return tree


@functools.lru_cache(maxsize=1 << 17)
def parse_cached(text: str) -> tuple:
    """:func:`parse`, memoised: traces repeat the same expressions across generations."""
    return parse(text)


class _Parser:
    """Precedence climbing over lexemes; builds prefix token tuples directly.

    Recursive, so nesting is counted and bounded (``MAX_NESTING``)."""

    def __init__(self, lexemes, text):
        self.lx, self.i, self.text, self.level = lexemes, 0, text, 0

    def peek(self):
        return self.lx[self.i] if self.i < len(self.lx) else (None, None)

    def take(self):
        item = self.peek()
        if item[0] is None:
            raise ExpressionError(f"unexpected end of expression in {shorten(self.text)}")
        self.i += 1
        return item

    def expression(self, min_prec):
        self.level += 1
        if self.level > MAX_NESTING:
            raise ExpressionError(f"expression nested too deeply (more than {MAX_NESTING} levels): "
                                  f"{shorten(self.text)}")
        left = self.unary()
        while True:
            kind, val = self.peek()
            if kind != "op" or val not in _BINARY_SPELLINGS:
                break
            name, prec, right_assoc = _BINARY_SPELLINGS[val]
            if prec < min_prec:
                break
            self.take()
            right = self.expression(prec if right_assoc else prec + 1)
            left = (name,) + left + right
        self.level -= 1
        return left

    def unary(self):
        kind, val = self.peek()
        if kind == "op" and val in ("+", "-"):
            self.take()
            operand = self.expression(_UNARY_MINUS_PRECEDENCE)
            if val == "+":
                return operand
            if len(operand) == 1 and is_constant(operand[0]):
                return (const_token(-float(operand[0])),)
            return ("*", "-1.0") + operand
        return self.atom()

    def atom(self):
        kind, val = self.take()
        if kind == "num":
            return (const_token(float(val)),)
        if kind == "var":
            return (val,)
        if kind == "op" and val == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if kind == "name":
            if val in _FUNCTION_SPELLINGS:
                self.expect("(")
                arg = self.expression(0)
                self.expect(")")
                return (_FUNCTION_SPELLINGS[val],) + arg
            if val in _VAR_INDEX or val == FIT_TOKEN:
                return (val,)
            if val in _NAMED_CONSTANTS:
                return (const_token(_NAMED_CONSTANTS[val]),)
            raise ExpressionError(f"unknown name {shorten(val, 40)} in {shorten(self.text)} (variables are x0..x9)")
        raise ExpressionError(f"unexpected {val!r} in {shorten(self.text)}")

    def expect(self, sym):
        kind, val = self.take()
        if val != sym:
            raise ExpressionError(f"expected {sym!r}, found {val!r} in {shorten(self.text)}")


# ----------------------------------------------------------------------------
# sympy (imported lazily: it is slow to import and only needed at the edges)


def to_sympy(tokens: Sequence[str], names: Sequence[str] | None = None):
    """Sympy expression with the plain (unprotected) meaning of each operator; ``names[i]`` is ``xi``'s symbol."""
    import sympy as sp

    stack = []
    for tok in reversed(tuple(tokens)):
        a = arity(tok)
        if a == 0:
            if tok in _VAR_INDEX and names is not None:
                stack.append(sp.Symbol(names[_VAR_INDEX[tok]], real=True))
            elif tok in _VAR_INDEX or tok == FIT_TOKEN:
                stack.append(sp.Symbol(tok, real=True))
            else:
                v = float(tok)
                stack.append(sp.Integer(int(v)) if v.is_integer() and abs(v) < 1e15 else sp.Float(v))
        elif len(stack) < a:
            break
        else:
            args = [stack.pop() for _ in range(a)]
            stack.append(BY_NAME[tok].sympy(sp, *args))
    if len(stack) != 1:
        raise ExpressionError(f"not a well-formed prefix expression: {shorten(' '.join(tokens))}")
    return stack[0]


# ----------------------------------------------------------------------------
# evaluation (NumPy reference; the population hot path uses nsr.kernels)


def evaluate(tokens: Sequence[str], X: np.ndarray) -> np.ndarray:
    """Evaluate over ``X`` (n_points x n_vars), vectorised; may contain inf/NaN."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ExpressionError(f"X must be 2-D (n_points x n_vars), got shape {X.shape}")
    n = X.shape[0]
    stack = []
    for tok in reversed(tuple(tokens)):
        a = arity(tok)
        if a == 0:
            if tok in _VAR_INDEX:
                j = _VAR_INDEX[tok]
                if j >= X.shape[1]:
                    raise ExpressionError(f"{tok} used but X has {X.shape[1]} variable(s)")
                stack.append(X[:, j])
            elif tok == FIT_TOKEN:
                raise ExpressionError("a skeleton with placeholders C has no value: give the fitted constants")
            else:
                stack.append(np.full(n, float(tok)))
        elif len(stack) < a:
            break
        else:
            args = [stack.pop() for _ in range(a)]  # the first operand was pushed last
            stack.append(apply(tok, *args))
    if len(stack) != 1:
        raise ExpressionError(f"not a well-formed prefix expression: {shorten(' '.join(tokens))}")
    return np.array(stack[0], dtype=np.float64)  # a copy: never a view into X


# ----------------------------------------------------------------------------
# a small convenience wrapper for users


class Expression:
    """An immutable expression: ``Expression.parse('(x0 + 1.0)')``, ``e.tokens``, ``str(e)``.

    ``names`` (a table's variable names, ``names[i]`` for ``xi``) changes only how it is shown: ``str``,
    ``to_sympy`` and ``latex`` use them; the tokens stay ``x0..x9``."""

    __slots__ = ("tokens", "names")

    def __init__(self, tokens: Iterable[str], names: Sequence[str] | None = None):
        tokens = check(tokens)
        if names is not None:
            names = tuple(names)
            used = variables_used(tokens)
            if any(_VAR_INDEX[v] >= len(names) for v in used):
                raise ExpressionError(f"{len(names)} variable names for an expression using {sorted(used)}")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "names", names)

    def __setattr__(self, *_):
        raise AttributeError("Expression is immutable")

    def __reduce__(self):  # pickles as plain data (tokens and names), despite the immutability
        return (Expression, (self.tokens, self.names))

    @classmethod
    def parse(cls, text: str, names: Sequence[str] | None = None) -> "Expression":
        return cls(parse(text, names), names)

    def __str__(self):
        return format_infix(self.tokens, self.names)

    def __repr__(self):
        return f"Expression({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, Expression) and (other.tokens, other.names) == (self.tokens, self.names)

    def __hash__(self):
        return hash(self.tokens)

    def latex(self) -> str:
        import sympy as sp

        return sp.latex(self.to_sympy())

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def depth(self) -> int:
        return depth(self.tokens)

    def evaluate(self, X) -> np.ndarray:
        return evaluate(self.tokens, X)

    def to_sympy(self):
        return to_sympy(self.tokens, self.names)


# ----------------------------------------------------------------------------
# integer coding for one run's primitives


class Primitives:
    """The operators, variables and constants one run may use, and their integer codes.

    With ``fit_constants`` the placeholder ``C`` is a leaf too; :meth:`encode_values`
    turns any other numeric literal into ``C`` carrying that value."""

    def __init__(self, binary_operators, unary_operators, n_vars: int, constants=DEFAULT_CONSTANTS,
                 fit_constants: bool = False):
        if not 1 <= int(n_vars) <= MAX_VARIABLES:
            raise ExpressionError(f"number of variables must be 1..{MAX_VARIABLES}, got {n_vars}")
        self.binary = tuple(binary_operators)
        self.unary = tuple(unary_operators)
        self.n_vars = int(n_vars)
        self.fit = bool(fit_constants)
        self.constant_tokens = tuple(dict.fromkeys(const_token(c) for c in constants))
        self.constants = np.array([float(c) for c in self.constant_tokens], dtype=np.float64)
        self.operators = self.binary + self.unary
        self.variables = VARIABLES[: self.n_vars]
        self.op_codes = np.array([OPCODE[o] for o in self.operators], dtype=np.int16)
        self.leaf_codes = np.array(
            [VAR_CODE0 + i for i in range(self.n_vars)] + [CONST_CODE0 + j for j in range(len(self.constants))]
            + ([FIT_CODE] if self.fit else []), dtype=np.int16)
        self._code = {op: OPCODE[op] for op in self.operators}
        self._code.update({v: VAR_CODE0 + i for i, v in enumerate(self.variables)})
        self._code.update({c: CONST_CODE0 + j for j, c in enumerate(self.constant_tokens)})
        if self.fit:
            self._code[FIT_TOKEN] = FIT_CODE
        self._token = {code: tok for tok, code in self._code.items()}

    @property
    def tokens(self) -> tuple:
        """Every token a skeleton may use (the placeholder ``C`` included when fitting)."""
        return self.operators + self.variables + self.constant_leaves

    @property
    def constant_leaves(self) -> tuple:
        """The constants a skeleton may use: the list, and ``C`` when fitting."""
        return self.constant_tokens + ((FIT_TOKEN,) if self.fit else ())

    def skeleton(self, tokens: Sequence[str]) -> tuple:
        """``tokens`` with ``C`` for every number outside the constant list (when fitting)."""
        if not self.fit:
            return tuple(tokens)
        return tuple(FIT_TOKEN if (t not in self._code and is_constant(t)) else t for t in tokens)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._code[t] for t in tokens), dtype=np.int16, count=len(tokens))
        except KeyError as e:
            raise ExpressionError(f"token {shorten(e.args[0], 40)} is not among this run's primitives "
                                  f"({' '.join(self.tokens)})") from None

    def encode_values(self, tokens: Sequence[str], init: float = FIT_INIT):
        """(codes, fitted values) of an expression: with fitting, numbers outside the constant list
        become ``C`` holding their value (``C`` itself starts at ``init``)."""
        skeleton = self.skeleton(tokens)
        values = np.zeros(len(tokens))
        if self.fit:
            for i, (t, s) in enumerate(zip(tokens, skeleton)):
                if s == FIT_TOKEN:
                    values[i] = init if t == FIT_TOKEN else float(t)
        return self.encode(skeleton), values

    def decode(self, codes, cvals=None) -> tuple:
        """Tokens of a program; with ``cvals`` its fitted constants appear as numbers, else as ``C``."""
        tok = self._token
        if cvals is None or not self.fit:
            return tuple(tok[int(c)] for c in codes)
        return tuple(const_token(cvals[i]) if c == FIT_CODE else tok[int(c)] for i, c in enumerate(codes.tolist()))

    def admits(self, tokens: Sequence[str]) -> bool:
        return all(t in self._code for t in tokens)

    def format(self, codes, cvals=None) -> str:
        """``format_infix(self.decode(codes, cvals))``, straight from codes: traces format every new
        individual of every generation, so this skips the token tuple and its checks."""
        table = self._infix_table
        stack = []
        for i in range(len(codes) - 1, -1, -1):
            c = int(codes[i])
            kind, text = table[c]
            if kind == 0:
                if c == FIT_CODE and cvals is not None:
                    t = repr(float(cvals[i]))
                    stack.append(f"({t})" if t[0] == "-" else t)
                else:
                    stack.append(text)
            elif kind == 1:
                stack.append(f"{text}({stack.pop()})")
            else:
                left = stack.pop()
                stack.append(f"({left} {text} {stack.pop()})")
        return stack[0]

    def format_many(self, codes2d, lengths, rows, cvals2d=None) -> list:
        """:meth:`format` of the programs ``rows`` of a population, in one compiled pass."""
        from .kernels import FIT_MARK, format_rows

        tb, start, length = self._format_bytes
        buf, off = format_rows(codes2d, lengths, np.asarray(rows, dtype=np.int64), tb, start, length)
        raw = buf.tobytes()
        out = [raw[off[k]:off[k + 1]].decode("ascii") for k in range(len(rows))]
        if self.fit and cvals2d is not None:
            mark = chr(FIT_MARK)
            for k, r in enumerate(rows):
                if mark in out[k]:
                    vals = [cvals2d[r, t] for t in range(lengths[r]) if codes2d[r, t] == FIT_CODE]
                    parts = out[k].split(mark)
                    txt = [parts[0]]
                    for v, rest in zip(vals, parts[1:]):
                        t = repr(float(v))
                        txt.append((f"({t})" if t[0] == "-" else t) + rest)
                    out[k] = "".join(txt)
        return out

    @functools.cached_property
    def _format_bytes(self):
        """Each code's text as one byte buffer with starts and lengths (for the compiled formatter)."""
        table = self._infix_table
        size = max(table) + 1
        start, length = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
        chunks, pos = [], 0
        for c in range(size):
            text = table[c][1].encode("ascii") if c in table else b""
            start[c], length[c] = pos, len(text)
            chunks.append(text)
            pos += len(text)
        return np.frombuffer(b"".join(chunks) or b"\0", dtype=np.uint8).copy(), start, length

    @functools.cached_property
    def _infix_table(self) -> dict:
        """code -> (arity, text): leaves as they print (negative constants in parentheses), operators by name."""
        out = {}
        for code, tok in self._token.items():
            a = ARITY.get(tok, 0)
            out[code] = (a, f"({tok})" if a == 0 and tok[0] == "-" else tok)
        return out
