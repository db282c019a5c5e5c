"""What every command-line script shares: one-line errors, exit statuses, signals, run metadata.

Bad input exits 2 with one ``error:`` line; SIGINT exits 130 and SIGTERM 143,
each with one line saying what was kept (long runs save finished results for
``--resume`` first). Flags themselves are generated from the config
dataclasses (:func:`nsr.config.add_arguments`).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import signal
import sys
from typing import Callable

from .expressions import ExpressionError
from .safe_io import InputError
from .threads import configure_threads

EXIT_BAD_INPUT = 2
MAX_MESSAGE = 400


class Terminated(BaseException):
    """SIGTERM (what ``kill`` and cluster schedulers send), raised like KeyboardInterrupt so that runs save and stop."""


def _raise_terminated(signum, frame):
    raise Terminated()


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a single line (no usage dump) with exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {_one_line(message)}\n")
        sys.exit(EXIT_BAD_INPUT)


def _one_line(message) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _interrupt_behind(e):
    """The KeyboardInterrupt/Terminated behind a SystemError: a signal that arrives while compiled (numba) code
    runs comes back as "... returned a result with an exception set", chained to the interrupt."""
    for _ in range(8):
        e = e.__cause__ or e.__context__
        if e is None or isinstance(e, (KeyboardInterrupt, Terminated)):
            return e
    return None


def _interrupted(prog, e, note):
    name, code = ("SIGTERM", 143) if isinstance(e, Terminated) else ("SIGINT", 130)
    sys.stderr.write(f"{prog}: interrupted by {name}" + (f"; {note}" if note else "; nothing was written") + "\n")
    return code


def run_main(main: Callable[[list], int | None], argv=None) -> int:
    """Call ``main``; bad input becomes one ``error:`` line and exit status 2, signals 130/143.

    Thread settings are made first (:func:`configure_threads`), before any script imports torch."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "nsr"
    configure_threads()
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        rc = main(sys.argv[1:] if argv is None else argv)
        return int(rc or 0)
    except (InputError, ExpressionError) as e:
        sys.stderr.write(f"{prog}: error: {_one_line(e)}\n")
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Terminated) as e:
        return _interrupted(prog, e, getattr(e, "nsr_note", None))
    except SystemError as e:
        inner = _interrupt_behind(e)
        if inner is None:
            raise
        return _interrupted(prog, inner, getattr(e, "nsr_note", None) or getattr(inner, "nsr_note", None))
    except BrokenPipeError:  # output piped into e.g. `head`, which closed it: stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except OSError as e:  # the machine, not the input: a full disk, a vanished folder...
        sys.stderr.write(f"{prog}: error: {_one_line(e)}\n")
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)


def parse_shard(text):
    """``i/n`` for --shard: every n-th expression starting at i."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n or n > 10**6:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n <= 1000000, got {text!r}")
    return i, n


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


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
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()} if args is not None else {}
    return {
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "parameters": params,
        "package_versions": package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }
