"""Expressions: one representation, a flat prefix token sequence (gplearn style).

A program is a tuple of string tokens in prefix (Polish) order, e.g.
``('+', 'x0', '1.0')`` for ``(x0 + 1.0)``. Tokens are operators, variables
``x0..x9`` and constants written as ``repr(float(c))``. Everything else
(infix text, sympy, integer codes for the compiled kernels) is converted at the
edges by the functions below.

Operators are protected so that none is NaN everywhere by accident:
``a / b`` is 1 where ``|b| < 1e-10``; ``log(a)`` is ``log|a|`` (0 where
``|a| < 1e-10``); ``sqrt(a)`` is ``sqrt|a|``; ``exp`` clips its argument at
100; ``a ^ b`` is the real power where ``b`` is an integer and ``|a| ^ b``
elsewhere. Values that still overflow become inf and are masked by the fitness.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Iterable, Sequence

import numpy as np

BINARY_OPERATORS = ("+", "-", "*", "/", "^")
UNARY_OPERATORS = ("sin", "cos", "exp", "log", "sqrt")
OPERATORS = BINARY_OPERATORS + UNARY_OPERATORS
ARITY = {**{op: 2 for op in BINARY_OPERATORS}, **{op: 1 for op in UNARY_OPERATORS}}
MAX_VARIABLES = 10
VARIABLES = tuple(f"x{i}" for i in range(MAX_VARIABLES))
OPERATOR_SETS = {
    "arith": ("+", "-", "*"),
    "full": ("+", "-", "*", "/", "^", "sin", "cos", "exp", "log", "sqrt"),
}
DEFAULT_CONSTANTS = (1.0,)

# Integer codes for the compiled kernels: operators first (fixed order), then
# variables, then indices into the run's constant table.
OP_CODE = {op: i for i, op in enumerate(OPERATORS)}
VAR_CODE0 = len(OPERATORS)  # 10
CONST_CODE0 = VAR_CODE0 + MAX_VARIABLES  # 20
PROTECT_EPS = 1e-10
EXP_CLIP = 100.0


class ExpressionError(ValueError):
    """A string or token sequence that is not a valid expression."""


def const_token(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise ExpressionError(f"constant {value!r} is not finite")
    return repr(value)


def is_variable(tok: str) -> bool:
    return tok in _VAR_INDEX


_VAR_INDEX = {v: i for i, v in enumerate(VARIABLES)}


def variable_index(tok: str) -> int:
    return _VAR_INDEX[tok]


def is_constant(tok: str) -> bool:
    if tok in ARITY or tok in _VAR_INDEX:
        return False
    try:
        return math.isfinite(float(tok))
    except ValueError:
        return False


def arity(tok: str) -> int:
    """Arity of a token (0 for leaves); raises for unknown tokens."""
    a = ARITY.get(tok)
    if a is not None:
        return a
    if tok in _VAR_INDEX or is_constant(tok):
        return 0
    raise ExpressionError(f"unknown token {tok!r}")


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
            raise ExpressionError(f"unknown binary operator {op!r} (choose from {' '.join(BINARY_OPERATORS)})")
    for op in unary:
        if ARITY.get(op) != 1:
            raise ExpressionError(f"unknown unary operator {op!r} (choose from {' '.join(UNARY_OPERATORS)})")
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
        raise ExpressionError(f"not a well-formed prefix expression: {' '.join(map(str, tokens))!r}")
    return tokens


def size(tokens: Sequence[str]) -> int:
    return len(tokens)


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


def subtree_end(tokens: Sequence[str], start: int) -> int:
    need, i = 1, start
    while need:
        need += arity(tokens[i]) - 1
        i += 1
    return i


def variables_used(tokens: Sequence[str]) -> set:
    return {t for t in tokens if t in _VAR_INDEX}


# ----------------------------------------------------------------------------
# infix text


def format_infix(tokens: Sequence[str]) -> str:
    """Parenthesised infix: ``(x0 + 1.0)``, ``sin(x0)``, ``(x0 * (-1.0))``; exact inverse of :func:`parse`."""
    stack = []
    for tok in reversed(tokens):
        a = ARITY.get(tok)
        if a is None:
            if tok not in _VAR_INDEX and not is_constant(tok):
                raise ExpressionError(f"unknown token {tok!r}")
            # negative constants in parentheses: "(-1.0) ^ 2.0" must not read as -(1.0 ^ 2.0)
            stack.append(f"({tok})" if tok[0] == "-" else tok)
        elif len(stack) < a:
            raise ExpressionError(f"not a well-formed prefix expression: {tuple(tokens)!r}")
        elif a == 1:
            stack.append(f"{tok}({stack.pop()})")
        else:
            left = stack.pop()
            stack.append(f"({left} {tok} {stack.pop()})")
    if len(stack) != 1:
        raise ExpressionError(f"not a well-formed prefix expression: {tuple(tokens)!r}")
    return stack[0]


def _parse_canonical(text: str):
    """Fast path for the canonical format of :func:`format_infix` (None if the text is not in it)."""
    ops, out = [], []
    for t in text.replace("(", " ( ").replace(")", " ) ").split():
        if t == "(" or t in _FUNCTIONS:
            ops.append(t)
        elif t in _CANON_BINARY:
            ops.append(t)
        elif t == ")":
            if not ops:
                return None
            top = ops.pop()
            if top in _CANON_BINARY:
                if len(out) < 2 or not ops or ops.pop() != "(":
                    return None
                right = out.pop()
                out[-1] = [top] + out[-1] + right
            elif top != "(" or not out:
                return None
            if ops and ops[-1] in _FUNCTIONS:
                out[-1] = [ops.pop()] + out[-1]
        elif t in _VAR_INDEX:
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


_CANON_BINARY = frozenset(BINARY_OPERATORS)


_TOKEN_RE = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(\*\*|[-+*/^()])|([A-Za-z_][A-Za-z_0-9]*))")
_FUNCTIONS = {"sin", "cos", "exp", "log", "sqrt"}
_BINARY_PREC = {"+": (1, "left"), "-": (1, "left"), "*": (2, "left"), "/": (2, "left"), "^": (4, "right"), "**": (4, "right")}
_NAMED_CONSTANTS = {"pi": math.pi, "E": math.e}


def parse(text: str) -> tuple:
    """Parse infix text into prefix tokens.

    Accepts the canonical parenthesised format of :func:`format_infix` (exact
    round trip) and ordinary sympy-style strings: ``x0**2 + sin(x1)``,
    ``2*x0 - x1/3``, unary minus, ``^`` or ``**`` for powers. Integers become
    float constants (``2`` -> ``'2.0'``). No code is executed.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string, got {type(text).__name__}")
    fast = _parse_canonical(text)
    if fast is not None and is_valid(fast):
        return fast
    lexemes = []
    pos = 0
    text_stripped = text.rstrip()
    while pos < len(text_stripped):
        m = _TOKEN_RE.match(text_stripped, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse {text!r} at position {pos}")
        num, op, name = m.groups()
        if num is not None:
            lexemes.append(("num", num))
        elif op is not None:
            lexemes.append(("op", op))
        else:
            lexemes.append(("name", name))
        pos = m.end()
    if not lexemes:
        raise ExpressionError("empty expression")
    parser = _Parser(lexemes, text)
    tree = parser.expression(0)
    if parser.i != len(lexemes):
        raise ExpressionError(f"unexpected {lexemes[parser.i][1]!r} in {text!r}")
    return tree


@functools.lru_cache(maxsize=1 << 17)
def parse_cached(text: str) -> tuple:
    """:func:`parse`, memoised: traces repeat the same expressions across generations."""
    return parse(text)


class _Parser:
    """Precedence climbing over lexemes; builds prefix token tuples directly."""

    def __init__(self, lexemes, text):
        self.lx, self.i, self.text = lexemes, 0, text

    def peek(self):
        return self.lx[self.i] if self.i < len(self.lx) else (None, None)

    def take(self):
        item = self.peek()
        if item[0] is None:
            raise ExpressionError(f"unexpected end of expression in {self.text!r}")
        self.i += 1
        return item

    def expression(self, min_prec):
        left = self.unary()
        while True:
            kind, val = self.peek()
            if kind != "op" or val not in _BINARY_PREC:
                return left
            prec, assoc = _BINARY_PREC[val]
            if prec < min_prec:
                return left
            self.take()
            right = self.expression(prec + 1 if assoc == "left" else prec)
            left = ("^" if val == "**" else val,) + left + right

    def unary(self):
        kind, val = self.peek()
        if kind == "op" and val in "+-" and len(val) == 1:
            self.take()
            # Unary minus binds looser than power (-x**2 == -(x**2)) but tighter than * and /.
            operand = self.expression(3)
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
        if kind == "op" and val == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if kind == "name":
            if val in _FUNCTIONS:
                self.expect("(")
                arg = self.expression(0)
                self.expect(")")
                return (val,) + arg
            if val in _VAR_INDEX:
                return (val,)
            if val in _NAMED_CONSTANTS:
                return (const_token(_NAMED_CONSTANTS[val]),)
            raise ExpressionError(f"unknown name {val!r} in {self.text!r} (variables are x0..x9)")
        raise ExpressionError(f"unexpected {val!r} in {self.text!r}")

    def expect(self, sym):
        kind, val = self.take()
        if val != sym:
            raise ExpressionError(f"expected {sym!r}, found {val!r} in {self.text!r}")


# ----------------------------------------------------------------------------
# sympy (imported lazily: it is slow to import and only needed at the edges)


def to_sympy(tokens: Sequence[str]):
    """Sympy expression with the plain (unprotected) meaning of each operator."""
    import sympy as sp

    funcs = {"sin": sp.sin, "cos": sp.cos, "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt}
    stack = []
    for tok in reversed(tuple(tokens)):
        a = arity(tok)
        if a == 0:
            if tok in _VAR_INDEX:
                stack.append(sp.Symbol(tok, real=True))
            else:
                v = float(tok)
                stack.append(sp.Integer(int(v)) if v.is_integer() and abs(v) < 1e15 else sp.Float(v))
        elif a == 1:
            stack.append(funcs[tok](stack.pop()))
        else:
            left, right = stack.pop(), stack.pop()
            if tok == "+":
                stack.append(left + right)
            elif tok == "-":
                stack.append(left - right)
            elif tok == "*":
                stack.append(left * right)
            elif tok == "/":
                stack.append(left / right)
            else:
                stack.append(left ** right)
    if len(stack) != 1:
        raise ExpressionError(f"not a well-formed prefix expression: {tokens!r}")
    return stack[0]


def from_sympy(expr) -> tuple:
    """Prefix tokens from a sympy expression (n-ary sums and products folded left)."""
    import sympy as sp

    if expr.is_Symbol:
        if expr.name not in _VAR_INDEX:
            raise ExpressionError(f"unknown symbol {expr.name!r}")
        return (expr.name,)
    if expr.is_Number or expr in (sp.pi, sp.E):
        return (const_token(float(expr)),)
    if isinstance(expr, (sp.Add, sp.Mul)):
        op = "+" if isinstance(expr, sp.Add) else "*"
        args = [from_sympy(a) for a in expr.as_ordered_terms()] if op == "+" else [from_sympy(a) for a in expr.as_ordered_factors()]
        out = args[0]
        for a in args[1:]:
            out = (op,) + out + a
        return out
    if isinstance(expr, sp.Pow):
        base, ex = expr.args
        if ex == sp.Rational(1, 2):
            return ("sqrt",) + from_sympy(base)
        if ex == -1:
            return ("/", "1.0") + from_sympy(base)
        return ("^",) + from_sympy(base) + from_sympy(ex)
    for cls, name in ((sp.sin, "sin"), (sp.cos, "cos"), (sp.exp, "exp"), (sp.log, "log")):
        if isinstance(expr, cls):
            return (name,) + from_sympy(expr.args[0])
    raise ExpressionError(f"cannot convert sympy expression {expr} to tokens")


# ----------------------------------------------------------------------------
# evaluation (NumPy reference; the population hot path uses nsr.kernels)


def apply_operator(op: str, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            safe = np.abs(b) >= PROTECT_EPS
            return np.where(safe, a / np.where(safe, b, 1.0), 1.0)
        if op == "^":
            integral = b == np.round(b)
            return np.where(integral, np.power(a, b), np.power(np.abs(a), b))
        if op == "sin":
            return np.sin(a)
        if op == "cos":
            return np.cos(a)
        if op == "exp":
            return np.exp(np.minimum(a, EXP_CLIP))
        if op == "log":
            absa = np.abs(a)
            return np.where(absa >= PROTECT_EPS, np.log(np.where(absa >= PROTECT_EPS, absa, 1.0)), 0.0)
        if op == "sqrt":
            return np.sqrt(np.abs(a))
    raise ExpressionError(f"unknown operator {op!r}")


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
            else:
                stack.append(np.full(n, float(tok)))
        elif a == 1:
            stack.append(apply_operator(tok, stack.pop()))
        else:
            left = stack.pop()
            right = stack.pop()
            stack.append(apply_operator(tok, left, right))
    if len(stack) != 1:
        raise ExpressionError(f"not a well-formed prefix expression: {tokens!r}")
    return np.array(stack[0], dtype=np.float64)  # a copy: never a view into X


# ----------------------------------------------------------------------------
# a small convenience wrapper for users


class Expression:
    """An immutable expression: ``Expression.parse('(x0 + 1.0)')``, ``e.tokens``, ``str(e)``."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: Iterable[str]):
        object.__setattr__(self, "tokens", check(tokens))

    def __setattr__(self, *_):
        raise AttributeError("Expression is immutable")

    @classmethod
    def parse(cls, text: str) -> "Expression":
        return cls(parse(text))

    def __str__(self):
        return format_infix(self.tokens)

    def __repr__(self):
        return f"Expression({format_infix(self.tokens)!r})"

    def __eq__(self, other):
        return isinstance(other, Expression) and other.tokens == self.tokens

    def __hash__(self):
        return hash(self.tokens)

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def depth(self) -> int:
        return depth(self.tokens)

    def evaluate(self, X) -> np.ndarray:
        return evaluate(self.tokens, X)

    def to_sympy(self):
        return to_sympy(self.tokens)


# ----------------------------------------------------------------------------
# integer coding for one run's primitives


class Primitives:
    """The operators, variables and constants one run may use, and their integer codes."""

    def __init__(self, binary_operators, unary_operators, n_vars: int, constants=DEFAULT_CONSTANTS):
        if not 1 <= int(n_vars) <= MAX_VARIABLES:
            raise ExpressionError(f"number of variables must be 1..{MAX_VARIABLES}, got {n_vars}")
        self.binary = tuple(binary_operators)
        self.unary = tuple(unary_operators)
        self.n_vars = int(n_vars)
        self.constant_tokens = tuple(dict.fromkeys(const_token(c) for c in constants))
        self.constants = np.array([float(c) for c in self.constant_tokens], dtype=np.float64)
        self.operators = self.binary + self.unary
        self.variables = VARIABLES[: self.n_vars]
        self.op_codes = np.array([OP_CODE[o] for o in self.operators], dtype=np.int16)
        self.leaf_codes = np.array(
            [VAR_CODE0 + i for i in range(self.n_vars)] + [CONST_CODE0 + j for j in range(len(self.constants))],
            dtype=np.int16,
        )
        self._code = {op: OP_CODE[op] for op in self.operators}
        self._code.update({v: VAR_CODE0 + i for i, v in enumerate(self.variables)})
        self._code.update({c: CONST_CODE0 + j for j, c in enumerate(self.constant_tokens)})
        self._token = {code: tok for tok, code in self._code.items()}

    @property
    def tokens(self) -> tuple:
        return self.operators + self.variables + self.constant_tokens

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._code[t] for t in tokens), dtype=np.int16, count=len(tokens))
        except KeyError as e:
            raise ExpressionError(f"token {e.args[0]!r} is not among this run's primitives ({' '.join(self.tokens)})") from None

    def decode(self, codes) -> tuple:
        tok = self._token
        return tuple(tok[int(c)] for c in codes)

    def admits(self, tokens: Sequence[str]) -> bool:
        return all(t in self._code for t in tokens)

    def describe(self) -> dict:
        return {
            "binary_operators": list(self.binary),
            "unary_operators": list(self.unary),
            "n_vars": self.n_vars,
            "constants": [float(c) for c in self.constants],
        }
