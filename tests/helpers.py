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


def load_module(name):
    """A script as a module: 'generate_traces', 'training.train', 'generate_expressions', ...

    training/ and datasets/ are folders of scripts, not packages: those load from their files."""
    import importlib
    import importlib.util

    if name == "generate_expressions" or name.startswith("training."):  # datasets/, training/: not packages
        rel = SCRIPTS[name] if name in SCRIPTS else name.replace(".", os.sep) + ".py"
        modname = name.replace(".", "_") + "_script"
        if modname in sys.modules:
            return sys.modules[modname]
        spec = importlib.util.spec_from_file_location(modname, os.path.join(ROOT, rel))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[modname] = mod
        return mod
    return importlib.import_module(name)


def run_in_process(script, args, capsys):
    """Run a script's main() as its ``__main__`` block does; returns what a subprocess run would."""
    from types import SimpleNamespace

    from nsr.cli import run_main

    mod = load_module(script)
    capsys.readouterr()
    try:
        rc = run_main(mod.main, [str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    cap = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=cap.out, stderr=cap.err)


TIMING_KEYS = {"time"}
TIMING_STAT_KEYS = {"wall_time", "model_time"}


def without_timing(rec):
    """A trace record with its wall-clock fields removed (they differ between identical runs)."""
    out = {k: v for k, v in rec.items() if k not in TIMING_KEYS}
    traj = dict(out["trajectory"])
    traj["stats"] = {k: v for k, v in traj["stats"].items() if k not in TIMING_STAT_KEYS}
    out["trajectory"] = traj
    return out


def assert_same_data(a, b, path="record"):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            assert_same_data(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_data(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def denied_prefix(path, mode):
    """A command prefix under which ``open(path, mode)`` is refused by the file's permissions, or skip.

    Root ignores permissions; ``setpriv`` drops that override for the child process."""
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions do not apply")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run(prefix + [sys.executable, "-c", f"open({str(path)!r}, {mode!r})"], capture_output=True)
    if probe.returncode == 0:
        if "w" in mode:
            os.unlink(path)
        pytest.skip("running as root: file permissions do not apply even under setpriv")
    return prefix



def encode_batch(prims, programs):
    """Prefix token lists as the kernels take them: (codes, lengths, width), zero-padded."""
    import numpy as np

    width = max(len(p) for p in programs)
    codes = np.zeros((len(programs), width), dtype=np.int16)
    lengths = np.zeros(len(programs), dtype=np.int64)
    for i, p in enumerate(programs):
        codes[i, : len(p)] = prims.encode(p)
        lengths[i] = len(p)
    return codes, lengths, width


def ill_conditioned_points(tokens, X, limit=1e6):
    """Points where some subtree's value exceeds ``limit`` in magnitude: there a last-bit
    difference between two correct libm implementations (exp, pow) is amplified by what
    follows (sin of 1e13, x - y of two huge values), so the two evaluators may differ."""
    import numpy as np

    from nsr.expressions import evaluate, subtrees

    bad = np.zeros(len(X), dtype=bool)
    with np.errstate(all="ignore"):
        for s, e in subtrees(tokens):
            v = evaluate(tokens[s:e], X)
            bad |= np.isfinite(v) & (np.abs(v) > limit)
    return bad
