"""What every command-line script shares: one-line errors, exit status 2, run metadata."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from typing import Callable

from .expressions import ExpressionError
from .safe_io import InputError

EXIT_BAD_INPUT = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a single line (no usage dump) with exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_BAD_INPUT)


def run_main(main: Callable[[list], int | None], argv=None) -> int:
    """Call ``main``; bad input becomes one ``error:`` line on stderr and exit status 2."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "nsr"
    try:
        rc = main(sys.argv[1:] if argv is None else argv)
        return int(rc or 0)
    except (InputError, ExpressionError) as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130


def _number_type(convert, ok, requirement, kind):
    """An argparse type: ``convert`` the text, then require ``ok(value)``."""

    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return v

    return parse


def _finite(v):
    return v == v and v not in (float("inf"), float("-inf"))


positive_int = _number_type(int, lambda v: v >= 1, "a positive integer", "an integer")
nonneg_int = _number_type(int, lambda v: v >= 0, ">= 0", "an integer")
probability = _number_type(float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]", "a number")
positive_float = _number_type(float, lambda v: v > 0 and _finite(v), "a positive finite number", "a number")
finite_float = _number_type(float, _finite, "finite", "a number")
nonneg_float = _number_type(float, lambda v: v >= 0 and _finite(v), "a finite number >= 0", "a number")
# a population is the elite plus at least one child
population_size = _number_type(int, lambda v: v >= 2, "an integer >= 2", "an integer")


def add_sampling_args(parser, beta=True):
    """The neural proposer's flags, the same in every script that runs a checkpoint."""
    parser.add_argument("--device", default=None, help="torch device for the model (default: cuda if available)")
    parser.add_argument("--temperature", type=positive_float, default=1.0)
    parser.add_argument("--top_k", type=nonneg_int, default=0, help="0: no top-k filter")
    parser.add_argument("--top_p", type=probability, default=1.0)
    parser.add_argument("--autoregressive", action="store_true",
                        help="the checkpoint proposes whole populations (autoregressive mode)")
    if beta:
        parser.add_argument("--beta", type=probability, default=0.0,
                            help="mixed rollout: each child from the expert with probability B, else from the model")


def package_versions() -> dict:
    from importlib import metadata  # reads package metadata without importing (torch is slow to import)

    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "sympy", "torch", "transformers", "tokenizers", "safetensors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_metadata(args=None) -> dict:
    """Command, parameters, versions and time of a run, stored in every output file."""
    return {
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "parameters": dict(vars(args)) if args is not None else {},
        "package_versions": package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }
