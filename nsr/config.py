"""Every parameter, once: its default, help text and validation.

The dataclasses here are the single source of truth. Command-line flags are
generated from their fields (:func:`add_arguments`, as Hugging Face's
``HfArgumentParser`` does), the estimators' ``get_params``/``set_params`` come
from them, trace files store ``asdict()`` of each under its own key, and
parameters read back from a file go through the same checks
(:meth:`Config.from_dict`) before anything reaches a compiled kernel.

A script whose documented default differs from a field's (``generate_traces.py
--population_size 20`` where ``BasicSR()`` uses 100) passes it to
:func:`add_arguments`; the named default sets below are those overrides.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Optional

from .operators import BINARY, OPERATOR_SETS, UNARY
from .pareto import SELECTIONS
from .safe_io import InputError


class ConfigError(InputError):
    """A parameter out of range or of the wrong type (from a flag, a call or a file)."""


def _shown(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


@dataclass(frozen=True)
class Rule:
    """What a parameter's values may be: a kind and bounds, checked the same way from every source."""

    kind: str  # 'int', 'float', 'bool', 'str', 'floats' (a non-empty tuple), 'names' (a tuple of strings)
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False  # lo itself excluded
    choices: Optional[tuple] = None
    optional: bool = False  # None allowed
    max_items: int = 64
    min_items: int = 1

    def describe(self) -> str:
        what = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
                "floats": "a list of finite numbers", "ints": "a list of integers", "names": "a list of names",
                "paths": "a list of paths"}[self.kind]
        if self.choices is not None and self.kind in ("str", "names"):
            what = f"{'one' if self.kind == 'str' else 'each'} of {', '.join(map(str, self.choices))}"
        elif self.lo is not None and self.hi is not None:
            what += f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        elif self.lo is not None:
            what += f" {'>' if self.lo_open else '>='} {self.lo:g}"
        return what + (" (or None)" if self.optional else "")

    def check(self, name: str, v):
        """The value, normalised (ints as int, tuples as tuples), or a ConfigError naming ``name``."""
        if v is None:
            if self.optional:
                return None
            raise ConfigError(f"{name} must be {self.describe()}, got None")
        bad = ConfigError(f"{name} must be {self.describe()}, got {_shown(v)}")
        if self.kind == "bool":
            if not isinstance(v, bool) and type(v).__name__ != "bool_":
                raise bad
            return bool(v)
        if self.kind == "str":
            if not isinstance(v, str) or (self.choices is not None and v not in self.choices):
                raise bad
            return v
        if self.kind in ("floats", "ints", "names", "paths"):
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise bad
            items = tuple(v)
            if not self.min_items <= len(items) <= self.max_items:
                raise bad
            if self.kind == "paths":
                if not all(isinstance(s, str) and s for s in items):
                    raise bad
                return items
            if self.kind == "names":
                if not all(isinstance(s, str) and (self.choices is None or s in self.choices) for s in items):
                    raise bad
                return items
            return tuple(self._number(name, x, int if self.kind == "ints" else float, bad) for x in items)
        return self._number(name, v, int if self.kind == "int" else float, bad)

    def _number(self, name, v, kind, bad):
        if isinstance(v, bool) or not hasattr(v, "__float__") or isinstance(v, (str, bytes)):
            raise bad
        try:
            x = float(v)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(x):
            raise bad
        if kind is int:
            if x != int(x) or type(v).__name__.startswith("float"):
                raise bad
            x = int(v)
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            raise bad
        if self.hi is not None and x > self.hi:
            raise bad
        return x

    def from_text(self, text: str):
        """argparse ``type=``: text -> checked value (errors become argparse's one-line messages)."""
        try:
            if self.kind in ("int", "ints"):
                v = int(text)
            elif self.kind in ("float", "floats"):
                v = float(text)
            else:
                v = text
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if self.kind == 'int' else 'a number'}")
        if self.kind in ("floats", "ints"):
            if not math.isfinite(v) or (self.lo is not None and v < self.lo):
                raise argparse.ArgumentTypeError(f"must be {self.describe().replace('a list of ', 'each ')}, got {text}")
            return v
        try:
            return self.check("value", v)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}") from None


def param(default, help: str, rule: Rule, flag: Optional[str] = None, cli: bool = True):
    """A config field: its default, help text and :class:`Rule` (``flag`` names a negated bool flag)."""
    return field(default=default, metadata={"help": help, "rule": rule, "flag": flag, "cli": cli})


def Int(lo, hi=None, optional=False):
    return Rule("int", lo, hi, optional=optional)


def Float(lo=None, hi=None, lo_open=False, optional=False):
    return Rule("float", lo, hi, lo_open, optional=optional)


BOOL = Rule("bool")


class Config:
    """Shared behaviour of the config dataclasses: validation on construction, dict round trip."""

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["rule"].check(f.name, getattr(self, f.name)))
        self.validate()

    def validate(self):
        """Checks that involve several fields (override)."""

    @classmethod
    def from_dict(cls, d: dict, where: str = ""):
        """Build from a dict read from a file: unknown keys are ignored, every known value is checked."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}parameters must be a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None

    def to_dict(self) -> dict:
        """Plain data for a file (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------
# the configs


@dataclass(frozen=True)
class EvolutionConfig(Config):
    """The evolution loop and the expert's operators (BasicSR's parameters)."""

    population_size: int = param(100, "individuals per generation (the elite plus children)", Int(2, 1_000_000))
    num_generations: int = param(50, "generations in the trajectory, the initial one included", Int(1, 10_000_000))
    max_depth: int = param(4, "depth bound of random trees (initial population and mutation)", Int(1, 1000))
    max_size: int = param(25, "node-count bound of every individual", Int(1, 1000))
    tournament_size: int = param(3, "individuals per selection tournament", Int(1, 10_000))
    crossover_prob: float = param(0.7, "chance a child comes from crossover (else mutation)", Float(0.0, 1.0))
    point_mutation_prob: float = param(0.0, "chance a mutation changes one node (an operator for another of its "
                                            "arity, a leaf for another leaf) instead of replacing a subtree",
                                       Float(0.0, 1.0))
    operator_set: str = param("arith", "named operator set", Rule("str", choices=tuple(OPERATOR_SETS)))
    binary_operators: Optional[tuple] = param(None, "explicit binary operators (override operator_set)",
                                              Rule("names", choices=BINARY, optional=True, min_items=0), cli=False)
    unary_operators: Optional[tuple] = param(None, "explicit unary operators (override operator_set)",
                                             Rule("names", choices=UNARY, optional=True, min_items=0), cli=False)
    constants: tuple = param((1.0,), "the constants programs may use", Rule("floats"))
    constant_fitting: int = param(0, "Levenberg-Marquardt iterations fitting each new skeleton's constants C "
                                     "(0: no fitted constants, only the constants list)", Int(0, 10_000))
    linear_scaling: bool = param(False, "score each program as its least-squares rescaling a*f + b (a, b in closed "
                                        "form, free; the reported model includes them)", BOOL)
    parsimony: float = param(1e-3, "fitness penalty per node, against MSE / var(y)", Float(0.0))
    mse_threshold: float = param(1e-10, "early stop once the best MSE is at most this", Float(0.0))
    early_stop: bool = param(True, "stop a problem early once solved", BOOL, flag="--no_early_stop")
    simplify_generations: int = param(0, "extra generations after reaching mse_threshold", Int(0, 10_000_000))
    time_limit: Optional[float] = param(None, "seconds per problem", Float(0.0, lo_open=True, optional=True))
    max_evaluations: Optional[int] = param(None, "stop once this many model evaluations (fitting included) are spent",
                                           Int(1, 10**15, optional=True))
    polish: int = param(0, "after the search, simplify the reported model on the training data: fold subtrees "
                           "constant on it, refit its constants with this many LM iterations, prune what does not "
                           "help the error (0: off; needs constant_fitting)", Int(0, 10_000))
    model_selection: str = param("accuracy", "which model of the run's accuracy-vs-complexity front is reported: "
                                             "'accuracy' the lowest training error, 'best' PySR's rule (the "
                                             "highest score within 1.5x of the lowest error; nsr/pareto.py)",
                                 Rule("str", choices=SELECTIONS))
    collect_trajectory: bool = param(False, "record every generation (traces)", BOOL, cli=False)

    def validate(self):
        self.operators()  # explicit operator lists must name known operators of the right arity
        if self.polish and not self.constant_fitting:
            raise ConfigError("polish needs constant_fitting > 0 (it rewrites the model with fitted constants)")
        if self.population_size * self.max_size > 20_000_000:  # int16 codes and float64 work arrays per generation
            raise ConfigError(f"population_size x max_size = {self.population_size * self.max_size:,} is too large "
                              f"(at most 20,000,000)")

    def operators(self):
        """(binary, unary) operator tuples."""
        from .expressions import ExpressionError, resolve_operators

        try:
            return resolve_operators(self.operator_set, self.binary_operators, self.unary_operators)
        except ExpressionError as e:
            raise ConfigError(str(e)) from None

    def primitives(self, n_vars: int):
        from .expressions import Primitives

        binary, unary = self.operators()
        return Primitives(binary, unary, n_vars, self.constants, fit_constants=self.constant_fitting > 0)


@dataclass(frozen=True)
class SamplingConfig(Config):
    """The neural proposer: which checkpoint, and how children are sampled from it."""

    checkpoint: Optional[str] = param(None, "checkpoint folder (a checkpoint-<step> or a run folder holding them)",
                                      Rule("str", optional=True))
    device: Optional[str] = param(None, "torch device for the model (default: cuda if available)",
                                  Rule("str", optional=True))
    temperature: float = param(1.0, "sampling temperature", Float(0.0, lo_open=True))
    top_k: int = param(0, "keep the k likeliest tokens (0: all)", Int(0))
    top_p: float = param(1.0, "nucleus sampling mass", Float(0.0, 1.0, lo_open=True))
    autoregressive: bool = param(False, "require an autoregressive checkpoint (default: the checkpoint's own mode)",
                                 BOOL)
    beta: float = param(0.0, "mixed rollout: each child from the expert with probability beta, else the model",
                        Float(0.0, 1.0))
    constrained: bool = param(True, "grammar-constrained decoding (off only to measure the raw model)", BOOL,
                              cli=False)
    forward: str = param("auto", "the model's forward for sampling: 'tree' (written out, nsr/forward.py), "
                                 "'transformers' (the reference), 'auto' (tree wherever the checkpoint allows)",
                         Rule("str", choices=("auto", "tree", "transformers")))
    dtype: Optional[str] = param(None, "model dtype (default: bfloat16 on CUDA, float32 on CPU)",
                                 Rule("str", choices=("float32", "float64", "bfloat16"), optional=True), cli=False)


@dataclass(frozen=True)
class RunConfig(Config):
    """How a run over many problems is driven."""

    seed: int = param(42, "expression i of a file uses SeedSequence([seed, i])", Int(0, 2**63 - 1))
    batch_size: Optional[int] = param(None, "problems per model call (neural SR; default 32)",
                                      Int(1, 100_000, optional=True))
    num_workers: Optional[int] = param(None, "expert processes (default: the cores this process may use)",
                                       Int(1, 4096, optional=True))
    executor: str = param("local", "where jobs run: this machine's processes, or a Ray cluster (pip install -r "
                                   "requirements-ray.txt)", Rule("str", choices=("local", "ray")))
    ray_address: Optional[str] = param(None, "Ray cluster to join (default: start a local one; 'auto': the one "
                                             "this machine belongs to)", Rule("str", optional=True))
    save_every: float = param(60.0, "seconds between saves of finished results to OUTPUT.partial/",
                              Float(0.0, lo_open=True))
    threads: Optional[int] = param(None, "CPU threads for the model (default: the cores this process may use)",
                                   Int(1, 4096, optional=True))
    quiet: bool = param(False, "no progress bar or summary", BOOL)

    @property
    def neural_batch_size(self) -> int:
        return self.batch_size or 32


# Runs that make or use model traces default to the population the shipped models are trained on.
ROLLOUT_DEFAULTS = {"population_size": 20}
# Fitting a user's table (basic_sr.py --data, BasicSR(**DATA_PRESET)): the settings tuned on AI Feynman (every fifth
# equation at 100k evaluations, BENCHMARKS.md issue 11) with polish, and PySR's model choice from the front, which
# noisy data needs. The expressions-file and trace paths keep the fields' defaults (shipped traces, checkpoints).
DATA_PRESET = {"population_size": 500, "num_generations": 10_000_000, "max_evaluations": 100_000,
               "operator_set": "physics", "constant_fitting": 10, "linear_scaling": True, "polish": 100,
               "max_size": 40, "max_depth": 4, "tournament_size": 5, "crossover_prob": 0.9,
               "point_mutation_prob": 0.5, "model_selection": "best"}
# Scripts over an expressions file take its operator set and constants unless told otherwise.
FILE_DEFAULTS = {"operator_set": None, "constants": None}


# ----------------------------------------------------------------------------
# command-line flags from fields


def add_arguments(parser, cls, defaults: Optional[dict] = None, exclude=(), only=None,
                  unset_help: str = " (default: the input file's own)"):
    """Add a flag per field of ``cls`` (its help, default and checks); ``defaults`` overrides defaults, and a
    default overridden to None is described by ``unset_help``."""
    defaults = defaults or {}
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in exclude or (only is not None and f.name not in only):
            continue
        rule, default = meta["rule"], defaults.get(f.name, f.default)
        help_text = meta["help"]
        if default is dataclasses.MISSING:  # a field without a default is a required flag
            kw = {"required": True, "help": help_text}
            if rule.kind == "paths":
                kw.update(nargs="+", metavar="FILE")
            elif rule.kind in ("int", "float"):
                kw["type"] = rule.from_text
            parser.add_argument(f"--{f.name}", **kw)
            continue
        if f.name in defaults and default is None and f.default is not None:
            help_text += unset_help
        if rule.kind == "bool":
            if meta.get("flag"):  # a True default is switched off by a --no_ flag
                parser.add_argument(meta["flag"], dest=f.name, action="store_false",
                                    help=f"switch off (on by default): {help_text}")
            else:
                parser.add_argument(f"--{f.name}", action="store_true", help=help_text)
            parser.set_defaults(**{f.name: default})
            continue
        kw = {"default": default, "help": help_text + ("" if default is None else f" (default: {_flag_text(default)})")}
        if rule.kind == "str" and rule.choices is not None:
            kw["choices"] = rule.choices
        elif rule.kind in ("floats", "ints"):
            kw.update(type=rule.from_text, nargs="+")
        elif rule.kind == "paths":
            kw.update(nargs="+" if rule.min_items else "*", metavar="FILE")
        elif rule.kind in ("int", "float"):
            kw["type"] = rule.from_text
        parser.add_argument(f"--{f.name}", **kw)
    return parser


def _flag_text(v):
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def from_args(cls, args, **overrides):
    """An instance of ``cls`` from parsed flags (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    values = {k: v for k, v in values.items() if v is not None or k in overrides}
    return cls(**values)
