"""The operator registry: the one place that knows what each operator is.

Everything else derives from :data:`OPERATORS`: the compiled kernels' opcode
and arity tables (:mod:`nsr.kernels` refuses to import if it lacks an
implementation), the tokenizer's vocabulary, the infix parser and formatter,
sympy conversion and the NumPy reference evaluator. Adding an operator means
one :class:`Operator` here and its kernel implementation in ``kernels.py``.

Operators are *protected*, so that none is NaN everywhere by accident:
``a / b`` is 1 where ``|b| < 1e-10``; ``log a`` is ``log|a|`` (0 where
``|a| < 1e-10``); ``sqrt a`` is ``sqrt|a|``; ``exp`` clips its argument at
100; ``a ^ b`` is the real power where ``b`` is an integer and ``|a| ^ b``
elsewhere. Values that still overflow become inf and are masked by the
fitness; ``asin`` clips its argument to [-1, 1]. ``to_sympy`` shows the plain
functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

PROTECT_EPS = 1e-10
EXP_CLIP = 100.0


@dataclass(frozen=True)
class Operator:
    name: str  # the token, as in prefix programs and the model's vocabulary
    arity: int
    numpy: Callable  # vectorised, protected implementation (the reference for the kernel's)
    sympy: Callable  # (sympy module, *args) -> the plain sympy expression
    precedence: int = 0  # binary operators: how tightly they bind in infix text
    right_assoc: bool = False
    aliases: tuple = ()  # other spellings the parser accepts ('**' for '^')

    @property
    def opcode(self) -> int:
        """Code in the compiled kernels: the operator's position in :data:`OPERATORS`."""
        return OPCODE[self.name]


def _div(a, b):
    safe = np.abs(b) >= PROTECT_EPS
    return np.where(safe, a / np.where(safe, b, 1.0), 1.0)


def _pow(a, b):
    return np.where(b == np.round(b), np.power(a, b), np.power(np.abs(a), b))


def _log(a):
    absa = np.abs(a)
    ok = absa >= PROTECT_EPS
    return np.where(ok, np.log(np.where(ok, absa, 1.0)), 0.0)


# Order is the opcode order: append new operators at the end.
OPERATORS = (
    Operator("+", 2, np.add, lambda sp, a, b: a + b, precedence=1),
    Operator("-", 2, np.subtract, lambda sp, a, b: a - b, precedence=1),
    Operator("*", 2, np.multiply, lambda sp, a, b: a * b, precedence=2),
    Operator("/", 2, _div, lambda sp, a, b: a / b, precedence=2),
    Operator("^", 2, _pow, lambda sp, a, b: a ** b, precedence=4, right_assoc=True, aliases=("**",)),
    Operator("sin", 1, np.sin, lambda sp, a: sp.sin(a)),
    Operator("cos", 1, np.cos, lambda sp, a: sp.cos(a)),
    Operator("exp", 1, lambda a: np.exp(np.minimum(a, EXP_CLIP)), lambda sp, a: sp.exp(a)),
    Operator("log", 1, _log, lambda sp, a: sp.log(a), aliases=("ln",)),
    Operator("sqrt", 1, lambda a: np.sqrt(np.abs(a)), lambda sp, a: sp.sqrt(a)),
    Operator("tanh", 1, np.tanh, lambda sp, a: sp.tanh(a)),
    Operator("asin", 1, lambda a: np.arcsin(np.clip(a, -1.0, 1.0)), lambda sp, a: sp.asin(a), aliases=("arcsin",)),
)

BY_NAME = {op.name: op for op in OPERATORS}
OPCODE = {op.name: i for i, op in enumerate(OPERATORS)}
ARITY = {op.name: op.arity for op in OPERATORS}
BINARY = tuple(op.name for op in OPERATORS if op.arity == 2)
UNARY = tuple(op.name for op in OPERATORS if op.arity == 1)
# every spelling the infix parser accepts -> the operator's name
SPELLINGS = {alias: op.name for op in OPERATORS for alias in (op.name,) + op.aliases}

OPERATOR_SETS = {
    "arith": ("+", "-", "*"),
    "full": ("+", "-", "*", "/", "^", "sin", "cos", "exp", "log", "sqrt"),
    # what the AI Feynman equations use
    "physics": ("+", "-", "*", "/", "^", "sin", "cos", "exp", "log", "sqrt", "tanh", "asin"),
}


def _check_registry():
    if len(BY_NAME) != len(OPERATORS) or len(SPELLINGS) != sum(1 + len(op.aliases) for op in OPERATORS):
        raise ImportError("operator registry: duplicate operator name or alias")
    for op in OPERATORS:
        if op.arity not in (1, 2):
            raise ImportError(f"operator registry: {op.name!r} has arity {op.arity} (1 or 2 supported)")
        if op.arity == 2 and op.precedence < 1:
            raise ImportError(f"operator registry: binary {op.name!r} needs a precedence")
    for name, ops in OPERATOR_SETS.items():
        unknown = [o for o in ops if o not in BY_NAME]
        if unknown:
            raise ImportError(f"operator set {name!r} names unknown operators {unknown}")


_check_registry()


def apply(name: str, *args) -> np.ndarray:
    """The protected operator ``name`` over NumPy arrays (warnings silenced: inf/NaN are expected)."""
    with np.errstate(all="ignore"):
        return BY_NAME[name].numpy(*args)
