"""Helpers shared by the tests: a CLI runner, the checks every bad-input run must
pass, and small valid expressions files."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from nsr import safe_io  # noqa: E402

SCRIPTS = {
    "generate_traces": "generate_traces.py",
    "basic_sr": "basic_sr.py",
    "generate_expressions": os.path.join("datasets", "generate_expressions.py"),
}


def run_cli(script, args, timeout=120, **kwargs):
    """Run one of the repository's scripts in a fresh interpreter from the repository root."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(kwargs.pop("env", {}))
    cmd = [sys.executable, SCRIPTS.get(script, script)] + [str(a) for a in args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def tree_listing(folder):
    """Every file below ``folder`` (relative paths, hidden files included)."""
    out = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(root, name), folder))
    return out


def assert_one_line_error(proc, *alternatives):
    """Exit status 2, one stderr line, no traceback, and the message names the problem
    (contains at least one of ``alternatives``, case-insensitively)."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit status {proc.returncode}, stderr: {err!r}"
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected a single-line error, got: {err!r}"
    assert "error" in lines[0].lower(), lines[0]
    if alternatives:
        low = lines[0].lower()
        assert any(a.lower() in low for a in alternatives), f"{lines[0]!r} names none of {alternatives}"
    return lines[0]


def simple_record(rid=0, n=20, nv=1, seed=0, expression=None):
    """A valid expressions-file record: y = x0 + 1 (plus x1 when nv == 2)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, nv))
    y = X[:, 0] + 1.0 if nv == 1 else X[:, 0] + 1.0 + X[:, 1]
    expr = expression or ("(x0 + 1.0)" if nv == 1 else "((x0 + 1.0) + x1)")
    return {"id": rid, "expression": expr, "X": X, "y": y, "num_vars": nv}


def write_expressions(path, records, metadata=None):
    safe_io.save(str(path), "expressions", metadata if metadata is not None else {"operator_set": "arith"},
                 records)
    return str(path)


def heritage_lists(gen, key="heritages"):
    """A generation's heritages as lists (the file stores an (n, 2) array, -1 = none)."""
    from nsr.traces import parents

    return [parents(row) for row in gen[key]]
